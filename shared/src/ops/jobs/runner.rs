//! The jobs' side of Fargate: `pgkeep job` (one job from `PGKEEP_JOB`, the same call a
//! function makes), the hand-over of a database's work to a task when its runner says so
//! (`PGKEEP_RUNNERS`, decided by [`crate::config::RunnerSettings::choose`] from the catalog's history), and
//! the stopped task's event, which makes sure a task that died is recorded and alerted once.

use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use serde_json::Value;

use super::{duplicate, exhausted, Attempt, DumpOutcome, JobError, Jobs, VerifyOutcome};
use crate::alert::{Alert, AlertKind};
use crate::aws::SdkConfig;
use crate::backends::KeyUse;
use crate::catalog::ListQuery;
use crate::config::{ConfigError, LambdaSettings, LastRun, Placement, Runner, Work};
use crate::invoke::{EcsTaskStarter, TaskStarter};
use crate::model::{AuditEntry, BackupId, BackupRecord, BackupStatus};
use crate::ops::verify::next_to_verify;
use crate::ops::Error;
use crate::trigger::{
    attempt_id, DumpTrigger, Job, JobFunction, PruneTrigger, TaskStopped, VerifyEvent,
    VerifyTrigger, MAX_ATTEMPTS,
};

/// The ECS starter, when a database may go to Fargate (its cluster and task definition are
/// checked now, at the function's start).
pub(super) fn task_starter(
    settings: &LambdaSettings,
    aws: Option<&SdkConfig>,
) -> Result<Option<Arc<dyn TaskStarter>>, ConfigError> {
    if !settings.runners.any_fargate() {
        return Ok(None);
    }
    settings.runners.check_startable()?;
    let aws = aws
        .ok_or_else(|| ConfigError::Invalid("PGKEEP_RUNNERS needs the AWS configuration".into()))?;
    Ok(Some(Arc::new(EcsTaskStarter::new(
        aws,
        settings.runners.fargate.clone(),
    ))))
}

/// The key a job's work needs, as its function loads it: a dump writes new data keys; a
/// verification or restore reads (an overwriting restore's safety backup takes a new data
/// key from the same key); a prune needs none.
pub fn key_use(function: JobFunction) -> KeyUse {
    match function {
        JobFunction::Dump => KeyUse::Write,
        JobFunction::Verify => KeyUse::Read,
        JobFunction::Prune => KeyUse::None,
    }
}

impl Jobs {
    /// `pgkeep job`: the call the job's function would make with its event, here (a Fargate
    /// task, or locally). Returns the function's JSON outcome.
    pub async fn run_job(&self, job: &Job) -> Result<Value, JobError> {
        let outcome = match job.function {
            JobFunction::Dump => {
                let trigger = DumpTrigger::from_event(&job.event)?;
                serde_json::to_value(Box::pin(self.run_dump(&trigger)).await?)
            }
            JobFunction::Verify => {
                let event = VerifyEvent::from_event(&job.event)?;
                serde_json::to_value(Box::pin(self.run_verify_event(&event)).await?)
            }
            JobFunction::Prune => match PruneTrigger::from_event(&job.event)? {
                PruneTrigger::Prune => {
                    // As the prune function refuses to start without a policy.
                    self.settings.retention.validate().map_err(Error::from)?;
                    serde_json::to_value(Box::pin(self.run_prune(Utc::now())).await?)
                }
                PruneTrigger::Health => {
                    serde_json::to_value(Box::pin(self.run_health(Utc::now())).await?)
                }
            },
        };
        Ok(outcome.expect("outcomes serialize"))
    }

