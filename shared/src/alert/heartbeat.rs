//! A dead man's switch: an outside service (healthchecks.io, or anything with its convention)
//! told when a backup or verification starts (`<url>/start`), succeeds (`<url>`) and fails
//! (`<url>/fail`), so it notices when pgkeep itself stops running, which no alert from pgkeep
//! can report. A run killed mid-way gets its `/fail` when the reaper settles it (the next dump
//! or prune alerts `backup_failed` for it), or at once from the CLI's signal path.

use async_trait::async_trait;

use super::webhook::{WebhookNotifier, WebhookUrl};
use super::{Alert, AlertKind, Notifier, NotifyError, RunKind};

/// Pings the heartbeat URL; the alert (as JSON) is the body of success and failure pings.
#[derive(Debug, Clone)]
pub struct HeartbeatNotifier {
    http: WebhookNotifier,
}

impl HeartbeatNotifier {
    /// A heartbeat pinging `url`.
    pub fn new(url: WebhookUrl) -> Result<Self, NotifyError> {
        Ok(HeartbeatNotifier {
            http: WebhookNotifier::new(url)?,
        })
    }
}

#[async_trait]
impl Notifier for HeartbeatNotifier {
    async fn notify(&self, alert: &Alert) -> Result<(), NotifyError> {
        let suffix = match alert.kind {
            AlertKind::BackupOk | AlertKind::VerificationOk => "",
            AlertKind::BackupFailed | AlertKind::VerificationFailed => "/fail",
            // Restores and staleness say nothing about whether pgkeep runs.
            AlertKind::RestoreOk | AlertKind::RestoreFailed | AlertKind::Stale => return Ok(()),
        };
        let body = serde_json::to_vec(&alert.to_json()).expect("JSON values serialize");
        self.http.post(self.http.url_with(suffix), body).await
    }

    async fn started(&self, run: RunKind, database: &str) -> Result<(), NotifyError> {
        let body = serde_json::to_vec(&serde_json::json!({
            "run": match run { RunKind::Backup => "backup", RunKind::Verification => "verification" },
            "database": database,
        }))
        .expect("JSON values serialize");
        self.http.post(self.http.url_with("/start"), body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Notifiers, Selected};
    use crate::testing::http::{recording_server, Request};
    use chrono::Utc;
    use std::sync::{Arc, Mutex};

    /// The requests seen, as `METHOD PATH` in order.
    fn requests(seen: &Mutex<Vec<Request>>) -> Vec<String> {
        let seen = seen.lock().unwrap();
        seen.iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    fn alert(kind: AlertKind) -> Alert {
        Alert::new(kind, "shop", None, "why", Utc::now())
    }

    #[tokio::test]
    async fn start_success_and_fail_pings_arrive_in_order() {
        let (url, seen) = recording_server("/ping/abc-123");
        let heartbeat = HeartbeatNotifier::new(WebhookUrl::parse(&url).unwrap()).unwrap();
        heartbeat.started(RunKind::Backup, "shop").await.unwrap();
        heartbeat.notify(&alert(AlertKind::BackupOk)).await.unwrap();
        heartbeat
            .started(RunKind::Verification, "shop")
            .await
            .unwrap();
        heartbeat
            .notify(&alert(AlertKind::VerificationFailed))
            .await
            .unwrap();
        heartbeat.started(RunKind::Backup, "shop").await.unwrap();
        // A backup killed mid-run: the reaper's backup_failed alert is the fail ping.
        heartbeat
            .notify(&alert(AlertKind::BackupFailed))
            .await
            .unwrap();
        // Neither restores nor staleness ping.
        heartbeat.notify(&alert(AlertKind::Stale)).await.unwrap();
        heartbeat
            .notify(&alert(AlertKind::RestoreFailed))
            .await
            .unwrap();
        assert_eq!(
            requests(&seen),
            [
                "POST /ping/abc-123/start",
                "POST /ping/abc-123",
                "POST /ping/abc-123/start",
                "POST /ping/abc-123/fail",
                "POST /ping/abc-123/start",
                "POST /ping/abc-123/fail",
            ]
        );
    }

    #[tokio::test]
    async fn each_channel_gets_only_its_selected_events() {
        let sns = Arc::new(crate::testing::RecordingNotifier::new());
        let webhook = Arc::new(crate::testing::RecordingNotifier::new());
        let all = Notifiers(vec![
            Arc::new(Selected {
                inner: sns.clone(),
                events: crate::alert::DEFAULT_EVENTS.to_vec(),
            }),
            Arc::new(Selected {
                inner: webhook.clone(),
                events: AlertKind::parse_list("backup_ok,backup_failed").unwrap(),
            }),
        ]);
        for kind in AlertKind::ALL {
            all.notify(&alert(*kind)).await.unwrap();
        }
        let kinds = |r: &crate::testing::RecordingNotifier| -> Vec<AlertKind> {
            r.notices().iter().map(|a| a.kind).collect()
        };
        assert_eq!(
            kinds(&sns),
            [
                AlertKind::BackupFailed,
                AlertKind::VerificationFailed,
                AlertKind::RestoreFailed,
                AlertKind::Stale
            ]
        );
        assert_eq!(
            kinds(&webhook),
            [AlertKind::BackupOk, AlertKind::BackupFailed]
        );
        assert_eq!(AlertKind::parse_list("all").unwrap(), AlertKind::ALL);
        assert!(AlertKind::parse_list("none").unwrap().is_empty());
        let err = AlertKind::parse_list("backup_ok,backup_done").unwrap_err();
        assert!(
            err.contains("backup_done") && err.contains("verification_ok"),
            "{err}"
        );
    }

    #[test]
    fn teams_and_slack_bodies_have_their_shapes() {
        let a = Alert::new(
            AlertKind::BackupFailed,
            "shop",
            None,
            "postgresql://u:hunter2@db/shop <refused>",
            Utc::now(),
        );
        let teams = a.webhook_body(crate::alert::WebhookFormat::Teams);
        assert_eq!(teams["type"], "message");
        let card = &teams["attachments"][0];
        assert_eq!(
            card["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["content"]["type"], "AdaptiveCard");
        assert_eq!(
            card["content"]["body"][0]["text"],
            "pgkeep: backup of shop failed"
        );
        assert!(!teams.to_string().contains("hunter2"));
        let slack = a.webhook_body(crate::alert::WebhookFormat::Slack);
        assert!(slack["text"].as_str().unwrap().contains("&lt;refused&gt;"));
        assert!(!slack.to_string().contains("hunter2"));
        assert_eq!("teams".parse(), Ok(crate::alert::WebhookFormat::Teams));
        assert!("email".parse::<crate::alert::WebhookFormat>().is_err());
    }
}
