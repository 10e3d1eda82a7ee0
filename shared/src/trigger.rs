//! What starts a dump, a verification or a restore in Lambda, and how a delivery maps to
//! exactly one backup.
//!
//! Three shapes arrive at the dump function: an EventBridge (rule or Scheduler) event, a direct
//! console invocation `{"database": "...", "kind": "manual"}` (optionally with `labels` and a
//! `selection`), and an asynchronous invocation from the status API that carries a
//! pre-allocated backup id. At-least-once delivery means
//! the same event can arrive twice: the backup id of an event is derived from the event's id
//! and time, so the second delivery finds the record of the first and starts nothing.
//!
//! A retry after a *failure* must take the backup, though: each request (an event, an API
//! call) names a fixed sequence of attempt ids ([`attempt_id`]); a delivery runs the first
//! attempt without a record, unless an earlier attempt is still running or succeeded.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::labels::Labels;
use crate::model::{BackupId, BackupKind, BackupRecord, BackupStatus, Compression};
use crate::selection::Selection;

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
    /// Labels for the backup's record.
    #[serde(default)]
    pub labels: Labels,
    /// What part of the database to back up; `None`: the database's configured selection
    /// (`PGKEEP_SELECTIONS`), else everything. When given, it replaces the configured
    /// one.
    #[serde(default)]
    pub selection: Option<Selection>,
    /// Back up the whole server `database` is on: every database there and the globals, as
    /// one run ([`crate::ops::server`]); `database` only names the connection.
    #[serde(default)]
    pub all_databases: bool,
    /// Parallel dump streams (`backup --jobs N`, 1-32); `None`: the database's `PGKEEP_JOBS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u32>,
}

/// An event's `jobs`: 1 to [`crate::ops::backup::MAX_JOBS`].
fn checked_jobs(jobs: Option<u32>) -> Result<Option<u32>, TriggerError> {
    match jobs {
        Some(n) if !(1..=crate::ops::backup::MAX_JOBS).contains(&n) => {
            Err(TriggerError::Field(format!(
                "jobs {n} is not between 1 and {}",
                crate::ops::backup::MAX_JOBS
            )))
        }
        other => Ok(other),
    }
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
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    selection: Option<Selection>,
    #[serde(default)]
    all_databases: bool,
    #[serde(default)]
    jobs: Option<u32>,
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

/// Most attempts one request gets: a redelivered or retried event whose attempts all failed
/// stops here rather than loop (Lambda retries an asynchronous invocation twice, Scheduler
/// three times, so this leaves room for both).
pub const MAX_ATTEMPTS: u32 = 8;

/// The id of attempt `n` (from 1) of the request whose first attempt is `first`. Attempt 1 is
/// `first` itself; a later one keeps its time (when the backup was asked for) and takes 8 hex
/// digits of SHA-256 of `first` and `n`, so every delivery of one request computes the same
/// sequence and finds the attempts already made.
pub fn attempt_id(first: &BackupId, n: u32) -> BackupId {
    if n <= 1 {
        return first.clone();
    }
    let digest = Sha256::digest(format!("{first}#attempt-{n}").as_bytes());
    let time = &first.as_str()[..19];
    format!("{time}-{}", hex::encode(&digest[..4]))
        .parse()
        .expect("a formatted id parses")
}

impl DumpTrigger {
    /// Whether this request came from a schedule (an EventBridge event), whose backups nobody
    /// waits for by id: when another run of the database holds the lease, that run is the one
    /// that counts.
    pub fn is_scheduled(&self) -> bool {
        self.kind == BackupKind::Scheduled && self.requested_by.as_deref() == Some("schedule")
    }

    /// Who asked, for the record: as the request says, else `console` (a direct invocation
    /// that named nobody, as the Lambda console's test events are).
    pub fn requester(&self) -> &str {
        self.requested_by.as_deref().unwrap_or("console")
    }

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
                labels: Labels::none(),
                selection: None,
                all_databases: e
                    .detail
                    .get("all_databases")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
                jobs: None,
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
        if let Some(selection) = &d.selection {
            if d.all_databases {
                return Err(TriggerError::Field(
                    "all_databases backs up whole databases; leave out selection".into(),
                ));
            }
            selection
                .validate()
                .map_err(|e| TriggerError::Field(e.to_string()))?;
        }
        Ok(DumpTrigger {
            database: d.database,
            kind,
            backup_id,
            requested_by: d.requested_by,
            labels: d.labels,
            selection: d.selection,
            all_databases: d.all_databases,
            jobs: checked_jobs(d.jobs)?,
        })
    }
}

