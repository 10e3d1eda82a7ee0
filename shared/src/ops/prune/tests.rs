//! Prune against the real directory store and SQLite catalog, with crashes injected between
//! every pair of writes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{NaiveDateTime, TimeZone};

use super::*;
use crate::catalog::sqlite::SqliteCatalog;
use crate::catalog::Catalog;
use crate::keys::NoKey;
use crate::model::{BackupKind, Compression};
use crate::store::fs::FsStore;
use crate::store::{ObjectLock, ObjectStore};
use crate::testing::{CatalogFaults, CrashPoint, Faults, FaultyCatalog, FaultyStore};

fn at(text: &str) -> DateTime<Utc> {
    Utc.from_utc_datetime(&NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap())
}

const NOW: &str = "2026-11-25 12:00";
const STRAY: &str = "shop/2026/11/stray.pgkeep";

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    catalog: Arc<dyn Catalog>,
    /// name -> id
    ids: BTreeMap<&'static str, BackupId>,
}

impl Fixture {
    /// Two databases; in `shop`: six daily backups (one the newest verified, one an older
    /// verified), an expired pre-restore copy, a failed run whose object was left behind, a
    /// deleted backup whose manifest was left behind, an abandoned run with a committed object,
    /// a young in-progress run, and a stray key no record mentions.
    async fn new() -> Fixture {
        use BackupKind::*;
        use BackupStatus::*;
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(FsStore::new(dir.path().join("repo")));
        let catalog: Arc<dyn Catalog> =
            Arc::new(SqliteCatalog::open(dir.path().join("catalog.sqlite3")).unwrap());
        // (name, db, time, status, kind, object?, manifest?)
        let spec: &[(&str, &str, &str, BackupStatus, BackupKind, bool, bool)] = &[
            (
                "d1",
                "shop",
                "2026-11-25 02:00",
                Completed,
                Scheduled,
                true,
                true,
            ),
            (
                "d2",
                "shop",
                "2026-11-24 02:00",
                Completed,
                Scheduled,
                true,
                true,
            ),
            (
                "d3",
                "shop",
                "2026-11-23 02:00",
                Completed,
                Scheduled,
                true,
                true,
            ),
            (
                "d4",
                "shop",
                "2026-11-22 02:00",
                Completed,
                Manual,
                true,
                true,
            ),
            (
                "d5",
                "shop",
                "2026-11-21 02:00",
                Verified,
                Scheduled,
                true,
                true,
            ),
            (
                "d6",
                "shop",
                "2026-11-20 02:00",
                Verified,
                Scheduled,
                true,
                true,
            ),
            (
                "p1",
                "shop",
                "2026-10-01 02:00",
                Completed,
                PreRestore,
                true,
                true,
            ),
            (
                "f1",
                "shop",
                "2026-11-22 03:00",
                Failed,
                Scheduled,
                true,
                false,
            ),
            (
                "x1",
                "shop",
                "2026-11-01 02:00",
                Deleted,
                Scheduled,
                false,
                true,
            ),
            (
                "a1",
                "shop",
                "2026-11-25 10:00",
                InProgress,
                Scheduled,
                true,
                false,
            ),
            (
                "a2",
                "shop",
                "2026-11-25 11:55",
                InProgress,
                Scheduled,
                false,
                false,
            ),
            (
                "c1",
                "crm",
                "2026-11-25 02:00",
                Completed,
                Scheduled,
                true,
                true,
            ),
            (
                "c2",
                "crm",
                "2026-11-24 02:00",
                Completed,
                Scheduled,
                true,
                true,
            ),
        ];
        let mut ids = BTreeMap::new();
        for (i, (name, db, t, status, kind, object, manifest)) in spec.iter().enumerate() {
            let t = at(t);
            let id: BackupId = format!("{}-{i:08x}", t.format("%Y%m%dT%H%M%S%3fZ"))
                .parse()
                .unwrap();
            let mut r = BackupRecord::start(id.clone(), db, *kind, Compression::Zstd);
            r.created_at = t;
            r.status = *status;
            if *status == Failed {
                r.error = Some("pg_dump failed".into());
            }
            catalog.insert(&r).await.unwrap();
            if *object {
                store
                    .put(&r.object_key, format!("object {id}").into_bytes())
                    .await
                    .unwrap();
            }
            if *manifest {
                store.put(&r.manifest_key(), b"{}".to_vec()).await.unwrap();
            }
            ids.insert(*name, id);
        }
        // a2's run is alive: it holds its database's lease and keeps it renewed.
        let live = crate::model::Lease {
            database: "shop".into(),
            holder: ids["a2"].to_string(),
            expires_at: at(NOW) + chrono::TimeDelta::days(1),
            process: None,
        };
        assert_eq!(catalog.acquire_lease(&live, at(NOW)).await.unwrap(), None);
        store.put(STRAY, b"?".to_vec()).await.unwrap();
        Fixture {
            _dir: dir,
            store,
            catalog,
            ids,
        }
    }

