//! Rebuilding the catalog from the repository (`pgkeep repair`), and refusing to carry on
//! beside a catalog that was lost ([`check_catalog`]).
//!
//! The repository holds, per backup, `<id>.pgkeep` (the object), `<id>.manifest.json` (written
//! once, when it completed) and `<id>.state.json` (the whole record, rewritten after every
//! later change and when it failed; see [`super::state`]). A backup's record is its state when
//! there is one, else its manifest's `backup`. Repair makes the catalog hold each of them:
//! missing records are added, and records the repository shows further along (a later
//! status, a later verification) are replaced; a catalog record that is as far along or
//! further is kept. Keys that tell of no usable backup (an object without a manifest, a
//! manifest or state of a stored backup whose object is gone) are reported, and removed only
//! when asked. Running it again changes nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Error;
use crate::backends::Services;
use crate::catalog::{CatalogError, ListQuery};
use crate::model::{
    BackupId, BackupRecord, BackupState, BackupStatus, Manifest, MANIFEST_VERSION, STATE_VERSION,
};

const OBJECT: &str = ".pgkeep";
const MANIFEST: &str = ".manifest.json";
const STATE: &str = ".state.json";

/// What to do.
#[derive(Debug, Clone, Default)]
pub struct RepairRequest {
    /// Only say what would change.
    pub dry_run: bool,
    /// Delete the stray keys found (objects without a manifest, manifests and states of
    /// stored backups whose object is gone).
    pub remove_strays: bool,
}

/// How far a repair has got, for progress displays.
#[derive(Debug, Default)]
pub struct RepairProgress {
    total: AtomicU64,
    done: AtomicU64,
}

impl RepairProgress {
    /// Backups read so far, and how many the repository holds (0 until listed).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }
}

/// What repair did (or, in a dry run, would do) to one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The catalog lacked it.
    Add,
    /// The catalog's was behind the repository's.
    Update,
}

/// One record written to the catalog.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Added or updated.
    pub action: Action,
    /// The backup.
    pub id: BackupId,
    /// Its database.
    pub database: String,
    /// Its status now.
    pub status: BackupStatus,
    /// The catalog's status before, for an update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<BackupStatus>,
}

/// A record the catalog holds differently and was left as it is.
#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    /// The backup.
    pub id: BackupId,
    /// The catalog's status (kept).
    pub catalog_status: BackupStatus,
    /// The repository's status.
    pub repository_status: BackupStatus,
}

/// A key that tells of no usable backup.
#[derive(Debug, Clone, Serialize)]
pub struct Stray {
    /// The key.
    pub key: String,
    /// What is wrong, in words.
    pub why: String,
}

/// The outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// The repository read.
    pub repository: String,
    /// The catalog written.
    pub catalog: String,
    /// Backups the repository describes (records it could rebuild).
    pub backups: usize,
    /// Records added or updated (in a dry run: that would be).
    pub changes: Vec<Change>,
    /// Records that were already as the repository says.
    pub unchanged: usize,
    /// Records the catalog holds further along (or differently), left alone.
    pub kept: Vec<Kept>,
    /// Keys that tell of no usable backup.
    pub strays: Vec<Stray>,
    /// Stray keys deleted (`remove_strays`).
    pub removed: Vec<String>,
    /// Manifests and states that could not be read (unknown version, not JSON), left alone.
    pub unreadable: Vec<Stray>,
}

/// The keys of one backup, by kind.
#[derive(Default)]
struct Keys {
    object: Option<String>,
    manifest: Option<String>,
    state: Option<String>,
}

/// Rebuilds or completes the catalog from the repository (see the module documentation).
pub async fn repair(
    services: &Services,
    request: &RepairRequest,
    progress: &RepairProgress,
) -> Result<RepairReport, Error> {
    let mut report = RepairReport {
        dry_run: request.dry_run,
        repository: services.store.location(),
        catalog: services.catalog.location(),
        backups: 0,
        changes: Vec::new(),
        unchanged: 0,
        kept: Vec::new(),
        strays: Vec::new(),
        removed: Vec::new(),
        unreadable: Vec::new(),
    };
    let groups = group_keys(services.store.list("").await?);
    progress.total.store(groups.len() as u64, Ordering::Relaxed);
    for (stem, keys) in groups {
        if let Some(record) = read_backup(services, &stem, &keys, &mut report).await? {
            report.backups += 1;
            reconcile(services, request, record, &mut report).await?;
        }
        progress.done.fetch_add(1, Ordering::Relaxed);
    }
    if request.remove_strays && !request.dry_run {
        for stray in &report.strays {
            services.store.delete(&stray.key).await?;
            report.removed.push(stray.key.clone());
        }
    }
    Ok(report)
}

