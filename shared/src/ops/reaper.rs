//! The reaper: backups left `in_progress` by a run that crashed, was killed or timed out become
//! `failed` ("abandoned: ...") and whatever they wrote is removed.
//!
//! It runs at the start of every dump (for that database) and of every prune. A record counts
//! as abandoned once it has been in progress longer than a limit (default
//! [`DEFAULT_ABANDON_AFTER`]: the 15-minute Lambda timeout plus a margin). A dump that really
//! runs longer than the limit must be given a larger one (`PGKEEP_ABANDON_AFTER`), or a
//! concurrent prune will fail it; that dump then fails loudly (its final compare-and-set finds
//! `failed`) and removes its object.
//!
//! Order: first the compare-and-set `in_progress` → `failed`, then the deletions. The other
//! order could delete an object that a slow but live dump publishes a moment later, and let that
//! dump then complete a record whose object is gone. With this order a live dump loses the race
//! on the record and cleans up after itself; if the reaper crashes between the steps, the next
//! prune finds the leftover keys of a `failed` record and removes them.

use chrono::{DateTime, Utc};

use super::Error;
use crate::backends::Services;
use crate::catalog::{CatalogError, ListQuery};
use crate::model::{BackupId, BackupRecord, BackupStatus};
use crate::retention::Span;

/// How long a backup may stay `in_progress` before it is taken for abandoned: 20 minutes, the
/// 15-minute Lambda limit plus a margin for the catalog write after it.
pub const DEFAULT_ABANDON_AFTER: Span = Span::minutes(20);

/// Whether `record` has been in progress for longer than `limit` at `now`.
pub fn is_abandoned(record: &BackupRecord, now: DateTime<Utc>, limit: Span) -> bool {
    record.status == BackupStatus::InProgress && now - record.created_at > limit.as_delta()
}

/// The in-progress records (of one database, or all) that are abandoned at `now`.
pub async fn find_abandoned(
    services: &Services,
    database: Option<&str>,
    now: DateTime<Utc>,
    limit: Span,
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
    Ok(in_progress
        .into_iter()
        .filter(|r| is_abandoned(r, now, limit))
        .collect())
}

/// Reaps every abandoned backup (of one database, or all); returns the records now `failed`.
pub async fn reap(
    services: &Services,
    database: Option<&str>,
    now: DateTime<Utc>,
    limit: Span,
) -> Result<Vec<BackupRecord>, Error> {
    let mut reaped = Vec::new();
    for record in find_abandoned(services, database, now, limit).await? {
        if let Some(r) = reap_one(services, &record.id, now, limit).await? {
            reaped.push(r);
        }
    }
    Ok(reaped)
}

/// Marks backup `id` failed and removes its keys if it is still abandoned; `Ok(None)` when it
/// is not (it finished, or is younger than `limit`).
pub async fn reap_one(
    services: &Services,
    id: &BackupId,
    now: DateTime<Utc>,
    limit: Span,
) -> Result<Option<BackupRecord>, Error> {
    let mut record = services.catalog.get(id).await?;
    if !is_abandoned(&record, now, limit) {
        return Ok(None);
    }
    let age = Span::from_seconds((now - record.created_at).num_seconds())
        .map_or_else(|| "?".to_owned(), |s| s.to_string());
    record
        .transition(BackupStatus::Failed)
        .map_err(CatalogError::from)?;
    record.error = Some(format!(
        "abandoned: still in progress {age} after it started (limit {limit}); the run crashed, was killed or timed out"
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
    services.store.delete(&record.manifest_key()).await?;
    services.store.delete(&record.object_key).await?;
    abort_incomplete_uploads(services, &record.object_key, now - limit.as_delta()).await?;
    tracing::warn!(backup = %record.id, database = %record.database, age = %age, "abandoned backup marked failed");
    Ok(Some(record))
}

/// Removes what an interrupted streaming upload of `key` may have left besides the object
/// itself (open S3 multipart uploads, which cost storage but are invisible to listings).
/// The directory store needs nothing here: a killed process leaves only hidden temporary files.
async fn abort_incomplete_uploads(
    services: &Services,
    key: &str,
    older_than: DateTime<Utc>,
) -> Result<(), Error> {
    let aborted = services
        .store
        .abort_incomplete_uploads(key, older_than)
        .await?;
    if aborted > 0 {
        tracing::warn!(
            key,
            aborted,
            "aborted open multipart uploads of an abandoned backup"
        );
    }
    Ok(())
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
    /// the upload, and leaves a young run and other databases alone.
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
            reaped.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
            vec![runs[0].id.clone()]
        );
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
}
