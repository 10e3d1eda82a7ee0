//! The catalog: the list of backup records, their status, and the queries the edges need.
//!
//! Writes are compare-and-set on the status a caller last saw, so two writers (a dump and a
//! reaper, two verifiers) cannot both win; which status changes are legal is decided by
//! [`crate::model::BackupStatus::can_become`].

use async_trait::async_trait;
use base64::Engine;

use chrono::{DateTime, Utc};

use crate::labels::LabelSelector;
use crate::model::{
    AuditEntry, BackupId, BackupKind, BackupRecord, BackupStatus, Lease, RestoreRun,
    TransitionError,
};

pub mod dynamodb;
pub mod sqlite;

/// Why a catalog operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No record with that id.
    #[error("backup {0} is not in the catalog (see `pgkeep list`)")]
    NotFound(BackupId),
    /// Ids are unique; a second insert is a bug or a replayed event.
    #[error("backup {0} is already in the catalog")]
    AlreadyExists(BackupId),
    /// Someone else changed the record first.
    #[error("backup {id} was changed by another run: expected status {expected}, found {found}")]
    Conflict {
        /// The contested backup.
        id: BackupId,
        /// The status this writer based its change on.
        expected: BackupStatus,
        /// The status actually stored.
        found: BackupStatus,
    },
    /// A status change the lifecycle forbids.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// No restore with that id.
    #[error("restore {0} is not in the catalog (see `pgkeep restores`)")]
    RestoreNotFound(BackupId),
    /// A pagination cursor that this catalog did not hand out.
    #[error("invalid cursor {0:?}: pass back exactly the cursor a previous page returned")]
    BadCursor(String),
    /// The storage behind the catalog failed.
    #[error("catalog {location}: {message}")]
    Backend {
        /// Where the catalog lives.
        location: String,
        /// What went wrong.
        message: String,
    },
}

/// Which records to list; newest first.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this database.
    pub database: Option<String>,
    /// Only this status.
    pub status: Option<BackupStatus>,
    /// At most this many records (all when `None`).
    pub limit: Option<usize>,
    /// Continue after the page that returned this cursor.
    pub cursor: Option<String>,
    /// Only backups carrying this label (`key`: any value, `key=value`: that value).
    pub label: Option<LabelSelector>,
    /// Only backups of this kind.
    pub kind: Option<BackupKind>,
    /// Only the backups of this whole-server run ([`BackupRecord::run_id`]).
    pub run_id: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Records, newest first.
    pub records: Vec<BackupRecord>,
    /// Pass this back to get the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// Which audit entries to list; newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only entries about this database.
    pub database: Option<String>,
    /// Only entries at or after this time (to the millisecond).
    pub since: Option<DateTime<Utc>>,
    /// At most this many entries (all when `None`).
    pub limit: Option<usize>,
    /// Continue after the page that returned this cursor.
    pub cursor: Option<String>,
}

/// One page of the audit trail.
#[derive(Debug, Clone, Default)]
pub struct AuditPage {
    /// Entries, newest first.
    pub entries: Vec<AuditEntry>,
    /// Pass this back to get the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// The smallest id of anything stored at or after `since`: ids begin with their time
/// (`YYYYMMDDTHHMMSSmmmZ`), so a time bound is a bound on the sorted ids every index has.
pub fn id_floor(since: DateTime<Utc>) -> String {
    since.format("%Y%m%dT%H%M%S%3fZ").to_string()
}

/// Where backup records live.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// The catalog's URL, for messages (`sqlite:///var/backups/pgkeep/catalog.sqlite3`).
    fn location(&self) -> String;
    /// Adds a new record; fails if the id exists.
    async fn insert(&self, record: &BackupRecord) -> Result<(), CatalogError>;
    /// The record with this id.
    async fn get(&self, id: &BackupId) -> Result<BackupRecord, CatalogError>;
    /// Replaces the stored record if its status is still `expected` and the change from
    /// `expected` to `record.status` is legal.
    async fn update(
        &self,
        record: &BackupRecord,
        expected: BackupStatus,
    ) -> Result<(), CatalogError>;
    /// Records matching the query, newest first.
    async fn list(&self, query: &ListQuery) -> Result<Page, CatalogError>;
    /// Stores `record` as it is, inserting it or replacing the stored one, with no lifecycle
    /// check: only for `pgkeep repair`, which copies states the lifecycle already allowed from
    /// the repository.
    async fn replace(&self, record: &BackupRecord) -> Result<(), CatalogError>;

