//! Alerts: a failed dump, a failed verification or a stale database is told to someone.
//!
//! What an alert says is composed here ([`Alert`], its text, JSON and webhook renderings); how
//! it travels is a [`Notifier`]: [`sns::SnsNotifier`], [`webhook::WebhookNotifier`],
//! [`LogNotifier`], a recorder for tests (`testing::RecordingNotifier`), and [`Notifiers`] to
//! send to several.
//! Every rendering passes through [`redact`], so a database URL with a password or a
//! `password=` setting that ended up in an error message never leaves in an alert.

use std::fmt::Write as _;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{format_time, BackupId, BackupRecord};
use crate::ops::health::DatabaseHealth;

pub mod heartbeat;
pub mod sns;
pub mod webhook;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A dump failed (or was abandoned).
    BackupFailed,
    /// A test restore did not match the manifest or could not read the backup.
    VerificationFailed,
    /// The newest good backup is older than the limit, or there is none.
    Stale,
    /// A restore asked for through the status API failed or was refused (it runs
    /// asynchronously, so nobody would hear of it otherwise).
    RestoreFailed,
    /// A dump completed (a notice that proves life; sent only where selected).
    BackupOk,
    /// A backup was verified.
    VerificationOk,
    /// A restore asked for through the status API succeeded.
    RestoreOk,
}

/// The events each channel gets unless told otherwise: every failure and staleness.
pub const DEFAULT_EVENTS: &[AlertKind] = &[
    AlertKind::BackupFailed,
    AlertKind::VerificationFailed,
    AlertKind::RestoreFailed,
    AlertKind::Stale,
];

impl AlertKind {
    /// The stable name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BackupFailed => "backup_failed",
            AlertKind::VerificationFailed => "verification_failed",
            AlertKind::Stale => "stale",
            AlertKind::RestoreFailed => "restore_failed",
            AlertKind::BackupOk => "backup_ok",
            AlertKind::VerificationOk => "verification_ok",
            AlertKind::RestoreOk => "restore_ok",
        }
    }

    /// Every event, for validation and help.
    pub const ALL: &'static [AlertKind] = &[
        AlertKind::BackupOk,
        AlertKind::BackupFailed,
        AlertKind::VerificationOk,
        AlertKind::VerificationFailed,
        AlertKind::RestoreOk,
        AlertKind::RestoreFailed,
        AlertKind::Stale,
    ];

    /// Good news rather than a problem.
    pub fn is_ok(self) -> bool {
        matches!(
            self,
            AlertKind::BackupOk | AlertKind::VerificationOk | AlertKind::RestoreOk
        )
    }

    /// A comma-separated list of event names (`backup_failed,stale`); `all` for every one,
    /// `none` for none.
    pub fn parse_list(text: &str) -> Result<Vec<AlertKind>, String> {
        match text.trim() {
            "all" => return Ok(Self::ALL.to_vec()),
            "none" | "" => return Ok(Vec::new()),
            _ => {}
        }
        text.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|k| k.as_str() == t)
                    .ok_or_else(|| {
                        format!(
                            "unknown event {t:?}; expected a comma-separated list of: {}, or all, or none",
                            Self::ALL
                                .iter()
                                .map(|k| k.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })
            })
            .collect()
    }
}

/// One alert: which database, which backup, why, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// What went wrong.
    pub kind: AlertKind,
    /// The database concerned.
    pub database: String,
    /// The backup concerned, when there is one.
    pub backup_id: Option<BackupId>,
    /// Why, for a person to act on (secrets redacted).
    pub reason: String,
    /// When it was detected.
    pub at: DateTime<Utc>,
}

