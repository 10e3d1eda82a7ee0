//! The reaper: backups left `in_progress` by a run that crashed, was killed or timed out become
//! `failed` ("abandoned: ...") and whatever they wrote is removed.
//!
//! It runs at the start of every dump (for that database) and of every prune. A run is alive
//! while it holds its database's dump lease and keeps renewing it (its heartbeat, every quarter
//! of the lease timeout; see [`crate::ops::backup`]). A record `in_progress` whose run does not
//! hold a live lease is abandoned: its lease lapsed (no heartbeat within the timeout), names
//! another run, or names a process that is gone (same host). How long a run has been going
//! does not matter: a long dump that keeps its heartbeat is never reaped.
//!
//! A run that died after publishing its object and manifest, but before the catalog said so
//! (the final write failed, the process was killed just then), is settled rather than failed:
//! when the manifest names the record and the object has the manifest's size, the record
//! becomes `completed` from the manifest; otherwise it becomes `failed` and its keys are
//! removed. Never is an `in_progress` record left beside a finished object.
//!
//! Order: first the compare-and-set `in_progress` → `failed`, then the deletions. The other
//! order could delete an object that a slow but live dump publishes a moment later, and let that
//! dump then complete a record whose object is gone. With this order a live dump loses the race
//! on the record and cleans up after itself; if the reaper crashes between the steps, the next
//! prune finds the leftover keys of a `failed` record and removes them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::Error;
use crate::backends::Services;
use crate::catalog::{CatalogError, ListQuery};
use crate::model::{
    BackupId, BackupRecord, BackupStatus, Lease, Manifest, RestoreRun, RestoreState,
};
use crate::retention::Span;

/// How old an unfinished upload that no record explains (no run can own it) must be before
/// it is removed, and the default of `--abandon-after`: 20 minutes, the 15-minute Lambda limit
/// plus a margin.
pub const DEFAULT_ABANDON_AFTER: Span = Span::minutes(20);

/// Why the run that holds (or held) `lease` is dead at `now`, or `None` while it may be alive.
pub fn lease_is_dead(lease: &Lease, now: DateTime<Utc>) -> Option<String> {
    if lease.expires_at <= now {
        return Some(format!(
            "its lease was not renewed (no heartbeat since before {})",
            crate::model::format_time(lease.expires_at)
        ));
    }
    match &lease.process {
        Some(p) if crate::process::is_gone(p) => {
            Some(format!("its process (pid {} on this host) is gone", p.pid))
        }
        _ => None,
    }
}

/// Why the run of in-progress `record` is dead at `now` (given its database's current
/// lease), or `None` while it is alive.
pub fn run_is_dead(
    record: &BackupRecord,
    lease: Option<&Lease>,
    now: DateTime<Utc>,
) -> Option<String> {
    if record.status != BackupStatus::InProgress {
        return None;
    }
    match lease {
        None => Some("it holds no lease".to_owned()),
        Some(l) if l.holder != record.id.as_str() => {
            Some(format!("the lease belongs to another run ({})", l.holder))
        }
        Some(l) => lease_is_dead(l, now),
    }
}

/// The in-progress records among `records` whose runs are dead at `now`, with why.
pub async fn abandoned_among<'a>(
    services: &Services,
    records: &'a [BackupRecord],
    now: DateTime<Utc>,
) -> Result<Vec<(&'a BackupRecord, String)>, Error> {
    let mut leases: BTreeMap<&str, Option<Lease>> = BTreeMap::new();
    let mut out = Vec::new();
    for record in records {
        if record.status != BackupStatus::InProgress {
            continue;
        }
        if !leases.contains_key(record.database.as_str()) {
            let lease = services.catalog.get_lease(&record.database).await?;
            leases.insert(&record.database, lease);
        }
        let lease = leases[record.database.as_str()].as_ref();
        if let Some(why) = run_is_dead(record, lease, now) {
            out.push((record, why));
        }
    }
    Ok(out)
}

/// The in-progress records (of one database, or all) whose runs are dead at `now`.
pub async fn find_abandoned(
    services: &Services,
    database: Option<&str>,
    now: DateTime<Utc>,
    _limit: Span,
) -> Result<Vec<BackupRecord>, Error> {
    let in_progress = super::list::list_all(
        services,
        &ListQuery {
            database: database.map(str::to_owned),
            status: Some(BackupStatus::InProgress),
            ..Default::default()
        },
    )
    .await?;
    Ok(abandoned_among(services, &in_progress, now)
        .await?
        .into_iter()
        .map(|(r, _)| r.clone())
        .collect())
}