    /// What the catalog says about the last successful run of `work` on `database`: for a
    /// backup or restore the newest backup that completed, for a verification the newest
    /// verdict.
    async fn last_run(&self, database: &str, work: Work) -> Result<Option<LastRun>, Error> {
        let page = self
            .services
            .catalog
            .list(&ListQuery {
                database: Some(database.to_owned()),
                limit: Some(50),
                ..ListQuery::default()
            })
            .await?;
        Ok(page.records.iter().find_map(|r| match work {
            Work::Verify => r.verification.as_ref().map(|v| LastRun {
                duration_ms: Some(v.duration_ms),
                size_bytes: r.size_bytes,
            }),
            Work::Backup | Work::Restore => {
                let succeeded = matches!(
                    r.status,
                    BackupStatus::Completed
                        | BackupStatus::Verified
                        | BackupStatus::VerificationFailed
                        | BackupStatus::Deleted
                );
                (succeeded && r.duration_ms.is_some()).then_some(LastRun {
                    duration_ms: r.duration_ms,
                    size_bytes: r.size_bytes,
                })
            }
        }))
    }

    /// Why `work` on `database` goes to Fargate, or `None` when it runs here (always, when
    /// this process starts no tasks).
    async fn fargate_reason(&self, database: &str, work: Work) -> Result<Option<String>, Error> {
        if self.task_starter.is_none() {
            return Ok(None);
        }
        let last = match self.settings.runners.runner(database) {
            Runner::Lambda => return Ok(None),
            Runner::Fargate => None,
            Runner::Auto => self.last_run(database, work).await?,
        };
        Ok(
            match self.settings.runners.choose(database, work, last.as_ref()) {
                Placement::Here => None,
                Placement::Fargate { reason } => Some(reason),
            },
        )
    }

    /// Starts the task with `job` and leaves an audit entry (`hand_off`, the task's ARN and
    /// why); returns the task's ARN.
    async fn hand_off(
        &self,
        database: &str,
        job: &Job,
        backup_id: Option<&BackupId>,
        actor: &str,
        reason: &str,
    ) -> Result<String, Error> {
        let starter = self
            .task_starter
            .as_ref()
            .expect("work is handed off only when a task starter exists");
        let started = starter.start(database, job).await;
        let now = Utc::now();
        let entry = AuditEntry {
            id: BackupId::generate(now),
            at: now,
            actor: actor.to_owned(),
            action: "hand_off".into(),
            backup_id: backup_id.cloned(),
            database: database.to_owned(),
            outcome: match &started {
                Ok(_) => "ok".into(),
                Err(e) => e.clone(),
            },
            details: serde_json::json!({
                "runner": "fargate",
                "function": job.function.as_str(),
                "task_arn": started.as_ref().ok(),
                "reason": reason,
            }),
        };
        if let Err(e) = self.services.catalog.append_audit(&entry).await {
            tracing::error!(database, error = %e, "could not write the audit entry of the hand-over");
        }
        match started {
            Ok(arn) => {
                tracing::info!(database, task = %arn, reason, function = job.function.as_str(), "handed the work to a Fargate task");
                Ok(arn)
            }
            Err(e) => Err(Error::HandOff(e)),
        }
    }

