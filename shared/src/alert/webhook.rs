//! Alerts POSTed to a chat webhook (`PGKEEP_ALERT_WEBHOOK_URL`): Slack's incoming-webhook
//! JSON `{"text": ...}`, which Mattermost, Rocket.Chat, Microsoft Teams workflows and most
//! chat tools accept too.
//!
//! A webhook URL is a credential (whoever has it can post to the channel): it is kept in a
//! [`WebhookUrl`] whose `Debug` and `Display` show only the scheme and host, and no error
//! message ever contains its path or query.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use super::{Alert, Notifier, NotifyError};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a whole POST may take: an alert must not hold a Lambda invocation for long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A webhook URL; shown as `https://hooks.slack.com/…` so its secret part never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(reqwest::Url);

/// Why text is not a usable webhook URL (the message never repeats the URL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the alert webhook URL is not usable: {0}")]
pub struct InvalidWebhookUrl(&'static str);

impl WebhookUrl {
    /// An `https://` (or, for tests and private networks, `http://`) URL with a host.
    pub fn parse(text: &str) -> Result<Self, InvalidWebhookUrl> {
        let url = reqwest::Url::parse(text.trim())
            .map_err(|_| InvalidWebhookUrl("not a URL (expected https://host/path)"))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(InvalidWebhookUrl(
                "only https:// (or http://) URLs are supported",
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(InvalidWebhookUrl("the URL names no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidWebhookUrl(
                "credentials in the URL are not supported; put the token in the path as chat services do",
            ));
        }
        Ok(WebhookUrl(url))
    }

    /// `scheme://host[:port]`: what may be shown.
    pub fn origin(&self) -> String {
        self.0.origin().ascii_serialization()
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/…", self.origin())
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/…", self.origin())
    }
}

/// Posts each alert to a webhook. A non-2xx answer, a timeout or a refused connection is an
/// error (with the status and the start of the answer, never the URL's secret part).
#[derive(Debug, Clone)]
pub struct WebhookNotifier {
    client: reqwest::Client,
    url: WebhookUrl,
    format: super::WebhookFormat,
}

impl WebhookNotifier {
    /// A notifier posting to `url`, with short timeouts and no redirects (a redirect would
    /// resend the alert somewhere the operator did not configure).
    pub fn new(url: WebhookUrl) -> Result<Self, NotifyError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pgkeep/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| fail(&url, format!("cannot build the HTTP client: {e}")))?;
        Ok(WebhookNotifier {
            client,
            url,
            format: super::WebhookFormat::Slack,
        })
    }

    /// The same notifier posting bodies in `format` (Slack's by default).
    pub fn with_format(mut self, format: super::WebhookFormat) -> Self {
        self.format = format;
        self
    }

    /// POSTs `body` as JSON; a non-2xx answer is an error.
    pub(crate) async fn post(&self, url: reqwest::Url, body: Vec<u8>) -> Result<(), NotifyError> {
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| fail(&self.url, describe(&e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        Err(fail(
            &self.url,
            format!(
                "the webhook answered {status}{}",
                if text.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", super::redact(text.trim()))
                }
            ),
        ))
    }

    /// The configured URL with `suffix` appended to its path (`/start`, `/fail`).
    pub(crate) fn url_with(&self, suffix: &str) -> reqwest::Url {
        let mut url = self.url.0.clone();
        let path = format!("{}{suffix}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }
}

fn fail(url: &WebhookUrl, message: String) -> NotifyError {
    NotifyError {
        channel: format!("webhook {url}"),
        message,
    }
}

/// What went wrong with a request, without the URL (reqwest's `Display` includes it).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_redirect() {
        "was redirected (redirects are not followed)"
    } else {
        "failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        format!("the request {what}")
    } else {
        format!("the request {what}: {}", super::redact(&cause))
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn notify(&self, alert: &Alert) -> Result<(), NotifyError> {
        let body =
            serde_json::to_vec(&alert.webhook_body(self.format)).expect("JSON values serialize");
        self.post(self.url.0.clone(), body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertKind;
    use chrono::Utc;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    /// One request as the test server saw it.
    struct Received {
        request_line: String,
        content_type: Option<String>,
        body: String,
    }

    /// A one-request HTTP server on 127.0.0.1 answering `status`; the request comes back on
    /// the channel.
    fn server(status: &'static str) -> (String, mpsc::Receiver<Received>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/services/T000/B000/s3cr3tToken",
            listener.local_addr().unwrap()
        );
        let (tx, rx) = mpsc::channel();
        // Anything that is not an HTTP request (a TLS handshake) just ends the thread.
        std::thread::spawn(move || -> Option<()> {
            let (stream, _) = listener.accept().ok()?;
            let mut reader = BufReader::new(stream.try_clone().ok()?);
            let mut request_line = String::new();
            reader.read_line(&mut request_line).ok()?;
            let mut length = 0;
            let mut content_type = None;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).ok()?;
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':')?;
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().ok()?,
                    "content-type" => content_type = Some(value.trim().to_owned()),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).ok()?;
            let answer = "no such channel";
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            )
            .ok()?;
            tx.send(Received {
                request_line: request_line.trim_end().to_owned(),
                content_type,
                body: String::from_utf8(body).ok()?,
            })
            .ok()
        });
        (url, rx)
    }

    fn alert() -> Alert {
        Alert::new(
            AlertKind::BackupFailed,
            "shop",
            Some("20261124T030000000Z-9f3a1c2b".parse().unwrap()),
            "could not connect to postgresql://backup:hunter2@db:5432/shop <refused>",
            Utc::now(),
        )
    }

    #[tokio::test]
    async fn posts_slack_json_without_secrets() {
        let (url, rx) = server("200 OK");
        let notifier = WebhookNotifier::new(WebhookUrl::parse(&url).unwrap()).unwrap();
        notifier.notify(&alert()).await.unwrap();
        let got = rx.recv().unwrap();
        assert_eq!(
            got.request_line,
            "POST /services/T000/B000/s3cr3tToken HTTP/1.1"
        );
        assert_eq!(got.content_type.as_deref(), Some("application/json"));
        let body: serde_json::Value = serde_json::from_str(&got.body).unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(text.contains("database: shop"), "{text}");
        assert!(text.contains("20261124T030000000Z-9f3a1c2b"), "{text}");
        assert!(text.contains("&lt;refused&gt;"), "Slack escaping: {text}");
        assert!(!got.body.contains("hunter2"), "{}", got.body);
    }

    #[tokio::test]
    async fn a_non_2xx_answer_is_an_error_that_hides_the_token() {
        let (url, rx) = server("404 Not Found");
        let notifier = WebhookNotifier::new(WebhookUrl::parse(&url).unwrap()).unwrap();
        let err = notifier.notify(&alert()).await.unwrap_err().to_string();
        rx.recv().unwrap();
        assert!(err.contains("404"), "{err}");
        assert!(err.contains("no such channel"), "{err}");
        assert!(!err.contains("s3cr3tToken"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_webhook_is_an_error_that_hides_the_token() {
        // A port that was free a moment ago: nothing listens there.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = WebhookUrl::parse(&format!("http://127.0.0.1:{port}/hook/s3cr3tToken")).unwrap();
        let err = WebhookNotifier::new(url)
            .unwrap()
            .notify(&alert())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("could not connect"), "{err}");
        assert!(!err.contains("s3cr3tToken"), "{err}");
    }

    #[tokio::test]
    async fn https_is_spoken_and_a_failed_handshake_is_an_error() {
        // The test server speaks plain HTTP: the TLS handshake fails (rather than the client
        // panicking for want of a TLS provider, or falling back to plain text).
        let (url, _rx) = server("200 OK");
        let url = WebhookUrl::parse(&url.replace("http://", "https://")).unwrap();
        let err = WebhookNotifier::new(url)
            .unwrap()
            .notify(&alert())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("webhook https://127.0.0.1"), "{err}");
        assert!(!err.contains("s3cr3tToken"), "{err}");
    }

    #[test]
    fn urls_are_checked_and_never_shown_whole() {
        let url = WebhookUrl::parse("https://hooks.slack.com/services/T0/B0/s3cr3t").unwrap();
        assert_eq!(format!("{url}"), "https://hooks.slack.com/…");
        assert_eq!(format!("{url:?}"), "https://hooks.slack.com/…");
        for bad in ["hooks.slack.com/x", "ftp://h/x", "https://user:pw@h/x", ""] {
            let err = WebhookUrl::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("pw"), "{err}");
        }
    }
}
