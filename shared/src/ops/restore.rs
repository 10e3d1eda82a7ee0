//! Restoring a backup into a database, in a way that cannot destroy data by accident.
//!
//! Plan, then execute. [`restore`] first plans without writing anything: the backup must be
//! readable, the target must not exist unless overwriting was asked for *and* its name typed
//! again, the role must be able to create (and, to overwrite, drop) databases, and a parallel
//! restore needs room to stage the archive. A dry run stops after the plan and a read of the
//! whole object through `pg_restore --list`: checked, decrypted, listed, nothing written.
//!
//! Executing reads the whole object once more before any database is touched, so a corrupt
//! backup is refused with nothing changed. Overwriting takes a `pre_restore` safety backup of
//! the target and waits for it to complete. The archive is then restored into a new database
//! of pgkeep's own (`pgkeep_restore_…`); only when pg_restore succeeded is the target dropped
//! (when overwriting) and the new database renamed to the target's name. A failed restore drops
//! the new database and leaves the target as it was. Every restore (not a dry run) leaves an
//! audit entry: who, when, what, how it ended.
//!
//! Writes to the target after its safety backup are lost when it is replaced: stop the
//! applications writing to it first. Database-level settings and grants of a replaced
//! database (ALTER DATABASE … SET, GRANT CONNECT) are not carried over; its owner is.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::backup::{backup, BackupRequest};
use super::parts;
use super::replay::{self, ReadFailure, Sink};
use super::scratch::{
    AdminConnection, DatabaseInfo, OwnedDatabase, ServerRole, RESTORE_PREFIX, STALE_AFTER,
    VERIFY_PREFIX,
};
use super::Error;
use crate::backends::Services;
use crate::model::{
    bounded_listing, AuditEntry, BackupId, BackupKind, BackupRecord, RestoreRun, RestoreState,
};
use crate::pipeline::archive_scan::{ArchiveSummary, TocEntry};
use crate::pipeline::pg_restore::{tolerates_transaction_timeout, PgRestore, RestoreOptions};
use crate::pipeline::Progress;
use crate::postgres::{locate_tool, locate_tool_with_major, PgTarget};

/// Free space demanded beyond the archive's size before staging it.
const STAGING_HEADROOM: u64 = 64 << 20;

/// What to restore, where, and how carefully.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// The backup to restore.
    pub id: BackupId,
    /// The server to restore on: a connection to any database there other than the target
    /// (when it names the target, `postgres` is used instead).
    pub server: PgTarget,
    /// The database to restore into. It must not exist unless `overwrite` is set.
    pub target_db: String,
    /// Replace the target if it exists (after a safety backup). Needs `confirm`.
    pub overwrite: bool,
    /// The target's name typed again; overwriting is refused unless it equals `target_db`.
    pub confirm: Option<String>,
    /// Check, decrypt and list the archive; write nothing anywhere.
    pub dry_run: bool,
    /// pg_restore workers; above 1 the archive is staged to a temporary file first.
    pub jobs: u32,
    /// Restore without the original owners and grants (`--no-owner --no-privileges`), for a
    /// server that lacks the original roles.
    pub no_owner: bool,
    /// Where `jobs > 1` stages the archive (plaintext, mode 0600, removed after); the system
    /// temporary directory when `None`.
    pub staging_dir: Option<PathBuf>,
    /// Directory of the PostgreSQL client binaries; searched when `None`.
    pub pg_bin: Option<PathBuf>,
    /// Who asks, for the audit trail.
    pub actor: String,
    /// A pre-allocated id for the safety backup, so a caller interrupted while it runs can
    /// mark it failed ([`crate::ops::backup::mark_failed`]).
    pub safety_backup_id: Option<BackupId>,
    /// The id its restore record goes under: allocated by whoever queued it (the status API),
    /// else a fresh one.
    pub restore_id: Option<BackupId>,
    /// Archive bytes restored so far, for progress displays.
    pub progress: Arc<Progress>,
}