impl Alert {
    /// An alert with `reason` redacted.
    pub fn new(
        kind: AlertKind,
        database: &str,
        backup_id: Option<BackupId>,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Self {
        Alert {
            kind,
            database: database.to_owned(),
            backup_id,
            reason: redact(reason),
            at,
        }
    }

    /// A failed dump, from its `failed` record.
    pub fn backup_failed(record: &BackupRecord, at: DateTime<Utc>) -> Self {
        Alert::new(
            AlertKind::BackupFailed,
            &record.database,
            Some(record.id.clone()),
            record.error.as_deref().unwrap_or("no reason recorded"),
            at,
        )
    }

    /// A failed verification of `record`, for `reason`.
    pub fn verification_failed(record: &BackupRecord, reason: &str, at: DateTime<Utc>) -> Self {
        Alert::about(AlertKind::VerificationFailed, record, reason, at)
    }

    /// A `kind` notice about `record`'s backup.
    pub fn about(kind: AlertKind, record: &BackupRecord, reason: &str, at: DateTime<Utc>) -> Self {
        Alert::new(kind, &record.database, Some(record.id.clone()), reason, at)
    }

    /// A stale database: `Some` when its newest good backup is missing or older than the
    /// limit its health was assessed with.
    pub fn stale(health: &DatabaseHealth, at: DateTime<Utc>) -> Option<Self> {
        let good = health.status.latest_good.as_ref();
        let stale = good.is_none_or(|g| g.age_seconds > health.max_age_seconds);
        stale.then(|| {
            Alert::new(
                AlertKind::Stale,
                &health.status.database,
                good.map(|g| g.id.clone()),
                &health.problems.join("; "),
                at,
            )
        })
    }

    /// One line, ASCII, at most 100 characters: an SNS subject or a notification title.
    pub fn subject(&self) -> String {
        let what = match self.kind {
            AlertKind::BackupFailed => format!("backup of {} failed", self.database),
            AlertKind::VerificationFailed => format!("verification of {} failed", self.database),
            AlertKind::Stale => format!("{} has no recent good backup", self.database),
            AlertKind::RestoreFailed => format!("restore into {} failed", self.database),
            AlertKind::BackupOk => format!("backup of {} completed", self.database),
            AlertKind::VerificationOk => format!("backup of {} verified", self.database),
            AlertKind::RestoreOk => format!("restore into {} succeeded", self.database),
        };
        let mut subject: String = format!("pgkeep: {what}")
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if subject.len() > 100 {
            subject.truncate(97);
            subject.push_str("...");
        }
        subject
    }

    /// The message for people: the subject, then database, backup, reason and time.
    pub fn text(&self) -> String {
        let mut out = self.subject();
        let _ = write!(out, "\ndatabase: {}", self.database);
        if let Some(id) = &self.backup_id {
            let _ = write!(out, "\nbackup: {id}");
        }
        let _ = write!(out, "\nreason: {}", self.reason);
        let _ = write!(out, "\ntime: {}", format_time(self.at));
        redact(&out)
    }

    /// The structured message (an SNS message body): the fields of [`Alert`] plus `subject`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": self.kind.as_str(),
            "database": self.database,
            "backup_id": self.backup_id,
            "reason": redact(&self.reason),
            "at": format_time(self.at),
            "subject": self.subject(),
        })
    }

    /// The body POSTed to a webhook in `format`.
    pub fn webhook_body(&self, format: WebhookFormat) -> serde_json::Value {
        match format {
            WebhookFormat::Slack => self.webhook_payload(),
            WebhookFormat::Teams => self.teams_payload(),
        }
    }

    /// A Microsoft Teams message: an Adaptive Card in the `message` envelope that Teams'
    /// incoming webhooks and Workflows accept.
    pub fn teams_payload(&self) -> serde_json::Value {
        let mut facts = vec![serde_json::json!({ "title": "database", "value": self.database })];
        if let Some(id) = &self.backup_id {
            facts.push(serde_json::json!({ "title": "backup", "value": id }));
        }
        facts.push(serde_json::json!({ "title": "reason", "value": redact(&self.reason) }));
        facts.push(serde_json::json!({ "title": "time", "value": format_time(self.at) }));
        serde_json::json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            "text": self.subject(),
                            "weight": "Bolder",
                            "wrap": true,
                            "color": if self.kind.is_ok() { "Good" } else { "Attention" },
                        },
                        { "type": "FactSet", "facts": facts },
                    ],
                },
            }],
        })
    }

    /// The body POSTed to a webhook: Slack's `{"text": ...}`, with `&`, `<` and `>` escaped as
    /// Slack requires (other services show the text as is).
    pub fn webhook_payload(&self) -> serde_json::Value {
        let text = self
            .text()
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        serde_json::json!({ "text": text })
    }
}

/// The shape of a webhook's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebhookFormat {
    /// `{"text": ...}`: Slack, Mattermost, Rocket.Chat, most chat services.
    #[default]
    Slack,
    /// An Adaptive Card message: Microsoft Teams.
    Teams,
}

