//! What each Lambda function does, without Lambda: the dump, verify and prune functions each
//! parse their event and make one call here. Everything is built once per container into a
//! [`Jobs`] (settings, AWS configuration, backends, notifiers, the verify starter, the metric
//! sink), so tests drive the same code with embedded backends and recording fakes.
//!
//! | function | call | alerts | metrics |
//! |---|---|---|---|
//! | dump | [`Jobs::run_dump`] | `backup_failed`: this run, or earlier runs found abandoned | backup duration, size, throughput |
//! | verify | [`Jobs::run_verify_event`] | `verification_failed` (a failed verdict, or no verdict reached); `restore_failed` | verify duration |
//! | prune | [`Jobs::run_prune`] | `backup_failed` for abandoned runs; one `stale` per database without a recent good backup | age of the newest good backup |
//! | prune, hourly `health` event | [`Jobs::run_health`] | one `stale` per database without a recent good backup | age of the newest good backup |
//!
//! A failure is never logged and then answered with success: a failed dump, a verification
//! that could not run, a failed prune or an alert that could not be sent fails the invocation,
//! so Lambda's error metrics, retries and dead-letter queue see it. Each failure is alerted
//! exactly once. A repeated delivery of an event whose dump is running or done takes no
//! second backup; a retry after a failure takes the backup again, as a new attempt with its
//! own record (see [`Jobs::run_dump`]).

use std::sync::Arc;

mod runner;
pub use runner::{key_use, TaskOutcome};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::backup::{backup, BackupRequest};
use super::health::{health, DatabaseHealth};
use super::prune::{self, Missing, PruneReport, PruneRequest};
use super::restore::{restore, RestoreReport, RestoreRequest};
use super::verify::{next_to_verify, verify, VerifyRequest};
use super::{reaper, Error};
use crate::alert::{Alert, AlertKind, Notifier, NotifyError, RunKind};
use crate::backends::{KeyUse, Services};
use crate::catalog::CatalogError;
use crate::config::{ConfigError, LambdaSettings};
use crate::invoke::{TaskStarter, VerifyStarter};
use crate::metrics::{backup_metrics, health_metrics, verify_metrics, MetricSink, StdoutMetrics};
use crate::model::{BackupId, BackupRecord, BackupStatus};
use crate::postgres::auth::database_target;
use crate::postgres::PgTarget;
use crate::trigger::{
    attempt_id, DumpTrigger, RestoreTrigger, TriggerError, VerifyEvent, VerifyTrigger, MAX_ATTEMPTS,
};

/// How long before an invocation's time limit a dump is stopped: enough to record it failed,
/// abort its upload, release its lease and send the alert.
const STOP_BEFORE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// Everything the functions' jobs need, built once per Lambda container.
pub struct Jobs {
    /// Backends.
    pub services: Services,
    /// The deployment's settings.
    pub settings: LambdaSettings,
    /// The AWS configuration, when anything configured calls AWS (database secrets).
    pub aws: Option<crate::aws::SdkConfig>,
    /// Where alerts go.
    pub notifier: Arc<dyn Notifier>,
    /// Starts the verification of each new backup; `None` when no verify function is set.
    pub verify_starter: Option<Arc<dyn VerifyStarter>>,
    /// Where metric documents go.
    pub metrics: Arc<dyn MetricSink>,
    /// Starts the Fargate task of a database whose work is not for this function
    /// (`PGKEEP_RUNNERS`); `None`: everything runs here (and always in `pgkeep job`).
    pub task_starter: Option<Arc<dyn TaskStarter>>,
}

impl JobError {
    /// A short stable name for the failure (the Lambda error type).
    pub fn name(&self) -> &'static str {
        match self {
            JobError::Event(_) => "InvalidEvent",
            JobError::Failed { source, .. } if matches!(**source, Error::LeaseHeld { .. }) => {
                "LeaseHeld"
            }
            JobError::Failed { .. } => "Failed",
            JobError::AlreadyFailed { .. } => "AlreadyFailed",
            JobError::Unalerted { .. } => "AlertNotSent",
        }
    }
}

/// Why a job failed; its message is what the Lambda invocation reports.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The event is not one this function accepts.
    #[error("invalid event: {0}")]
    Event(#[from] TriggerError),
    /// The work failed; when it is a failure people are told about, the alert went out (or,
    /// in `alert`, why it could not).
    #[error("{source}{}", unsent(.alert))]
    Failed {
        /// Why the work failed.
        source: Box<Error>,
        /// Why its alert could not be sent, if it could not.
        alert: Option<NotifyError>,
    },
    /// A delivery of a dump request whose attempts all failed ([`MAX_ATTEMPTS`]), or whose
    /// run failed while this delivery raced it: nothing was run or alerted again.
    #[error("backup {id} of {database:?} failed earlier and this delivery of its request runs nothing (its attempts are used up, or it raced the failed run; the next delivery or schedule takes it again): {reason}")]
    AlreadyFailed {
        /// The backup.
        id: BackupId,
        /// Its database.
        database: String,
        /// Why it failed.
        reason: String,
    },
    /// The work was done, but an alert about it could not be sent.
    #[error("{done}, but an alert could not be sent: {source}")]
    Unalerted {
        /// What was done.
        done: String,
        /// Why the alert was not sent.
        source: NotifyError,
    },
}