    fn services(&self) -> Services {
        Services {
            store: self.store.clone(),
            catalog: self.catalog.clone(),
            keys: Arc::new(NoKey),
        }
    }

    fn faulty(&self, crash: CrashPoint, faults: Faults, catalog_faults: CatalogFaults) -> Services {
        Services {
            store: Arc::new(FaultyStore::new(self.store.clone(), faults).with_crash(crash.clone())),
            catalog: Arc::new(
                FaultyCatalog::new(self.catalog.clone(), catalog_faults).with_crash(crash),
            ),
            keys: Arc::new(NoKey),
        }
    }

    fn name(&self, id: &BackupId) -> &'static str {
        self.ids.iter().find(|(_, i)| *i == id).unwrap().0
    }

    /// Every record's status by name, and every key in the store.
    async fn state(&self) -> (BTreeMap<&'static str, BackupStatus>, BTreeSet<String>) {
        let records = list_all(&self.services(), &ListQuery::default())
            .await
            .unwrap();
        let statuses = records
            .iter()
            .map(|r| (self.name(&r.id), r.status))
            .collect();
        let keys = self
            .store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .filter(|k| !k.starts_with("catalog"))
            .collect();
        (statuses, keys)
    }

    /// The invariant no crash may break: a completed or verified (or verification_failed)
    /// record has its object and manifest.
    async fn assert_no_dangling_records(&self, context: &str) {
        let records = list_all(&self.services(), &ListQuery::default())
            .await
            .unwrap();
        for r in records.iter().filter(|r| r.status.has_object()) {
            for key in [&r.object_key, &r.manifest_key()] {
                assert!(
                    self.store.head(key).await.unwrap().is_some(),
                    "{context}: {} ({}) is {} but {key} is missing",
                    self.name(&r.id),
                    r.id,
                    r.status
                );
            }
        }
    }
}

fn request() -> PruneRequest {
    PruneRequest {
        policy: RetentionPolicy {
            keep_last: 2,
            ..RetentionPolicy::default()
        },
        database: None,
        now: at(NOW),
        abandon_after: reaper::DEFAULT_ABANDON_AFTER,
        staging_dir: None,
    }
}

async fn prune(services: &Services) -> Result<PruneReport, Error> {
    let plan = plan(services, &request()).await?;
    execute(services, &plan, "test").await
}

fn expected_statuses() -> BTreeMap<&'static str, BackupStatus> {
    use BackupStatus::*;
    [
        ("d1", Completed),
        ("d2", Completed),
        ("d3", Deleted),
        ("d4", Deleted),
        ("d5", Verified),
        ("d6", Deleted),
        ("p1", Deleted),
        ("f1", Failed),
        ("x1", Deleted),
        ("a1", Failed),
        ("a2", InProgress),
        ("c1", Completed),
        ("c2", Completed),
    ]
    .into_iter()
    .collect()
}

/// The keys that remain: those of kept backups, and the stray key.
fn expected_keys(f: &Fixture) -> BTreeSet<String> {
    let mut keys = BTreeSet::from([STRAY.to_owned()]);
    for name in ["d1", "d2", "d5", "c1", "c2"] {
        let id = &f.ids[name];
        let db = if name.starts_with('c') { "crm" } else { "shop" };
        let object = crate::model::object_key(db, id);
        keys.insert(crate::model::manifest_key(&object));
        keys.insert(object);
    }
    // Every record prune changes (deleted, reaped, repaired) leaves its state object.
    for name in ["d3", "d4", "d6", "p1", "a1", "f1", "x1"] {
        let object = crate::model::object_key("shop", &f.ids[name]);
        keys.insert(crate::model::state_key(&object));
    }
    keys
}

