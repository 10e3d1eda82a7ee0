//! What starts a dump in Lambda, and how a delivery maps to exactly one backup.
//!
//! Three shapes arrive at the dump function: an EventBridge (rule or Scheduler) event, a direct
//! console invocation `{"database": "...", "kind": "manual"}`, and an asynchronous invocation
//! from the status API that carries a pre-allocated backup id. At-least-once delivery means
//! the same event can arrive twice: the backup id of an event is derived from the event's id
//! and time, so the second delivery finds the record of the first and starts nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{BackupId, BackupKind};

/// A request to back up one database, however it arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DumpTrigger {
    /// The database (a name configured for the deployment).
    pub database: String,
    /// Why the backup is taken.
    pub kind: BackupKind,
    /// The id to use: derived from the event, allocated by the API, or `None` for a fresh one.
    pub backup_id: Option<BackupId>,
    /// Who asked (for the audit trail): `schedule`, an IAM principal, a user.
    #[serde(default)]
    pub requested_by: Option<String>,
}

/// Why an event is not a dump request.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// The JSON does not have any accepted shape.
    #[error("unrecognised dump event: {0}; expected an EventBridge event with detail.database, or {{\"database\": \"...\", \"kind\": \"manual\"}}")]
    Shape(String),
    /// A field has a bad value.
    #[error("invalid dump event: {0}")]
    Field(String),
}

#[derive(Deserialize)]
struct EventBridgeEvent {
    id: String,
    time: DateTime<Utc>,
    source: String,
    #[serde(default)]
    detail: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectInvocation {
    database: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    backup_id: Option<String>,
    #[serde(default)]
    requested_by: Option<String>,
}

/// The backup id for an event: its time to the millisecond, then 8 hex digits of SHA-256 of
/// the event id, so every delivery of one event names the same backup.
pub fn backup_id_for_event(time: DateTime<Utc>, event_id: &str) -> BackupId {
    let digest = Sha256::digest(event_id.as_bytes());
    format!(
        "{}-{}",
        time.format("%Y%m%dT%H%M%S%3fZ"),
        hex::encode(&digest[..4])
    )
    .parse()
    .expect("a formatted id parses")
}

impl DumpTrigger {
    /// Reads any accepted event shape.
    pub fn from_event(event: &serde_json::Value) -> Result<Self, TriggerError> {
        if event.get("source").is_some() && event.get("detail-type").is_some() {
            let e: EventBridgeEvent = serde_json::from_value(event.clone())
                .map_err(|err| TriggerError::Shape(err.to_string()))?;
            let database = e
                .detail
                .get("database")
                .and_then(|d| d.as_str())
                .filter(|d| !d.is_empty())
                .ok_or_else(|| {
                    TriggerError::Field(format!(
                        "the {} event {} has no detail.database",
                        e.source, e.id
                    ))
                })?;
            return Ok(DumpTrigger {
                database: database.to_owned(),
                kind: BackupKind::Scheduled,
                backup_id: Some(backup_id_for_event(e.time, &e.id)),
                requested_by: Some("schedule".into()),
            });
        }
        let d: DirectInvocation = serde_json::from_value(event.clone())
            .map_err(|err| TriggerError::Shape(err.to_string()))?;
        if d.database.is_empty() {
            return Err(TriggerError::Field("database is empty".into()));
        }
        let kind = match d.kind.as_deref() {
            None => BackupKind::Manual,
            Some(k) => k.parse().map_err(TriggerError::Field)?,
        };
        let backup_id = d
            .backup_id
            .map(|id| {
                id.parse()
                    .map_err(|e: crate::model::InvalidBackupId| TriggerError::Field(e.to_string()))
            })
            .transpose()?;
        Ok(DumpTrigger {
            database: d.database,
            kind,
            backup_id,
            requested_by: d.requested_by,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scheduled_events_name_the_same_backup_on_every_delivery() {
        let event = json!({
            "version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602",
            "detail-type": "Scheduled Event", "source": "aws.scheduler",
            "account": "123456789012", "time": "2026-11-24T02:00:00Z", "region": "eu-west-1",
            "resources": [], "detail": {"database": "shop"}
        });
        let a = DumpTrigger::from_event(&event).unwrap();
        let b = DumpTrigger::from_event(&event).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.kind, BackupKind::Scheduled);
        assert!(a
            .backup_id
            .as_ref()
            .unwrap()
            .as_str()
            .starts_with("20261124T020000000Z-"));
        let mut other = event.clone();
        other["id"] = json!("another-event");
        assert_ne!(
            DumpTrigger::from_event(&other).unwrap().backup_id,
            a.backup_id
        );
    }

    #[test]
    fn direct_invocations_and_api_calls() {
        let t = DumpTrigger::from_event(&json!({"database": "shop", "kind": "manual"})).unwrap();
        assert_eq!(
            (t.database.as_str(), t.kind, t.backup_id),
            ("shop", BackupKind::Manual, None)
        );
        let t = DumpTrigger::from_event(&json!({"database": "shop", "backup_id": "20261124T020000000Z-0a1b2c3d", "requested_by": "alice"})).unwrap();
        assert_eq!(
            t.backup_id.unwrap().as_str(),
            "20261124T020000000Z-0a1b2c3d"
        );
    }

    #[test]
    fn malformed_events_are_refused_clearly() {
        for bad in [
            json!({}),
            json!({"database": ""}),
            json!({"database": "shop", "kind": "weekly"}),
            json!({"database": "shop", "backup_id": "../x"}),
            json!({"database": "shop", "surprise": 1}),
            json!({"source": "aws.events", "detail-type": "Scheduled Event", "id": "x", "time": "2026-11-24T02:00:00Z", "detail": {}}),
        ] {
            assert!(DumpTrigger::from_event(&bad).is_err(), "{bad}");
        }
    }
}
