//! Every sample event in events/verify/ through the real handler, over the embedded backends
//! and a real PostgreSQL: verifications record `verified`, a tampered backup records
//! `verification_failed` with one alert, restores and their dry runs do what they say.

use std::collections::BTreeMap;
use std::sync::Arc;

use pgkeep::alert::AlertKind;
use pgkeep::backends::KeyUse;
use pgkeep::config::LambdaSettings;
use pgkeep::model::{BackupId, BackupKind, BackupStatus};
use pgkeep::ops::jobs::{DumpOutcome, Jobs};
use pgkeep::testing::{RecordingMetrics, RecordingNotifier};
use pgkeep::trigger::DumpTrigger;
use pgkeep_tests::aws::Moto;
use pgkeep_tests::PgCluster;
use serde_json::{json, Value};

use super::handle;

fn event(name: &str) -> Value {
    pgkeep_tests::events::load("verify", name)
}

/// The backup id a sample event names.
fn event_id(name: &str) -> BackupId {
    let e = event(name);
    let id = e["backup_id"]
        .as_str()
        .or_else(|| e["restore"]["backup_id"].as_str())
        .unwrap();
    id.parse().unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
    jobs: Jobs,
    alerts: Arc<RecordingNotifier>,
    metrics: Arc<RecordingMetrics>,
}

async fn fixture(url: &str) -> Fixture {
    fixture_with(url, &[]).await
}

async fn fixture_with(url: &str, extra: &[(&str, String)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut vars: BTreeMap<&str, String> = [
        ("PGKEEP_REPO", dir.path().join("repo").display().to_string()),
        (
            "PGKEEP_KEY_FILE",
            dir.path().join("pgkeep.key").display().to_string(),
        ),
        (
            "PGKEEP_DATABASES",
            json!({ "shop": { "url": url } }).to_string(),
        ),
    ]
    .into();
    vars.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    let settings = LambdaSettings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    // Write: the fixture takes the backups it then verifies.
    let mut jobs = Jobs::connect(settings, KeyUse::Write).await.unwrap();
    let alerts = Arc::new(RecordingNotifier::new());
    let metrics = Arc::new(RecordingMetrics::default());
    jobs.notifier = alerts.clone();
    jobs.metrics = metrics.clone();
    Fixture {
        dir,
        jobs,
        alerts,
        metrics,
    }
}

/// A real backup of `shop`, under `id` when given.
async fn dump(jobs: &Jobs, id: Option<BackupId>) -> BackupId {
    let trigger = DumpTrigger {
        database: "shop".into(),
        kind: BackupKind::Manual,
        backup_id: id,
        requested_by: None,
        labels: Default::default(),
        selection: None,
        all_databases: false,
        jobs: None,
    };
    match jobs.run_dump(&trigger).await.unwrap() {
        DumpOutcome::Completed { backup, .. } => backup.id,
        other => panic!("{other:?}"),
    }
}

fn shop(cluster: &PgCluster) {
    cluster.create_database("shop").unwrap();
    cluster
        .psql(
            "shop",
            "CREATE TABLE items (id int PRIMARY KEY, name text);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 300) g;
             CREATE VIEW cheap AS SELECT * FROM items WHERE id < 10;",
        )
        .unwrap();
}

fn scratch_databases(cluster: &PgCluster) -> Vec<String> {
    cluster
        .database_names()
        .unwrap()
        .into_iter()
        .filter(|d| d.starts_with("pgkeep_"))
        .collect()
}

#[tokio::test]
async fn scheduled_direct_and_dump_events_record_verified() {
    let cluster = PgCluster::start().unwrap();
    shop(&cluster);
    let f = fixture(&cluster.url("shop")).await;
    let direct = dump(&f.jobs, Some(event_id("direct"))).await;
    let from_dump = dump(&f.jobs, Some(event_id("from-dump"))).await;
    let newest = dump(&f.jobs, None).await;

    // The schedule verifies the newest completed backup not yet verified.
    let out = handle(&f.jobs, event("scheduled")).await.unwrap();
    assert_eq!(out["outcome"], "verified", "{out}");
    assert_eq!(out["backup"]["id"], newest.as_str());
    assert_eq!(out["backup"]["status"], "verified");
    assert_eq!(out["backup"]["verification"]["tables"][0]["actual"], 300);

    for (name, id) in [("direct", &direct), ("from-dump", &from_dump)] {
        let out = handle(&f.jobs, event(name)).await.unwrap();
        assert_eq!(out["outcome"], "verified", "{name}: {out}");
        assert_eq!(out["backup"]["id"], id.as_str());
        let record = f.jobs.services.catalog.get(id).await.unwrap();
        assert_eq!(record.status, BackupStatus::Verified, "{name}");
    }

    // Nothing left for the schedule.
    let out = handle(&f.jobs, event("scheduled")).await.unwrap();
    assert_eq!(out["outcome"], "nothing_to_verify", "{out}");

    let lines = f.metrics.lines();
    // Three dumps, then three verifications.
    assert_eq!(lines.len(), 6, "{lines:?}");
    for line in &lines[3..] {
        let emf: Value = serde_json::from_str(line).unwrap();
        assert!(emf["VerifyDuration"].is_number(), "{emf}");
        assert_eq!(emf["Database"], "shop");
    }
    assert!(f.alerts.alerts().is_empty(), "{:?}", f.alerts.alerts());
    assert!(scratch_databases(&cluster).is_empty());
}

#[tokio::test]
async fn a_tampered_backup_fails_verification_with_one_alert() {
    let cluster = PgCluster::start().unwrap();
    shop(&cluster);
    let f = fixture(&cluster.url("shop")).await;
    let id = dump(&f.jobs, None).await;
    let record = f.jobs.services.catalog.get(&id).await.unwrap();
    let path = f.dir.path().join("repo").join(&record.object_key);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();

    let out = handle(&f.jobs, json!({ "backup_id": id.as_str() }))
        .await
        .unwrap();
    assert_eq!(out["outcome"], "verification_failed", "{out}");
    assert_eq!(out["backup"]["status"], "verification_failed");
    let alerts = f.alerts.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, AlertKind::VerificationFailed);
    assert_eq!(alerts[0].backup_id.as_ref(), Some(&id));
    assert_eq!(alerts[0].database, "shop");
    assert!(
        alerts[0].reason.contains("checksum"),
        "{}",
        alerts[0].reason
    );
    assert!(scratch_databases(&cluster).is_empty());
}