fn unsent(alert: &Option<NotifyError>) -> String {
    alert
        .as_ref()
        .map(|e| format!("; the alert about it could not be sent either: {e}"))
        .unwrap_or_default()
}

impl From<Error> for JobError {
    fn from(source: Error) -> Self {
        JobError::Failed {
            source: Box::new(source),
            alert: None,
        }
    }
}

impl From<CatalogError> for JobError {
    fn from(e: CatalogError) -> Self {
        Error::from(e).into()
    }
}

/// How a dump invocation ended (the function's JSON result).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DumpOutcome {
    /// A new backup was taken.
    Completed {
        /// Its record.
        backup: BackupRecord,
        /// Whether its verification was started.
        verify_started: bool,
        /// Why starting it failed (the scheduled verify picks the backup up later).
        #[serde(skip_serializing_if = "Option::is_none")]
        verify_error: Option<String>,
    },
    /// The event was delivered before: its backup exists (done or still running), and no
    /// second one was taken.
    Duplicate {
        /// The existing record.
        backup: BackupRecord,
    },
    /// The database runs on Fargate: a task was started with this request (the task's record
    /// and alerts are the backup's); no dump was taken here.
    HandedOff {
        /// The database.
        database: String,
        /// The request's first backup id (the task takes it, or the next attempt).
        backup_id: BackupId,
        /// The started task.
        task_arn: String,
        /// Why it went to Fargate.
        reason: String,
    },
    /// A whole-server run (`all_databases`): one backup per database and the globals; each
    /// failed one was alerted like any failed backup.
    Run {
        /// The run's report.
        run: super::server::RunReport,
        /// Verifications started (one per completed backup).
        verify_started: usize,
    },
    /// The event was delivered before: its run exists, and no second one was started.
    DuplicateRun {
        /// The run.
        run_id: String,
        /// How many backups it has so far.
        backups: usize,
    },
}

/// How a verify-function invocation ended (its JSON result).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum VerifyOutcome {
    /// No completed backup awaited verification.
    NothingToVerify,
    /// Restored and matched: the record is now `verified`.
    Verified {
        /// The record.
        backup: BackupRecord,
    },
    /// The backup is at fault: the record is now `verification_failed`, and the alert went
    /// out.
    VerificationFailed {
        /// The record.
        backup: BackupRecord,
        /// Why.
        reason: String,
    },
    /// The database runs on Fargate: a task was started with this verification or restore.
    HandedOff {
        /// The database.
        database: String,
        /// The backup.
        backup_id: BackupId,
        /// The started task.
        task_arn: String,
        /// Why it went to Fargate.
        reason: String,
    },
    /// A restore (or its dry run) asked for through the status API finished.
    Restored {
        /// What was done.
        report: RestoreReport,
    },
}

/// What a health check found (the prune function's JSON result for a `health` event).
#[derive(Debug, Clone, Serialize)]
pub struct HealthOutcome {
    /// Databases with records that were assessed.
    pub databases: usize,
    /// Databases that got a `stale` alert.
    pub stale: Vec<String>,
}

/// What a prune invocation did (its JSON result).
#[derive(Debug, Clone, Serialize)]
pub struct PruneOutcome {
    /// Reaped, deleted, repaired and skipped backups.
    pub report: PruneReport,
    /// Stored backups (with an object) the policy kept.
    pub kept: usize,
    /// Keys records need but the store lacks (damage to look at).
    pub missing: Vec<Missing>,
    /// Databases that got a `stale` alert.
    pub stale: Vec<String>,
}

impl Jobs {
    /// Builds everything from the settings, once per container: the AWS configuration (when
    /// anything configured calls AWS), the backends, the notifiers (the log, plus SNS and the
    /// webhook when configured), the verify starter (when `PGKEEP_VERIFY_FUNCTION` is set)
    /// and metrics on stdout.
    pub async fn connect(settings: LambdaSettings, key_use: KeyUse) -> Result<Jobs, ConfigError> {
        let mut jobs = Self::connect_here(settings, key_use).await?;
        jobs.task_starter = runner::task_starter(&jobs.settings, jobs.aws.as_ref())?;
        Ok(jobs)
    }