#[tokio::test]
async fn the_plan_says_everything_and_changes_nothing() {
    let f = Fixture::new().await;
    let before = f.state().await;
    let plan = plan(&f.services(), &request()).await.unwrap();
    assert_eq!(f.state().await, before, "planning changed something");

    let decided: Vec<(&str, String)> = plan
        .decisions
        .iter()
        .map(|d| (f.name(&d.id), d.to_string()))
        .collect();
    let expected: Vec<(&str, &str)> = vec![
        ("c1", "kept: last (1 of 2)"),
        ("c2", "kept: last (2 of 2)"),
        ("a2", "kept: in progress"),
        // The abandoned run is decided as the failure it is about to become.
        ("a1", "kept: failed run, kept as history (it has no object)"),
        ("d1", "kept: last (1 of 2)"),
        ("d2", "kept: last (2 of 2)"),
        ("d3", "removed: outside policy"),
        ("f1", "kept: failed run, kept as history (it has no object)"),
        ("d4", "removed: outside policy"),
        ("d5", "kept: newest verified"),
        ("d6", "removed: outside policy"),
        ("p1", "removed: pre-restore copy older than 30d"),
    ];
    let expected: Vec<(&str, String)> = expected
        .into_iter()
        .map(|(n, t)| (n, t.to_owned()))
        .collect();
    // crm has only two backups, so keep_last 2 keeps both.
    assert_eq!(decided, expected);

    let abandoned: Vec<&str> = plan.abandoned.iter().map(|a| f.name(&a.id)).collect();
    assert_eq!(abandoned, vec!["a1"]);
    let repairs: Vec<(&str, bool)> = plan
        .repairs
        .iter()
        .map(|r| (f.name(&r.id), r.key.ends_with(".manifest.json")))
        .collect();
    assert_eq!(repairs, vec![("f1", false), ("x1", true)]);
    assert!(plan.missing.is_empty(), "{:?}", plan.missing);
    assert_eq!(plan.unknown_keys, vec![STRAY.to_owned()]);
    assert!(!plan.is_noop());
}

#[tokio::test]
async fn prune_reaps_repairs_deletes_and_audits() {
    let f = Fixture::new().await;
    // crm: keep only one.
    let mut req = request();
    req.database = Some("crm".into());
    req.policy.keep_last = 1;
    let crm_plan = plan(&f.services(), &req).await.unwrap();
    assert!(crm_plan.decisions.iter().all(|d| d.database == "crm"));
    execute(&f.services(), &crm_plan, "test").await.unwrap();

    let crash = CrashPoint::never();
    let services = f.faulty(crash.clone(), Faults::default(), CatalogFaults::default());
    let report = prune(&services).await.unwrap();
    let names = |ids: &[BackupId]| ids.iter().map(|i| f.name(i)).collect::<Vec<_>>();
    assert_eq!(names(&report.reaped), vec!["a1"]);
    assert_eq!(names(&report.deleted), vec!["d3", "d4", "d6", "p1"]);
    assert_eq!(report.repaired.len(), 2);
    assert!(report.skipped.is_empty());

    let (statuses, keys) = f.state().await;
    let mut expected = expected_statuses();
    expected.insert("c2", BackupStatus::Deleted);
    assert_eq!(statuses, expected);
    let c2 = f.catalog.get(&f.ids["c2"]).await.unwrap();
    let mut expected = expected_keys(&f);
    expected.remove(&c2.object_key);
    expected.remove(&c2.manifest_key());
    expected.insert(c2.state_key());
    assert_eq!(keys, expected);
    f.assert_no_dangling_records("after a clean prune").await;
    let a1 = f.catalog.get(&f.ids["a1"]).await.unwrap();
    assert!(a1
        .error
        .unwrap()
        .starts_with("abandoned: its run is gone (the lease belongs to another run"));

    // One audit entry per deletion and per repaired backup.
    let audit = f.catalog.list_audit(None, 100).await.unwrap();
    let mut audited: Vec<&str> = audit
        .iter()
        .map(|e| f.name(e.backup_id.as_ref().unwrap()))
        .collect();
    audited.sort();
    assert_eq!(audited, vec!["c2", "d3", "d4", "d6", "f1", "p1", "x1"]);
    assert!(audit
        .iter()
        .all(|e| e.action == "prune" && e.actor == "test" && e.outcome == "ok"));
    let d3 = audit
        .iter()
        .find(|e| e.backup_id.as_ref() == Some(&f.ids["d3"]))
        .unwrap();
    assert_eq!(d3.details["reason"], "removed: outside policy");

    // Pruning again finds nothing to do.
    let again = plan(&f.services(), &request()).await.unwrap();
    assert!(again.is_noop(), "{again:#?}");
    eprintln!("a clean prune took {} writes", crash.writes());
}