#[tokio::test]
async fn restores_and_dry_runs_from_the_api() {
    let cluster = PgCluster::start().unwrap();
    shop(&cluster);
    let f = fixture(&cluster.url("shop")).await;
    dump(&f.jobs, Some(event_id("restore"))).await;
    let before = cluster.database_names().unwrap();

    let out = handle(&f.jobs, event("restore-dry-run")).await.unwrap();
    assert_eq!(out["outcome"], "restored", "{out}");
    assert_eq!(out["report"]["dry_run"], true);
    assert!(out["report"]["listing"]
        .as_str()
        .unwrap()
        .contains("TABLE DATA public items"));
    assert_eq!(
        cluster.database_names().unwrap(),
        before,
        "a dry run writes nothing"
    );

    let out = handle(&f.jobs, event("restore")).await.unwrap();
    assert_eq!(out["outcome"], "restored", "{out}");
    assert_eq!(out["report"]["action"], "create_new");
    let counts = cluster.table_counts("shop_restored").unwrap();
    assert_eq!(counts[&("public".to_owned(), "items".to_owned())], 300);
    assert!(f.alerts.alerts().is_empty());

    // The same restore again: the target exists now and overwriting was not asked for. The
    // refusal fails the invocation and is alerted (nobody waits for an asynchronous restore).
    let err = handle(&f.jobs, event("restore")).await.unwrap_err();
    assert!(err.error_message.contains("already exists"), "{err:?}");
    let alerts = f.alerts.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, AlertKind::RestoreFailed);
    assert_eq!(alerts[0].database, "shop_restored");
    assert!(alerts[0].reason.contains("alice"), "{}", alerts[0].reason);
    assert!(scratch_databases(&cluster).is_empty());

    // A restore asked for through the API whose invocation never came is given up after 7
    // hours; if the invocation turns up later after all, it restores nothing, records and
    // alerts nothing more.
    let services = &f.jobs.services;
    let asked = chrono::Utc::now() - chrono::Duration::hours(8);
    let restore_id = BackupId::generate(asked);
    let backup_id: BackupId = "20261124T020000000Z-0a1b2c3d".parse().unwrap();
    let queued =
        pgkeep::model::RestoreRun::queued(restore_id.clone(), backup_id, "shop_late", asked);
    services.catalog.put_restore(&queued).await.unwrap();
    let given_up = pgkeep::ops::reaper::reap_restores(
        services,
        None,
        chrono::Utc::now(),
        pgkeep::ops::reaper::DEFAULT_ABANDON_AFTER,
    )
    .await
    .unwrap();
    assert_eq!(given_up.len(), 1, "{given_up:?}");
    let recorded = services.catalog.get_restore(&restore_id).await.unwrap();
    let why = recorded.error.clone().unwrap();
    assert!(why.contains("never started within 7h"), "{why}");
    let mut late = event("restore");
    late["restore"]["target_db"] = json!("shop_late");
    late["restore"]["restore_id"] = json!(restore_id.as_str());
    let err = handle(&f.jobs, late).await.unwrap_err();
    assert!(err.error_message.contains("has already ended"), "{err:?}");
    assert!(!cluster
        .database_names()
        .unwrap()
        .contains(&"shop_late".to_owned()));
    assert_eq!(f.alerts.alerts().len(), 1, "no second alert");
    assert_eq!(
        services.catalog.get_restore(&restore_id).await.unwrap(),
        recorded
    );
}