/// Backup keys (`…/<id>.pgkeep`, `.manifest.json`, `.state.json`) by their common stem, in id
/// order; anything else (the embedded catalog, other files) is not a backup's.
fn group_keys(keys: Vec<crate::store::ObjectMeta>) -> Vec<(String, Keys)> {
    let mut groups: BTreeMap<String, Keys> = BTreeMap::new();
    for meta in keys {
        let key = meta.key;
        let Some((stem, kind)) = [OBJECT, MANIFEST, STATE].into_iter().find_map(|suffix| {
            key.strip_suffix(suffix)
                .map(|stem| (stem.to_owned(), suffix))
        }) else {
            continue;
        };
        let id_ok = stem
            .rsplit('/')
            .next()
            .is_some_and(|name| name.parse::<BackupId>().is_ok());
        if !id_ok || !stem.contains('/') {
            continue;
        }
        let entry = groups.entry(stem).or_default();
        match kind {
            OBJECT => entry.object = Some(key),
            MANIFEST => entry.manifest = Some(key),
            _ => entry.state = Some(key),
        }
    }
    // In id order (the file name), whatever the database directory.
    let mut by_id: Vec<(String, Keys)> = groups.into_iter().collect();
    by_id.sort_by(|a, b| a.0.rsplit('/').next().cmp(&b.0.rsplit('/').next()));
    by_id
}

/// The record the repository holds for one backup, or `None` (with the reason in `report`).
async fn read_backup(
    services: &Services,
    stem: &str,
    keys: &Keys,
    report: &mut RepairReport,
) -> Result<Option<BackupRecord>, Error> {
    let unreadable = |key: &str, why: String| Stray {
        key: key.to_owned(),
        why,
    };
    let state = match &keys.state {
        None => None,
        Some(key) => {
            match serde_json::from_slice::<serde_json::Value>(&get(services, key).await?) {
                Err(e) => {
                    report
                        .unreadable
                        .push(unreadable(key, format!("not JSON: {e}")));
                    return Ok(None);
                }
                Ok(value) => match value.get("state_version").and_then(|v| v.as_u64()) {
                    Some(v) if v == u64::from(STATE_VERSION) => {
                        match serde_json::from_value::<BackupState>(value) {
                            Ok(state) => Some(state.record),
                            Err(e) => {
                                report.unreadable.push(unreadable(key, e.to_string()));
                                return Ok(None);
                            }
                        }
                    }
                    other => {
                        report.unreadable.push(unreadable(
                            key,
                            format!(
                                "state_version {} is not one this pgkeep reads ({STATE_VERSION})",
                                other.map_or_else(|| "missing".to_owned(), |v| v.to_string())
                            ),
                        ));
                        return Ok(None);
                    }
                },
            }
        }
    };
    let manifest = match &keys.manifest {
        None => None,
        Some(key) => match read_manifest(&get(services, key).await?) {
            Ok(m) => Some(m),
            Err(why) => {
                report.unreadable.push(unreadable(key, why));
                return Ok(None);
            }
        },
    };
    let record = match (state, manifest) {
        (Some(record), _) => record,
        (None, Some(manifest)) => manifest.backup,
        (None, None) => {
            let key = keys.object.clone().expect("a group has at least one key");
            report.strays.push(Stray {
                key,
                why: "an object without a manifest or state: no record can be rebuilt from it"
                    .into(),
            });
            return Ok(None);
        }
    };
    let expected_stem = record
        .object_key
        .strip_suffix(OBJECT)
        .unwrap_or(&record.object_key);
    if expected_stem != stem {
        let key = keys
            .state
            .clone()
            .or(keys.manifest.clone())
            .unwrap_or_default();
        report.unreadable.push(unreadable(
            &key,
            format!(
                "describes backup {} at {}, not the backup stored here",
                record.id, record.object_key
            ),
        ));
        return Ok(None);
    }
    if record.status.has_object() && keys.object.is_none() {
        for key in [&keys.manifest, &keys.state].into_iter().flatten() {
            report.strays.push(Stray {
                key: key.clone(),
                why: format!(
                    "backup {} is {} but its object {} is gone",
                    record.id, record.status, record.object_key
                ),
            });
        }
        return Ok(None);
    }
    Ok(Some(record))
}

async fn get(services: &Services, key: &str) -> Result<Vec<u8>, Error> {
    Ok(services.store.get(key).await?)
}

