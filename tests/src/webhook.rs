//! A Slack-compatible webhook double on loopback: it records the body of each POST, so the
//! functions' alert tests can read back what the real webhook notifier sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;

/// What the test HTTP server received: one request body per POST.
pub struct Webhook {
    /// The URL to configure (`PGKEEP_ALERT_WEBHOOK_URL`).
    pub url: String,
    /// Each POST's body, in order.
    pub posts: mpsc::Receiver<String>,
}

impl Webhook {
    /// A webhook on 127.0.0.1 that records each POST's body before answering 200, so a POST
    /// whose answer the client has seen is always recorded.
    pub fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/services/T0/B0/webhookToken",
            listener.local_addr().unwrap()
        );
        let (tx, posts) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse().unwrap();
                        }
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                if tx.send(String::from_utf8(body).unwrap()).is_err() {
                    return;
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            }
        });
        Webhook { url, posts }
    }
}
