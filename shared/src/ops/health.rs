//! Health: is each database protected right now? One function, used by `pgkeep status` (exit
//! code), the status API (HTTP 503) and stale-backup alerts.
//!
//! A database is healthy when its newest good backup (`completed` or `verified`) is at most
//! `max_age` old and its newest verification did not fail. Failed runs and a missing
//! verification are warnings: the next run may fix them, and the age check catches a database
//! that stays broken. A catalog with no database at all is unhealthy too (see
//! [`overall_problem`]): a monitor pointed at the wrong repository must not stay green.
//! The per-database summary it judges (newest good, verified and failed backup, counts per
//! status) is built here too: `pgkeep status` prints it with the verdict.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::list::list_all;
use super::Error;
use crate::backends::Services;
use crate::catalog::ListQuery;
use crate::model::{BackupId, BackupKind, BackupRecord, BackupStatus};
use crate::retention::Span;

/// Default [`HealthPolicy::max_age`]: 25 hours, a daily schedule plus an hour of slack.
pub const DEFAULT_MAX_AGE: Span = Span::hours(25);

/// What "healthy" demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HealthPolicy {
    /// The newest good backup may be at most this old.
    pub max_age: Span,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            max_age: DEFAULT_MAX_AGE,
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

/// Records (newest first) to one summary per database, the ground [`assess`] judges.
fn summarise(records: &[BackupRecord], now: DateTime<Utc>) -> Vec<DatabaseStatus> {
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
                    .max_by(|a, b| a.start_order().cmp(&b.start_order()))
                    .map(|r| BackupRef::of(r, now))
            };
            let mut counts = BTreeMap::new();
            for r in &rs {
                *counts.entry(r.status.to_string()).or_insert(0) += 1;
            }
            DatabaseStatus {
                database: database.to_owned(),
                latest: newest(&|_| true),
                // A restore's safety copy is of the database it overwrote, not a scheduled
                // protection: it never makes a database look protected.
                latest_good: newest(&|r| {
                    matches!(r.status, BackupStatus::Completed | BackupStatus::Verified)
                        && r.kind != BackupKind::PreRestore
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

/// One database's health, with the summary it was computed from.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseHealth {
    /// The per-database summary (`pgkeep status` has always printed these fields).
    #[serde(flatten)]
    pub status: DatabaseStatus,
    /// No problems.
    pub healthy: bool,
    /// The limit applied, in seconds.
    pub max_age_seconds: i64,
    /// The newest backup whose restore was tested (`verified` or `verification_failed`).
    pub newest_verification: Option<BackupRef>,
    /// How long the last restore drill took, in milliseconds, when records carry it.
    pub last_restore_drill_ms: Option<u64>,
    /// Why the database is unhealthy (empty when healthy).
    pub problems: Vec<String>,
    /// Worth a look, but not unhealthy.
    pub warnings: Vec<String>,
}

/// Health of every database in the catalog at `now`, in name order.
pub async fn health(
    services: &Services,
    now: DateTime<Utc>,
    policy: &HealthPolicy,
) -> Result<Vec<DatabaseHealth>, Error> {
    let records = list_all(services, &ListQuery::default()).await?;
    Ok(assess(&records, now, policy))
}

/// The pure part of [`health`].
pub fn assess(
    records: &[BackupRecord],
    now: DateTime<Utc>,
    policy: &HealthPolicy,
) -> Vec<DatabaseHealth> {
    summarise(records, now)
        .into_iter()
        .map(|status| {
            let mine: Vec<&BackupRecord> = records
                .iter()
                .filter(|r| r.database == status.database)
                .collect();
            assess_one(status, &mine, now, policy)
        })
        .collect()
}

fn assess_one(
    status: DatabaseStatus,
    records: &[&BackupRecord],
    now: DateTime<Utc>,
    policy: &HealthPolicy,
) -> DatabaseHealth {
    let max_age = policy.max_age.seconds();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();

    match &status.latest_good {
        None => problems.push("no completed or verified backup".to_owned()),
        Some(good) if good.age_seconds > max_age => problems.push(format!(
            "the newest good backup {} is {} old, more than the limit of {}",
            good.id,
            age_text(good.age_seconds),
            policy.max_age
        )),
        Some(_) => {}
    }

    let newest_verification = records
        .iter()
        .filter(|r| {
            matches!(
                r.status,
                BackupStatus::Verified | BackupStatus::VerificationFailed
            )
        })
        .max_by_key(|r| (r.created_at, r.id.clone()))
        .map(|r| BackupRef::of(r, now));
    match &newest_verification {
        Some(v) if v.status == BackupStatus::VerificationFailed => problems.push(format!(
            "the newest verification failed (backup {}){}",
            v.id,
            v.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )),
        Some(_) => {}
        None => warnings.push("no backup has been verified by a test restore yet".to_owned()),
    }

    if let Some(latest) = &status.latest {
        if latest.status == BackupStatus::Failed {
            warnings.push(format!(
                "the newest backup {} failed: {}",
                latest.id,
                latest.error.as_deref().unwrap_or("no reason recorded")
            ));
        }
    }
    if status.failures_30d > 0 {
        warnings.push(format!(
            "{} failed backup(s) in the last 30 days",
            status.failures_30d
        ));
    }

    DatabaseHealth {
        healthy: problems.is_empty(),
        max_age_seconds: max_age,
        newest_verification,
        last_restore_drill_ms: records
            .iter()
            .filter_map(|r| r.verification.as_ref().map(|v| (v, r)))
            .filter(|(v, _)| v.ok)
            .max_by_key(|(v, r)| (v.verified_at, r.id.clone()))
            .and_then(|(v, _)| v.restore_duration_ms),
        problems,
        warnings,
        status,
    }
}

/// Why the whole catalog is unhealthy, if it is: some database is, or there is none at all.
pub fn overall_problem(databases: &[DatabaseHealth]) -> Option<String> {
    if databases.is_empty() {
        return Some(
            "no backups in the catalog (is the repository or catalog setting right?)".into(),
        );
    }
    let sick: Vec<&str> = databases
        .iter()
        .filter(|d| !d.healthy)
        .map(|d| d.status.database.as_str())
        .collect();
    (!sick.is_empty()).then(|| format!("unhealthy: {}", sick.join(", ")))
}

/// `26h 5m`, `3d 2h`, `45s`: ages in problems (and so in stale alerts).
fn age_text(seconds: i64) -> String {
    match seconds {
        s if s < 0 => format!("{}s in the future", -s),
        s if s < 60 => format!("{s}s"),
        s if s < 3_600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 3 * 86_400 => format!("{}h {}m", s / 3_600, (s % 3_600) / 60),
        s => format!("{}d {}h", s / 86_400, (s % 86_400) / 3_600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackupId, BackupKind, Compression};
    use chrono::{TimeDelta, TimeZone};

    fn rec(db: &str, hours_ago: i64, status: BackupStatus, now: DateTime<Utc>) -> BackupRecord {
        let t = now - TimeDelta::hours(hours_ago);
        let mut r = BackupRecord::start(
            BackupId::generate(t),
            db,
            BackupKind::Scheduled,
            Compression::Zstd,
        );
        r.created_at = t;
        r.status = status;
        if status == BackupStatus::Failed || status == BackupStatus::VerificationFailed {
            r.error = Some("boom".into());
        }
        r
    }

    #[test]
    fn health_follows_age_and_verification() {
        use BackupStatus::*;
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        let records = vec![
            // fresh: completed 2h ago, verified yesterday, one failure
            rec("fresh", 1, Failed, now),
            rec("fresh", 2, Completed, now),
            rec("fresh", 24, Verified, now),
            // stale: newest good 30h old
            rec("stale", 30, Verified, now),
            // broken: fresh, but its newest verification failed
            rec("broken", 3, Completed, now),
            rec("broken", 20, VerificationFailed, now),
            rec("broken", 44, Verified, now),
            // never: only failures and an in-progress run
            rec("never", 1, InProgress, now),
            rec("never", 2, Failed, now),
        ];
        let h = assess(&records, now, &HealthPolicy::default());
        let by = |db: &str| h.iter().find(|d| d.status.database == db).unwrap();

        let fresh = by("fresh");
        assert!(fresh.healthy, "{:?}", fresh.problems);
        assert_eq!(fresh.newest_verification.as_ref().unwrap().status, Verified);
        assert_eq!(fresh.warnings.len(), 2, "{:?}", fresh.warnings);
        assert!(fresh.warnings[0].contains("failed: boom"));
        assert_eq!(fresh.last_restore_drill_ms, None);

        let stale = by("stale");
        assert!(!stale.healthy);
        assert_eq!(stale.problems.len(), 1);
        assert!(
            stale.problems[0].contains("30h 0m old, more than the limit of 1d1h"),
            "{}",
            stale.problems[0]
        );
        // A longer limit makes it healthy.
        let lenient = assess(
            &records,
            now,
            &HealthPolicy {
                max_age: Span::hours(31),
            },
        );
        assert!(
            lenient
                .iter()
                .find(|d| d.status.database == "stale")
                .unwrap()
                .healthy
        );

        let broken = by("broken");
        assert!(!broken.healthy);
        assert!(broken.problems[0].contains("newest verification failed"));
        assert!(broken.problems[0].ends_with(": boom"));

        let never = by("never");
        assert!(!never.healthy);
        assert_eq!(never.problems, vec!["no completed or verified backup"]);

        assert_eq!(
            overall_problem(&h).unwrap(),
            "unhealthy: broken, never, stale"
        );
        let only_fresh: Vec<_> = h.into_iter().filter(|d| d.healthy).collect();
        assert_eq!(overall_problem(&only_fresh), None);
        assert!(overall_problem(&[]).unwrap().contains("no backups"));
    }

    #[test]
    fn json_keeps_the_status_fields() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        let records = vec![rec("shop", 2, BackupStatus::Completed, now)];
        let h = assess(&records, now, &HealthPolicy::default());
        let v = serde_json::to_value(&h).unwrap();
        let shop = &v[0];
        for field in [
            "database",
            "latest",
            "latest_good",
            "latest_verified",
            "latest_failure",
            "failures_30d",
            "counts",
            "healthy",
            "max_age_seconds",
            "newest_verification",
            "last_restore_drill_ms",
            "problems",
            "warnings",
        ] {
            assert!(shop.get(field).is_some(), "{field} missing from {shop:#}");
        }
        assert_eq!(shop["healthy"], true);
        assert_eq!(shop["max_age_seconds"], 25 * 3600);
        assert_eq!(shop["latest_good"]["age_seconds"], 2 * 3600);
    }

    #[test]
    fn summaries_pick_the_newest_of_each_kind() {
        use BackupStatus::*;
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap();
        let records = vec![
            rec("shop", 24, Failed, now),
            rec("shop", 48, Completed, now),
            rec("shop", 72, Verified, now),
            rec("shop", 480, Failed, now),
            rec("crm", 264, Deleted, now),
        ];
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

    #[test]
    fn a_pre_restore_safety_copy_is_never_the_newest_good_backup() {
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap();
        let mut safety = rec("shop", 1, BackupStatus::Completed, now);
        safety.kind = BackupKind::PreRestore;
        let records = vec![safety, rec("shop", 30, BackupStatus::Completed, now)];
        let s = summarise(&records, now);
        assert_eq!(s[0].latest_good.as_ref().unwrap().id, records[1].id);
        assert_eq!(s[0].latest.as_ref().unwrap().id, records[0].id);
    }
}
