//! Taking a backup: record it, stream pg_dump into the store, write the manifest, complete it.
//!
//! Only one dump of a database runs at a time: a backup first takes the database's lease in
//! the catalog (holder: its backup id and its process). The lease follows the run: a heartbeat
//! renews it every quarter of its timeout ([`DEFAULT_LEASE_TTL`]) while the run is alive, and it
//! is free as soon as its holder's record is terminal, its heartbeat is older than the timeout,
//! or (same host) its process is gone. When a live run holds it, the backup fails with
//! [`Error::LeaseHeld`] naming that run and records nothing: it never started, and the running
//! backup is the one that counts. The lease is given back at the end on every path; if the
//! process dies, the rules above free it.
//!
//! Order matters for crash safety: the lease is taken before the record exists (so a refused
//! run records nothing), the record exists (`in_progress`) before any byte is written, the
//! object is published only after pg_dump succeeded, the manifest follows the object, and only
//! then does the record become `completed`. A failure at any step leaves no object and a
//! `failed` record that says why; a crash leaves what the reaper settles
//! ([`super::reaper`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::Error;
use crate::backends::Services;
use crate::keys::{KeyContext, NewDataKey};
use crate::labels::Labels;
use crate::model::{
    format_time, qualified_name, BackupId, BackupKind, BackupRecord, BackupStatus,
    CompressionChoice, EncryptionInfo, Lease, Manifest,
};
use crate::pipeline::crypt::{Header, HeaderFields, DEFAULT_CHUNK_SIZE, FORMAT_VERSION};
use crate::pipeline::pg_dump::PgDump;
use crate::pipeline::{store_archive, Progress, StreamOptions};
use crate::postgres::{locate_tool, server_version, PgTarget};
use crate::retention::Span;
use crate::selection::Selection;

mod parallel;
pub use parallel::{deal, exact_name, Share, MAX_JOBS};

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    /// The database to dump.
    pub target: PgTarget,
    /// Why the backup is taken.
    pub kind: BackupKind,
    /// Compression inside the encryption, and its level.
    pub compression: CompressionChoice,
    /// A pre-allocated id (so a caller can refer to the run before it ends), or a fresh one.
    pub id: Option<BackupId>,
    /// Directory of the PostgreSQL client binaries (`PGKEEP_PG_BIN`); searched when `None`.
    pub pg_bin: Option<PathBuf>,
    /// Plaintext bytes per encrypted chunk.
    pub chunk_size: u32,
    /// zstd worker threads.
    pub zstd_workers: u32,
    /// Earlier runs of this database still `in_progress` after this long are reaped first.
    pub abandon_after: Span,
    /// The heartbeat timeout: a lease not renewed for this long belongs to a dead run. The
    /// run renews it every quarter of this.
    pub lease_ttl: chrono::Duration,
    /// The name the record, the lease and the object key use, when it differs from the
    /// database's name on the server (a Lambda deployment's configured name); `None` for the
    /// target's database name.
    pub database_name: Option<String>,
    /// Labels to put on the record.
    pub labels: Labels,
    /// The part of the database to back up (everything by default); checked before anything
    /// is recorded.
    pub selection: Selection,
    /// The failed attempt this backup retakes (a retried request), for its record.
    pub retry_of: Option<BackupId>,
    /// Who asked for it, for its record (see [`BackupRecord::requested_by`]).
    pub requested_by: Option<String>,
    /// Data streams: 1 is one pg_dump into one object (the format every pgkeep reads); above
    /// 1 a snapshot-consistent schema object and up to this many data parts (at most
    /// [`MAX_JOBS`]).
    pub jobs: u32,
    /// The whole-server run this backup belongs to ([`super::server`]).
    pub run_id: Option<String>,
    /// Set for a run's globals backup: the databases whose owner, grants and settings it
    /// carries; then `target` is only the server to read them from ([`super::server`]).
    pub globals: Option<Vec<String>>,
    /// For a run's globals backup: the configured name of the connection the run used
    /// ([`crate::model::GlobalsInfo::connection`]).
    pub connection: Option<String>,
}

/// Default heartbeat timeout of a dump lease: a run renews its lease every 30 seconds, so a
/// crashed run on another host (a Lambda, a DynamoDB catalog) blocks its database for at most
/// two minutes.
pub const DEFAULT_LEASE_TTL: chrono::Duration = chrono::Duration::minutes(2);