impl DumpTrigger {
    /// The payload an asynchronous invocation of the dump function carries; reads back with
    /// [`DumpTrigger::from_event`].
    pub fn to_event(&self) -> serde_json::Value {
        let mut event = serde_json::json!({
            "database": self.database,
            "kind": self.kind.as_str(),
            "backup_id": self.backup_id,
            "requested_by": self.requested_by,
        });
        if !self.labels.is_empty() {
            event["labels"] = serde_json::json!(self.labels);
        }
        if let Some(selection) = &self.selection {
            event["selection"] = serde_json::json!(selection);
        }
        if self.all_databases {
            event["all_databases"] = serde_json::json!(true);
        }
        if let Some(jobs) = self.jobs {
            event["jobs"] = serde_json::json!(jobs);
        }
        event
    }

    /// The `failed` record of attempt `id` of this request when it ended before its run
    /// recorded anything (the dump could not be handed over, or could not start): the history
    /// shows the attempt and why, with the request's labels and selection.
    pub fn not_started_record(&self, id: &BackupId, reason: String) -> BackupRecord {
        let mut record =
            BackupRecord::start(id.clone(), &self.database, self.kind, Compression::Zstd);
        record.labels = self.labels.as_map().clone();
        record.requested_by = Some(self.requester().to_owned());
        if let Some(selection) = &self.selection {
            record.selection = selection.clone();
        }
        record.status = BackupStatus::Failed;
        record.completed_at = Some(record.created_at);
        record.error = Some(reason);
        record
    }
}

/// A request to prove a backup by restoring it into a scratch database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyTrigger {
    /// The backup; `None` verifies the newest completed backup not yet verified.
    pub backup_id: Option<BackupId>,
    /// Who asked (for the audit trail): `schedule`, `dump`, a user.
    pub requested_by: Option<String>,
    /// Parallel restore streams (1-32); `None`: the database's `PGKEEP_JOBS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u32>,
}

/// A request to restore a backup into a database on its own database's server, with the
/// CLI's confirmation rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreTrigger {
    /// The backup.
    pub backup_id: BackupId,
    /// The database to restore into; it must not exist unless `overwrite`.
    pub target_db: String,
    /// Replace the target if it exists (after a safety backup); needs `confirm`.
    #[serde(default)]
    pub overwrite: bool,
    /// The target's name typed again.
    #[serde(default)]
    pub confirm: Option<String>,
    /// Check, decrypt and list the archive; write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Restore without the original owners and grants.
    #[serde(default)]
    pub no_owner: bool,
    /// Who asked.
    #[serde(default)]
    pub requested_by: Option<String>,
    /// The id the API recorded the restore under (`GET /restores/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_id: Option<BackupId>,
    /// Parallel restore streams (1-32); `None`: the database's `PGKEEP_JOBS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u32>,
}

/// What the verify function is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyEvent {
    /// Verify a backup (or the next one awaiting verification).
    Verify(VerifyTrigger),
    /// Restore a backup (asked for through the status API).
    Restore(RestoreTrigger),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectVerify {
    #[serde(default)]
    backup_id: Option<String>,
    /// Informational (the dump function names the database it just backed up).
    #[serde(default)]
    #[allow(dead_code)]
    database: Option<String>,
    #[serde(default)]
    requested_by: Option<String>,
    #[serde(default)]
    jobs: Option<u32>,
}