/// A manifest this pgkeep reads, or why not (an unknown `manifest_version` is refused).
pub fn read_manifest(bytes: &[u8]) -> Result<Manifest, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    match value.get("manifest_version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(MANIFEST_VERSION) => {
            serde_json::from_value(value).map_err(|e| e.to_string())
        }
        other => Err(format!(
            "manifest_version {} is not one this pgkeep reads ({MANIFEST_VERSION})",
            other.map_or_else(|| "missing".to_owned(), |v| v.to_string())
        )),
    }
}

/// How far along a record is: its place in the lifecycle, then its latest verification.
fn progress_of(r: &BackupRecord) -> (u8, Option<DateTime<Utc>>) {
    let rank = match r.status {
        BackupStatus::InProgress => 0,
        BackupStatus::Completed | BackupStatus::Failed => 1,
        BackupStatus::Verified | BackupStatus::VerificationFailed => 2,
        BackupStatus::Deleted => 3,
    };
    (rank, r.verification.as_ref().map(|v| v.verified_at))
}

async fn reconcile(
    services: &Services,
    request: &RepairRequest,
    record: BackupRecord,
    report: &mut RepairReport,
) -> Result<(), Error> {
    let (action, previous) = match services.catalog.get(&record.id).await {
        Err(CatalogError::NotFound(_)) => (Action::Add, None),
        Err(e) => return Err(e.into()),
        Ok(current) if current == record => {
            report.unchanged += 1;
            return Ok(());
        }
        Ok(current) if progress_of(&record) > progress_of(&current) => {
            (Action::Update, Some(current.status))
        }
        Ok(current) => {
            report.kept.push(Kept {
                id: record.id.clone(),
                catalog_status: current.status,
                repository_status: record.status,
            });
            return Ok(());
        }
    };
    if !request.dry_run {
        services.catalog.replace(&record).await?;
    }
    report.changes.push(Change {
        action,
        id: record.id.clone(),
        database: record.database.clone(),
        status: record.status,
        previous,
    });
    Ok(())
}