#[tokio::test]
async fn unknown_backups_and_malformed_events_fail_without_alerts() {
    let cluster = PgCluster::start().unwrap();
    let f = fixture(&cluster.url("shop")).await;
    let err = handle(&f.jobs, event("direct")).await.unwrap_err();
    assert!(err.error_message.contains("not in the catalog"), "{err:?}");
    let err = handle(&f.jobs, json!({"backup_id": "x"}))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "InvalidEvent");
    assert!(f.alerts.alerts().is_empty());
}

#[test]
fn the_scratch_server_comes_from_its_secret_and_a_broken_one_is_alerted() {
    let Some(moto) = Moto::start() else { return };
    let cluster = PgCluster::start().unwrap();
    shop(&cluster);
    // The scratch server's secret names the `postgres` database: any database there will do.
    let scratch = moto.secret(
        &json!({
            "username": cluster.user(),
            "password": cluster.password(),
            "host": cluster.host(),
            "port": cluster.port(),
            "dbname": "postgres",
        })
        .to_string(),
    );
    moto.runtime.block_on(async {
        let with_scratch = |arn: &str| {
            [
                ("PGKEEP_AWS_ENDPOINT", moto.endpoint.clone()),
                ("PGKEEP_SCRATCH_SECRET_ARN", arn.to_owned()),
            ]
        };
        let broken = fixture_with(
            &cluster.url("shop"),
            &with_scratch("arn:aws:secretsmanager:us-east-1:123456789012:secret:pgkeep/none"),
        )
        .await;
        let id = dump(&broken.jobs, None).await;
        let err = handle(&broken.jobs, json!({ "backup_id": id.as_str() }))
            .await
            .unwrap_err();
        assert!(err.error_message.contains("pgkeep/none"), "{err:?}");
        let alerts = broken.alerts.alerts();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].kind, AlertKind::VerificationFailed);
        assert!(
            alerts[0].reason.contains("no verdict"),
            "{}",
            alerts[0].reason
        );
        assert_eq!(
            broken.jobs.services.catalog.get(&id).await.unwrap().status,
            BackupStatus::Completed,
            "no verdict: the status stays"
        );

        let f = fixture_with(&cluster.url("shop"), &with_scratch(&scratch)).await;
        let id = dump(&f.jobs, None).await;
        let out = handle(&f.jobs, json!({ "backup_id": id.as_str() }))
            .await
            .unwrap();
        assert_eq!(out["outcome"], "verified", "{out}");
        let server = out["backup"]["verification"]["scratch_server"]
            .as_str()
            .unwrap();
        assert!(server.ends_with("/postgres"), "{server}");
        assert!(!out.to_string().contains(cluster.password()));
        assert!(f.alerts.alerts().is_empty());
    });
    assert!(scratch_databases(&cluster).is_empty());
}

/// Each file of events/verify/ through the handler, one after the other over the backups the
/// events name: each names the outcome it must have.
#[tokio::test]
async fn every_sample_event_goes_through_the_handler() {
    let cluster = PgCluster::start().unwrap();
    shop(&cluster);
    let f = fixture(&cluster.url("shop")).await;
    dump(&f.jobs, Some(event_id("direct"))).await;
    dump(&f.jobs, Some(event_id("from-dump"))).await;
    let expected = [
        ("direct", "verified"),
        ("from-dump", "verified"),
        ("restore-dry-run", "restored"),
        ("restore", "restored"),
        // Both backups are verified by now.
        ("scheduled", "nothing_to_verify"),
    ];
    for (name, event, outcome) in pgkeep_tests::events::each("verify", &expected) {
        let out = handle(&f.jobs, event)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(out["outcome"], *outcome, "{name}: {out}");
    }
    assert!(f.alerts.alerts().is_empty(), "{:?}", f.alerts.alerts());
    assert!(scratch_databases(&cluster).is_empty());
}