    /// Takes the dump lease of `lease.database` unless someone else holds an unexpired one
    /// at `now`; returns `Ok(None)` when taken, `Ok(Some(current))` when held by another.
    async fn acquire_lease(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, CatalogError>;
    /// Gives the lease back if `holder` still holds it (a lapsed lease taken over by another
    /// holder is left alone).
    async fn release_lease(&self, database: &str, holder: &str) -> Result<(), CatalogError>;
    /// The heartbeat: moves the lease's expiry to `lease.expires_at` if `lease.holder` still
    /// holds it; `Ok(false)` when it does not (it lapsed and another run took it).
    async fn renew_lease(&self, lease: &Lease) -> Result<bool, CatalogError>;
    /// The current lease of `database`, expired or not; `None` when nobody holds one.
    async fn get_lease(&self, database: &str) -> Result<Option<Lease>, CatalogError>;

    /// Appends to the audit trail.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), CatalogError>;
    /// The newest audit entries (of one database when given), newest first.
    async fn list_audit(
        &self,
        database: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, CatalogError>;

    /// One page of the audit trail, newest first (by id, which is the entry's time).
    async fn audit_page(&self, query: &AuditQuery) -> Result<AuditPage, CatalogError>;

    /// Stores a restore's record, inserting it or replacing the stored one (a restore has
    /// one writer: whoever runs it).
    async fn put_restore(&self, run: &RestoreRun) -> Result<(), CatalogError>;
    /// The restore with this id.
    async fn get_restore(&self, id: &BackupId) -> Result<RestoreRun, CatalogError>;
    /// The newest restores, newest first.
    async fn list_restores(&self, limit: usize) -> Result<Vec<RestoreRun>, CatalogError>;

    /// Removes record `id` for good if its status is still `expected` (`NotFound` when it is
    /// gone, `Conflict` when it changed). Only for records that never held a backup: history
    /// of real backups stays (see [`crate::ops::forget`]).
    async fn remove_record(
        &self,
        id: &BackupId,
        expected: BackupStatus,
    ) -> Result<(), CatalogError>;
}

/// Checks an update against the lifecycle before any backend writes it.
pub fn check_update(record: &BackupRecord, expected: BackupStatus) -> Result<(), CatalogError> {
    if expected == record.status || expected.can_become(record.status) {
        Ok(())
    } else {
        Err(TransitionError {
            id: record.id.clone(),
            from: expected,
            to: record.status,
        }
        .into())
    }
}

/// Where a listing stopped: the start (`created_at`) and id of the last record returned,
/// the order every listing uses (newest start first, then id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// `created_at` of the last record, as [`format_time`](crate::model::format_time) writes it.
    pub start: String,
    /// Its id, which breaks ties between records started in the same millisecond.
    pub id: BackupId,
}

impl Cursor {
    /// The position of `record` in a listing.
    pub fn at(record: &BackupRecord) -> Cursor {
        Cursor {
            start: crate::model::format_time(record.created_at),
            id: record.id.clone(),
        }
    }