impl std::str::FromStr for WebhookFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "slack" => Ok(WebhookFormat::Slack),
            "teams" => Ok(WebhookFormat::Teams),
            other => Err(format!(
                "unknown webhook format {other:?}; expected slack or teams"
            )),
        }
    }
}

/// What a run is about to do, for notifiers that watch runs start (a heartbeat's `/start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// A dump.
    Backup,
    /// A verification.
    Verification,
}

/// Why an alert could not be delivered.
#[derive(Debug, thiserror::Error)]
#[error("could not send the alert through {channel}: {message}")]
pub struct NotifyError {
    /// The channel (`sns`, `webhook`, ...).
    pub channel: String,
    /// What went wrong.
    pub message: String,
}

/// Delivers alerts somewhere; a failure is returned, never swallowed, so the caller can fail
/// loudly (an alert nobody receives is the silent failure alerts exist to prevent).
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Sends one alert.
    async fn notify(&self, alert: &Alert) -> Result<(), NotifyError>;

    /// A run of `database` starts (only a heartbeat cares; the others ignore it).
    async fn started(&self, _run: RunKind, _database: &str) -> Result<(), NotifyError> {
        Ok(())
    }
}

/// Sends a notice about a run (a start, a success, a failure the run itself records), logging
/// a delivery failure instead of returning it: the run matters more than its notice.
pub async fn send_logged(notifier: &dyn Notifier, alert: &Alert) {
    if let Err(e) = notifier.notify(alert).await {
        tracing::warn!(alert = alert.kind.as_str(), database = %alert.database, error = %e, "could not send the notice");
    }
}

/// [`Notifier::started`], logging a delivery failure as [`send_logged`] does.
pub async fn started_logged(notifier: &dyn Notifier, run: RunKind, database: &str) {
    if let Err(e) = notifier.started(run, database).await {
        tracing::warn!(database, error = %e, "could not send the start notice");
    }
}

/// Passes on only the events selected for one channel (`PGKEEP_ALERT_SNS_EVENTS`,
/// `PGKEEP_ALERT_WEBHOOK_EVENTS`).
pub struct Selected {
    /// The channel.
    pub inner: Arc<dyn Notifier>,
    /// The events it gets.
    pub events: Vec<AlertKind>,
}

#[async_trait]
impl Notifier for Selected {
    async fn notify(&self, alert: &Alert) -> Result<(), NotifyError> {
        if self.events.contains(&alert.kind) {
            self.inner.notify(alert).await
        } else {
            Ok(())
        }
    }

    async fn started(&self, run: RunKind, database: &str) -> Result<(), NotifyError> {
        self.inner.started(run, database).await
    }
}

/// Writes alerts to the log (at error level): the fallback when nothing else is configured, and
/// what Lambda's log-based alarms can match.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogNotifier;

#[async_trait]
impl Notifier for LogNotifier {
    async fn notify(&self, alert: &Alert) -> Result<(), NotifyError> {
        if alert.kind.is_ok() {
            tracing::info!(alert = alert.kind.as_str(), database = %alert.database, backup = alert.backup_id.as_ref().map(|i| i.to_string()), "{}", alert.subject());
            return Ok(());
        }
        tracing::error!(
            alert = alert.kind.as_str(),
            database = %alert.database,
            backup = alert.backup_id.as_ref().map(|i| i.to_string()),
            reason = %redact(&alert.reason),
            "{}",
            alert.subject()
        );
        Ok(())
    }
}

/// Sends every alert to each of several notifiers (SNS and a webhook, say). All are tried even
/// when one fails; the failures are returned together.
#[derive(Clone, Default)]
pub struct Notifiers(pub Vec<Arc<dyn Notifier>>);

#[async_trait]
impl Notifier for Notifiers {
    async fn notify(&self, alert: &Alert) -> Result<(), NotifyError> {
        let mut failures = Vec::new();
        for n in &self.0 {
            if let Err(e) = n.notify(alert).await {
                failures.push(e);
            }
        }
        joined(failures)
    }

    async fn started(&self, run: RunKind, database: &str) -> Result<(), NotifyError> {
        let mut failures = Vec::new();
        for n in &self.0 {
            if let Err(e) = n.started(run, database).await {
                failures.push(e);
            }
        }
        joined(failures)
    }
}