/// zstd worker threads of each backup stream: one. zstd's own streaming mode (no worker)
/// compresses a ring buffer whose wrapped window takes libzstd's slower external-dictionary
/// path (45% of the CPU samples of a `--jobs 2` backup) and gives a larger output (0.75% for
/// `--jobs 2`); one worker compresses contiguous jobs on its own thread, beside the stream's
/// scanning, encryption and hashing. More workers per stream only add CPU (each job reloads its
/// overlap) and memory; more cores are used by `--jobs N`, one worker per stream.
pub const DEFAULT_ZSTD_WORKERS: u32 = 1;

impl BackupRequest {
    /// A request with the defaults: zstd, 1 MiB chunks, one zstd worker per stream (see
    /// [`DEFAULT_ZSTD_WORKERS`]).
    pub fn new(target: PgTarget, kind: BackupKind) -> Self {
        BackupRequest {
            target,
            kind,
            compression: CompressionChoice::default(),
            id: None,
            pg_bin: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            zstd_workers: DEFAULT_ZSTD_WORKERS,
            abandon_after: super::reaper::DEFAULT_ABANDON_AFTER,
            lease_ttl: DEFAULT_LEASE_TTL,
            database_name: None,
            labels: Labels::none(),
            selection: Selection::everything(),
            retry_of: None,
            requested_by: None,
            jobs: 1,
            run_id: None,
            globals: None,
            connection: None,
        }
    }

    /// The name the backup is recorded under.
    pub fn database_name(&self) -> &str {
        self.database_name
            .as_deref()
            .unwrap_or_else(|| self.target.database())
    }
}

/// Takes one backup; on success returns the `completed` record, on failure stores a `failed`
/// record with the reason and returns the error. Fails with [`Error::LeaseHeld`], recording
/// nothing, while another live run is dumping the same database, and with
/// [`Error::Selection`], recording nothing, when the selection has a bad pattern.
pub async fn backup(
    services: &Services,
    request: &BackupRequest,
    progress: Arc<Progress>,
) -> Result<BackupRecord, Error> {
    request.selection.validate()?;
    let id = request
        .id
        .clone()
        .unwrap_or_else(|| BackupId::generate(Utc::now()));
    let database = request.database_name();
    let lease = take_lease(services, database, &id, request.lease_ttl).await?;
    let result = tokio::select! {
        result = backup_leased(services, request, id.clone(), progress) => result,
        lost = heartbeat(services, &lease, request.lease_ttl) => {
            // Another run took the lease (this one's heartbeat could not reach the catalog
            // for a whole timeout): stop, and leave nothing behind.
            let why = format!("stopped: {lost}");
            if let Err(e) = end_interrupted(services, database, &id, &why).await {
                tracing::error!(backup = %id, error = %e, "could not record the stop");
            }
            Err(lost)
        }
    };
    release_lease(services, database, &id).await;
    result
}

/// Takes the dump lease of `database` for run `id`, first freeing it from a holder that is
/// dead (its record terminal, its heartbeat lapsed, its process gone).
async fn take_lease(
    services: &Services,
    database: &str,
    id: &BackupId,
    ttl: chrono::Duration,
) -> Result<Lease, Error> {
    // A lapsed lease would simply be taken over: settle its dead run first, while its lease
    // still says why it is dead (afterwards the reaper would only see another run's lease).
    if let Some(held) = services.catalog.get_lease(database).await? {
        let now = Utc::now();
        if held.holder != id.as_str() && holder_is_dead(services, &held, now).await.is_some() {
            reap_dead_holder(services, &held, now).await;
        }
    }
    let mut attempts = 0;
    loop {
        attempts += 1;
        let now = Utc::now();
        let lease = Lease {
            database: database.to_owned(),
            holder: id.to_string(),
            expires_at: now + ttl,
            process: crate::process::current(),
        };
        let Some(held) = services.catalog.acquire_lease(&lease, now).await? else {
            return Ok(lease);
        };
        let dead = if held.holder == id.as_str() {
            None
        } else {
            holder_is_dead(services, &held, now).await
        };
        match dead {
            Some(why) if attempts < 3 => {
                tracing::warn!(database, holder = %held.holder, why = %why, "the lease's holder is dead; taking the lease over");
                reap_dead_holder(services, &held, now).await;
                services
                    .catalog
                    .release_lease(database, &held.holder)
                    .await?;
            }
            _ => {
                tracing::warn!(database, holder = %held.holder, expires_at = %format_time(held.expires_at), "another backup of this database is running");
                return Err(Error::LeaseHeld {
                    database: held.database,
                    holder: held.holder,
                    expires_at: held.expires_at,
                });
            }
        }
    }
}