impl RestoreRequest {
    /// A restore of `id` into the new database `target_db` on `server`, one job, owners kept.
    pub fn new(id: BackupId, server: PgTarget, target_db: impl Into<String>) -> Self {
        RestoreRequest {
            id,
            server,
            target_db: target_db.into(),
            overwrite: false,
            confirm: None,
            dry_run: false,
            jobs: 1,
            no_owner: false,
            staging_dir: None,
            pg_bin: None,
            actor: "pgkeep".into(),
            safety_backup_id: None,
            restore_id: None,
            progress: Arc::default(),
        }
    }
}

/// What a restore does (or, in a dry run, would do) to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreAction {
    /// The target does not exist; it is created.
    CreateNew,
    /// The target exists; it is backed up, then replaced.
    ReplaceExisting,
}

/// How a restore went (or, for a dry run, what it found).
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The backup restored.
    pub backup_id: BackupId,
    /// The database the backup was taken of.
    pub source_database: String,
    /// The database restored into.
    pub target_database: String,
    /// The server, without password.
    pub server: String,
    /// What happened to the target.
    pub action: RestoreAction,
    /// Whether this was only a dry run (nothing written).
    pub dry_run: bool,
    /// pg_restore workers.
    pub jobs: u32,
    /// The `pre_restore` backup taken of the target before replacing it.
    pub safety_backup: Option<BackupId>,
    /// When the restore started.
    pub started_at: DateTime<Utc>,
    /// When the target was first touched (dropped to be replaced); `None` when it was new.
    pub target_replaced_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Tables whose data the archive holds.
    pub tables: usize,
    /// Rows in those tables.
    pub rows: u64,
    /// Large objects in the archive.
    pub large_objects: u64,
    /// `pg_restore --list` of the archive (dry runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listing: Option<String>,
    /// The restore's record (`pgkeep restores`, `GET /restores/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_id: Option<BackupId>,
}

/// Restores (or, with `dry_run`, checks and lists) a backup. Refusals change nothing; a failure
/// after the target was planned leaves no new database behind and the target as it was.
///
/// Every restore is recorded ([`RestoreRun`], `running` then `succeeded` or `failed`) under
/// `request.restore_id` or a fresh id, so it can be followed and listed; a record that cannot
/// be written is logged, never a reason to refuse the restore.
pub async fn restore(
    services: &Services,
    request: &RestoreRequest,
) -> Result<RestoreReport, Error> {
    let now = Utc::now();
    let id = request
        .restore_id
        .clone()
        .unwrap_or_else(|| BackupId::generate(now));
    let mut run = match services.catalog.get_restore(&id).await {
        // Given up on (never started in time) or already run: a late or repeated invocation
        // must not restore now, when nobody expects it.
        Ok(ended) if ended.ended() => {
            return Err(Error::RestoreEnded {
                id: id.to_string(),
                why: ended
                    .error
                    .unwrap_or_else(|| format!("{:?}", ended.state).to_lowercase()),
            })
        }
        Ok(queued) => queued,
        Err(_) => {
            let mut run = RestoreRun::queued(id, request.id.clone(), &request.target_db, now);
            run.requested_by = Some(request.actor.clone());
            run
        }
    };
    run.dry_run = request.dry_run;
    run.overwrite = request.overwrite;
    run.state = RestoreState::Running;
    run.started_at = Some(now);
    run.safety_backup_id = request.safety_backup_id.clone();
    run.process = crate::process::current();
    run.alive_at = Some(now);
    put_run(services, &run).await;
    // While it runs, the record shows it is alive, so the reaper can tell a killed restore
    // (stuck `running` for ever) from a long one.
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let (mut result, ()) = tokio::join!(
        async {
            let r = restore_untracked(services, request).await;
            let _ = done.send(());
            r
        },
        keep_alive(services, &run, finished),
    );
    if let Ok(report) = &mut result {
        report.restore_id = Some(run.id.clone());
    }
    let end = Utc::now();
    match &result {
        Ok(report) => {
            run.state = RestoreState::Succeeded;
            run.finished_at = Some(report.finished_at);
            run.duration_ms = Some(report.duration_ms);
            run.safety_backup_id = report.safety_backup.clone();
            run.listing = report.listing.as_deref().map(bounded_listing);
            run.tables = Some(report.tables);
            run.rows = Some(report.rows);
        }
        Err(e) => {
            // A safety backup taken before the failure stays: name it if it was stored.
            run.safety_backup_id = match &request.safety_backup_id {
                Some(id) => services
                    .catalog
                    .get(id)
                    .await
                    .ok()
                    .filter(|r| r.status.has_object())
                    .map(|r| r.id),
                None => None,
            };
            run.fail(e.to_string(), end);
        }
    }
    put_run(services, &run).await;
    result
}