    /// `<start>#<id>`: sorts as strings in listing order (the DynamoDB indexes' sort key).
    pub fn key(&self) -> String {
        start_key(&self.start, self.id.as_str())
    }
}

/// The sort key of an item started (or written, for audit entries) at `start` with `id`.
pub fn start_key(start: &str, id: &str) -> String {
    format!("{start}#{id}")
}

/// Cursors are opaque to callers: the last record's [`Cursor::key`], base64url-encoded.
pub fn encode_cursor(last: &BackupRecord) -> String {
    encode_cursor_at(last.created_at, &last.id)
}

/// The cursor after an item of `id` at `start` (an audit entry's or restore's time).
pub fn encode_cursor_at(start: DateTime<Utc>, id: &BackupId) -> String {
    let cursor = Cursor {
        start: crate::model::format_time(start),
        id: id.clone(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(cursor.key())
}

/// Reverses [`encode_cursor`], refusing anything it did not produce.
pub fn decode_cursor(cursor: &str) -> Result<Cursor, CatalogError> {
    let bad = || CatalogError::BadCursor(cursor.to_owned());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (start, id) = text.split_once('#').ok_or_else(bad)?;
    let parsed = DateTime::parse_from_rfc3339(start).map_err(|_| bad())?;
    // Only the canonical spelling: the cursor is compared as a string.
    if crate::model::format_time(parsed.with_timezone(&Utc)) != start {
        return Err(bad());
    }
    Ok(Cursor {
        start: start.to_owned(),
        id: id.parse().map_err(|_| bad())?,
    })
}

#[cfg(test)]
pub(crate) mod contract {
    //! One test suite every catalog implementation must pass.
    use super::*;
    use crate::model::{BackupKind, Compression};
    use chrono::{Duration, TimeZone, Utc};

    fn record(db: &str, minute: u32) -> BackupRecord {
        let t = Utc.with_ymd_and_hms(2026, 11, 24, 10, minute, 0).unwrap();
        let mut r = BackupRecord::start(
            BackupId::generate(t),
            db,
            BackupKind::Scheduled,
            Compression::Zstd,
        );
        r.created_at = t;
        r
    }

    /// Runs the whole contract against a fresh, empty catalog.
    pub async fn run(catalog: &dyn Catalog) {
        // insert / get / duplicate
        let mut a = record("shop", 1);
        catalog.insert(&a).await.unwrap();
        assert_eq!(catalog.get(&a.id).await.unwrap(), a);
        assert!(matches!(
            catalog.insert(&a).await,
            Err(CatalogError::AlreadyExists(_))
        ));
        let missing = record("shop", 59).id;
        assert!(matches!(
            catalog.get(&missing).await,
            Err(CatalogError::NotFound(_))
        ));

        // compare-and-set updates
        a.transition(BackupStatus::Completed).unwrap();
        a.size_bytes = Some(42);
        catalog.update(&a, BackupStatus::InProgress).await.unwrap();
        assert_eq!(catalog.get(&a.id).await.unwrap().size_bytes, Some(42));
        let mut stale = a.clone();
        stale.status = BackupStatus::Failed;
        assert!(matches!(
            catalog.update(&stale, BackupStatus::InProgress).await,
            Err(CatalogError::Conflict {
                found: BackupStatus::Completed,
                ..
            })
        ));
        let mut illegal = a.clone();
        illegal.status = BackupStatus::InProgress;
        assert!(matches!(
            catalog.update(&illegal, BackupStatus::Completed).await,
            Err(CatalogError::Transition(_))
        ));
        assert_eq!(
            catalog.get(&a.id).await.unwrap().status,
            BackupStatus::Completed
        );
        let ghost = record("shop", 58);
        assert!(matches!(
            catalog.update(&ghost, BackupStatus::InProgress).await,
            Err(CatalogError::NotFound(_))
        ));

        // listing: newest first, filters, pagination
        // Listings are in start order (`created_at`), not id order: the backup asked for at
        // minute 3 (its id's time) started last, as a queued or retried one does.
        let mut ids = vec![a.id.clone()];
        let mut late = None;
        for m in 2..=7 {
            let mut r = record(if m % 2 == 0 { "crm" } else { "shop" }, m);
            r.created_at += Duration::seconds(1);
            if m == 3 {
                r.created_at += Duration::minutes(17);
            }
            catalog.insert(&r).await.unwrap();
            match m {
                3 => late = Some(r.id.clone()),
                _ => ids.push(r.id.clone()),
            }
        }
        let late = late.unwrap();
        ids.push(late.clone());
        let all = catalog.list(&ListQuery::default()).await.unwrap();
        let listed: Vec<_> = all.records.iter().map(|r| r.id.clone()).collect();
        let mut newest_first = ids.clone();
        newest_first.reverse();
        assert_eq!(listed, newest_first);
        assert_eq!(listed[0], late);
        assert!(all.next_cursor.is_none());

        let shop = catalog
            .list(&ListQuery {
                database: Some("shop".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(shop.records.len(), 4);
        assert!(shop.records.iter().all(|r| r.database == "shop"));
        assert_eq!(shop.records[0].id, late);
        let in_progress = catalog
            .list(&ListQuery {
                status: Some(BackupStatus::InProgress),
                limit: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(in_progress.records[0].id, late);

        let completed = catalog
            .list(&ListQuery {
                status: Some(BackupStatus::Completed),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(completed.records.len(), 1);
        assert_eq!(completed.records[0].id, a.id);

        let mut pages = Vec::new();
        let mut cursor = None;
        loop {
            let page = catalog
                .list(&ListQuery {
                    limit: Some(3),
                    cursor: cursor.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(page.records.len() <= 3);
            pages.extend(page.records.into_iter().map(|r| r.id));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(pages, newest_first);
        assert!(matches!(
            catalog
                .list(&ListQuery {
                    cursor: Some("not-a-cursor".into()),
                    ..Default::default()
                })
                .await,
            Err(CatalogError::BadCursor(_))
        ));

        // replace: inserts, or overwrites whatever status is stored.
        let mut restored = record("shop", 57);
        restored.status = BackupStatus::Verified;
        catalog.replace(&restored).await.unwrap();
        assert_eq!(catalog.get(&restored.id).await.unwrap(), restored);
        restored.status = BackupStatus::Completed;
        restored.size_bytes = Some(7);
        catalog.replace(&restored).await.unwrap();
        assert_eq!(catalog.get(&restored.id).await.unwrap(), restored);
        assert_eq!(
            catalog
                .list(&ListQuery {
                    status: Some(BackupStatus::Completed),
                    ..Default::default()
                })
                .await
                .unwrap()
                .records
                .len(),
            2
        );

        labels(catalog).await;
        runs(catalog).await;
        leases(catalog).await;
        audit(catalog).await;
        kinds(catalog).await;
        restores(catalog).await;
        remove(catalog).await;
    }

    /// Removal is compare-and-set on the status, and a removed record is gone from listings.
    async fn remove(catalog: &dyn Catalog) {
        let mut r = record("typo", 30);
        catalog.insert(&r).await.unwrap();
        r.transition(BackupStatus::Failed).unwrap();
        catalog.update(&r, BackupStatus::InProgress).await.unwrap();
        assert!(matches!(
            catalog.remove_record(&r.id, BackupStatus::InProgress).await,
            Err(CatalogError::Conflict {
                found: BackupStatus::Failed,
                ..
            })
        ));
        assert_eq!(
            catalog.get(&r.id).await.unwrap().status,
            BackupStatus::Failed
        );
        catalog
            .remove_record(&r.id, BackupStatus::Failed)
            .await
            .unwrap();
        assert!(matches!(
            catalog.get(&r.id).await,
            Err(CatalogError::NotFound(_))
        ));
        assert!(matches!(
            catalog.remove_record(&r.id, BackupStatus::Failed).await,
            Err(CatalogError::NotFound(_))
        ));
        let listed = catalog
            .list(&ListQuery {
                database: Some("typo".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(listed.records.is_empty(), "{:?}", listed.records);
        let everything = catalog.list(&ListQuery::default()).await.unwrap();
        assert!(everything.records.iter().all(|x| x.id != r.id));
    }

    /// Label filters, alone and with the other filters, page by page: every page holds only
    /// matches, and following the cursors gives exactly the matches, newest first.
    async fn labels(catalog: &dyn Catalog) {
        let mut expected_release = Vec::new();
        let mut expected_v2 = Vec::new();
        for m in 0..9u32 {
            let t = Utc.with_ymd_and_hms(2026, 11, 25, 10, m, 0).unwrap();
            let mut r = BackupRecord::start(
                BackupId::generate(t),
                if m % 3 == 0 { "crm" } else { "labelled" },
                BackupKind::PreMigration,
                Compression::Zstd,
            );
            r.created_at = t;
            // Two of every three carry `release`; every other one of those is v2.
            if m % 3 != 2 {
                let value = if m % 2 == 0 { "v2" } else { "v1" };
                r.labels.insert("release".into(), value.into());
                expected_release.push(r.id.clone());
                if value == "v2" {
                    expected_v2.push(r.id.clone());
                }
            }
            r.labels.insert("team".into(), "ops".into());
            catalog.insert(&r).await.unwrap();
            assert_eq!(catalog.get(&r.id).await.unwrap().labels, r.labels);
        }
        expected_release.reverse();
        expected_v2.reverse();
        let selector = |s: &str| Some(s.parse::<LabelSelector>().unwrap());
        for limit in [1, 2, 4, 100] {
            for (label, expected) in [("release", &expected_release), ("release=v2", &expected_v2)]
            {
                let query = ListQuery {
                    label: selector(label),
                    limit: Some(limit),
                    ..Default::default()
                };
                assert_eq!(
                    &all_pages(catalog, query).await,
                    expected,
                    "{label} limit {limit}"
                );
            }
        }
        let none = catalog
            .list(&ListQuery {
                label: selector("release=v3"),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(none.records.is_empty() && none.next_cursor.is_none());
        // With the database and status filters.
        let crm_v2: Vec<BackupId> = all_pages(
            catalog,
            ListQuery {
                database: Some("crm".into()),
                status: Some(BackupStatus::InProgress),
                label: selector("release=v2"),
                limit: Some(1),
                ..Default::default()
            },
        )
        .await;
        let want: Vec<BackupId> = expected_v2
            .iter()
            .filter(|id| {
                let minute: u32 = id.as_str()[11..13].parse().unwrap();
                minute % 3 == 0
            })
            .cloned()
            .collect();
        assert!(!want.is_empty());
        assert_eq!(crm_v2, want);
        let by_status = all_pages(
            catalog,
            ListQuery {
                status: Some(BackupStatus::InProgress),
                label: selector("team=ops"),
                limit: Some(4),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(by_status.len(), 9);
    }

    /// The run filter: only the run's records, of every database, newest first, page by page;
    /// `replace` keeps the run, and other filters still apply.
    async fn runs(catalog: &dyn Catalog) {
        let run = "20261126T100000000Z-00c0ffee";
        let mut expected = Vec::new();
        for m in 0..6u32 {
            let t = Utc.with_ymd_and_hms(2026, 11, 26, 10, m, 0).unwrap();
            let mut r = BackupRecord::start(
                BackupId::generate(t),
                if m % 2 == 0 { "run_a" } else { "run_b" },
                BackupKind::Manual,
                Compression::Zstd,
            );
            r.created_at = t;
            if m != 3 {
                r.run_id = Some(run.into());
                expected.push(r.id.clone());
            }
            if m == 5 {
                // Inserted without, then given its run by `replace` (repair's path).
                let mut bare = r.clone();
                bare.run_id = None;
                catalog.insert(&bare).await.unwrap();
                catalog.replace(&r).await.unwrap();
            } else {
                catalog.insert(&r).await.unwrap();
            }
        }
        expected.reverse();
        for limit in [1, 2, 100] {
            let query = ListQuery {
                run_id: Some(run.into()),
                limit: Some(limit),
                ..Default::default()
            };
            assert_eq!(all_pages(catalog, query).await, expected, "limit {limit}");
        }
        let in_a = all_pages(
            catalog,
            ListQuery {
                run_id: Some(run.into()),
                database: Some("run_a".into()),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(in_a.len(), 3);
        let none = catalog
            .list(&ListQuery {
                run_id: Some("20261126T100000000Z-00000000".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(none.records.is_empty());
    }

    /// Every record a query lists, following cursors; checks each page's size.
    async fn all_pages(catalog: &dyn Catalog, mut query: ListQuery) -> Vec<BackupId> {
        let mut out = Vec::new();
        loop {
            let page = catalog.list(&query).await.unwrap();
            assert!(page.records.len() <= query.limit.unwrap_or(usize::MAX));
            if let Some(label) = &query.label {
                assert!(page.records.iter().all(|r| label.matches(&r.labels)));
            }
            out.extend(page.records.into_iter().map(|r| r.id));
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => return out,
            }
        }
    }

    async fn leases(catalog: &dyn Catalog) {
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
        let lease = |holder: &str, minutes: i64| Lease {
            database: "shop".into(),
            holder: holder.into(),
            expires_at: now + Duration::minutes(minutes),
            process: None,
        };
        assert_eq!(
            catalog.acquire_lease(&lease("a", 15), now).await.unwrap(),
            None
        );
        let held = catalog.acquire_lease(&lease("b", 15), now).await.unwrap();
        assert_eq!(held.map(|l| l.holder), Some("a".to_owned()));
        // Another database is independent.
        let other = Lease {
            database: "crm".into(),
            ..lease("b", 15)
        };
        assert_eq!(catalog.acquire_lease(&other, now).await.unwrap(), None);
        // Releasing by a non-holder does nothing; by the holder frees it.
        catalog.release_lease("shop", "b").await.unwrap();
        assert!(catalog
            .acquire_lease(&lease("c", 15), now)
            .await
            .unwrap()
            .is_some());
        catalog.release_lease("shop", "a").await.unwrap();
        assert_eq!(
            catalog.acquire_lease(&lease("c", 15), now).await.unwrap(),
            None
        );
        // An expired lease can be taken over.
        let later = now + Duration::minutes(16);
        assert_eq!(
            catalog.acquire_lease(&lease("d", 30), later).await.unwrap(),
            None
        );
        catalog.release_lease("shop", "c").await.unwrap();
        let held = catalog.acquire_lease(&lease("e", 30), later).await.unwrap();
        assert_eq!(held.map(|l| l.holder), Some("d".to_owned()));

        // The heartbeat: only the holder renews, and the renewal (with its process) is read back.
        let process = crate::model::ProcessIdentity {
            host: "db1 pid:[1]".into(),
            pid: 42,
            started: 7,
        };
        let renewed = Lease {
            process: Some(process.clone()),
            ..lease("d", 45)
        };
        assert!(catalog.renew_lease(&renewed).await.unwrap());
        assert_eq!(catalog.get_lease("shop").await.unwrap(), Some(renewed));
        assert!(!catalog.renew_lease(&lease("e", 45)).await.unwrap());
        let after_old_expiry = now + Duration::minutes(31);
        assert!(catalog
            .acquire_lease(&lease("e", 60), after_old_expiry)
            .await
            .unwrap()
            .is_some());
        catalog.release_lease("shop", "d").await.unwrap();
        assert_eq!(catalog.get_lease("shop").await.unwrap(), None);
        assert!(!catalog.renew_lease(&lease("d", 60)).await.unwrap());
    }

    async fn audit(catalog: &dyn Catalog) {
        assert!(catalog.list_audit(None, 10).await.unwrap().is_empty());
        let mut entries = Vec::new();
        for (i, db) in ["shop", "crm", "shop"].iter().enumerate() {
            let at = Utc.with_ymd_and_hms(2026, 11, 24, 13, i as u32, 0).unwrap();
            let e = AuditEntry {
                id: BackupId::generate(at),
                at,
                actor: "alice".into(),
                action: "restore".into(),
                backup_id: None,
                database: (*db).into(),
                outcome: "ok".into(),
                details: serde_json::json!({ "n": i }),
            };
            catalog.append_audit(&e).await.unwrap();
            entries.push(e);
        }
        let all = catalog.list_audit(None, 10).await.unwrap();
        assert_eq!(
            all,
            vec![entries[2].clone(), entries[1].clone(), entries[0].clone()]
        );
        let shop = catalog.list_audit(Some("shop"), 1).await.unwrap();
        assert_eq!(shop, vec![entries[2].clone()]);

        // Pages: every entry once, newest first; filters by database and time.
        let mut paged = Vec::new();
        let mut query = AuditQuery {
            limit: Some(2),
            ..Default::default()
        };
        loop {
            let page = catalog.audit_page(&query).await.unwrap();
            assert!(page.entries.len() <= 2);
            paged.extend(page.entries);
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(paged, all);
        let page = |database: Option<&str>, since_minute: Option<u32>, limit| AuditQuery {
            database: database.map(str::to_owned),
            since: since_minute.map(|m| Utc.with_ymd_and_hms(2026, 11, 24, 13, m, 0).unwrap()),
            limit,
            cursor: None,
        };
        let recent = catalog
            .audit_page(&page(None, Some(1), None))
            .await
            .unwrap();
        assert_eq!(recent.entries, vec![entries[2].clone(), entries[1].clone()]);
        assert!(recent.next_cursor.is_none());
        let shop_recent = catalog
            .audit_page(&page(Some("shop"), Some(1), Some(1)))
            .await
            .unwrap();
        assert_eq!(shop_recent.entries, vec![entries[2].clone()]);
        assert!(shop_recent.next_cursor.is_none());
        // A cursor together with `since`: the next page stops at the bound.
        let first = catalog
            .audit_page(&page(None, Some(1), Some(1)))
            .await
            .unwrap();
        assert_eq!(first.entries, vec![entries[2].clone()]);
        let second = catalog
            .audit_page(&AuditQuery {
                cursor: first.next_cursor.clone(),
                ..page(None, Some(1), Some(1))
            })
            .await
            .unwrap();
        assert_eq!(second.entries, vec![entries[1].clone()]);
        if let Some(cursor) = second.next_cursor {
            let third = catalog
                .audit_page(&AuditQuery {
                    cursor: Some(cursor),
                    ..page(None, Some(1), Some(1))
                })
                .await
                .unwrap();
            assert!(third.entries.is_empty() && third.next_cursor.is_none());
        }
        let shop_all = catalog
            .audit_page(&page(Some("shop"), None, None))
            .await
            .unwrap();
        assert_eq!(
            shop_all.entries,
            vec![entries[2].clone(), entries[0].clone()]
        );
        assert!(matches!(
            catalog
                .audit_page(&AuditQuery {
                    cursor: Some("not-a-cursor".into()),
                    ..Default::default()
                })
                .await,
            Err(CatalogError::BadCursor(_))
        ));
    }

    /// Restores: stored, replaced as they move on, listed newest first.
    async fn restores(catalog: &dyn Catalog) {
        assert!(catalog.list_restores(10).await.unwrap().is_empty());
        let backup = record("shop", 40).id;
        let mut runs = Vec::new();
        for m in 0..3u32 {
            let at = Utc.with_ymd_and_hms(2026, 11, 27, 9, m, 0).unwrap();
            let mut run = crate::model::RestoreRun::queued(
                BackupId::generate(at),
                backup.clone(),
                "copy",
                at,
            );
            run.requested_by = Some("erin".into());
            catalog.put_restore(&run).await.unwrap();
            runs.push(run);
        }
        let missing = record("shop", 41).id;
        assert!(matches!(
            catalog.get_restore(&missing).await,
            Err(CatalogError::RestoreNotFound(_))
        ));
        let mut done = runs[1].clone();
        done.state = crate::model::RestoreState::Succeeded;
        done.listing = Some("; Archive created at ...\n".into());
        done.duration_ms = Some(1234);
        catalog.put_restore(&done).await.unwrap();
        assert_eq!(catalog.get_restore(&done.id).await.unwrap(), done);
        runs[1] = done;
        runs.reverse();
        assert_eq!(catalog.list_restores(10).await.unwrap(), runs);
        assert_eq!(catalog.list_restores(2).await.unwrap(), runs[..2].to_vec());
        // Restores are not backups: no listing shows them.
        let all = catalog.list(&ListQuery::default()).await.unwrap();
        assert!(all.records.iter().all(|r| r.id != runs[0].id));
    }

    /// The kind filter, alone and with the others, page by page; `requested_by` is kept.
    async fn kinds(catalog: &dyn Catalog) {
        let mut manual = Vec::new();
        for m in 0..6u32 {
            let t = Utc.with_ymd_and_hms(2026, 11, 26, 10, m, 0).unwrap();
            let kind = if m % 2 == 0 {
                BackupKind::Manual
            } else {
                BackupKind::Scheduled
            };
            let mut r =
                BackupRecord::start(BackupId::generate(t), "kinds", kind, Compression::Zstd);
            r.created_at = t;
            r.requested_by = Some(format!("user{m}"));
            catalog.insert(&r).await.unwrap();
            assert_eq!(
                catalog.get(&r.id).await.unwrap().requested_by.as_deref(),
                Some(format!("user{m}").as_str())
            );
            if kind == BackupKind::Manual {
                manual.push(r.id.clone());
            }
        }
        manual.reverse();
        for limit in [1, 2, 10] {
            let got = all_pages(
                catalog,
                ListQuery {
                    database: Some("kinds".into()),
                    kind: Some(BackupKind::Manual),
                    limit: Some(limit),
                    ..Default::default()
                },
            )
            .await;
            assert_eq!(got, manual, "limit {limit}");
        }
        let everywhere = all_pages(
            catalog,
            ListQuery {
                kind: Some(BackupKind::Manual),
                limit: Some(2),
                ..Default::default()
            },
        )
        .await;
        assert!(manual.iter().all(|id| everywhere.contains(id)));
        for id in &everywhere {
            assert_eq!(catalog.get(id).await.unwrap().kind, BackupKind::Manual);
        }
        let scheduled_in_progress = all_pages(
            catalog,
            ListQuery {
                status: Some(BackupStatus::InProgress),
                kind: Some(BackupKind::Scheduled),
                database: Some("kinds".into()),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(scheduled_in_progress.len(), 3);
    }
}