impl VerifyEvent {
    /// Reads any accepted shape: an EventBridge schedule (verify the next backup), a direct
    /// invocation `{"backup_id": "..."}` (or `{}` for the next one), the dump function's
    /// `{"backup_id": "...", "database": "...", "requested_by": "dump"}`, or
    /// `{"restore": {"backup_id": "...", "target_db": "...", ...}}`.
    pub fn from_event(event: &serde_json::Value) -> Result<Self, TriggerError> {
        if event.get("source").is_some() && event.get("detail-type").is_some() {
            let e: EventBridgeEvent = serde_json::from_value(event.clone())
                .map_err(|err| TriggerError::Shape(err.to_string()))?;
            let backup_id = match e.detail.get("backup_id") {
                None | Some(serde_json::Value::Null) => None,
                Some(v) => Some(parse_id(v.as_str().unwrap_or_default())?),
            };
            return Ok(VerifyEvent::Verify(VerifyTrigger {
                backup_id,
                requested_by: Some("schedule".into()),
                jobs: None,
            }));
        }
        if let Some(restore) = event.get("restore") {
            if event.as_object().is_some_and(|o| o.len() > 1) {
                return Err(TriggerError::Shape(
                    "a restore event holds only the \"restore\" object".into(),
                ));
            }
            let t: RestoreTrigger = serde_json::from_value(restore.clone())
                .map_err(|err| TriggerError::Field(format!("restore: {err}")))?;
            checked_jobs(t.jobs)?;
            return Ok(VerifyEvent::Restore(t));
        }
        let d: DirectVerify = serde_json::from_value(event.clone()).map_err(|err| {
            TriggerError::Shape(format!(
                "{err}; expected {{\"backup_id\": \"...\"}}, {{}} for the next backup awaiting verification, an EventBridge schedule, or {{\"restore\": {{...}}}}"
            ))
        })?;
        Ok(VerifyEvent::Verify(VerifyTrigger {
            backup_id: d.backup_id.as_deref().map(parse_id).transpose()?,
            requested_by: d.requested_by,
            jobs: checked_jobs(d.jobs)?,
        }))
    }

    /// The payload an asynchronous invocation of the verify function carries; reads back with
    /// [`VerifyEvent::from_event`].
    pub fn to_event(&self) -> serde_json::Value {
        match self {
            VerifyEvent::Verify(t) => {
                let mut event = serde_json::json!({
                    "backup_id": t.backup_id,
                    "requested_by": t.requested_by,
                });
                if let Some(jobs) = t.jobs {
                    event["jobs"] = serde_json::json!(jobs);
                }
                event
            }
            VerifyEvent::Restore(t) => serde_json::json!({ "restore": t }),
        }
    }
}

/// The prune function's event: an EventBridge schedule, or `{}` from the console, to prune;
/// the hourly health check's schedule (`detail.check = "health"`), or `{"check": "health"}`,
/// to check every database for staleness without pruning. Neither carries a policy: it is the
/// deployment's (`PGKEEP_KEEP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneTrigger {
    /// Reap, prune, then check health.
    Prune,
    /// Only check health: metrics and `stale` alerts.
    Health,
}

impl PruneTrigger {
    /// Accepts a schedule's event or an empty object (prune), or a health check; refuses
    /// anything else, so a prune meant for something else (a database, a dry run) is not
    /// mistaken for a full prune.
    pub fn from_event(event: &serde_json::Value) -> Result<Self, TriggerError> {
        let scheduled = event.get("source").is_some() && event.get("detail-type").is_some();
        let check = if scheduled {
            event.get("detail").and_then(|d| d.get("check"))
        } else {
            event.get("check")
        };
        match check {
            Some(c) if c == "health" => {
                let fields = event.as_object().map_or(0, |o| o.len());
                if scheduled || fields == 1 {
                    return Ok(PruneTrigger::Health);
                }
            }
            Some(other) => {
                return Err(TriggerError::Field(format!(
                    "unknown check {other}; the only check is \"health\""
                )))
            }
            None => {}
        }
        let empty = event.as_object().is_some_and(|o| o.is_empty());
        if scheduled || empty {
            Ok(PruneTrigger::Prune)
        } else {
            Err(TriggerError::Shape(format!(
                "{event}; prune takes an EventBridge schedule or {{}} (its policy comes from PGKEEP_KEEP_*), or {{\"check\": \"health\"}}"
            )))
        }
    }
}

fn parse_id(text: &str) -> Result<BackupId, TriggerError> {
    text.parse()
        .map_err(|e: crate::model::InvalidBackupId| TriggerError::Field(e.to_string()))
}

/// Which function's work a job is: what `pgkeep job` runs, in a Fargate task or locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobFunction {
    /// A backup ([`DumpTrigger`]).
    Dump,
    /// A verification or a restore ([`VerifyEvent`]).
    Verify,
    /// A prune or health check ([`PruneTrigger`]).
    Prune,
}

