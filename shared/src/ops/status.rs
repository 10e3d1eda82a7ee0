//! Listing backups and summarising each database's state, for people and for monitors.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Error;
use crate::backends::Services;
use crate::catalog::{ListQuery, Page};
use crate::model::{BackupId, BackupRecord, BackupStatus};

/// One page of records, newest first.
pub async fn list(services: &Services, query: &ListQuery) -> Result<Page, Error> {
    Ok(services.catalog.list(query).await?)
}

/// Every record matching `query`, following cursors to the end.
pub async fn list_all(services: &Services, query: &ListQuery) -> Result<Vec<BackupRecord>, Error> {
    let mut query = query.clone();
    query.limit = Some(500);
    let mut out = Vec::new();
    loop {
        let page = services.catalog.list(&query).await?;
        out.extend(page.records);
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// The newest backup of a given state, in brief.
#[derive(Debug, Clone, Serialize)]
pub struct BackupRef {
    /// Its id.
    pub id: BackupId,
    /// Its status.
    pub status: BackupStatus,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// Seconds between its start and `now`.
    pub age_seconds: i64,
    /// Why it failed, for failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl BackupRef {
    fn of(r: &BackupRecord, now: DateTime<Utc>) -> Self {
        BackupRef {
            id: r.id.clone(),
            status: r.status,
            created_at: r.created_at,
            age_seconds: (now - r.created_at).num_seconds(),
            error: r.error.clone(),
        }
    }
}

/// Where one database stands.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseStatus {
    /// The database.
    pub database: String,
    /// The newest backup of any status.
    pub latest: Option<BackupRef>,
    /// The newest backup that has a readable object (completed or verified).
    pub latest_good: Option<BackupRef>,
    /// The newest verified backup.
    pub latest_verified: Option<BackupRef>,
    /// The newest failed backup.
    pub latest_failure: Option<BackupRef>,
    /// Failed backups in the 30 days before `now`.
    pub failures_30d: usize,
    /// Backups per status.
    pub counts: BTreeMap<String, usize>,
}

/// Per-database summary of the whole catalog, as of `now`.
pub async fn status(services: &Services, now: DateTime<Utc>) -> Result<Vec<DatabaseStatus>, Error> {
    let records = list_all(services, &ListQuery::default()).await?;
    Ok(summarise(&records, now))
}

/// The pure part of [`status`]: records (newest first) to summaries.
pub fn summarise(records: &[BackupRecord], now: DateTime<Utc>) -> Vec<DatabaseStatus> {
    let mut by_db: BTreeMap<&str, Vec<&BackupRecord>> = BTreeMap::new();
    for r in records {
        by_db.entry(&r.database).or_default().push(r);
    }
    by_db
        .into_iter()
        .map(|(database, rs)| {
            let newest = |pred: &dyn Fn(&BackupRecord) -> bool| {
                rs.iter()
                    .filter(|r| pred(r))
                    .max_by_key(|r| (r.created_at, r.id.clone()))
                    .map(|r| BackupRef::of(r, now))
            };
            let mut counts = BTreeMap::new();
            for r in &rs {
                *counts.entry(r.status.to_string()).or_insert(0) += 1;
            }
            DatabaseStatus {
                database: database.to_owned(),
                latest: newest(&|_| true),
                latest_good: newest(&|r| {
                    matches!(r.status, BackupStatus::Completed | BackupStatus::Verified)
                }),
                latest_verified: newest(&|r| r.status == BackupStatus::Verified),
                latest_failure: newest(&|r| r.status == BackupStatus::Failed),
                failures_30d: rs
                    .iter()
                    .filter(|r| {
                        r.status == BackupStatus::Failed
                            && now - r.created_at <= chrono::Duration::days(30)
                    })
                    .count(),
                counts,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackupKind, Compression};
    use chrono::TimeZone;

    fn rec(db: &str, day: u32, status: BackupStatus) -> BackupRecord {
        let t = Utc.with_ymd_and_hms(2026, 11, day, 12, 0, 0).unwrap();
        let mut r = BackupRecord::start(
            BackupId::generate(t),
            db,
            BackupKind::Scheduled,
            Compression::Zstd,
        );
        r.created_at = t;
        r.status = status;
        r
    }

    #[test]
    fn summaries_pick_the_newest_of_each_kind() {
        use BackupStatus::*;
        let records = vec![
            rec("shop", 20, Failed),
            rec("shop", 19, Completed),
            rec("shop", 18, Verified),
            rec("shop", 1, Failed),
            rec("crm", 10, Deleted),
        ];
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap();
        let s = summarise(&records, now);
        assert_eq!(s.len(), 2);
        let shop = s.iter().find(|d| d.database == "shop").unwrap();
        assert_eq!(shop.latest.as_ref().unwrap().status, Failed);
        assert_eq!(shop.latest_good.as_ref().unwrap().id, records[1].id);
        assert_eq!(shop.latest_good.as_ref().unwrap().age_seconds, 2 * 86400);
        assert_eq!(shop.latest_verified.as_ref().unwrap().id, records[2].id);
        assert_eq!(shop.failures_30d, 2);
        assert_eq!(shop.counts["failed"], 2);
        let crm = s.iter().find(|d| d.database == "crm").unwrap();
        assert!(crm.latest_good.is_none());
    }
}