    /// The dump function's hand-over: when `trigger.database` runs on Fargate, a task is
    /// started with the request (its first backup id fixed, so the task, a repeated delivery
    /// and the stopped task's event agree on the attempts); a request whose attempt is running
    /// or done starts nothing. A task that cannot be started is a failed backup (recorded,
    /// alerted).
    pub(super) async fn dump_elsewhere(
        &self,
        trigger: &DumpTrigger,
    ) -> Result<Option<DumpOutcome>, JobError> {
        let first = trigger
            .backup_id
            .clone()
            .unwrap_or_else(|| BackupId::generate(Utc::now()));
        let mut request = trigger.clone();
        request.backup_id = Some(first.clone());
        let reason = match self.fargate_reason(&trigger.database, Work::Backup).await {
            Ok(Some(reason)) => reason,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.dump_failed(&request, &first, None, e).await),
        };
        let (id, retry_of) = if trigger.all_databases {
            (first.clone(), None)
        } else {
            match self.next_attempt(&first).await {
                Ok(Attempt::Run { id, retry_of }) => (id, retry_of),
                Ok(Attempt::Exists(existing)) => return Ok(Some(duplicate(existing))),
                Ok(Attempt::Exhausted(last)) => return Err(exhausted(last)),
                Err(e) => return Err(self.dump_failed(&request, &first, None, e).await),
            }
        };
        let job = Job::dump(&request);
        match self
            .hand_off(
                &trigger.database,
                &job,
                Some(&id),
                trigger.requester(),
                &reason,
            )
            .await
        {
            Ok(task_arn) => Ok(Some(DumpOutcome::HandedOff {
                database: trigger.database.clone(),
                backup_id: first,
                task_arn,
                reason,
            })),
            Err(e) => Err(self.dump_failed(&request, &id, retry_of, e).await),
        }
    }

    /// The verify function's hand-over: when the backup's database runs on Fargate, a task is
    /// started with the verification (of that backup, named) or the restore. A task that
    /// cannot be started is alerted as the work's failure.
    pub(super) async fn verify_elsewhere(
        &self,
        event: &VerifyEvent,
    ) -> Result<Option<VerifyOutcome>, JobError> {
        if self.task_starter.is_none() {
            return Ok(None);
        }
        let (record, work, job, actor) = match event {
            VerifyEvent::Verify(trigger) => {
                let record = match &trigger.backup_id {
                    Some(id) => self.services.catalog.get(id).await?,
                    None => match next_to_verify(&self.services).await? {
                        Some(record) => record,
                        None => return Ok(None),
                    },
                };
                let job = Job::verify(&VerifyEvent::Verify(VerifyTrigger {
                    backup_id: Some(record.id.clone()),
                    requested_by: trigger.requested_by.clone(),
                    jobs: trigger.jobs,
                }));
                let actor = trigger.requested_by.clone();
                (record, Work::Verify, job, actor)
            }
            VerifyEvent::Restore(trigger) => {
                let record = self.services.catalog.get(&trigger.backup_id).await?;
                let actor = trigger.requested_by.clone();
                (record, Work::Restore, Job::verify(event), actor)
            }
        };
        let actor = actor.unwrap_or_else(|| "pgkeep".into());
        let reason = match self.fargate_reason(&record.database, work).await {
            Ok(Some(reason)) => reason,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.handoff_failed(event, &record, e).await),
        };
        match self
            .hand_off(&record.database, &job, Some(&record.id), &actor, &reason)
            .await
        {
            Ok(task_arn) => Ok(Some(VerifyOutcome::HandedOff {
                database: record.database.clone(),
                backup_id: record.id.clone(),
                task_arn,
                reason,
            })),
            Err(e) => Err(self.handoff_failed(event, &record, e).await),
        }
    }

    /// A verification or restore that could not be handed over: alerted as its failure.
    async fn handoff_failed(
        &self,
        event: &VerifyEvent,
        record: &BackupRecord,
        error: Error,
    ) -> JobError {
        match event {
            VerifyEvent::Verify(_) => self.verify_not_run(record, error).await,
            VerifyEvent::Restore(trigger) => {
                if let Some(id) = &trigger.restore_id {
                    crate::ops::restore::record_failure(&self.services, id, &error.to_string())
                        .await;
                }
                let alert = Alert::new(
                    AlertKind::RestoreFailed,
                    &trigger.target_db,
                    Some(trigger.backup_id.clone()),
                    &format!("restore of backup {} failed: {error}", trigger.backup_id),
                    Utc::now(),
                );
                JobError::Failed {
                    source: Box::new(error),
                    alert: self.notify(&alert).await.err(),
                }
            }
        }
    }
}

/// What the dump function did with a stopped task's event (its JSON result).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TaskOutcome {
    /// Exit code 0: the job recorded its own result; nothing to do.
    TaskSucceeded {
        /// The task.
        task_arn: String,
    },
    /// The task failed.
    TaskFailed {
        /// The task.
        task_arn: String,
        /// Why (exit code and ECS's stopped reason).
        reason: String,
        /// The backup concerned, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        backup_id: Option<BackupId>,
        /// Whether this event recorded the failure and sent its alert; `false` when the job
        /// had done so itself (or its work was done before it failed), so nothing is alerted
        /// twice.
        alerted: bool,
    },
}