    /// As [`Jobs::connect`], for a process that runs every job itself (`pgkeep job` in its
    /// Fargate task): no task starter, whatever `PGKEEP_RUNNERS` says.
    pub async fn connect_here(
        settings: LambdaSettings,
        key_use: KeyUse,
    ) -> Result<Jobs, ConfigError> {
        let (services, aws) =
            crate::wiring::connect(&settings.backends, key_use, settings.uses_aws()).await?;
        let notifier = crate::wiring::notifier(&settings, aws.as_ref())?;
        let verify_starter =
            crate::wiring::invoker(settings.verify_function.as_deref(), aws.as_ref())
                .map(|invoker| invoker as Arc<dyn VerifyStarter>);
        Ok(Jobs {
            services,
            settings,
            aws,
            notifier,
            verify_starter,
            metrics: Arc::new(StdoutMetrics),
            task_starter: None,
        })
    }

    /// The dump function: back up `trigger.database` once per event.
    ///
    /// Each request (an event, an API call) names a fixed sequence of attempt ids
    /// ([`attempt_id`]). A delivery looks at them in order: one still running or that
    /// succeeded makes it a repeated delivery (the existing record is returned, no second
    /// backup is taken); one that failed is skipped, so a retry after a failure runs the next
    /// attempt (its record names the failed one in `retry_of`). After [`MAX_ATTEMPTS`] failed
    /// attempts the request fails without running (`AlreadyFailed`).
    ///
    /// Runs of the database whose lease is dead are failed first (before the attempts are
    /// looked at), each with a `backup_failed` alert. On success the backup's metrics are written and its verification
    /// started; on failure the attempt's record says why (one is written when the run failed
    /// before it recorded anything, so an accepted request never vanishes) and one
    /// `backup_failed` alert is sent. A scheduled dump refused because another run of the
    /// database holds its lease is an error without a record or an alert: the running backup
    /// is the one that counts, and Lambda's retry runs once the lease is free.
    pub async fn run_dump(&self, trigger: &DumpTrigger) -> Result<DumpOutcome, JobError> {
        // Refused before anything is recorded: a record would hide that the catalog was lost.
        super::repair::check_catalog(&self.services).await?;
        if let Some(handed_off) = self.dump_elsewhere(trigger).await? {
            return Ok(handed_off);
        }
        if trigger.all_databases {
            return self.run_server(trigger).await;
        }
        let now = Utc::now();
        let first = trigger
            .backup_id
            .clone()
            .unwrap_or_else(|| BackupId::generate(now));
        // Reaped first: a retry of an event whose run died (its container killed) finds that
        // attempt failed and takes the next one, instead of calling itself a repeat of it.
        let (_, abandoned) = self.reap(Some(&trigger.database), now).await;
        let (id, retry_of) = match self.next_attempt(&first).await {
            Ok(Attempt::Run { id, retry_of }) => (id, retry_of),
            Ok(Attempt::Exists(existing)) => {
                return match abandoned {
                    Ok(_) => Ok(duplicate(existing)),
                    Err(source) => Err(JobError::Unalerted {
                        done: format!("repeated delivery of backup {}", existing.id),
                        source,
                    }),
                }
            }
            Ok(Attempt::Exhausted(last)) => return Err(exhausted(last)),
            Err(e) => return Err(self.dump_failed(trigger, &first, None, e).await),
        };
        if let Some(failed) = &retry_of {
            tracing::info!(backup = %id, retry_of = %failed, database = %trigger.database, "an earlier attempt of this request failed: taking the backup again");
        }
        self.started(RunKind::Backup, &trigger.database).await;
        let result = self.dump(trigger, &id, retry_of.clone()).await;
        let record = match result {
            Ok(record) => record,
            Err(Error::LeaseHeld { ref holder, .. }) if holder == id.as_str() => {
                return self.duplicate_of(&id).await
            }
            Err(Error::Catalog(CatalogError::AlreadyExists(_))) => {
                return self.duplicate_of(&id).await
            }
            Err(e @ Error::LeaseHeld { .. }) if trigger.is_scheduled() => return Err(e.into()),
            Err(e) => return Err(self.dump_failed(trigger, &id, retry_of, e).await),
        };
        self.metrics.emit(&backup_metrics(&record));
        self.good_news(AlertKind::BackupOk, &record, "the backup completed")
            .await;
        let (verify_started, verify_error) = match &self.verify_starter {
            None => (false, None),
            Some(starter) => {
                let event = VerifyEvent::Verify(VerifyTrigger {
                    backup_id: Some(record.id.clone()),
                    requested_by: Some("dump".into()),
                    jobs: trigger.jobs,
                });
                match starter.start(&event).await {
                    Ok(()) => (true, None),
                    Err(e) => {
                        tracing::error!(backup = %record.id, error = %e, "could not start the verification; the scheduled verify will pick the backup up");
                        (false, Some(e))
                    }
                }
            }
        };
        if let Err(source) = abandoned {
            return Err(JobError::Unalerted {
                done: format!("backup {} completed", record.id),
                source,
            });
        }
        Ok(DumpOutcome::Completed {
            backup: record,
            verify_started,
            verify_error,
        })
    }