/// Settles the run of a dead lease holder (the reaper's `reap_one`: failed as abandoned with
/// the lease's reason, its leftovers removed, its lease released); a failure is only logged,
/// the reaper retries.
async fn reap_dead_holder(services: &Services, held: &Lease, now: DateTime<Utc>) {
    let Ok(holder) = held.holder.parse::<BackupId>() else {
        return;
    };
    let limit = super::reaper::DEFAULT_ABANDON_AFTER;
    match super::reaper::reap_one(services, &holder, now, limit).await {
        Ok(_) | Err(Error::Catalog(crate::catalog::CatalogError::NotFound(_))) => {}
        Err(e) => {
            tracing::warn!(database = %held.database, holder = %held.holder, error = %e, "could not reap the lease's dead holder; the reaper retries");
        }
    }
}

/// Why the holder of `lease` is dead at `now`, or `None` while it may be alive.
pub(crate) async fn holder_is_dead(
    services: &Services,
    lease: &Lease,
    now: DateTime<Utc>,
) -> Option<String> {
    if let Some(why) = super::reaper::lease_is_dead(lease, now) {
        return Some(why);
    }
    let id: BackupId = lease.holder.parse().ok()?;
    match services.catalog.get(&id).await {
        Ok(record) if record.status != BackupStatus::InProgress => {
            Some(format!("its backup {id} is already {}", record.status))
        }
        // In progress, or not yet recorded (a run records itself just after taking the lease).
        _ => None,
    }
}

/// Renews `lease` every quarter of `ttl` for as long as it is polled; returns only when the
/// lease was lost to another run. A renewal that fails (the catalog unreachable) is retried at
/// the next beat.
async fn heartbeat(services: &Services, lease: &Lease, ttl: chrono::Duration) -> Error {
    let interval = (ttl / 4)
        .to_std()
        .unwrap_or(std::time::Duration::from_secs(1))
        .max(std::time::Duration::from_millis(100));
    let mut lease = lease.clone();
    loop {
        tokio::time::sleep(interval).await;
        lease.expires_at = Utc::now() + ttl;
        match services.catalog.renew_lease(&lease).await {
            Ok(true) => {
                tracing::debug!(database = %lease.database, holder = %lease.holder, "lease renewed")
            }
            Ok(false) => {
                let current = services
                    .catalog
                    .get_lease(&lease.database)
                    .await
                    .ok()
                    .flatten();
                tracing::error!(database = %lease.database, holder = %lease.holder, "the dump lease was lost to another run");
                return Error::LeaseHeld {
                    database: lease.database.clone(),
                    holder: current
                        .as_ref()
                        .map_or_else(|| "nobody".to_owned(), |l| l.holder.clone()),
                    expires_at: current.map_or(lease.expires_at, |l| l.expires_at),
                };
            }
            Err(e) => {
                tracing::warn!(database = %lease.database, error = %e, "could not renew the dump lease; trying again");
            }
        }
    }
}

/// Gives the dump lease back; a failure only delays the next run until the lease lapses.
async fn release_lease(services: &Services, database: &str, id: &BackupId) {
    if let Err(e) = services.catalog.release_lease(database, id.as_str()).await {
        tracing::warn!(database, backup = %id, error = %e, "could not release the dump lease; it lapses on its own");
    }
}