/// Whether a job that exited so could not have recorded and alerted its own failure: it
/// never ran (no exit code) or was killed (SIGKILL after ECS's stop timeout, the OOM killer).
/// A job ended by SIGINT or SIGTERM (130, 143) or by its own failure went through its
/// failure path.
fn killed(exit_code: Option<i64>) -> bool {
    match exit_code {
        None => true,
        Some(code) => code >= 128 && code != 130 && code != 143,
    }
}

impl Jobs {
    /// A stopped Fargate task (ECS's task state change): a non-zero exit makes sure the job's
    /// record says failed, with the exit code and ECS's reason, and that the failure is
    /// alerted as a Lambda failure would be, exactly once: a job that recorded and alerted its
    /// own failure is not alerted again, and a repeated delivery of the event finds the record
    /// it wrote. Exit code 0 changes nothing.
    pub async fn run_task_stopped(&self, stopped: &TaskStopped) -> Result<TaskOutcome, JobError> {
        let task_arn = stopped.task_arn.clone();
        if stopped.exit_code == Some(0) {
            return Ok(TaskOutcome::TaskSucceeded { task_arn });
        }
        let reason = stopped.reason();
        tracing::warn!(task = %task_arn, reason, function = stopped.job.function.as_str(), "a Fargate task failed");
        let (backup_id, alerted) = match stopped.job.function {
            JobFunction::Dump => {
                let trigger = DumpTrigger::from_event(&stopped.job.event)?;
                self.dump_task_failed(stopped, &trigger, &reason).await?
            }
            JobFunction::Verify => {
                let event = VerifyEvent::from_event(&stopped.job.event)?;
                self.verify_task_failed(stopped, &event, &reason).await?
            }
            // A failed prune fails its invocation without an alert; so does its task.
            JobFunction::Prune => (None, false),
        };
        Ok(TaskOutcome::TaskFailed {
            task_arn,
            reason,
            backup_id,
            alerted,
        })
    }

    /// Sends `alert` for a failed task; an undelivered one fails the invocation (EventBridge
    /// retries it, and the record written meanwhile keeps the retry from alerting twice only
    /// when the first delivery got through, so the retry sends it again).
    async fn task_alert(&self, alert: &Alert, done: &str) -> Result<(), JobError> {
        self.notify(alert)
            .await
            .map_err(|source| JobError::Unalerted {
                done: done.to_owned(),
                source,
            })
    }

    async fn dump_task_failed(
        &self,
        stopped: &TaskStopped,
        trigger: &DumpTrigger,
        reason: &str,
    ) -> Result<(Option<BackupId>, bool), JobError> {
        let now = Utc::now();
        let first = match (&trigger.backup_id, trigger.all_databases) {
            (Some(first), false) => first.clone(),
            // No attempt to find: the failure is told as it is.
            _ => {
                let alert = Alert::new(
                    AlertKind::BackupFailed,
                    &trigger.database,
                    trigger.backup_id.clone(),
                    reason,
                    now,
                );
                self.task_alert(&alert, reason).await?;
                return Ok((trigger.backup_id.clone(), true));
            }
        };
        // The task's attempt: the newest record of the request, if it was made since the task
        // was created (an older one is an earlier attempt's).
        let mut newest = None;
        for n in 1..=MAX_ATTEMPTS {
            match self.find(&attempt_id(&first, n)).await? {
                Some(record) => newest = Some(record),
                None => break,
            }
        }
        let slack = chrono::Duration::seconds(5);
        let ours = newest.filter(|r| stopped.created_at.is_none_or(|t| r.created_at + slack >= t));
        match ours {
            Some(record) if record.status == BackupStatus::InProgress => {
                // The task is gone, so its run is dead: ended here as the reaper would.
                crate::ops::backup::end_interrupted(
                    &self.services,
                    &record.database,
                    &record.id,
                    reason,
                )
                .await?;
                let record = self.services.catalog.get(&record.id).await?;
                self.task_alert(&Alert::backup_failed(&record, now), reason)
                    .await?;
                Ok((Some(record.id), true))
            }
            // Failed: the job recorded and alerted it. Completed: the backup is good.
            Some(record) => Ok((Some(record.id), false)),
            None => match self.next_attempt(&first).await? {
                Attempt::Run { id, retry_of } => {
                    match self
                        .dump_failed(trigger, &id, retry_of, Error::Stopped(reason.to_owned()))
                        .await
                    {
                        JobError::Failed {
                            alert: Some(source),
                            ..
                        } => Err(JobError::Unalerted {
                            done: format!("backup {id} recorded failed"),
                            source,
                        }),
                        _ => Ok((Some(id), true)),
                    }
                }
                Attempt::Exists(record) | Attempt::Exhausted(record) => {
                    Ok((Some(record.id), false))
                }
            },
        }
    }

