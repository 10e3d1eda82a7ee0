//! Every sample event in events/prune/ through the real handler, over the embedded backends:
//! the policy from `PGKEEP_KEEP_*` is applied, abandoned runs are failed and alerted, and each
//! database without a recent good backup gets one `stale` alert.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Duration, Utc};
use pgkeep::alert::AlertKind;
use pgkeep::backends::KeyUse;
use pgkeep::config::LambdaSettings;
use pgkeep::model::{BackupId, BackupKind, BackupRecord, BackupStatus, Compression};
use pgkeep::ops::jobs::Jobs;
use pgkeep::testing::{RecordingMetrics, RecordingNotifier};
use serde_json::{json, Value};

use super::handle;

fn event(name: &str) -> Value {
    pgkeep_tests::events::load("prune", name)
}

struct Fixture {
    _dir: tempfile::TempDir,
    jobs: Jobs,
    alerts: Arc<RecordingNotifier>,
    metrics: Arc<RecordingMetrics>,
}

async fn fixture(keep: &[(&str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut vars: BTreeMap<&str, String> = [
        ("PGKEEP_REPO", dir.path().join("repo").display().to_string()),
        (
            "PGKEEP_KEY_FILE",
            dir.path().join("pgkeep.key").display().to_string(),
        ),
        (
            "PGKEEP_DATABASES",
            json!({
                "shop": { "url": "postgresql://backup@db.internal/shop" },
                "crm": { "url": "postgresql://backup@db.internal/crm" },
                "ledger": { "url": "postgresql://backup@db.internal/ledger" },
            })
            .to_string(),
        ),
    ]
    .into();
    vars.extend(keep.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let settings = LambdaSettings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let mut jobs = Jobs::connect(settings, KeyUse::None).await.unwrap();
    let alerts = Arc::new(RecordingNotifier::new());
    let metrics = Arc::new(RecordingMetrics::default());
    jobs.notifier = alerts.clone();
    jobs.metrics = metrics.clone();
    Fixture {
        _dir: dir,
        jobs,
        alerts,
        metrics,
    }
}

/// A record of `database` taken `hours_ago`, in `status`, with its object and manifest stored
/// when it has them.
async fn add(jobs: &Jobs, database: &str, hours_ago: i64, status: BackupStatus) -> BackupId {
    add_kind(jobs, database, hours_ago, status, BackupKind::Scheduled).await
}

/// [`add`] for a backup of `kind`.
async fn add_kind(
    jobs: &Jobs,
    database: &str,
    hours_ago: i64,
    status: BackupStatus,
    kind: BackupKind,
) -> BackupId {
    let at = Utc::now() - Duration::hours(hours_ago);
    let mut r = BackupRecord::start(BackupId::generate(at), database, kind, Compression::Zstd);
    r.created_at = at;
    jobs.services.catalog.insert(&r).await.unwrap();
    if status == BackupStatus::InProgress {
        jobs.services
            .store
            .put(&r.object_key, b"half an upload".to_vec())
            .await
            .unwrap();
        return r.id;
    }
    r.transition(status).unwrap();
    r.completed_at = Some(at + Duration::minutes(2));
    if status == BackupStatus::Completed {
        r.size_bytes = Some(12);
        for key in [r.object_key.clone(), r.manifest_key()] {
            jobs.services
                .store
                .put(&key, b"not a backup".to_vec())
                .await
                .unwrap();
        }
    }
    jobs.services
        .catalog
        .update(&r, BackupStatus::InProgress)
        .await
        .unwrap();
    r.id
}

async fn status(jobs: &Jobs, id: &BackupId) -> BackupStatus {
    jobs.services.catalog.get(id).await.unwrap().status
}

#[tokio::test]
async fn the_schedule_prunes_reaps_and_alerts_stale_databases() {
    let f = fixture(&[("PGKEEP_KEEP_LAST", "2")]).await;
    // shop: four good backups, the newest 37 hours old (stale), and a run that never ended.
    let mut shop = Vec::new();
    for hours in [40, 39, 38, 37] {
        shop.push(add(&f.jobs, "shop", hours, BackupStatus::Completed).await);
    }
    let abandoned = add(&f.jobs, "shop", 2, BackupStatus::InProgress).await;
    // crm: healthy. ledger: configured, never backed up.
    let crm = add(&f.jobs, "crm", 1, BackupStatus::Completed).await;

    let out = handle(&f.jobs, event("scheduled")).await.unwrap();
    let mut deleted: Vec<&str> = out["report"]["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    deleted.sort();
    assert_eq!(
        deleted,
        vec![shop[0].as_str(), shop[1].as_str()],
        "the two oldest: {out}"
    );
    assert_eq!(out["kept"], 3, "{out}");
    for id in &shop[..2] {
        assert_eq!(status(&f.jobs, id).await, BackupStatus::Deleted);
    }
    for id in shop[2..].iter().chain([&crm]) {
        assert_eq!(status(&f.jobs, id).await, BackupStatus::Completed);
    }
    let left: Vec<String> = f
        .jobs
        .services
        .store
        .list("shop/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    let (states, stored): (Vec<&String>, Vec<&String>) =
        left.iter().partition(|k| k.ends_with(".state.json"));
    assert_eq!(
        stored.len(),
        4,
        "two kept backups, object and manifest: {left:?}"
    );
    // The deleted backups' and the abandoned run's states stay: their history.
    assert_eq!(states.len(), 3, "{left:?}");
    for id in &shop[..2] {
        assert!(states.iter().any(|k| k.contains(id.as_str())), "{left:?}");
    }
    assert_eq!(status(&f.jobs, &abandoned).await, BackupStatus::Failed);

    let alerts = f.alerts.alerts();
    let kinds: Vec<(AlertKind, &str)> = alerts
        .iter()
        .map(|a| (a.kind, a.database.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (AlertKind::BackupFailed, "shop"),
            (AlertKind::Stale, "shop"),
            (AlertKind::Stale, "ledger"),
        ],
        "{alerts:?}"
    );
    assert_eq!(alerts[0].backup_id.as_ref(), Some(&abandoned));
    assert!(
        alerts[0].reason.contains("abandoned"),
        "{}",
        alerts[0].reason
    );
    assert_eq!(alerts[1].backup_id.as_ref(), Some(&shop[3]));
    assert!(
        alerts[1].reason.contains("more than the limit"),
        "{}",
        alerts[1].reason
    );
    assert_eq!(out["stale"], json!(["shop", "ledger"]));

    // The age of each database's newest good backup, as a metric.
    let ages: BTreeMap<String, i64> = f
        .metrics
        .lines()
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|d| {
            (
                d["Database"].as_str().unwrap().to_owned(),
                d["NewestGoodBackupAge"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ages.keys().collect::<Vec<_>>(), vec!["crm", "shop"]);
    assert!((37 * 3600..38 * 3600).contains(&ages["shop"]), "{ages:?}");

    // Again: nothing more to delete or reap; the stale databases are alerted again.
    let out = handle(&f.jobs, json!({})).await.unwrap();
    assert!(
        out["report"]["deleted"].as_array().unwrap().is_empty(),
        "{out}"
    );
    assert!(
        out["report"]["reaped"].as_array().unwrap().is_empty(),
        "{out}"
    );
    assert_eq!(f.alerts.alerts().len(), 5);
}

#[tokio::test]
async fn a_healthy_deployment_gets_no_alert_and_odd_events_are_refused() {
    let f = fixture(&[("PGKEEP_KEEP_DAILY", "7"), ("PGKEEP_KEEP_WITHIN", "2d")]).await;
    for db in ["shop", "crm", "ledger"] {
        add(&f.jobs, db, 3, BackupStatus::Completed).await;
    }
    let out = handle(&f.jobs, event("scheduled")).await.unwrap();
    assert_eq!(out["stale"], json!([]), "{out}");
    assert!(f.alerts.alerts().is_empty(), "{:?}", f.alerts.alerts());
    let err = handle(&f.jobs, json!({"database": "shop"}))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "InvalidEvent");
}

/// A run that died after publishing its object and manifest (its final catalog write never
/// happened) is settled as completed by the reaper: it is reported apart (`settled`) and not
/// alerted as an abandoned run; a run that died mid-dump is failed and alerted.
#[tokio::test]
async fn a_run_settled_as_completed_is_not_alerted_as_abandoned() {
    use pgkeep::model::{ArchiveInfo, EncryptionInfo, Manifest};
    let f = fixture(&[("PGKEEP_KEEP_LAST", "10")]).await;
    for db in ["shop", "crm", "ledger"] {
        add(&f.jobs, db, 3, BackupStatus::Completed).await;
    }
    let abandoned = add(&f.jobs, "shop", 2, BackupStatus::InProgress).await;
    // crm: its object ("half an upload", as `add` stores it) and a manifest that says completed.
    let published = add(&f.jobs, "crm", 1, BackupStatus::InProgress).await;
    let mut done = f.jobs.services.catalog.get(&published).await.unwrap();
    done.status = BackupStatus::Completed;
    done.size_bytes = Some(b"half an upload".len() as u64);
    done.sha256 = Some("0".repeat(64));
    done.completed_at = Some(Utc::now());
    let manifest = Manifest::new(
        done.clone(),
        EncryptionInfo::aes_256_gcm(1, 1 << 20, "file:test", b"wrapped"),
        ArchiveInfo {
            format: "pg_dump custom".into(),
            archive_version: "1.15".into(),
            dump_version: "15".into(),
            archive_bytes: 14,
            tables: Vec::new(),
            schema_only_tables: Vec::new(),
            large_objects: 0,
        },
    );
    f.jobs
        .services
        .store
        .put(&done.manifest_key(), serde_json::to_vec(&manifest).unwrap())
        .await
        .unwrap();

    let out = handle(&f.jobs, event("scheduled")).await.unwrap();
    assert_eq!(
        out["report"]["reaped"],
        json!([abandoned.as_str()]),
        "{out}"
    );
    assert_eq!(
        out["report"]["settled"],
        json!([published.as_str()]),
        "{out}"
    );
    assert_eq!(status(&f.jobs, &published).await, BackupStatus::Completed);
    assert_eq!(status(&f.jobs, &abandoned).await, BackupStatus::Failed);
    let alerts = f.alerts.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, AlertKind::BackupFailed);
    assert_eq!(alerts[0].backup_id.as_ref(), Some(&abandoned));
}

/// `PGKEEP_PRE_RESTORE_KEEP_WITHIN` reaches the prune function (it once reached only the
/// CLI): a safety copy younger than the span is kept, an older one removed.
#[tokio::test]
async fn pre_restore_copies_are_kept_as_long_as_the_environment_says() {
    for (keep_within, kept) in [("3d", true), ("1d", false)] {
        let f = fixture(&[
            ("PGKEEP_KEEP_LAST", "5"),
            ("PGKEEP_PRE_RESTORE_KEEP_WITHIN", keep_within),
        ])
        .await;
        assert_eq!(
            f.jobs
                .settings
                .retention
                .pre_restore_keep_within
                .to_string(),
            keep_within
        );
        for db in ["shop", "crm", "ledger"] {
            add(&f.jobs, db, 1, BackupStatus::Completed).await;
        }
        let safety = add_kind(
            &f.jobs,
            "shop",
            48,
            BackupStatus::Completed,
            BackupKind::PreRestore,
        )
        .await;
        let out = handle(&f.jobs, event("scheduled")).await.unwrap();
        let deleted = out["report"]["deleted"].as_array().unwrap();
        let expected = if kept {
            BackupStatus::Completed
        } else {
            BackupStatus::Deleted
        };
        assert_eq!(status(&f.jobs, &safety).await, expected, "{out}");
        assert_eq!(deleted.len(), usize::from(!kept), "{out}");
    }
}

/// Each file of events/prune/ through the handler, with how many databases it finds stale (none
/// has a backup here).
#[tokio::test]
async fn every_sample_event_goes_through_the_handler() {
    let expected = [("scheduled", 3), ("health", 3)];
    for (name, event, stale) in pgkeep_tests::events::each("prune", &expected) {
        let f = fixture(&[("PGKEEP_KEEP_LAST", "3")]).await;
        let out = handle(&f.jobs, event)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(
            out["stale"].as_array().map(Vec::len),
            Some(*stale),
            "{name}: {out}"
        );
    }
}