/// Crash after 0, 1, 2, ... writes: never a dangling record, and a second prune always ends in
/// the same state as an uninterrupted one.
#[tokio::test]
async fn a_crash_between_any_two_steps_is_repaired_by_the_next_prune() {
    let total = {
        let f = Fixture::new().await;
        let crash = CrashPoint::never();
        prune(&f.faulty(crash.clone(), Faults::default(), CatalogFaults::default()))
            .await
            .unwrap();
        crash.writes()
    };
    assert!(total >= 15, "a prune of this fixture takes {total} writes");
    for n in 0..total {
        let f = Fixture::new().await;
        let crash = CrashPoint::after(n);
        let services = f.faulty(crash.clone(), Faults::default(), CatalogFaults::default());
        let err = prune(&services).await.unwrap_err();
        assert!(crash.crashed(), "crash after {n}: {err}");
        assert!(err.to_string().contains("injected"), "{err}");
        f.assert_no_dangling_records(&format!("crash after {n} writes"))
            .await;

        prune(&f.services()).await.unwrap();
        let (statuses, keys) = f.state().await;
        assert_eq!(statuses, expected_statuses(), "crash after {n} writes");
        assert_eq!(keys, expected_keys(&f), "crash after {n} writes");
        let third = plan(&f.services(), &request()).await.unwrap();
        assert!(third.is_noop(), "crash after {n}: {third:#?}");
    }
}

#[tokio::test]
async fn failing_deletes_updates_or_audits_leave_no_dangling_record() {
    let cases = [
        (
            "store delete fails",
            Faults {
                delete: true,
                ..Faults::default()
            },
            CatalogFaults::default(),
        ),
        (
            "catalog update fails",
            Faults::default(),
            CatalogFaults {
                update: true,
                ..CatalogFaults::default()
            },
        ),
        (
            "audit fails",
            Faults::default(),
            CatalogFaults {
                append_audit: true,
                ..CatalogFaults::default()
            },
        ),
    ];
    for (name, faults, catalog_faults) in cases {
        let f = Fixture::new().await;
        let services = f.faulty(CrashPoint::never(), faults, catalog_faults);
        let err = prune(&services).await.unwrap_err();
        assert!(err.to_string().contains("injected"), "{name}: {err}");
        f.assert_no_dangling_records(name).await;
        prune(&f.services()).await.unwrap();
        let (statuses, keys) = f.state().await;
        assert_eq!(statuses, expected_statuses(), "{name}");
        assert_eq!(keys, expected_keys(&f), "{name}");
    }
}

#[tokio::test]
async fn delete_backup_refuses_what_must_stay() {
    let f = Fixture::new().await;
    let s = f.services();
    let by_hand = |expected_status| DeleteRequest {
        actor: "alice".into(),
        action: "delete".into(),
        reason: "asked".into(),
        expected_status,
    };
    for (name, refusal, why) in [
        (
            "d5",
            DeleteRefusal::NewestVerified,
            "newest verified backup of \"shop\"",
        ),
        ("a2", DeleteRefusal::InProgress, "still being written"),
    ] {
        let err = delete_backup(&s, &f.ids[name], &by_hand(None))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::DeleteRefused { reason, .. } if reason == refusal),
            "{name}: {err}"
        );
        assert_eq!(err.kind(), super::super::ErrorKind::Conflict);
        assert!(
            err.to_string()
                .starts_with(&format!("refused: {}: ", refusal.as_str())),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(why), "{name}: {err}");
    }
    // A plan's stale view is refused.
    let err = delete_backup(&s, &f.ids["d1"], &by_hand(Some(BackupStatus::Verified)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("changed since"), "{err}");

    // An older verified backup can go; the record stays as history.
    let d6 = delete_backup(&s, &f.ids["d6"], &by_hand(None))
        .await
        .unwrap();
    assert_eq!(d6.status, BackupStatus::Deleted);
    assert!(f.store.head(&d6.object_key).await.unwrap().is_none());
    assert!(f.store.head(&d6.manifest_key()).await.unwrap().is_none());
    let audit = f.catalog.list_audit(Some("shop"), 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "delete");
    assert_eq!(audit[0].actor, "alice");
    assert_eq!(audit[0].details["status_before"], "verified");
    // Deleting it again is harmless, and finishes a half-done deletion.
    f.store
        .put(&d6.manifest_key(), b"{}".to_vec())
        .await
        .unwrap();
    delete_backup(&s, &f.ids["d6"], &by_hand(None))
        .await
        .unwrap();
    assert!(f.store.head(&d6.manifest_key()).await.unwrap().is_none());

    // Once a newer backup is verified, d5 is no longer protected.
    let mut d1 = f.catalog.get(&f.ids["d1"]).await.unwrap();
    d1.status = BackupStatus::Verified;
    f.catalog
        .update(&d1, BackupStatus::Completed)
        .await
        .unwrap();
    delete_backup(&s, &f.ids["d5"], &by_hand(None))
        .await
        .unwrap();
}