    async fn verify_task_failed(
        &self,
        stopped: &TaskStopped,
        event: &VerifyEvent,
        reason: &str,
    ) -> Result<(Option<BackupId>, bool), JobError> {
        match event {
            VerifyEvent::Verify(trigger) => {
                let Some(id) = &trigger.backup_id else {
                    return Ok((None, false));
                };
                let record = self.services.catalog.get(id).await?;
                let verdict = record
                    .verification
                    .as_ref()
                    .is_some_and(|v| stopped.created_at.is_none_or(|t| v.verified_at >= t));
                if verdict
                    || !killed(stopped.exit_code)
                    || self.task_alerted(&record.database, stopped).await?
                {
                    return Ok((Some(id.clone()), false));
                }
                let alert = Alert::verification_failed(
                    &record,
                    &format!("no verdict was reached: {reason}"),
                    Utc::now(),
                );
                self.task_alert(&alert, reason).await?;
                self.audit_task_failed(&record.database, Some(id), stopped, reason)
                    .await;
                Ok((Some(id.clone()), true))
            }
            VerifyEvent::Restore(trigger) => {
                let ended = match &trigger.restore_id {
                    Some(id) => self
                        .services
                        .catalog
                        .get_restore(id)
                        .await
                        .map(|run| run.ended())
                        .unwrap_or(false),
                    None => {
                        !killed(stopped.exit_code)
                            || self.task_alerted(&trigger.target_db, stopped).await?
                    }
                };
                if ended {
                    return Ok((Some(trigger.backup_id.clone()), false));
                }
                if let Some(id) = &trigger.restore_id {
                    crate::ops::restore::record_failure(&self.services, id, reason).await;
                }
                let alert = Alert::new(
                    AlertKind::RestoreFailed,
                    &trigger.target_db,
                    Some(trigger.backup_id.clone()),
                    &format!("restore of backup {} failed: {reason}", trigger.backup_id),
                    Utc::now(),
                );
                self.task_alert(&alert, reason).await?;
                self.audit_task_failed(
                    &trigger.target_db,
                    Some(&trigger.backup_id),
                    stopped,
                    reason,
                )
                .await;
                Ok((Some(trigger.backup_id.clone()), true))
            }
        }
    }

    /// Whether an earlier delivery of this task's event alerted it (its `task_failed` audit
    /// entry): a verification that reached no verdict leaves no record to tell by.
    async fn task_alerted(&self, database: &str, stopped: &TaskStopped) -> Result<bool, Error> {
        let entries = self
            .services
            .catalog
            .list_audit(Some(database), 200)
            .await?;
        Ok(entries.iter().any(|e| {
            e.action == "task_failed" && e.details["task_arn"] == stopped.task_arn.as_str()
        }))
    }

    /// The audit entry of an alerted task failure (a failure to write it is logged).
    async fn audit_task_failed(
        &self,
        database: &str,
        backup_id: Option<&BackupId>,
        stopped: &TaskStopped,
        reason: &str,
    ) {
        let now = Utc::now();
        let entry = AuditEntry {
            id: BackupId::generate(now),
            at: now,
            actor: "ecs".into(),
            action: "task_failed".into(),
            backup_id: backup_id.cloned(),
            database: database.to_owned(),
            outcome: reason.to_owned(),
            details: serde_json::json!({
                "task_arn": stopped.task_arn,
                "exit_code": stopped.exit_code,
                "function": stopped.job.function.as_str(),
            }),
        };
        if let Err(e) = self.services.catalog.append_audit(&entry).await {
            tracing::error!(database, error = %e, "could not write the audit entry of a failed task");
        }
    }
}