impl JobFunction {
    /// Its name, as in the job's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobFunction::Dump => "dump",
            JobFunction::Verify => "verify",
            JobFunction::Prune => "prune",
        }
    }
}

/// One job for `pgkeep job` (`PGKEEP_JOB`): the function whose work it is and exactly the
/// event that function's Lambda accepts, so a Fargate task and an invocation run the same
/// work from the same event (a scheduled event names the same backup id in both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Whose work.
    pub function: JobFunction,
    /// The event, as the function's Lambda takes it.
    pub event: serde_json::Value,
}

impl Job {
    /// Reads a job's JSON, checking that its event is one its function accepts.
    pub fn parse(text: &str) -> Result<Job, TriggerError> {
        let job: Job = serde_json::from_str(text).map_err(|e| {
            TriggerError::Shape(format!(
                "job: {e}; expected {{\"function\": \"dump\"|\"verify\"|\"prune\", \"event\": <that function's event>}}"
            ))
        })?;
        job.check()?;
        Ok(job)
    }

    /// Whether the event is one the function accepts.
    pub fn check(&self) -> Result<(), TriggerError> {
        match self.function {
            JobFunction::Dump => DumpTrigger::from_event(&self.event).map(drop),
            JobFunction::Verify => VerifyEvent::from_event(&self.event).map(drop),
            JobFunction::Prune => PruneTrigger::from_event(&self.event).map(drop),
        }
    }

    /// A dump job.
    pub fn dump(trigger: &DumpTrigger) -> Job {
        Job {
            function: JobFunction::Dump,
            event: trigger.to_event(),
        }
    }

    /// A verify (or restore) job.
    pub fn verify(event: &VerifyEvent) -> Job {
        Job {
            function: JobFunction::Verify,
            event: event.to_event(),
        }
    }

    /// The JSON `PGKEEP_JOB` carries.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a job serializes")
    }
}

/// ECS's "Task State Change" event for a stopped task pgkeep started (the rule sends it to
/// the dump function): which job the task ran and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskStopped {
    /// The task.
    pub task_arn: String,
    /// The `pgkeep` container's exit code; `None` when it never ran (image pull, ENI, ...).
    pub exit_code: Option<i64>,
    /// ECS's reason (`Essential container in task exited`, `OutOfMemoryError`, ...).
    pub stopped_reason: String,
    /// When the task was created: records of the job older than this are not the task's.
    pub created_at: Option<DateTime<Utc>>,
    /// The job it ran (its `PGKEEP_JOB` override).
    pub job: Job,
}

impl TaskStopped {
    /// The event, when it is an ECS task state change (`None`: some other event); an ECS
    /// event that is not a stopped pgkeep task is refused.
    pub fn from_event(event: &serde_json::Value) -> Result<Option<TaskStopped>, TriggerError> {
        if event.get("source").and_then(|s| s.as_str()) != Some("aws.ecs") {
            return Ok(None);
        }
        let detail = &event["detail"];
        let field = |name: &str| detail.get(name).and_then(|v| v.as_str());
        let task_arn = field("taskArn").unwrap_or("(unknown task)").to_owned();
        if event.get("detail-type").and_then(|s| s.as_str()) != Some("ECS Task State Change")
            || field("lastStatus") != Some("STOPPED")
        {
            return Err(TriggerError::Field(format!(
                "the ECS event about {task_arn} is not a stopped task's state change (the rule must match detail.lastStatus = STOPPED)"
            )));
        }
        let container = crate::invoke::JOB_CONTAINER;
        let named = |list: &serde_json::Value| -> Option<serde_json::Value> {
            list.as_array()?
                .iter()
                .find(|c| c.get("name").and_then(|n| n.as_str()) == Some(container))
                .cloned()
        };
        let job = named(&detail["overrides"]["containerOverrides"])
            .and_then(|o| {
                o.get("environment")?
                    .as_array()?
                    .iter()
                    .find(|e| e.get("name").and_then(|n| n.as_str()) == Some("PGKEEP_JOB"))?
                    .get("value")?
                    .as_str()
                    .map(str::to_owned)
            })
            .ok_or_else(|| {
                TriggerError::Field(format!(
                    "task {task_arn} has no PGKEEP_JOB override on its {container:?} container: it was not started by pgkeep"
                ))
            })?;
        let job = Job::parse(&job)?;
        let exit_code = named(&detail["containers"]).and_then(|c| c.get("exitCode")?.as_i64());
        let created_at = field("createdAt")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        Ok(Some(TaskStopped {
            task_arn,
            exit_code,
            stopped_reason: field("stoppedReason")
                .unwrap_or("no reason given")
                .to_owned(),
            created_at,
            job,
        }))
    }