/// Refuses to work beside a catalog that holds no backups while the repository holds
/// manifests: the catalog was lost or emptied, and going on would start a second history
/// beside the first (a new repository, with no manifests, passes). Every command but
/// `repair` (and `init`) calls it once its backends are open.
pub async fn check_catalog(services: &Services) -> Result<(), Error> {
    let page = services
        .catalog
        .list(&ListQuery {
            limit: Some(1),
            ..ListQuery::default()
        })
        .await?;
    if !page.records.is_empty() {
        return Ok(());
    }
    let manifests: Vec<String> = services
        .store
        .list("")
        .await?
        .into_iter()
        .map(|m| m.key)
        .filter(|k| k.ends_with(MANIFEST))
        .collect();
    match manifests.first() {
        None => Ok(()),
        Some(example) => Err(Error::CatalogLost {
            catalog: services.catalog.location(),
            repository: services.store.location(),
            manifests: match manifests.len() {
                1 => "1 manifest".to_owned(),
                n => format!("{n} manifests"),
            },
            example: example.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::catalog::sqlite::SqliteCatalog;
    use crate::keys::NoKey;
    use crate::model::{
        ArchiveInfo, BackupKind, Compression, EncryptionInfo, Verification, VerificationResult,
    };
    use crate::store::fs::FsStore;

    fn services(dir: &std::path::Path) -> Services {
        Services {
            store: Arc::new(FsStore::new(dir.join("repo"))),
            catalog: Arc::new(SqliteCatalog::open(dir.join("catalog.sqlite3")).unwrap()),
            keys: Arc::new(NoKey),
        }
    }

    /// A completed backup as the repository holds it: object and manifest.
    async fn stored(services: &Services, minute: u32) -> BackupRecord {
        let t = Utc::now() - chrono::Duration::minutes(i64::from(60 - minute));
        let mut r = BackupRecord::start(
            BackupId::generate(t),
            "shop",
            BackupKind::Manual,
            Compression::Zstd,
        );
        r.status = BackupStatus::Completed;
        r.size_bytes = Some(3);
        let manifest = Manifest::new(
            r.clone(),
            EncryptionInfo::aes_256_gcm(1, 16, "file:0", b"k"),
            ArchiveInfo {
                format: "pg_dump custom".into(),
                archive_version: "1.14.0".into(),
                dump_version: "15".into(),
                archive_bytes: 0,
                tables: Vec::new(),
                schema_only_tables: Vec::new(),
                large_objects: 0,
            },
        );
        services
            .store
            .put(&r.object_key, b"obj".to_vec())
            .await
            .unwrap();
        services
            .store
            .put(&r.manifest_key(), serde_json::to_vec(&manifest).unwrap())
            .await
            .unwrap();
        r
    }

    fn verified(mut r: BackupRecord, minutes_ago: i64) -> BackupRecord {
        r.status = BackupStatus::Verified;
        r.verification = Some(Verification {
            verified_at: Utc::now() - chrono::Duration::minutes(minutes_ago),
            ok: true,
            result: VerificationResult::Verified,
            reason: None,
            restore_duration_ms: Some(12),
            duration_ms: 20,
            scratch_server: None,
            scratch_database: None,
            tables: Vec::new(),
            large_objects: None,
            objects_checked: 0,
            missing_objects: Vec::new(),
            extra_objects: Vec::new(),
        });
        r
    }

    #[tokio::test]
    async fn the_repository_wins_only_when_it_is_further_along() {
        let dir = tempfile::tempdir().unwrap();
        let s = services(dir.path());
        let request = RepairRequest::default();
        let progress = RepairProgress::default();

        // a: the catalog lags (completed), the repository says verified: updated.
        let a = stored(&s, 1).await;
        s.catalog.insert(&a).await.unwrap();
        let a_verified = verified(a.clone(), 5);
        super::super::state::publish(s.store.as_ref(), &a_verified)
            .await
            .unwrap();
        // b: the catalog is ahead (verified), the repository only has the manifest: kept.
        let b = stored(&s, 2).await;
        s.catalog.replace(&verified(b.clone(), 1)).await.unwrap();
        // c: verified in both, the repository's verification newer: updated.
        let c = stored(&s, 3).await;
        s.catalog.replace(&verified(c.clone(), 30)).await.unwrap();
        super::super::state::publish(s.store.as_ref(), &verified(c.clone(), 2))
            .await
            .unwrap();
        // d: not in the catalog: added. e: a manifest whose object is gone: a stray.
        let d = stored(&s, 4).await;
        let e = stored(&s, 5).await;
        s.store.delete(&e.object_key).await.unwrap();

        let report = repair(&s, &request, &progress).await.unwrap();
        let changes: Vec<(&BackupId, &Action)> =
            report.changes.iter().map(|c| (&c.id, &c.action)).collect();
        assert_eq!(
            changes,
            vec![
                (&a.id, &Action::Update),
                (&c.id, &Action::Update),
                (&d.id, &Action::Add)
            ]
        );
        assert_eq!(report.kept.len(), 1);
        assert_eq!(report.kept[0].id, b.id);
        assert_eq!(report.strays.len(), 1);
        assert_eq!(report.strays[0].key, e.manifest_key());
        assert_eq!(progress.counts(), (5, 5));
        assert_eq!(s.catalog.get(&a.id).await.unwrap(), a_verified);
        assert_eq!(
            s.catalog.get(&b.id).await.unwrap().status,
            BackupStatus::Verified
        );
        assert!(matches!(
            s.catalog.get(&e.id).await,
            Err(CatalogError::NotFound(_))
        ));

        let again = repair(&s, &request, &RepairProgress::default())
            .await
            .unwrap();
        assert!(again.changes.is_empty(), "{again:#?}");
        assert_eq!(again.unchanged, 3);

        // An unknown state version is reported, not read.
        let mut future: serde_json::Value =
            serde_json::from_slice(&s.store.get(&a.state_key()).await.unwrap()).unwrap();
        future["state_version"] = 2.into();
        s.store
            .put(&a.state_key(), serde_json::to_vec(&future).unwrap())
            .await
            .unwrap();
        let report = repair(&s, &request, &RepairProgress::default())
            .await
            .unwrap();
        assert_eq!(report.unreadable.len(), 1, "{report:#?}");
        assert!(report.unreadable[0].why.contains("state_version 2"));
    }

    #[tokio::test]
    async fn a_lost_catalog_is_refused_and_a_new_repository_passes() {
        let dir = tempfile::tempdir().unwrap();
        let s = services(dir.path());
        check_catalog(&s).await.unwrap();
        let a = stored(&s, 1).await;
        let err = check_catalog(&s).await.unwrap_err();
        assert!(err.to_string().contains("run `pgkeep repair`"), "{err}");
        assert!(err.to_string().contains("1 manifest"), "{err}");
        s.catalog.insert(&a).await.unwrap();
        check_catalog(&s).await.unwrap();
    }
}