/// Several delivery failures as one.
fn joined(mut failures: Vec<NotifyError>) -> Result<(), NotifyError> {
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        _ => Err(NotifyError {
            channel: failures
                .iter()
                .map(|f| f.channel.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            message: failures
                .iter()
                .map(|f| f.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        }),
    }
}

/// Setting names whose values are secrets (matched at the end of a `name=value` key, any case).
const SECRET_NAMES: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "secret_access_key",
    "api_key",
    "apikey",
];

/// Removes secrets from text: the password of any `scheme://user:password@host` URL and the
/// value of `password=...`-like settings (`PGPASSWORD=`, `sslpassword=`, libpq's
/// `password='...'`, `?password=` query parameters). Idempotent.
pub fn redact(text: &str) -> String {
    redact_settings(&redact_url_passwords(text))
}

const MASK: &str = "***";

fn redact_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (before, after) = rest.split_at(pos + 3);
        out.push_str(before);
        // The URL runs to the next whitespace or quote; its userinfo ends at the last `@`
        // (an unencoded `@` or `/` in a password then cannot hide the rest of it).
        let end = after
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(after.len());
        let url = &after[..end];
        match url.rfind('@') {
            Some(at) => {
                let userinfo = &url[..at];
                match userinfo.find(':') {
                    Some(colon) if &userinfo[colon + 1..] != MASK => {
                        out.push_str(&userinfo[..colon + 1]);
                        out.push_str(MASK);
                    }
                    _ => out.push_str(userinfo),
                }
                out.push_str(&url[at..]);
            }
            None => out.push_str(url),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn redact_settings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let (before, after) = rest.split_at(eq);
        let name_start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .map_or(0, |i| i + 1);
        let name = before[name_start..].to_ascii_lowercase();
        out.push_str(before);
        out.push('=');
        let value = &after[1..];
        if !SECRET_NAMES.iter().any(|s| name.ends_with(s)) {
            rest = value;
            continue;
        }
        let value_len = match value.chars().next() {
            Some(q @ ('\'' | '"')) => {
                // A quoted value (libpq allows spaces inside, with backslash escapes).
                let mut escaped = false;
                let mut len = value.len();
                for (i, c) in value.char_indices().skip(1) {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == q {
                        len = i + 1;
                        break;
                    }
                }
                len
            }
            _ => value
                .find(|c: char| c.is_whitespace() || matches!(c, '&' | ',' | ';' | '"' | '\''))
                .unwrap_or(value.len()),
        };
        if value_len > 0 {
            out.push_str(MASK);
        }
        rest = &value[value_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackupKind, BackupStatus, Compression};
    use crate::ops::health::{assess, HealthPolicy};
    use crate::testing::RecordingNotifier;
    use chrono::{TimeDelta, TimeZone};

    const SECRET: &str = "s3cr3t";

    #[test]
    fn secrets_are_redacted_wherever_they_hide() {
        let cases = [
            (
                "connect postgresql://backup:s3cr3t@db.internal:5432/shop failed",
                "connect postgresql://backup:***@db.internal:5432/shop failed",
            ),
            (
                "postgres://u:p@s3cr3t/x@host/db and then",
                "postgres://u:***@host/db and then",
            ),
            ("PGPASSWORD=s3cr3t pg_dump", "PGPASSWORD=*** pg_dump"),
            (
                "host=db password='s3 cr3t\\' x' dbname=shop",
                "host=db password=*** dbname=shop",
            ),
            (
                "postgresql://db/shop?user=u&password=s3cr3t&sslmode=require",
                "postgresql://db/shop?user=u&password=***&sslmode=require",
            ),
            ("sslpassword=\"s3cr3t\", next", "sslpassword=***, next"),
            ("aws_secret_access_key=s3cr3t", "aws_secret_access_key=***"),
            // Nothing secret: unchanged.
            (
                "pg_dump: error: connection to server at \"db\" (10.0.0.1), port 5432 failed: FATAL: password authentication failed for user \"backup\"",
                "pg_dump: error: connection to server at \"db\" (10.0.0.1), port 5432 failed: FATAL: password authentication failed for user \"backup\"",
            ),
            ("postgresql://backup@db/shop a=b", "postgresql://backup@db/shop a=b"),
            ("s3://bucket/key", "s3://bucket/key"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input), expected, "{input}");
            assert_eq!(redact(expected), expected, "idempotent: {expected}");
        }
    }

    fn failed_record() -> BackupRecord {
        let t = Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap();
        let mut r = BackupRecord::start(
            "20261124T030000000Z-9f3a1c2b".parse().unwrap(),
            "shop",
            BackupKind::Scheduled,
            Compression::Zstd,
        );
        r.created_at = t;
        r.status = BackupStatus::Failed;
        r.error = Some(format!(
            "could not connect to postgresql://backup:{SECRET}@db:5432/shop <timeout> & gave up (password={SECRET})"
        ));
        r
    }

    #[test]
    fn renderings_name_database_backup_and_reason_but_no_secret() {
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 3, 5, 0).unwrap();
        let alert = Alert::backup_failed(&failed_record(), at);
        assert_eq!(alert.kind, AlertKind::BackupFailed);
        assert_eq!(alert.subject(), "pgkeep: backup of shop failed");
        assert_eq!(
            alert.text(),
            "pgkeep: backup of shop failed\n\
             database: shop\n\
             backup: 20261124T030000000Z-9f3a1c2b\n\
             reason: could not connect to postgresql://backup:***@db:5432/shop <timeout> & gave up (password=***\n\
             time: 2026-11-24T03:05:00.000Z"
        );
        let json = alert.to_json();
        assert_eq!(json["kind"], "backup_failed");
        assert_eq!(json["database"], "shop");
        assert_eq!(json["backup_id"], "20261124T030000000Z-9f3a1c2b");
        assert_eq!(json["at"], "2026-11-24T03:05:00.000Z");
        let hook = alert.webhook_payload();
        assert_eq!(hook.as_object().unwrap().len(), 1, "{hook}");
        let text = hook["text"].as_str().unwrap();
        assert!(text.contains("&lt;timeout&gt; &amp; gave up"), "{text}");

        // Even an alert built by hand with a secret in it renders none.
        let mut raw = alert.clone();
        raw.reason = failed_record().error.unwrap();
        for rendering in [
            raw.text(),
            raw.to_json().to_string(),
            raw.webhook_payload().to_string(),
            raw.subject(),
            serde_json::to_string(&alert).unwrap(),
        ] {
            assert!(!rendering.contains(SECRET), "{rendering}");
        }
    }

    #[test]
    fn subjects_are_short_ascii_lines() {
        let at = Utc::now();
        let long = format!("db\n{}é", "x".repeat(200));
        let s = Alert::new(AlertKind::Stale, &long, None, "r", at).subject();
        assert!(s.len() <= 100 && s.is_ascii() && !s.contains('\n'), "{s}");
        assert!(s.ends_with("..."));
    }

    #[test]
    fn stale_alerts_come_from_health() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        let mut old = failed_record();
        old.status = BackupStatus::Completed;
        old.error = None;
        old.created_at = now - TimeDelta::hours(30);
        let mut fresh = old.clone();
        fresh.database = "crm".into();
        fresh.created_at = now - TimeDelta::hours(1);
        let health = assess(&[old.clone(), fresh], now, &HealthPolicy::default());
        let alerts: Vec<Alert> = health.iter().filter_map(|h| Alert::stale(h, now)).collect();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, AlertKind::Stale);
        assert_eq!(alerts[0].database, "shop");
        assert_eq!(alerts[0].backup_id.as_ref(), Some(&old.id));
        assert!(alerts[0].reason.contains("more than the limit of 1d1h"));
    }

    struct Broken(&'static str);

    #[async_trait]
    impl Notifier for Broken {
        async fn notify(&self, _: &Alert) -> Result<(), NotifyError> {
            Err(NotifyError {
                channel: self.0.into(),
                message: "unreachable".into(),
            })
        }
    }

    #[tokio::test]
    async fn notifiers_record_log_and_fan_out() {
        let alert = Alert::backup_failed(&failed_record(), Utc::now());
        let recorder = Arc::new(RecordingNotifier::new());
        let all = Notifiers(vec![
            Arc::new(LogNotifier),
            recorder.clone(),
            Arc::new(Broken("webhook")),
        ]);
        let err = all.notify(&alert).await.unwrap_err();
        assert_eq!(err.channel, "webhook");
        // The failing channel did not stop the others.
        assert_eq!(recorder.alerts(), vec![alert.clone()]);
        let two = Notifiers(vec![Arc::new(Broken("sns")), Arc::new(Broken("webhook"))]);
        let err = two.notify(&alert).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "could not send the alert through sns, webhook: unreachable; unreachable"
        );
    }
}