    async fn dump(
        &self,
        trigger: &DumpTrigger,
        id: &BackupId,
        retry_of: Option<BackupId>,
    ) -> Result<BackupRecord, Error> {
        let target = self.database_target(&trigger.database).await?;
        let mut request = BackupRequest::new(target, trigger.kind);
        request.id = Some(id.clone());
        request.retry_of = retry_of;
        request.database_name = Some(trigger.database.clone());
        request.abandon_after = self.settings.abandon_after;
        request.compression = self.settings.compression;
        request.labels = trigger.labels.clone();
        request.requested_by = Some(trigger.requester().to_owned());
        // The event's `jobs` wins over the database's PGKEEP_JOBS.
        request.jobs = trigger
            .jobs
            .unwrap_or_else(|| self.settings.jobs_for(&trigger.database));
        // The event's selection replaces the database's configured one.
        request.selection = match &trigger.selection {
            Some(selection) => selection.clone(),
            None => self
                .settings
                .selections
                .get(&trigger.database)
                .cloned()
                .unwrap_or_default(),
        };
        tokio::select! {
            result = backup(&self.services, &request, Arc::default()) => result,
            why = crate::signals::stop_requested(STOP_BEFORE_DEADLINE) => {
                // Dropping the backup future killed pg_dump and discarded the partial object;
                // the record, any upload left and the lease are settled here, while we still
                // run (the time limit kills the process without a signal).
                if let Err(e) = super::backup::end_interrupted(&self.services, &trigger.database, id, &why).await {
                    tracing::error!(backup = %id, error = %e, "could not record the stopped backup; the reaper will");
                }
                Err(Error::Stopped(why))
            }
        }
    }