#[tokio::test]
async fn locked_objects_are_refused_before_anything_changes_and_prune_skips_them() {
    let f = Fixture::new().await;
    let (statuses, keys) = f.state().await;
    let held = |legal_hold: bool, until: Option<DateTime<Utc>>| Services {
        store: Arc::new(
            FaultyStore::new(f.store.clone(), Faults::default()).with_lock(ObjectLock {
                mode: until.map(|_| "GOVERNANCE".to_owned()),
                retain_until: until,
                legal_hold,
            }),
        ),
        ..f.services()
    };
    let by_hand = DeleteRequest {
        actor: "alice".into(),
        action: "delete".into(),
        reason: "asked".into(),
        expected_status: None,
    };
    let tomorrow = Utc::now() + chrono::Duration::days(1);
    for (services, words) in [
        (held(false, Some(tomorrow)), "GOVERNANCE retention until"),
        (held(true, None), "a legal hold"),
    ] {
        let err = delete_backup(&services, &f.ids["d3"], &by_hand)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::DeleteRefused {
                    reason: DeleteRefusal::ObjectLocked,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(words), "{err}");
        // Prune skips what it may not delete, and says why.
        let report = prune(&services).await.unwrap();
        assert!(report.deleted.is_empty(), "{report:?}");
        assert!(
            report
                .skipped
                .iter()
                .all(|s| s.why.starts_with("refused: object_locked")),
            "{report:?}"
        );
        assert_eq!(report.skipped.len(), 4, "{report:?}");
    }
    // The backups prune wanted gone are untouched: records, objects, manifests. (Its reaping
    // and repairs ran; they delete no locked backup.)
    let (after, after_keys) = f.state().await;
    for name in ["d3", "d4", "d6", "p1"] {
        assert_eq!(after[name], statuses[name], "{name}");
        let r = f.catalog.get(&f.ids[name]).await.unwrap();
        for key in [r.object_key.clone(), r.manifest_key()] {
            assert!(keys.contains(&key) && after_keys.contains(&key), "{key}");
        }
    }
    let audit = f.catalog.list_audit(None, 100).await.unwrap();
    assert!(
        audit
            .iter()
            .all(|a| a.details.get("status_before").is_none()),
        "{audit:?}"
    );

    // A lapsed retention no longer holds anything back.
    let lapsed = held(false, Some(Utc::now() - chrono::Duration::days(1)));
    let d3 = delete_backup(&lapsed, &f.ids["d3"], &by_hand)
        .await
        .unwrap();
    assert_eq!(d3.status, BackupStatus::Deleted);
}

#[tokio::test]
async fn an_empty_policy_is_refused_before_anything_is_read() {
    let f = Fixture::new().await;
    let mut req = request();
    req.policy = RetentionPolicy::default();
    let err = plan(&f.services(), &req).await.unwrap_err();
    assert!(matches!(err, Error::Policy(_)), "{err}");
    assert_eq!(err.kind(), super::super::ErrorKind::Config);
}

#[tokio::test]
async fn the_reaper_fails_abandoned_runs_only() {
    let f = Fixture::new().await;
    let s = f.services();
    let now = at(NOW);
    let limit = reaper::DEFAULT_ABANDON_AFTER;
    let found = reaper::find_abandoned(&s, Some("shop"), now, limit)
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|r| f.name(&r.id)).collect::<Vec<_>>(),
        vec!["a1"]
    );
    assert!(reaper::find_abandoned(&s, Some("crm"), now, limit)
        .await
        .unwrap()
        .is_empty());

    let reaped = reaper::reap(&s, None, now, limit).await.unwrap();
    assert_eq!(reaped.abandoned.len(), 1);
    assert!(reaped.settled.is_empty());
    let a1 = f.catalog.get(&f.ids["a1"]).await.unwrap();
    assert_eq!(a1.status, BackupStatus::Failed);
    assert_eq!(a1.completed_at, Some(now));
    assert!(f.store.head(&a1.object_key).await.unwrap().is_none());
    let a2 = f.catalog.get(&f.ids["a2"]).await.unwrap();
    assert_eq!(a2.status, BackupStatus::InProgress);

    // Later, a2's run finished on its own: it is left alone although its lease was never
    // given back (and, once lapsed, would mark a run abandoned).
    let later = now + chrono::TimeDelta::days(2);
    let mut finished = a2.clone();
    finished.status = BackupStatus::Completed;
    f.catalog
        .update(&finished, BackupStatus::InProgress)
        .await
        .unwrap();
    assert!(reaper::reap_one(&s, &a2.id, later, limit)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        f.catalog.get(&a2.id).await.unwrap().status,
        BackupStatus::Completed
    );
}