    /// Why the task failed, for its record and its alert.
    pub fn reason(&self) -> String {
        match self.exit_code {
            Some(code) => format!(
                "the Fargate task {} exited with code {code}: {}",
                self.task_arn, self.stopped_reason
            ),
            None => format!(
                "the Fargate task {} stopped before its container ran: {}",
                self.task_arn, self.stopped_reason
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jobs_ride_on_dump_verify_and_restore_events() {
        let dump = DumpTrigger::from_event(&json!({"database": "shop", "jobs": 2})).unwrap();
        assert_eq!(dump.jobs, Some(2));
        assert_eq!(DumpTrigger::from_event(&dump.to_event()).unwrap(), dump);
        let plain = DumpTrigger::from_event(&json!({"database": "shop"})).unwrap();
        assert_eq!(plain.jobs, None);
        assert!(plain.to_event().get("jobs").is_none());
        for bad in [json!(0), json!(33)] {
            let err = DumpTrigger::from_event(&json!({"database": "shop", "jobs": bad}))
                .unwrap_err()
                .to_string();
            assert!(err.contains("between 1 and 32"), "{err}");
        }
        let verify = VerifyEvent::from_event(
            &json!({"backup_id": "20261124T020000000Z-0a1b2c3d", "jobs": 3}),
        )
        .unwrap();
        let VerifyEvent::Verify(t) = &verify else {
            panic!("{verify:?}")
        };
        assert_eq!(t.jobs, Some(3));
        assert_eq!(VerifyEvent::from_event(&verify.to_event()).unwrap(), verify);
        let restore = VerifyEvent::from_event(&json!({"restore": {
            "backup_id": "20261124T020000000Z-0a1b2c3d", "target_db": "copy", "jobs": 4}}))
        .unwrap();
        let VerifyEvent::Restore(t) = &restore else {
            panic!("{restore:?}")
        };
        assert_eq!(t.jobs, Some(4));
        assert_eq!(
            VerifyEvent::from_event(&restore.to_event()).unwrap(),
            restore
        );
        assert!(VerifyEvent::from_event(&json!({"restore": {
            "backup_id": "20261124T020000000Z-0a1b2c3d", "target_db": "copy", "jobs": 0}}))
        .is_err());
    }

    #[test]
    fn dump_payloads_read_back() {
        let t = DumpTrigger {
            database: "shop".into(),
            kind: BackupKind::Manual,
            backup_id: Some("20261124T020000000Z-0a1b2c3d".parse().unwrap()),
            requested_by: Some("alice".into()),
            labels: Labels::none(),
            selection: None,
            all_databases: false,
            jobs: None,
        };
        assert_eq!(DumpTrigger::from_event(&t.to_event()).unwrap(), t);
        let t = DumpTrigger {
            kind: BackupKind::PreMigration,
            labels: Labels::parse_args(&["release=2026.11", "ticket=OPS-7"]).unwrap(),
            selection: Some(Selection {
                exclude_schemas: vec!["audit".into()],
                exclude_table_data: vec!["public.sessions".into()],
                ..Selection::default()
            }),
            ..t
        };
        let event = t.to_event();
        assert_eq!(event["kind"], "pre_migration");
        assert_eq!(event["labels"]["release"], "2026.11");
        assert_eq!(event["selection"]["exclude_schemas"][0], "audit");
        assert_eq!(DumpTrigger::from_event(&event).unwrap(), t);
        // A whole-server run reads back, from a console event and a schedule's detail too.
        let t = DumpTrigger {
            all_databases: true,
            selection: None,
            ..t
        };
        assert_eq!(DumpTrigger::from_event(&t.to_event()).unwrap(), t);
        let scheduled = DumpTrigger::from_event(&json!({
            "version": "0", "id": "e1", "detail-type": "Scheduled Event", "source": "aws.scheduler",
            "account": "1", "time": "2026-11-24T02:00:00Z", "region": "eu-west-1",
            "resources": [], "detail": {"database": "main", "all_databases": true}
        }))
        .unwrap();
        assert!(scheduled.all_databases);
        assert!(DumpTrigger::from_event(
            &json!({"database": "main", "all_databases": true, "selection": {"schemas": ["x"]}})
        )
        .is_err());
    }

    #[test]
    fn labels_and_selections_in_events_are_checked() {
        let t = DumpTrigger::from_event(&json!({
            "database": "shop", "kind": "pre_migration",
            "labels": {"release": "v2"},
            "selection": {"exclude_schemas": ["audit"]}
        }))
        .unwrap();
        assert_eq!(t.kind, BackupKind::PreMigration);
        assert_eq!(t.labels.as_map()["release"], "v2");
        assert_eq!(t.selection.unwrap().exclude_schemas, ["audit"]);
        for (bad, needle) in [
            (
                json!({"database": "shop", "labels": {"Bad": "x"}}),
                "upper-case",
            ),
            (
                json!({"database": "shop", "labels": {"k": "a\nb"}}),
                "control character",
            ),
            (
                json!({"database": "shop", "labels": ["k=v"]}),
                "an object of label keys",
            ),
            (
                json!({"database": "shop", "selection": {"exclude_schemas": [""]}}),
                "is empty",
            ),
            (
                json!({"database": "shop", "selection": {"exclude_schemas": ["a\u{0}b"]}}),
                "control character",
            ),
            (
                json!({"database": "shop", "selection": {"schemas": ["x"]}}),
                "unknown field",
            ),
        ] {
            let err = DumpTrigger::from_event(&bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn prune_takes_a_schedule_or_nothing() {
        let scheduled = json!({"source": "aws.scheduler", "detail-type": "Scheduled Event", "id": "e", "time": "2026-11-24T04:00:00Z", "detail": {}});
        assert_eq!(
            PruneTrigger::from_event(&scheduled).unwrap(),
            PruneTrigger::Prune
        );
        assert_eq!(
            PruneTrigger::from_event(&json!({})).unwrap(),
            PruneTrigger::Prune
        );
        let mut health = scheduled.clone();
        health["detail"] = json!({"check": "health"});
        assert_eq!(
            PruneTrigger::from_event(&health).unwrap(),
            PruneTrigger::Health
        );
        assert_eq!(
            PruneTrigger::from_event(&json!({"check": "health"})).unwrap(),
            PruneTrigger::Health
        );
        for bad in [
            json!({"dry_run": true}),
            json!([]),
            json!("prune"),
            json!({"check": "everything"}),
            json!({"check": "health", "dry_run": true}),
        ] {
            assert!(PruneTrigger::from_event(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn verify_events_in_every_shape() {
        let id: BackupId = "20261124T020000000Z-0a1b2c3d".parse().unwrap();
        let scheduled = json!({
            "version": "0", "id": "e1", "detail-type": "Scheduled Event",
            "source": "aws.scheduler", "time": "2026-11-24T04:00:00Z", "detail": {}
        });
        assert_eq!(
            VerifyEvent::from_event(&scheduled).unwrap(),
            VerifyEvent::Verify(VerifyTrigger {
                backup_id: None,
                requested_by: Some("schedule".into()),
                jobs: None,
            })
        );
        let direct = VerifyEvent::from_event(&json!({"backup_id": id.as_str()})).unwrap();
        assert_eq!(
            direct,
            VerifyEvent::Verify(VerifyTrigger {
                backup_id: Some(id.clone()),
                requested_by: None,
                jobs: None,
            })
        );
        assert_eq!(
            VerifyEvent::from_event(&json!({})).unwrap(),
            VerifyEvent::Verify(VerifyTrigger {
                backup_id: None,
                requested_by: None,
                jobs: None,
            })
        );
        for event in [
            VerifyEvent::Verify(VerifyTrigger {
                backup_id: Some(id.clone()),
                requested_by: Some("dump".into()),
                jobs: None,
            }),
            VerifyEvent::Restore(RestoreTrigger {
                backup_id: id.clone(),
                target_db: "shop_copy".into(),
                overwrite: true,
                confirm: Some("shop_copy".into()),
                dry_run: false,
                no_owner: true,
                requested_by: Some("alice".into()),
                restore_id: Some(id.clone()),
                jobs: None,
            }),
        ] {
            assert_eq!(VerifyEvent::from_event(&event.to_event()).unwrap(), event);
        }
        for bad in [
            json!({"backup_id": "../x"}),
            json!({"backup_id": 7}),
            json!({"surprise": 1}),
            json!({"restore": {"backup_id": id.as_str()}}),
            json!({"restore": {"backup_id": id.as_str(), "target_db": "x", "force": true}}),
            json!({"restore": {"backup_id": id.as_str(), "target_db": "x"}, "backup_id": id.as_str()}),
            json!({"source": "aws.scheduler", "detail-type": "x", "id": "e", "time": "2026-11-24T04:00:00Z", "detail": {"backup_id": "nope"}}),
        ] {
            assert!(VerifyEvent::from_event(&bad).is_err(), "{bad}");
        }
    }

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
    fn attempts_of_one_request_are_fixed_and_distinct() {
        let first: BackupId = "20261124T020000000Z-0a1b2c3d".parse().unwrap();
        assert_eq!(attempt_id(&first, 1), first);
        let ids: Vec<BackupId> = (1..=MAX_ATTEMPTS).map(|n| attempt_id(&first, n)).collect();
        for (i, id) in ids.iter().enumerate() {
            assert!(id.as_str().starts_with("20261124T020000000Z-"), "{id}");
            assert_eq!(
                attempt_id(&first, i as u32 + 1),
                *id,
                "the same on every call"
            );
            assert!(!ids[..i].contains(id), "attempt {} repeats an id", i + 1);
        }
        let other: BackupId = "20261124T020000000Z-0a1b2c3e".parse().unwrap();
        assert_ne!(attempt_id(&other, 2), ids[1]);
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

    #[test]
    fn a_job_carries_a_function_and_its_own_event() {
        let text = json!({"function": "dump", "event": {"database": "shop", "kind": "manual"}})
            .to_string();
        let job = Job::parse(&text).unwrap();
        assert_eq!(job.function, JobFunction::Dump);
        assert_eq!(Job::parse(&job.to_json()).unwrap(), job);
        let trigger = DumpTrigger::from_event(&json!({"database": "shop", "kind": "manual", "backup_id": "20261124T120000000Z-0a1b2c3d"})).unwrap();
        let back = Job::parse(&Job::dump(&trigger).to_json()).unwrap();
        assert_eq!(DumpTrigger::from_event(&back.event).unwrap(), trigger);
        let bad = Job::parse(&json!({"function": "verify", "event": {"database": 3}}).to_string());
        assert!(bad.is_err());
        let err = Job::parse(&json!({"function": "backup", "event": {}}).to_string()).unwrap_err();
        assert!(err.to_string().contains("\"dump\""), "{err}");
    }

    #[test]
    fn a_stopped_task_event_names_its_job_and_exit() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../events/dump/task-stopped.json"
        );
        let event: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let stopped = TaskStopped::from_event(&event).unwrap().unwrap();
        assert_eq!(stopped.exit_code, Some(137));
        assert_eq!(stopped.job.function, JobFunction::Dump);
        assert!(
            stopped.reason().contains("137") && stopped.reason().contains("OutOfMemory"),
            "{}",
            stopped.reason()
        );
        assert!(stopped.created_at.is_some());
        // Other events are not ECS's; an ECS event that is not STOPPED is refused.
        assert_eq!(
            TaskStopped::from_event(&json!({"database": "shop"})).unwrap(),
            None
        );
        let mut running = event.clone();
        running["detail"]["lastStatus"] = json!("RUNNING");
        assert!(TaskStopped::from_event(&running).is_err());
        // A task that never ran has no exit code.
        let mut never = event;
        never["detail"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("exitCode");
        let never = TaskStopped::from_event(&never).unwrap().unwrap();
        assert_eq!(never.exit_code, None);
        assert!(never.reason().contains("before its container ran"));
    }
}