/// How many of the newest restore records a reaper pass looks at for `running` ones.
const RESTORES_LOOKED_AT: usize = 1000;

/// How long a restore asked for through the API may stay `queued` before it is given up: its
/// function is invoked asynchronously, and Lambda keeps retrying such an invocation for at
/// most 6 hours (its maximum event age); an hour more is the margin.
pub const QUEUED_RESTORE_LIMIT: Span = Span::hours(7);

/// Why restore `run` is dead at `now`, or `None` while it may be alive. A `running` one: its
/// process is gone (same host), or it showed no sign of life for `limit` (a crashed host or a
/// killed function; a live restore renews `alive_at` every 30 s, however long it runs). A
/// `queued` one: it never started within [`QUEUED_RESTORE_LIMIT`] (its invocation was lost or
/// refused), so nobody waits on it any more.
pub fn restore_is_dead(run: &RestoreRun, now: DateTime<Utc>, limit: Span) -> Option<String> {
    if run.state == RestoreState::Queued {
        return (run.requested_at <= now - QUEUED_RESTORE_LIMIT.as_delta()).then(|| {
            format!(
                "asked for at {} and never started within {QUEUED_RESTORE_LIMIT}",
                crate::model::format_time(run.requested_at)
            )
        });
    }
    if run.state != RestoreState::Running {
        return None;
    }
    if let Some(p) = &run.process {
        if crate::process::is_gone(p) {
            return Some(format!("its process (pid {} on this host) is gone", p.pid));
        }
    }
    let seen = run.alive_at.or(run.started_at).unwrap_or(run.requested_at);
    (seen <= now - limit.as_delta()).then(|| {
        format!(
            "no sign of life since {} (longer than {limit})",
            crate::model::format_time(seen)
        )
    })
}

/// Fails the `running` restores (into `database`, or any) whose run is dead and the `queued`
/// ones that never started, with an error that says they were abandoned and why; returns them.
pub async fn reap_restores(
    services: &Services,
    database: Option<&str>,
    now: DateTime<Utc>,
    limit: Span,
) -> Result<Vec<RestoreRun>, Error> {
    let mut out = Vec::new();
    for mut run in services.catalog.list_restores(RESTORES_LOOKED_AT).await? {
        if database.is_some_and(|d| d != run.target_db) {
            continue;
        }
        let Some(why) = restore_is_dead(&run, now, limit) else {
            continue;
        };
        let error = if run.state == RestoreState::Queued {
            format!("abandoned: {why}; nothing was restored, ask for it again")
        } else {
            format!("abandoned: the restore's run died ({why}); the target may be half-restored or left as it was, check it before use")
        };
        run.fail(error, now);
        services.catalog.put_restore(&run).await?;
        tracing::warn!(restore = %run.id, target = %run.target_db, why = %why, "a restore whose run died was marked failed");
        out.push(run);
    }
    Ok(out)
}

/// What a reaper pass did: runs marked failed, and runs settled as completed. Only the first
/// are failures (alerted as "abandoned"); a settled run did back its database up.
#[derive(Debug, Clone, Default)]
pub struct Reaped {
    /// Dead runs marked `failed` ("abandoned: ..."), their leftovers removed.
    pub abandoned: Vec<BackupRecord>,
    /// Dead runs that had published their backup, now `completed` from their manifest.
    pub settled: Vec<BackupRecord>,
    /// Restores left `running` by a dead run, now `failed` ("abandoned: ...").
    pub restores: Vec<RestoreRun>,
}

impl Reaped {
    /// Files what [`reap_one`] returned under its outcome.
    pub fn add(&mut self, record: BackupRecord) {
        if record.status == BackupStatus::Completed {
            self.settled.push(record);
        } else {
            self.abandoned.push(record);
        }
    }
}

/// Reaps every abandoned backup (of one database, or all): the records now `failed`, and
/// those settled as `completed` from a published object.
pub async fn reap(
    services: &Services,
    database: Option<&str>,
    now: DateTime<Utc>,
    limit: Span,
) -> Result<Reaped, Error> {
    let mut reaped = Reaped::default();
    for record in find_abandoned(services, database, now, limit).await? {
        if let Some(r) = reap_one(services, &record.id, now, limit).await? {
            reaped.add(r);
        }
    }
    reaped.restores = reap_restores(services, database, now, limit).await?;
    Ok(reaped)
}