/// Renews the running record's `alive_at` every [`RESTORE_ALIVE_EVERY`] until `finished`
/// (a failed write is logged; the next beat retries). A write is never cut short, so none
/// can land after the final record and make it `running` again.
async fn keep_alive(
    services: &Services,
    run: &RestoreRun,
    mut finished: tokio::sync::oneshot::Receiver<()>,
) {
    let mut beat = run.clone();
    loop {
        tokio::select! {
            _ = &mut finished => return,
            _ = tokio::time::sleep(crate::model::RESTORE_ALIVE_EVERY) => {}
        }
        beat.alive_at = Some(Utc::now());
        put_run(services, &beat).await;
    }
}

/// Writes a restore's record; a failure is logged (the restore itself goes on).
async fn put_run(services: &Services, run: &RestoreRun) {
    if let Err(e) = services.catalog.put_restore(run).await {
        tracing::error!(restore = %run.id, error = %e, "could not record the restore's state");
    }
}

/// Marks restore `id` failed with `error` unless it already ended (a restore that could not
/// even start: its backup or server unreachable, its function not invoked).
pub async fn record_failure(services: &Services, id: &BackupId, error: &str) {
    match services.catalog.get_restore(id).await {
        Ok(mut run) if !run.ended() => {
            run.fail(error.to_owned(), Utc::now());
            put_run(services, &run).await;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(restore = %id, error = %e, "could not read the restore to record its failure")
        }
    }
}

async fn restore_untracked(
    services: &Services,
    request: &RestoreRequest,
) -> Result<RestoreReport, Error> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let planned = plan(services, request).await;
    if request.dry_run {
        return preview(services, request, planned?, started_at, clock).await;
    }
    let result = match planned {
        Ok(plan) => execute(services, request, plan, started_at, clock).await,
        Err(e) => Err(e),
    };
    if let Err(e) = audit(services, request, started_at, clock, &result).await {
        tracing::error!(error = %e, "could not append the restore to the audit trail");
    }
    result
}

/// Everything checked before anything is written.
struct Plan {
    record: BackupRecord,
    admin: AdminConnection,
    existing: Option<DatabaseInfo>,
    pg_restore: PathBuf,
    /// pg_restore is 17+ and the target server older: see [`tolerates_transaction_timeout`].
    tolerate_transaction_timeout: bool,
    staging_dir: Option<PathBuf>,
}

impl Plan {
    fn action(&self) -> RestoreAction {
        match self.existing {
            Some(_) => RestoreAction::ReplaceExisting,
            None => RestoreAction::CreateNew,
        }
    }
}