async fn backup_leased(
    services: &Services,
    request: &BackupRequest,
    id: BackupId,
    progress: Arc<Progress>,
) -> Result<BackupRecord, Error> {
    let database = request.database_name();
    // Under the lease no other dump of this database runs: what is still in progress is
    // abandoned. A failure to clean up after earlier runs must not cost this backup; prune
    // retries it.
    if let Err(e) =
        super::reaper::reap(services, Some(database), Utc::now(), request.abandon_after).await
    {
        tracing::error!(database = %database, error = %e, "could not reap abandoned backups");
    }
    let mut record = BackupRecord::start(id, database, request.kind, request.compression.algorithm);
    record.compression_level = Some(request.compression.level());
    record.labels = request.labels.as_map().clone();
    record.selection = request.selection.clone();
    record.retry_of = request.retry_of.clone();
    record.requested_by = request.requested_by.clone();
    if request.jobs > 1 {
        // The parts it may write, named before any is, so a crash's leftovers are found.
        record.parts = (1..=request.jobs.min(MAX_JOBS) as usize)
            .map(|n| crate::model::BackupPart {
                object_key: crate::model::part_key(&record.object_key, n),
                size_bytes: None,
                sha256: None,
                tables: Vec::new(),
                large_objects: 0,
                archive_bytes: 0,
            })
            .collect();
    }
    record.run_id = request.run_id.clone();
    services.catalog.insert(&record).await?;
    tracing::info!(backup = %record.id, database = %record.database, target = %request.target.redacted(), "backup started");
    let started = Instant::now();
    let outcome = run(services, request, &mut record, started, progress).await;
    if outcome.is_err() {
        record.completed_at = Some(Utc::now());
        record.duration_ms = Some(started.elapsed().as_millis() as u64);
    }
    match outcome {
        Ok(()) => {
            record
                .transition(BackupStatus::Completed)
                .map_err(crate::catalog::CatalogError::from)?;
            if let Err(e) = services
                .catalog
                .update(&record, BackupStatus::InProgress)
                .await
            {
                if matches!(e, crate::catalog::CatalogError::Conflict { .. }) {
                    // The reaper took this run for abandoned and failed it: the record will never
                    // point at the object, so remove it rather than leave it for prune.
                    for key in [vec![record.manifest_key()], record.object_keys()].concat() {
                        if let Err(d) = services.store.delete(&key).await {
                            tracing::error!(error = %d, key = %key, "could not remove the object of a reaped run; the next prune will");
                        }
                    }
                }
                return Err(e.into());
            }
            tracing::info!(backup = %record.id, bytes = record.size_bytes, ms = record.duration_ms, "backup completed");
            Ok(record)
        }
        Err(error) => {
            record.status = BackupStatus::Failed;
            record.error = Some(error.to_string());
            match services
                .catalog
                .update(&record, BackupStatus::InProgress)
                .await
            {
                Ok(()) => super::state::publish_failure(services, &record).await,
                Err(e) => {
                    tracing::error!(backup = %record.id, error = %e, "could not record the failure")
                }
            }
            tracing::info!(backup = %record.id, error = %error, "backup failed");
            Err(error)
        }
    }
}

/// What [`end_interrupted`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The run was in progress and is now recorded as failed.
    MarkedFailed,
    /// The run had already ended with this status; nothing was changed.
    AlreadyEnded(BackupStatus),
    /// The run was stopped before it recorded anything.
    NeverRecorded,
}

/// Ends a run that will never finish (interrupted by a signal, its future dropped): records it
/// failed with `why` if it is still in progress, removes whatever it stored (object, manifest,
/// temporary files, open uploads), and gives back its dump lease of `database` in every case.
pub async fn end_interrupted(
    services: &Services,
    database: &str,
    id: &BackupId,
    why: &str,
) -> Result<Ended, Error> {
    let ended = match services.catalog.get(id).await {
        Err(crate::catalog::CatalogError::NotFound(_)) => Ended::NeverRecorded,
        Err(e) => {
            release_lease(services, database, id).await;
            return Err(e.into());
        }
        Ok(record) if record.status != BackupStatus::InProgress => {
            Ended::AlreadyEnded(record.status)
        }
        Ok(mut record) => {
            let now = Utc::now();
            record.status = BackupStatus::Failed;
            record.error = Some(why.to_owned());
            record.completed_at = Some(now);
            // The record first, then the deletions (the reaper's order).
            match services
                .catalog
                .update(&record, BackupStatus::InProgress)
                .await
            {
                Ok(()) => {
                    super::state::publish_failure(services, &record).await;
                    super::reaper::remove_run_leftovers(services, &record, now).await?;
                    Ended::MarkedFailed
                }
                Err(crate::catalog::CatalogError::Conflict { found, .. }) => {
                    Ended::AlreadyEnded(found)
                }
                Err(e) => {
                    release_lease(services, database, id).await;
                    return Err(e.into());
                }
            }
        }
    };
    release_lease(services, database, id).await;
    Ok(ended)
}

/// Marks a backup that will never finish (interrupted, abandoned) as failed, and gives back
/// its dump lease ([`end_interrupted`] for a backup known to be recorded).
pub async fn mark_failed(services: &Services, id: &BackupId, why: &str) -> Result<(), Error> {
    let record = services.catalog.get(id).await?;
    end_interrupted(services, &record.database, id, why).await?;
    Ok(())
}