/// [`reap`], then one `backup_failed` alert for each run failed as abandoned (a heartbeat's
/// `/fail` for a run that was killed and could not say so itself); runs settled as completed
/// did back their database up and are not alerted. For callers without their own alerting
/// (the `pgkeep` command; the functions' jobs do the same with their retry bookkeeping).
/// Errors are logged, never returned: the run that reaps matters more.
pub async fn reap_and_alert(
    services: &Services,
    database: Option<&str>,
    now: DateTime<Utc>,
    limit: Span,
    notifier: &dyn crate::alert::Notifier,
) -> Reaped {
    let reaped = match reap(services, database, now, limit).await {
        Ok(reaped) => reaped,
        Err(e) => {
            tracing::error!(database, error = %e, "could not reap abandoned backups; the next run retries");
            return Reaped::default();
        }
    };
    for record in &reaped.abandoned {
        if let Err(e) = notifier
            .notify(&crate::alert::Alert::backup_failed(record, now))
            .await
        {
            tracing::error!(backup = %record.id, error = %e, "could not alert the abandoned backup");
        }
    }
    reaped
}

/// Settles backup `id` if its run is dead: `completed` from its published object and
/// manifest, else `failed` with its keys removed, its open uploads aborted and its lease given
/// back. `Ok(None)` when it is not abandoned (it finished, or its run is alive).
pub async fn reap_one(
    services: &Services,
    id: &BackupId,
    now: DateTime<Utc>,
    _limit: Span,
) -> Result<Option<BackupRecord>, Error> {
    let mut record = services.catalog.get(id).await?;
    let lease = services.catalog.get_lease(&record.database).await?;
    let Some(why) = run_is_dead(&record, lease.as_ref(), now) else {
        return Ok(None);
    };
    if let Some(settled) = published(services, &record).await? {
        match services
            .catalog
            .update(&settled, BackupStatus::InProgress)
            .await
        {
            Ok(()) => {}
            Err(CatalogError::Conflict { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        release_if_held(services, &settled).await;
        tracing::warn!(backup = %settled.id, database = %settled.database, "a run that died after publishing its backup was settled as completed");
        return Ok(Some(settled));
    }
    let age = Span::from_seconds((now - record.created_at).num_seconds())
        .map_or_else(|| "?".to_owned(), |s| s.to_string());
    record
        .transition(BackupStatus::Failed)
        .map_err(CatalogError::from)?;
    record.error = Some(format!(
        "abandoned: its run is gone ({why}), found {age} after it started; it crashed, was killed or timed out"
    ));
    record.completed_at = Some(now);
    match services
        .catalog
        .update(&record, BackupStatus::InProgress)
        .await
    {
        Ok(()) => {}
        // It completed or failed on its own meanwhile: not ours to touch.
        Err(CatalogError::Conflict { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    super::state::publish_failure(services, &record).await;
    remove_run_leftovers(services, &record, now).await?;
    release_if_held(services, &record).await;
    tracing::warn!(backup = %record.id, database = %record.database, age = %age, why = %why, "abandoned backup marked failed");
    Ok(Some(record))
}

/// The record as `completed`, when its run published the object and a manifest that says so
/// (the manifest names this backup and the object has the recorded size); `None` otherwise.
async fn published(
    services: &Services,
    record: &BackupRecord,
) -> Result<Option<BackupRecord>, Error> {
    let Some(object) = services.store.head(&record.object_key).await? else {
        return Ok(None);
    };
    let bytes = match services.store.get(&record.manifest_key()).await {
        Ok(bytes) => bytes,
        Err(crate::store::StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) else {
        return Ok(None);
    };
    let settled = manifest.backup;
    let checks_out = settled.id == record.id
        && settled.database == record.database
        && settled.object_key == record.object_key
        && settled.status == BackupStatus::Completed
        && settled.size_bytes == Some(object.size)
        && settled.sha256.is_some();
    Ok(checks_out.then_some(settled))
}

/// Removes everything a dead run of `record` may have stored: the object, the manifest, and
/// unfinished uploads of either (hidden temporary files, open multipart uploads).
pub async fn remove_run_leftovers(
    services: &Services,
    record: &BackupRecord,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    services.store.delete(&record.manifest_key()).await?;
    for key in record.object_keys() {
        services.store.delete(&key).await?;
    }
    // A parallel run's in-progress record names the parts it planned.
    for key in [record.object_keys(), vec![record.manifest_key()]].concat() {
        let aborted = services.store.abort_incomplete_uploads(&key, now).await?;
        if aborted > 0 {
            tracing::warn!(
                key,
                aborted,
                "removed unfinished uploads of a run that ended"
            );
        }
    }
    Ok(())
}

/// Gives back the lease `record`'s run still holds; a failure only delays the next run until
/// the lease lapses.
async fn release_if_held(services: &Services, record: &BackupRecord) {
    if let Err(e) = services
        .catalog
        .release_lease(&record.database, record.id.as_str())
        .await
    {
        tracing::warn!(backup = %record.id, error = %e, "could not release the lease of an ended run; it lapses on its own");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{Duration, Utc};

    use super::*;
    use crate::catalog::sqlite::SqliteCatalog;
    use crate::keys::NoKey;
    use crate::model::{BackupId, BackupKind, BackupRecord, Compression};
    use crate::store::s3::{S3Options, S3Store};
    use crate::testing::{moto, moto_bucket};

    async fn open_uploads(client: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
        let out = client
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        out.uploads()
            .iter()
            .filter_map(|u| u.key().map(str::to_owned))
            .collect()
    }

    /// What a dump killed mid-upload leaves in S3 (an open multipart upload, a part uploaded)
    /// and in the catalog (an `in_progress` record): the reaper fails the record and aborts
    /// the upload, and leaves a live run (it holds its lease) and other databases alone.
    #[tokio::test]
    async fn an_abandoned_run_and_its_open_multipart_upload_are_cleaned() {
        let Some(config) = moto().await else { return };
        let (client, bucket) = moto_bucket(&config).await;
        let dir = tempfile::tempdir().unwrap();
        let services = Services {
            store: Arc::new(S3Store::new(
                client.clone(),
                &bucket,
                "pgkeep",
                S3Options::default(),
            )),
            catalog: Arc::new(SqliteCatalog::open(dir.path().join("catalog.sqlite3")).unwrap()),
            keys: Arc::new(NoKey),
        };
        let now = Utc::now();
        let mut runs = Vec::new();
        for (db, age) in [("shop", 60), ("shop", 1), ("crm", 60)] {
            let started = now - Duration::minutes(age);
            let mut r = BackupRecord::start(
                BackupId::generate(started),
                db,
                BackupKind::Scheduled,
                Compression::Zstd,
            );
            r.created_at = started;
            services.catalog.insert(&r).await.unwrap();
            if age == 1 {
                // The young run is alive: it holds its lease.
                let lease = Lease {
                    database: db.into(),
                    holder: r.id.to_string(),
                    expires_at: now + Duration::minutes(2),
                    process: crate::process::current(),
                };
                assert_eq!(
                    services.catalog.acquire_lease(&lease, now).await.unwrap(),
                    None
                );
            }
            let upload = client
                .create_multipart_upload()
                .bucket(&bucket)
                .key(format!("pgkeep/{}", r.object_key))
                .send()
                .await
                .unwrap();
            client
                .upload_part()
                .bucket(&bucket)
                .key(format!("pgkeep/{}", r.object_key))
                .upload_id(upload.upload_id().unwrap())
                .part_number(1)
                .body(vec![7u8; 1024].into())
                .send()
                .await
                .unwrap();
            runs.push(r);
        }
        assert_eq!(open_uploads(&client, &bucket).await.len(), 3);

        let reaped = reap(&services, Some("shop"), now, Span::minutes(20))
            .await
            .unwrap();
        assert_eq!(
            reaped
                .abandoned
                .iter()
                .map(|r| r.id.clone())
                .collect::<Vec<_>>(),
            vec![runs[0].id.clone()]
        );
        assert!(reaped.settled.is_empty());
        let failed = services.catalog.get(&runs[0].id).await.unwrap();
        assert_eq!(failed.status, BackupStatus::Failed);
        assert!(failed.error.unwrap().starts_with("abandoned"));
        for young_or_other in [&runs[1], &runs[2]] {
            assert_eq!(
                services
                    .catalog
                    .get(&young_or_other.id)
                    .await
                    .unwrap()
                    .status,
                BackupStatus::InProgress
            );
        }
        let mut open = open_uploads(&client, &bucket).await;
        open.sort();
        let mut expected = vec![
            format!("pgkeep/{}", runs[1].object_key),
            format!("pgkeep/{}", runs[2].object_key),
        ];
        expected.sort();
        assert_eq!(open, expected, "only the abandoned run's upload is aborted");
    }

    /// A Fargate dump runs for hours: however long ago it started, a run whose heartbeat
    /// keeps its lease fresh is not reaped, and its uploads (the object's and a data part's,
    /// older than the abandon-after) are not orphans to prune; once its lease lapses it is.
    #[tokio::test]
    async fn a_run_that_keeps_its_lease_is_never_reaped_however_long_it_runs() {
        let Some(config) = moto().await else { return };
        let (client, bucket) = moto_bucket(&config).await;
        let dir = tempfile::tempdir().unwrap();
        let services = Services {
            store: Arc::new(S3Store::new(
                client.clone(),
                &bucket,
                "pgkeep",
                S3Options::default(),
            )),
            catalog: Arc::new(SqliteCatalog::open(dir.path().join("catalog.sqlite3")).unwrap()),
            keys: Arc::new(NoKey),
        };
        let started = Utc::now();
        let mut run = BackupRecord::start(
            BackupId::generate(started),
            "big",
            BackupKind::Scheduled,
            Compression::Zstd,
        );
        let part = crate::model::part_key(&run.object_key, 1);
        run.parts.push(crate::model::BackupPart {
            object_key: part.clone(),
            size_bytes: None,
            sha256: None,
            tables: vec!["public.events".into()],
            large_objects: 0,
            archive_bytes: 0,
        });
        services.catalog.insert(&run).await.unwrap();
        for key in [&run.object_key, &part] {
            client
                .create_multipart_upload()
                .bucket(&bucket)
                .key(format!("pgkeep/{key}"))
                .send()
                .await
                .unwrap();
        }
        // Three hours on, its heartbeat renewed the lease a moment ago.
        let later = started + Duration::hours(3);
        let lease = Lease {
            database: "big".into(),
            holder: run.id.to_string(),
            expires_at: later + Duration::minutes(1),
            process: None,
        };
        assert_eq!(
            services
                .catalog
                .acquire_lease(&lease, started)
                .await
                .unwrap(),
            None
        );
        let limit = Span::minutes(20);
        let reaped = reap(&services, None, later, limit).await.unwrap();
        assert!(reaped.abandoned.is_empty() && reaped.settled.is_empty());
        let plan = crate::ops::prune::plan(
            &services,
            &crate::ops::prune::PruneRequest {
                policy: crate::retention::RetentionPolicy {
                    keep_last: 1,
                    ..Default::default()
                },
                database: None,
                now: later,
                abandon_after: limit,
                staging_dir: None,
            },
        )
        .await
        .unwrap();
        assert!(plan.abandoned.is_empty(), "{:?}", plan.abandoned);
        assert!(plan.orphans.is_empty(), "{:?}", plan.orphans);
        assert_eq!(
            services.catalog.get(&run.id).await.unwrap().status,
            BackupStatus::InProgress
        );
        assert_eq!(open_uploads(&client, &bucket).await.len(), 2);

        // Its heartbeat stops: two minutes after the lease lapsed, it is reaped.
        let dead = later + Duration::minutes(2);
        let reaped = reap(&services, None, dead, limit).await.unwrap();
        assert_eq!(reaped.abandoned.len(), 1);
        assert!(open_uploads(&client, &bucket).await.is_empty());
    }
}

#[cfg(test)]
mod restore_tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_running_restore_is_dead_once_its_signs_of_life_stop() {
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
        let id = BackupId::generate(now);
        let mut run = RestoreRun::queued(id.clone(), id, "shop", now - chrono::Duration::hours(2));
        let limit = DEFAULT_ABANDON_AFTER;
        assert_eq!(
            restore_is_dead(&run, now, limit),
            None,
            "queued: its invocation may still come"
        );
        let later = run.requested_at + chrono::Duration::hours(7);
        let why = restore_is_dead(&run, later, limit).unwrap();
        assert!(why.contains("never started within 7h"), "{why}");
        assert_eq!(
            restore_is_dead(&run, later - chrono::Duration::seconds(1), limit),
            None
        );
        run.state = RestoreState::Running;
        run.started_at = Some(now - chrono::Duration::hours(2));
        run.alive_at = Some(now - chrono::Duration::minutes(1));
        // A long restore that keeps renewing is alive, however long it has run.
        assert_eq!(restore_is_dead(&run, now, limit), None);
        run.alive_at = Some(now - chrono::Duration::minutes(21));
        let why = restore_is_dead(&run, now, limit).unwrap();
        assert!(
            why.contains("no sign of life since") && why.contains("20m"),
            "{why}"
        );
        // Records from before `alive_at` are judged by their start.
        run.alive_at = None;
        assert!(restore_is_dead(&run, now, limit).is_some());
        run.fail("x".into(), now);
        assert_eq!(restore_is_dead(&run, now, limit), None, "ended");
    }
}