/// The checks that need nothing but the request: a usable target name, and overwriting only
/// with the target's name typed again. Edges that queue a restore (the status API) run them
/// before answering, so a request that would be refused is refused at once.
pub fn check_intent(target: &str, overwrite: bool, confirm: Option<&str>) -> Result<(), Error> {
    check_target_name(target)?;
    if overwrite {
        match confirm {
            None => {
                return Err(Error::Confirmation(format!(
                    "overwriting {target:?} needs its name typed again: --overwrite --confirm {target:?}"
                )))
            }
            Some(typed) if typed != target => {
                return Err(Error::Confirmation(format!(
                    "the confirmation {typed:?} does not match the target database {target:?}"
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

async fn plan(services: &Services, request: &RestoreRequest) -> Result<Plan, Error> {
    let target = &request.target_db;
    check_intent(target, request.overwrite, request.confirm.as_deref())?;
    let record = services.catalog.get(&request.id).await?;
    if !record.status.has_object() {
        return Err(Error::Unusable {
            id: record.id.clone(),
            status: record.status,
            why: "there is no stored object to restore".into(),
        });
    }
    let admin_target = if request.server.database() == target {
        request.server.with_database("postgres")
    } else {
        request.server.clone()
    };
    let admin = AdminConnection::connect(&admin_target, ServerRole::Target).await?;
    let existing = admin.database(target).await?;
    match &existing {
        Some(_) if !request.overwrite => {
            return Err(Error::TargetExists {
                database: target.clone(),
                server: server_address(&admin_target),
            })
        }
        Some(info) if !info.can_drop => {
            return Err(Error::Permission(format!(
                "cannot replace {target:?} on {}: it belongs to {:?}, and only its owner or a superuser may drop it",
                admin.server(),
                info.owner
            )))
        }
        _ => {}
    }
    admin.require_createdb().await?;
    let major = admin
        .version
        .major
        .max(super::verify::source_major(&record));
    let (pg_restore, tool_major) =
        locate_tool_with_major("pg_restore", request.pg_bin.as_deref(), major).await?;
    let tolerate_transaction_timeout =
        tolerates_transaction_timeout(tool_major, admin.version.major);
    if existing.is_some() {
        // The safety backup needs pg_dump; find out now rather than after reading the backup.
        locate_tool("pg_dump", request.pg_bin.as_deref(), major).await?;
    }
    // A parallel backup stages only its schema object; a single stream, the whole archive.
    let staging_dir = if request.jobs > 1 || !record.parts.is_empty() {
        let manifest = replay::read_manifest(services, &record)
            .await
            .map_err(ReadFailure::into_error)?;
        let dir = request
            .staging_dir
            .clone()
            .unwrap_or_else(default_staging_dir);
        let in_parts: u64 = record.parts.iter().map(|p| p.archive_bytes).sum();
        let needed = manifest.archive.archive_bytes.saturating_sub(in_parts) + STAGING_HEADROOM;
        let available = free_space(&dir)?;
        if available < needed {
            return Err(Error::NoSpace {
                dir: dir.display().to_string(),
                needed,
                available,
            });
        }
        Some(dir)
    } else {
        None
    };
    Ok(Plan {
        record,
        admin,
        existing,
        pg_restore,
        tolerate_transaction_timeout,
        staging_dir,
    })
}

/// `postgresql://user@host:port`: the server without any database name or password.
fn server_address(target: &PgTarget) -> String {
    let url = target.redacted();
    match url
        .strip_prefix("postgresql://")
        .and_then(|rest| rest.split_once('/'))
    {
        Some((authority, _)) => format!("postgresql://{authority}"),
        None => url,
    }
}

fn check_target_name(name: &str) -> Result<(), Error> {
    let bad = |why: &str| {
        Err(Error::Config(crate::config::ConfigError::Missing(format!(
            "invalid target database name {name:?}: {why}"
        ))))
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 63 {
        return bad("PostgreSQL names are at most 63 bytes");
    }
    if name.contains('\0') {
        return bad("contains a NUL byte");
    }
    if name.starts_with(RESTORE_PREFIX) || name.starts_with(VERIFY_PREFIX) {
        return bad(
            "names starting with pgkeep_restore_ or pgkeep_verify_ are pgkeep's working databases",
        );
    }
    Ok(())
}

/// Bytes available to this user in the filesystem holding `dir`.
fn free_space(dir: &Path) -> Result<u64, Error> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| Error::Io {
        context: "checking free space in the staging directory",
        source: e.into(),
    })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The dry run: the whole object read through `pg_restore --list`.
async fn preview(
    services: &Services,
    request: &RestoreRequest,
    plan: Plan,
    started_at: DateTime<Utc>,
    clock: Instant,
) -> Result<RestoreReport, Error> {
    let stream = replay::open(services, &plan.record)
        .await
        .map_err(ReadFailure::into_error)?;
    let (mut list, stdin) = PgRestore::list(&plan.pg_restore)?;
    // A parallel backup: the schema object is listed, and every data part read whole too.
    let summary = match replay::replay(
        services,
        &plan.record,
        stream,
        vec![Sink::Child(stdin)],
        request.progress.clone(),
    )
    .await
    {
        Ok(summary) => summary,
        Err(failure) => {
            list.kill();
            let _ = list.finish().await;
            return Err(failure.into_error());
        }
    };
    let listing = list.finish().await?;
    let summary = if plan.record.parts.is_empty() {
        summary
    } else {
        let data = parts::check_parts(services, &plan.record, request.progress.clone())
            .await
            .map_err(ReadFailure::into_error)?;
        parts::combine(summary, data)
    };
    Ok(report(
        request,
        &plan,
        &summary,
        Times {
            started_at,
            clock,
            replaced_at: None,
        },
        None,
        Some(listing),
    ))
}

async fn execute(
    services: &Services,
    request: &RestoreRequest,
    plan: Plan,
    started_at: DateTime<Utc>,
    clock: Instant,
) -> Result<RestoreReport, Error> {
    let target = &request.target_db;
    if let Err(e) = plan
        .admin
        .drop_stale(RESTORE_PREFIX, Utc::now(), STALE_AFTER)
        .await
    {
        tracing::warn!(error = %e, "could not look for databases left by interrupted restores");
    }

    // 1. The whole object, checked, before any database is touched (staged when parallel;
    // of a parallel backup, the schema object staged and every data part read).
    let (staged, summary) = if plan.record.parts.is_empty() {
        let (staged, sinks) = match &plan.staging_dir {
            Some(dir) => {
                super::sweep::remove_staged_of_gone_processes(dir).await;
                let (staged, file) = StagedArchive::create(dir, &plan.record.id).await?;
                (Some(staged), vec![Sink::File(file)])
            }
            None => (None, Vec::new()),
        };
        let check_progress = match staged {
            Some(_) => request.progress.clone(),
            None => Arc::default(),
        };
        let stream = replay::open(services, &plan.record)
            .await
            .map_err(ReadFailure::into_error)?;
        let summary = replay::replay(services, &plan.record, stream, sinks, check_progress)
            .await
            .map_err(ReadFailure::into_error)?;
        (staged, summary)
    } else {
        let dir = plan
            .staging_dir
            .as_deref()
            .expect("a parallel backup is staged");
        super::sweep::remove_staged_of_gone_processes(dir).await;
        let (staged, schema) = parts::stage_schema(services, &plan.record, dir)
            .await
            .map_err(ReadFailure::into_error)?;
        // Before a safety backup and a replaced target, every part is read whole first; a new
        // target needs no such pass: each part is checked as it is restored, and a bad one
        // fails the restore, which drops its new database and leaves nothing.
        let data = match plan.existing {
            Some(_) => parts::check_parts(services, &plan.record, Arc::default())
                .await
                .map_err(ReadFailure::into_error)?,
            None => Vec::new(),
        };
        (Some(staged), parts::combine(schema, data))
    };

    // 2. The safety backup, complete before the target is touched.
    let safety = match &plan.existing {
        Some(_) => {
            let mut backup_request =
                BackupRequest::new(plan.admin.target_for(target), BackupKind::PreRestore);
            backup_request.id = request.safety_backup_id.clone();
            backup_request.pg_bin = request.pg_bin.clone();
            backup_request.requested_by = Some(request.actor.clone());
            tracing::info!(database = %target, "taking the safety backup before overwriting");
            let record = backup(services, &backup_request, Arc::default())
                .await
                .map_err(|e| Error::SafetyBackup {
                    database: target.clone(),
                    source: Box::new(e),
                })?;
            Some(record.id)
        }
        None => None,
    };

    // 3. Into a new database of our own; dropped again if anything fails.
    let fresh = plan.admin.create(RESTORE_PREFIX, None).await?;
    let summary = match run_pg_restore(
        services,
        request,
        &plan,
        &fresh,
        staged.as_ref(),
        &summary.toc,
    )
    .await
    {
        Ok(Some(data)) => parts::combine(summary, data),
        Ok(None) => summary,
        Err(e) => {
            let _ = fresh.drop_now().await;
            return Err(e);
        }
    };
    drop(staged);

    // 4. Only now is the target touched: dropped (when replaced), and the new one renamed.
    let replaced_at = match &plan.existing {
        Some(_) => {
            let at = Utc::now();
            if let Err(e) = plan.admin.drop_database(target).await {
                let _ = fresh.drop_now().await;
                return Err(e);
            }
            Some(at)
        }
        None => None,
    };
    if let Err(e) = plan.admin.rename_database(fresh.name(), target).await {
        if replaced_at.is_some() {
            let kept = fresh.keep();
            return Err(Error::Stranded {
                target: target.clone(),
                kept,
                safety_backup: safety.as_ref().map(ToString::to_string).unwrap_or_default(),
                source: Box::new(e),
            });
        }
        let _ = fresh.drop_now().await;
        return Err(e);
    }
    fresh.keep();
    if let Some(info) = &plan.existing {
        if let Err(e) = plan.admin.set_owner(target, &info.owner).await {
            tracing::warn!(database = %target, owner = %info.owner, error = %e, "could not give the restored database back to its previous owner");
        }
    }
    tracing::info!(backup = %plan.record.id, database = %target, "restored");
    Ok(report(
        request,
        &plan,
        &summary,
        Times {
            started_at,
            clock,
            replaced_at,
        },
        safety,
        None,
    ))
}

/// pg_restore into `fresh`: from the staged file, or streamed from the object (read and
/// checked a second time on the way); a parallel backup in its three steps, returning its data
/// parts' summaries.
async fn run_pg_restore(
    services: &Services,
    request: &RestoreRequest,
    plan: &Plan,
    fresh: &OwnedDatabase,
    staged: Option<&StagedArchive>,
    toc: &[TocEntry],
) -> Result<Option<Vec<ArchiveSummary>>, Error> {
    let options = RestoreOptions {
        jobs: request.jobs.max(1),
        no_owner: request.no_owner,
        tolerate_transaction_timeout: plan.tolerate_transaction_timeout,
        section: None,
    };
    let target = fresh.target();
    if !plan.record.parts.is_empty() {
        let schema = staged.expect("a parallel backup's schema object is staged");
        let data = parts::restore_parts(
            services,
            &plan.record,
            &plan.pg_restore,
            &target,
            options,
            &schema.path,
            toc,
            request.progress.clone(),
        )
        .await
        .map_err(parts::PartsFailure::into_error)?;
        return Ok(Some(data));
    }
    match staged {
        Some(file) => {
            let (child, _) =
                PgRestore::restore(&plan.pg_restore, &target, options, Some(&file.path))?;
            child.finish().await?;
        }
        None => {
            let stream = replay::open(services, &plan.record)
                .await
                .map_err(ReadFailure::into_error)?;
            let (mut child, stdin) = PgRestore::restore(&plan.pg_restore, &target, options, None)?;
            let sinks = vec![Sink::Child(stdin.expect("stdin is piped"))];
            let fed = replay::replay(
                services,
                &plan.record,
                stream,
                sinks,
                request.progress.clone(),
            )
            .await;
            if let Err(failure) = fed {
                child.kill();
                let _ = child.finish().await;
                return Err(failure.into_error());
            }
            child.finish().await?;
        }
    }
    Ok(None)
}

struct Times {
    started_at: DateTime<Utc>,
    clock: Instant,
    replaced_at: Option<DateTime<Utc>>,
}

fn report(
    request: &RestoreRequest,
    plan: &Plan,
    summary: &ArchiveSummary,
    times: Times,
    safety_backup: Option<BackupId>,
    listing: Option<String>,
) -> RestoreReport {
    RestoreReport {
        backup_id: plan.record.id.clone(),
        source_database: plan.record.database.clone(),
        target_database: request.target_db.clone(),
        server: server_address(&plan.admin.target_for(&request.target_db)),
        action: plan.action(),
        dry_run: request.dry_run,
        jobs: request.jobs.max(1),
        safety_backup,
        started_at: times.started_at,
        target_replaced_at: times.replaced_at,
        finished_at: Utc::now(),
        duration_ms: times.clock.elapsed().as_millis() as u64,
        tables: summary.tables.len(),
        rows: summary.tables.iter().map(|t| t.rows).sum(),
        large_objects: summary.large_objects,
        listing,
        restore_id: None,
    }
}

/// The audit entry of one restore: who, when, what, with which options, how it ended.
async fn audit(
    services: &Services,
    request: &RestoreRequest,
    started_at: DateTime<Utc>,
    clock: Instant,
    result: &Result<RestoreReport, Error>,
) -> Result<(), Error> {
    let now = Utc::now();
    let (outcome, report) = match result {
        Ok(report) => ("ok".to_owned(), serde_json::to_value(report).ok()),
        Err(e) => (format!("failed: {e}"), None),
    };
    let details = serde_json::json!({
        "target_database": request.target_db,
        "server": server_address(&request.server),
        "options": {
            "overwrite": request.overwrite,
            "jobs": request.jobs.max(1),
            "no_owner": request.no_owner,
        },
        "started_at": started_at,
        "duration_ms": clock.elapsed().as_millis() as u64,
        "result": outcome,
        "report": report,
    });
    services
        .catalog
        .append_audit(&AuditEntry {
            id: BackupId::generate(now),
            at: now,
            actor: request.actor.clone(),
            action: "restore".into(),
            backup_id: Some(request.id.clone()),
            database: request.target_db.clone(),
            outcome,
            details,
        })
        .await?;
    Ok(())
}

/// Where `restore --jobs` stages archives when no staging directory is set (and so where
/// prune looks for those of killed restores): the system temp directory.
pub fn default_staging_dir() -> PathBuf {
    std::env::temp_dir()
}

/// The decrypted archive on local disk for `pg_restore --jobs` (which cannot read stdin):
/// created 0600, removed when dropped, whatever happened; named after this process so that the
/// orphan sweep removes it once a `kill -9` has left it (see [`super::sweep`]).
pub(crate) struct StagedArchive {
    pub(crate) path: PathBuf,
}

impl StagedArchive {
    pub(crate) async fn create(
        dir: &Path,
        id: &BackupId,
    ) -> Result<(Self, tokio::fs::File), Error> {
        let mut random = [0u8; 4];
        getrandom::fill(&mut random).expect("the operating system's random source failed");
        let path = dir.join(super::sweep::staged_file_name(id, &hex::encode(random)));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await
            .map_err(|source| Error::Io {
                context: "creating the staging file",
                source,
            })?;
        Ok((StagedArchive { path }, file))
    }
}

impl Drop for StagedArchive {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "could not remove the staged archive; remove it by hand (it holds the plaintext backup)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_named_without_a_database() {
        let t = PgTarget::parse("postgresql://alice:secret@db.example:6543/shop").unwrap();
        assert_eq!(server_address(&t), "postgresql://alice@db.example:6543");
    }

    #[test]
    fn target_names_are_checked() {
        assert!(check_target_name("shop copy; \"x\"").is_ok());
        for bad in [
            "",
            "a\0b",
            "pgkeep_restore_1_2",
            "pgkeep_verify_x",
            &"x".repeat(64),
        ] {
            assert!(check_target_name(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_staged_archive_is_private_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let id = BackupId::generate(Utc::now());
        let (staged, file) = StagedArchive::create(dir.path(), &id).await.unwrap();
        drop(file);
        let mode = std::fs::metadata(&staged.path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(staged);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(free_space(dir.path()).unwrap() > 0);
    }
}