async fn run(
    services: &Services,
    request: &BackupRequest,
    record: &mut BackupRecord,
    started: Instant,
    progress: Arc<Progress>,
) -> Result<(), Error> {
    if let Some(databases) = &request.globals {
        return super::server::store_globals(services, request, record, databases, started).await;
    }
    let target = &request.target;
    let version = {
        let client = target.connect().await?;
        server_version(target, &client).await?
    };
    record.server_version = Some(version.text.clone());
    let pg_dump = locate_tool("pg_dump", request.pg_bin.as_deref(), version.major).await?;

    let (data_key, fields) = new_data_key(services, record).await?;
    let archive = if request.jobs > 1 {
        parallel::dump(
            services,
            request,
            record,
            &pg_dump,
            &data_key.key,
            fields,
            progress,
        )
        .await?
    } else {
        single_stream(
            services,
            request,
            record,
            &pg_dump,
            &data_key.key,
            fields,
            progress,
        )
        .await?
    };

    publish_manifest(
        services,
        record,
        started,
        request.chunk_size,
        &data_key,
        archive,
    )
    .await
}

/// A new data key for `record` (its id goes on the record) and the header fields every object
/// of the backup carries.
pub(super) async fn new_data_key(
    services: &Services,
    record: &mut BackupRecord,
) -> Result<(NewDataKey, HeaderFields), Error> {
    let ctx = KeyContext {
        backup_id: &record.id,
        database: &record.database,
    };
    let data_key = services.keys.generate(ctx).await?;
    record.key_id = Some(data_key.key_id.clone());
    let fields = HeaderFields {
        backup_id: record.id.to_string(),
        database: record.database.clone(),
        compression: record.compression.to_string(),
        key_id: data_key.key_id.clone(),
        wrapped_key: data_key.wrapped.clone(),
    };
    Ok((data_key, fields))
}

/// Writes the manifest of `record`'s stored objects; without it they are not a complete
/// backup, so a failed write removes them.
pub(super) async fn publish_manifest(
    services: &Services,
    record: &mut BackupRecord,
    started: Instant,
    chunk_size: u32,
    data_key: &NewDataKey,
    archive: crate::model::ArchiveInfo,
) -> Result<(), Error> {
    // The manifest carries the record exactly as it will be once completed.
    record.completed_at = Some(Utc::now());
    record.duration_ms = Some(started.elapsed().as_millis() as u64);
    let mut final_record = record.clone();
    final_record.status = BackupStatus::Completed;
    let manifest = Manifest::new(
        final_record,
        EncryptionInfo::aes_256_gcm(
            FORMAT_VERSION,
            chunk_size,
            &data_key.key_id,
            &data_key.wrapped,
        ),
        archive,
    );
    let json = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
    if let Err(e) = services.store.put(&record.manifest_key(), json).await {
        for key in record.object_keys() {
            if let Err(d) = services.store.delete(&key).await {
                tracing::error!(error = %d, key = %key, "could not remove the object after its manifest failed");
            }
        }
        return Err(e.into());
    }
    Ok(())
}

/// One pg_dump into one object (the format of every backup without `--jobs`).
async fn single_stream(
    services: &Services,
    request: &BackupRequest,
    record: &mut BackupRecord,
    pg_dump: &std::path::Path,
    key: &crate::keys::DataKey,
    fields: HeaderFields,
    progress: Arc<Progress>,
) -> Result<crate::model::ArchiveInfo, Error> {
    let target = &request.target;
    let header = Header::new(fields, request.chunk_size).map_err(|e| Error::Integrity(e.into()))?;
    let upload = services.store.create(&record.object_key).await?;
    let (dump, stdout) = match PgDump::spawn(pg_dump, target, &request.selection.pg_dump_args()) {
        Ok(started) => started,
        Err(e) => {
            let _ = upload.abort().await;
            return Err(e.into());
        }
    };
    let stored = store_archive(
        dump,
        stdout,
        upload,
        header,
        key,
        StreamOptions {
            compression: request.compression,
            zstd_workers: request.zstd_workers,
        },
        progress,
    )
    .await?;

    record.size_bytes = Some(stored.size);
    record.sha256 = Some(stored.sha256.clone());
    record.row_counts = stored
        .archive
        .tables
        .iter()
        .map(|t| (qualified_name(&t.schema, &t.table), t.rows))
        .collect();
    record.schema_only_tables = stored
        .archive
        .schema_only_tables
        .iter()
        .map(|t| qualified_name(&t.schema, &t.table))
        .collect();
    Ok(stored.archive_info())
}