    /// A whole-server run on the server of `trigger.database`. Its run id is the request's
    /// first backup id, so a repeated delivery finds the run and starts nothing. Every failed
    /// backup is alerted, every completed one measured and its verification started.
    async fn run_server(&self, trigger: &DumpTrigger) -> Result<DumpOutcome, JobError> {
        let run_id = trigger
            .backup_id
            .clone()
            .unwrap_or_else(|| BackupId::generate(Utc::now()))
            .to_string();
        match super::server::run_members(&self.services, &run_id).await {
            Ok(existing) => {
                return Ok(DumpOutcome::DuplicateRun {
                    run_id,
                    backups: existing.len(),
                })
            }
            Err(Error::UnknownRun(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let target = self.database_target(&trigger.database).await?;
        let mut request = super::server::RunRequest::new(target, trigger.kind);
        request.run_id = Some(run_id);
        request.connection = Some(trigger.database.clone());
        request.labels = trigger.labels.clone();
        request.abandon_after = self.settings.abandon_after;
        request.compression = self.settings.compression;
        let run = super::server::backup_all(&self.services, &request, Arc::default()).await?;
        let now = Utc::now();
        let mut verify_started = 0;
        let mut unsent = None;
        for member in std::iter::once(&run.globals).chain(&run.databases) {
            let Ok(record) = self.services.catalog.get(&member.backup_id).await else {
                continue;
            };
            if record.status == BackupStatus::Failed {
                if let Err(e) = self.notify(&Alert::backup_failed(&record, now)).await {
                    unsent.get_or_insert(e);
                }
                continue;
            }
            self.metrics.emit(&backup_metrics(&record));
            if let Some(starter) = &self.verify_starter {
                let event = VerifyEvent::Verify(VerifyTrigger {
                    backup_id: Some(record.id.clone()),
                    requested_by: Some("dump".into()),
                    jobs: None,
                });
                match starter.start(&event).await {
                    Ok(()) => verify_started += 1,
                    Err(e) => {
                        tracing::error!(backup = %record.id, error = %e, "could not start the verification; the scheduled verify will pick the backup up")
                    }
                }
            }
        }
        if let Some(source) = unsent {
            return Err(JobError::Unalerted {
                done: format!(
                    "run {} ended (failed: {})",
                    run.run_id,
                    run.failed.join(", ")
                ),
                source,
            });
        }
        Ok(DumpOutcome::Run {
            run,
            verify_started,
        })
    }

    /// The record with `id`, if there is one.
    async fn find(&self, id: &BackupId) -> Result<Option<BackupRecord>, Error> {
        match self.services.catalog.get(id).await {
            Ok(record) => Ok(Some(record)),
            Err(CatalogError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The attempt a delivery of the request whose first attempt is `first` runs, or the
    /// record that makes it a repeated delivery.
    async fn next_attempt(&self, first: &BackupId) -> Result<Attempt, Error> {
        let mut failed = None;
        for n in 1..=MAX_ATTEMPTS {
            let id = attempt_id(first, n);
            match self.find(&id).await? {
                None => {
                    return Ok(Attempt::Run {
                        id,
                        retry_of: failed.map(|r: BackupRecord| r.id),
                    })
                }
                Some(record) if retakeable(&record) => failed = Some(record),
                Some(record) => return Ok(Attempt::Exists(record)),
            }
        }
        Ok(Attempt::Exhausted(
            failed.expect("MAX_ATTEMPTS is at least 1"),
        ))
    }

    /// A run found out to be a repeated delivery after it started (it lost the race for the
    /// lease or the insert to the first delivery).
    async fn duplicate_of(&self, id: &BackupId) -> Result<DumpOutcome, JobError> {
        let existing = self.services.catalog.get(id).await?;
        if retakeable(&existing) {
            // The run it raced has failed meanwhile: the next delivery retakes it.
            return Err(exhausted(existing));
        }
        Ok(duplicate(existing))
    }

    /// Alerts a failed dump once (from its `failed` record) and returns the error to fail the
    /// invocation with. A run that failed before it recorded anything (its database's secret
    /// unreadable, the lease held by a restore's safety backup) gets its `failed` record here:
    /// an accepted request never ends without one.
    async fn dump_failed(
        &self,
        trigger: &DumpTrigger,
        id: &BackupId,
        retry_of: Option<BackupId>,
        error: Error,
    ) -> JobError {
        let now = Utc::now();
        let alert = match self.services.catalog.get(id).await {
            Ok(record) if record.status == BackupStatus::Failed => {
                Alert::backup_failed(&record, now)
            }
            Err(CatalogError::NotFound(_)) => {
                match self.record_not_started(trigger, id, retry_of, &error).await {
                    Ok(record) => Alert::backup_failed(&record, now),
                    Err(e) => {
                        tracing::error!(backup = %id, database = %trigger.database, error = %e, "could not record the failure of a backup that never started");
                        Alert::new(
                            AlertKind::BackupFailed,
                            &trigger.database,
                            Some(id.clone()),
                            &error.to_string(),
                            now,
                        )
                    }
                }
            }
            _ => Alert::new(
                AlertKind::BackupFailed,
                &trigger.database,
                Some(id.clone()),
                &error.to_string(),
                now,
            ),
        };
        JobError::Failed {
            source: Box::new(error),
            alert: self.notify(&alert).await.err(),
        }
    }

    /// Writes the `failed` record of a run that ended before it recorded anything.
    async fn record_not_started(
        &self,
        trigger: &DumpTrigger,
        id: &BackupId,
        retry_of: Option<BackupId>,
        error: &Error,
    ) -> Result<BackupRecord, CatalogError> {
        let mut record =
            trigger.not_started_record(id, format!("the backup could not start: {error}"));
        record.retry_of = retry_of;
        self.services.catalog.insert(&record).await?;
        super::state::publish_failure(&self.services, &record).await;
        tracing::info!(backup = %id, database = %trigger.database, error = %error, "backup failed before it started");
        Ok(record)
    }

    /// Fails the runs (of one database, or all) whose run is dead, and alerts each (runs
    /// settled as completed are not failures and are not alerted). A failure to reap is logged (the next run retries it); a failure to alert
    /// is returned, after the others were tried.
    async fn reap(
        &self,
        database: Option<&str>,
        now: DateTime<Utc>,
    ) -> (reaper::Reaped, Result<(), NotifyError>) {
        let reaped = match reaper::reap(&self.services, database, now, self.settings.abandon_after)
            .await
        {
            Ok(reaped) => reaped,
            Err(e) => {
                tracing::error!(database, error = %e, "could not reap abandoned backups; the next run retries");
                return (reaper::Reaped::default(), Ok(()));
            }
        };
        for settled in &reaped.settled {
            tracing::warn!(backup = %settled.id, database = %settled.database, "a run that died after publishing its backup was settled as completed; not alerted");
        }
        // Only runs that failed are alerted: a settled run did back its database up.
        let alerted = self.alert_abandoned(&reaped.abandoned, now).await;
        (reaped, alerted)
    }

    async fn alert_abandoned(
        &self,
        reaped: &[BackupRecord],
        now: DateTime<Utc>,
    ) -> Result<(), NotifyError> {
        let mut first_failure = None;
        for record in reaped {
            if let Err(e) = self.notify(&Alert::backup_failed(record, now)).await {
                first_failure.get_or_insert(e);
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// Tells the notifiers a run starts (a heartbeat's `/start`); a failure is only logged:
    /// the run matters more than its ping.
    async fn started(&self, run: RunKind, database: &str) {
        if let Err(e) = self.notifier.started(run, database).await {
            tracing::warn!(database, error = %e, "could not send the start notice");
        }
    }

    /// A notice that a run went well (sent where selected, and to a heartbeat); a delivery
    /// failure is logged, never a failed run.
    async fn good_news(&self, kind: AlertKind, record: &BackupRecord, what: &str) {
        let _ = self
            .notify(&Alert::about(kind, record, what, Utc::now()))
            .await;
    }

    /// Sends one alert; a delivery failure is logged here and returned for the caller to fail
    /// the invocation with.
    async fn notify(&self, alert: &Alert) -> Result<(), NotifyError> {
        let sent = self.notifier.notify(alert).await;
        if let Err(e) = &sent {
            tracing::error!(alert = alert.kind.as_str(), database = %alert.database, error = %e, "an alert could not be sent");
        }
        sent
    }

    /// The verify function: a verification or a restore.
    pub async fn run_verify_event(&self, event: &VerifyEvent) -> Result<VerifyOutcome, JobError> {
        if let Some(handed_off) = self.verify_elsewhere(event).await? {
            return Ok(handed_off);
        }
        match event {
            VerifyEvent::Verify(trigger) => self.run_verify(trigger).await,
            VerifyEvent::Restore(trigger) => Ok(VerifyOutcome::Restored {
                report: self.run_restore(trigger).await?,
            }),
        }
    }

    /// Verifies one backup (or the newest completed one not yet verified) on the scratch
    /// server: `PGKEEP_SCRATCH_SECRET_ARN`, else the backup's own database server. A failed
    /// verdict is recorded and alerted, and the invocation succeeds (retrying would only
    /// repeat it); when no verdict could be reached (scratch server, key) it is alerted and
    /// the invocation fails.
    pub async fn run_verify(&self, trigger: &VerifyTrigger) -> Result<VerifyOutcome, JobError> {
        let record = match &trigger.backup_id {
            Some(id) => self.services.catalog.get(id).await?,
            None => match next_to_verify(&self.services).await? {
                Some(record) => record,
                None => return Ok(VerifyOutcome::NothingToVerify),
            },
        };
        self.started(RunKind::Verification, &record.database).await;
        // A whole-server run's backups name databases (and `@globals`) that are not
        // configured: they are verified on the server of the connection the run used.
        let mut scratch_name = record.database.clone();
        if let (Some(run_id), None) = (
            &record.run_id,
            self.settings.databases.get(&record.database),
        ) {
            if let Ok(Some(connection)) =
                super::server::run_connection(&self.services, run_id).await
            {
                scratch_name = connection;
            }
        }
        let scratch = match self.scratch_for(&scratch_name).await {
            Ok(scratch) => scratch,
            Err(e) => return Err(self.verify_not_run(&record, e).await),
        };
        let mut request = VerifyRequest::new(scratch, Some(record.id.clone()));
        request.jobs = trigger
            .jobs
            .unwrap_or_else(|| self.settings.jobs_for(&record.database));
        request.actor = trigger
            .requested_by
            .clone()
            .unwrap_or_else(|| "pgkeep".into());
        let report = match verify(&self.services, &request).await {
            Ok(report) => report,
            Err(e @ Error::Unusable { .. }) => return Err(e.into()),
            Err(e) => return Err(self.verify_not_run(&record, e).await),
        };
        let recorded = report.record.clone().unwrap_or(record);
        let Some(verification) = recorded.verification.clone() else {
            return Ok(VerifyOutcome::Verified { backup: recorded });
        };
        self.metrics.emit(&verify_metrics(
            &recorded.database,
            &recorded.id,
            verification.duration_ms,
            verification.verified_at,
        ));
        if report.failure.is_none() {
            self.good_news(
                AlertKind::VerificationOk,
                &recorded,
                "the backup was verified",
            )
            .await;
            return Ok(VerifyOutcome::Verified { backup: recorded });
        }
        let reason = verification
            .reason
            .clone()
            .unwrap_or_else(|| format!("{:?}", verification.result));
        let alert = Alert::verification_failed(&recorded, &reason, Utc::now());
        if let Err(source) = self.notify(&alert).await {
            return Err(JobError::Unalerted {
                done: format!("backup {} failed verification ({reason})", recorded.id),
                source,
            });
        }
        Ok(VerifyOutcome::VerificationFailed {
            backup: recorded,
            reason,
        })
    }

    async fn verify_not_run(&self, record: &BackupRecord, error: Error) -> JobError {
        let alert = Alert::verification_failed(
            record,
            &format!("no verdict was reached: {error}"),
            Utc::now(),
        );
        JobError::Failed {
            source: Box::new(error),
            alert: self.notify(&alert).await.err(),
        }
    }

    /// Restores a backup (as asked through the status API) into a database on the server of
    /// the backup's own database, with the CLI's confirmation rules; an overwrite takes a
    /// `pre_restore` backup first. A failure or refusal is alerted (`restore_failed`: nobody
    /// waits for the answer of an asynchronous restore).
    pub async fn run_restore(&self, trigger: &RestoreTrigger) -> Result<RestoreReport, JobError> {
        let result = async {
            let record = self.services.catalog.get(&trigger.backup_id).await?;
            let server = self.database_target(&record.database).await?;
            let mut request =
                RestoreRequest::new(record.id.clone(), server, trigger.target_db.clone());
            request.overwrite = trigger.overwrite;
            request.confirm = trigger.confirm.clone();
            request.dry_run = trigger.dry_run;
            request.no_owner = trigger.no_owner;
            request.jobs = trigger
                .jobs
                .unwrap_or_else(|| self.settings.jobs_for(&record.database));
            request.actor = trigger
                .requested_by
                .clone()
                .unwrap_or_else(|| "pgkeep".into());
            request.safety_backup_id = Some(BackupId::generate(Utc::now()));
            request.restore_id = trigger.restore_id.clone();
            restore(&self.services, &request).await
        }
        .await;
        match result {
            Ok(report) => {
                let alert = Alert::new(
                    AlertKind::RestoreOk,
                    &trigger.target_db,
                    Some(trigger.backup_id.clone()),
                    &format!(
                        "{} of backup {} (asked for by {}) succeeded in {} ms",
                        if trigger.dry_run {
                            "dry run of the restore"
                        } else {
                            "restore"
                        },
                        trigger.backup_id,
                        trigger.requested_by.as_deref().unwrap_or("unknown"),
                        report.duration_ms
                    ),
                    Utc::now(),
                );
                // Good news that cannot be sent is logged (by `notify`), not a failed restore.
                let _ = self.notify(&alert).await;
                Ok(report)
            }
            // A repeated delivery (Lambda's retry of a failed run, a duplicate) of a restore
            // that has ended, or one given up as never started: its record already says how
            // it ended and it was alerted then, so nothing is recorded or alerted again.
            Err(error @ Error::RestoreEnded { .. }) => Err(JobError::Failed {
                source: Box::new(error),
                alert: None,
            }),
            Err(error) => {
                // Failed before the restore could record it (the backup or its server
                // unreachable): its queued record says so.
                if let Some(id) = &trigger.restore_id {
                    crate::ops::restore::record_failure(&self.services, id, &error.to_string())
                        .await;
                }
                let what = if trigger.dry_run {
                    "dry run of the restore"
                } else {
                    "restore"
                };
                let alert = Alert::new(
                    AlertKind::RestoreFailed,
                    &trigger.target_db,
                    Some(trigger.backup_id.clone()),
                    &format!(
                        "{what} of backup {} (asked for by {}) failed: {error}",
                        trigger.backup_id,
                        trigger.requested_by.as_deref().unwrap_or("unknown")
                    ),
                    Utc::now(),
                );
                Err(JobError::Failed {
                    source: Box::new(error),
                    alert: self.notify(&alert).await.err(),
                })
            }
        }
    }

    /// The prune function: reap abandoned runs (alerting each), apply the retention policy,
    /// then check every database's health and send one `stale` alert per database without a
    /// recent good backup (also when pruning failed: a broken prune must not hide a stale
    /// database), and write the age of each database's newest good backup as a metric.
    pub async fn run_prune(&self, now: DateTime<Utc>) -> Result<PruneOutcome, JobError> {
        let (reaped, abandoned) = self.reap(None, now).await;
        let pruned = self.prune(now).await;
        let (assessed, stale, alerted) = self.check_health(now).await;
        let (mut report, kept, missing) = pruned?;
        // The runs reaped before the plan, reported with those its execution reaped.
        let ids = |records: Vec<BackupRecord>| records.into_iter().map(|r| r.id);
        report.reaped.splice(0..0, ids(reaped.abandoned));
        report.settled.splice(0..0, ids(reaped.settled));
        assessed?;
        let alerted = abandoned.and(alerted);
        if let Err(source) = alerted {
            return Err(JobError::Unalerted {
                done: format!(
                    "prune deleted {} backups and found {} stale databases",
                    report.deleted.len(),
                    stale.len()
                ),
                source,
            });
        }
        Ok(PruneOutcome {
            report,
            kept,
            missing,
            stale,
        })
    }

    /// The hourly health check (the prune function's `health` event): every database's
    /// backup age metric, and one `stale` alert per database without a good backup younger
    /// than the limit, so staleness is noticed within the hour rather than at the next prune.
    /// Nothing is reaped or deleted.
    pub async fn run_health(&self, now: DateTime<Utc>) -> Result<HealthOutcome, JobError> {
        let (assessed, stale, alerted) = self.check_health(now).await;
        let databases = assessed?.len();
        if let Err(source) = alerted {
            return Err(JobError::Unalerted {
                done: format!("the health check found {} stale databases", stale.len()),
                source,
            });
        }
        Ok(HealthOutcome { databases, stale })
    }

    /// Assesses every database, writes the age metrics and alerts the stale ones; returns the
    /// assessment, the stale databases and the first alert delivery failure.
    async fn check_health(
        &self,
        now: DateTime<Utc>,
    ) -> (
        Result<Vec<DatabaseHealth>, Error>,
        Vec<String>,
        Result<(), NotifyError>,
    ) {
        let assessed = health(&self.services, now, &self.settings.health).await;
        let (stale, alerted) = match &assessed {
            Ok(databases) => {
                for m in health_metrics(databases, now) {
                    self.metrics.emit(&m);
                }
                self.alert_stale(databases, now).await
            }
            Err(_) => (Vec::new(), Ok(())),
        };
        (assessed, stale, alerted)
    }

    async fn prune(&self, now: DateTime<Utc>) -> Result<(PruneReport, usize, Vec<Missing>), Error> {
        let request = PruneRequest {
            policy: self.settings.retention.clone(),
            database: None,
            now,
            abandon_after: self.settings.abandon_after,
            // A Lambda restores without staging: there is no staging directory to sweep.
            staging_dir: None,
        };
        let plan = prune::plan(&self.services, &request).await?;
        let report = prune::execute(&self.services, &plan, "schedule").await?;
        for m in &plan.missing {
            tracing::warn!(backup = %m.id, database = %m.database, key = %m.key, "a record's object or manifest is missing from the store");
        }
        let kept = plan
            .decisions
            .iter()
            .filter(|d| d.keeps() && d.status.has_object())
            .count();
        Ok((report, kept, plan.missing))
    }

    /// One `stale` alert per database, in the catalog or configured, without a good backup
    /// younger than the limit; returns their names and the first delivery failure.
    async fn alert_stale(
        &self,
        databases: &[DatabaseHealth],
        now: DateTime<Utc>,
    ) -> (Vec<String>, Result<(), NotifyError>) {
        let mut alerts: Vec<Alert> = databases
            .iter()
            .filter_map(|h| Alert::stale(h, now))
            .collect();
        for name in self.settings.databases.keys() {
            if !databases.iter().any(|h| &h.status.database == name) {
                alerts.push(Alert::new(
                    AlertKind::Stale,
                    name,
                    None,
                    "no backup of this database is recorded at all",
                    now,
                ));
            }
        }
        let mut first_failure = None;
        for alert in &alerts {
            if let Err(e) = self.notify(alert).await {
                first_failure.get_or_insert(e);
            }
        }
        (
            alerts.into_iter().map(|a| a.database).collect(),
            first_failure.map_or(Ok(()), Err),
        )
    }

    /// How to reach a configured database: its URL (with RDS IAM tokens when
    /// `PGKEEP_DATABASE_IAM_AUTH` is on), or its secret read now (so a rotated password is
    /// picked up without a redeploy).
    async fn database_target(&self, database: &str) -> Result<PgTarget, Error> {
        let source = self.settings.databases.get(database).ok_or_else(|| {
            ConfigError::Missing(format!(
                "database {database:?} is not configured; PGKEEP_DATABASES names: {}",
                self.settings.database_names().join(", ")
            ))
        })?;
        let (url, secret) = source.parts();
        let what = format!("PGKEEP_DATABASES[{database:?}]");
        Ok(self
            .settings
            .database_auth
            .target(&what, url, secret, self.aws.as_ref())
            .await?)
    }

    /// The server a backup of `database` is verified on.
    async fn scratch_for(&self, database: &str) -> Result<PgTarget, Error> {
        match &self.settings.scratch_secret_arn {
            Some(arn) => Ok(database_target(None, Some(arn), self.aws.as_ref()).await?),
            None => self.database_target(database).await.map_err(|e| match e {
                Error::Config(ConfigError::Missing(m)) => ConfigError::Missing(format!(
                    "{m}; backups are verified on their own database's server unless PGKEEP_SCRATCH_SECRET_ARN names a scratch server"
                ))
                .into(),
                other => other,
            }),
        }
    }
}

/// What a delivery of a dump request does.
enum Attempt {
    /// Runs this attempt (the failed one before it, if any, in `retry_of`).
    Run {
        id: BackupId,
        retry_of: Option<BackupId>,
    },
    /// Nothing: this attempt is running or succeeded.
    Exists(BackupRecord),
    /// Nothing: every attempt failed; the last one.
    Exhausted(BackupRecord),
}

/// A failed attempt, which a later delivery of its request takes again (also once prune
/// deleted its record: it never stored a backup).
fn retakeable(record: &BackupRecord) -> bool {
    record.never_held_a_backup()
}

/// The answer to a repeated delivery: the existing record.
fn duplicate(existing: BackupRecord) -> DumpOutcome {
    tracing::info!(backup = %existing.id, status = %existing.status, "repeated delivery: the backup exists, no second one taken");
    DumpOutcome::Duplicate { backup: existing }
}

/// The answer to a delivery that finds the request's attempts used up (or its run failed
/// while this delivery raced it): the last failure again, without a second alert.
fn exhausted(last: BackupRecord) -> JobError {
    JobError::AlreadyFailed {
        reason: last
            .error
            .clone()
            .unwrap_or_else(|| "no reason recorded".into()),
        id: last.id,
        database: last.database,
    }
}
