//! `pgkeep delete ID` end to end: the real binary on the embedded default (directory + SQLite)
//! and on the emulator (S3 with Object Lock, DynamoDB, KMS). Each refusal must leave the record,
//! the object and the manifest exactly as they were; a deletion must leave neither object nor
//! manifest, a `deleted` record and an audit entry naming who deleted.

use std::process::Output;

use chrono::{Duration, Utc};
use pgkeep::catalog::sqlite::SqliteCatalog;
use pgkeep::catalog::Catalog;
use pgkeep::model::{AuditEntry, BackupId, BackupKind, BackupRecord, Compression};
use pgkeep::store::s3::S3Options;
use pgkeep_tests::aws::Moto;
use pgkeep_tests::cli::Pgkeep;
use pgkeep_tests::{unique_name, PgCluster};
use serde_json::Value;

fn small_database(cluster: &PgCluster) -> String {
    let db = unique_name("del");
    cluster.create_database(&db).unwrap();
    cluster
        .psql(
            &db,
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 500) g;",
        )
        .unwrap();
    db
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// `pgkeep delete ID --json`: exit code, stdout as JSON (Null if none), stderr.
fn delete(pgkeep: &Pgkeep, id: &str) -> (Output, Value, String) {
    let out = pgkeep.run(&["delete", id, "--json"]);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, json, stderr)
}

/// Asserts a refusal: exit 8, `refused: REASON:` on stderr, the reason in the JSON.
fn assert_refused(pgkeep: &Pgkeep, id: &str, reason: &str) {
    let (out, json, stderr) = delete(pgkeep, id);
    assert_eq!(out.status.code(), Some(8), "{stderr}");
    assert!(
        stderr.contains(&format!("pgkeep: error: refused: {reason}: backup {id}")),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert_eq!(json["reason"], reason, "{json}");
    assert_eq!(json["deleted"], false);
    assert_eq!(json["id"], id);
}

/// An in-progress record of `database`, as a running backup leaves it.
fn in_progress(database: &str) -> BackupRecord {
    BackupRecord::start(
        BackupId::generate(Utc::now()),
        database,
        BackupKind::Manual,
        Compression::Zstd,
    )
}

fn assert_deletion_audited(audit: &[AuditEntry], id: &str, actor: &str) {
    let entry = audit
        .iter()
        .find(|a| a.backup_id.as_ref().map(BackupId::as_str) == Some(id))
        .unwrap_or_else(|| panic!("no audit entry for {id}: {audit:?}"));
    assert_eq!(entry.action, "delete");
    assert_eq!(entry.actor, actor);
    assert_eq!(entry.outcome, "ok");
    assert_eq!(entry.details["status_before"], "completed");
    assert!((Utc::now() - entry.at).num_minutes() < 10, "{entry:?}");
    assert_eq!(
        audit.iter().filter(|a| a.action == "delete").count(),
        1,
        "refusals leave no audit entry: {audit:?}"
    );
}

#[test]
fn delete_on_a_local_repository_refuses_what_must_stay_and_removes_the_rest() {
    let cluster = PgCluster::start().unwrap();
    let db = small_database(&cluster);
    let pgkeep = Pgkeep::new()
        .database_url(cluster.url(&db))
        .env("USER", "dora");

    // The newest verified backup, and a newer one only completed.
    let verified = pgkeep.backup_ok(&[]);
    let verified_id = verified["id"].as_str().unwrap();
    let (out, record) = pgkeep.verify(&[verified_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(record["status"], "verified");
    let completed = pgkeep.backup_ok(&[]);
    let completed_id = completed["id"].as_str().unwrap();
    // A backup still being written.
    let catalog = SqliteCatalog::open(pgkeep.repo.join("catalog.sqlite3")).unwrap();
    let running = in_progress(&db);
    block_on(catalog.insert(&running)).unwrap();

    let snapshot = |record: &Value| {
        let object = pgkeep.object_path(record);
        let manifest = object.with_extension("manifest.json");
        (
            pgkeep.show(record["id"].as_str().unwrap()),
            std::fs::read(&object).unwrap(),
            std::fs::read(manifest).unwrap(),
        )
    };
    let audit_before = pgkeep.audit();
    let before = snapshot(&verified);
    assert_refused(&pgkeep, verified_id, "newest_verified");
    assert_eq!(snapshot(&verified), before, "a refusal changes nothing");
    assert_refused(&pgkeep, running.id.as_str(), "in_progress");
    assert_eq!(
        pgkeep.show(running.id.as_str())["status"],
        "in_progress",
        "a refusal changes nothing"
    );
    assert_eq!(pgkeep.audit(), audit_before, "refusals are not audited");

    // A completed backup goes: no object, no manifest, a `deleted` record, an audit entry.
    let object = pgkeep.object_path(&completed);
    assert!(object.exists());
    let out = pgkeep.run(&["delete", completed_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("deleted backup {completed_id}")),
        "{said}"
    );
    assert!(!object.exists());
    assert!(!object.with_extension("manifest.json").exists());
    assert_eq!(pgkeep.show(completed_id)["status"], "deleted");
    assert_deletion_audited(&pgkeep.audit(), completed_id, "dora");
    // Only the verified backup's files remain, and the state objects of the verified and
    // the deleted backup.
    assert_eq!(
        pgkeep.stored_files().len(),
        4,
        "{:?}",
        pgkeep.stored_files()
    );
    let state = object.with_extension("state.json");
    let state: Value = serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
    assert_eq!(state["record"]["status"], "deleted");

    // Deleting again is harmless; unknown and malformed ids say so.
    let (out, json, _) = delete(&pgkeep, completed_id);
    assert!(out.status.success());
    assert_eq!(json["status"], "deleted");
    let unknown = BackupId::generate(Utc::now());
    assert_eq!(delete(&pgkeep, unknown.as_str()).0.status.code(), Some(4));
    assert_eq!(delete(&pgkeep, "not-an-id").0.status.code(), Some(2));
}

#[test]
fn delete_on_s3_refuses_an_object_under_object_lock() {
    let Some(moto) = Moto::start() else { return };
    let moto = moto.with_object_lock();
    let cluster = PgCluster::start().unwrap();
    let db = small_database(&cluster);
    let pgkeep = Pgkeep::new()
        .database_url(cluster.url(&db))
        .with_urls(&moto.repo_url(), &moto.catalog_url(), &moto.key_url())
        .env("PGKEEP_AWS_ENDPOINT", &moto.endpoint)
        .env("PGKEEP_ACTOR", "ops-runbook");

    let verified = pgkeep.backup_ok(&[]);
    let verified_id = verified["id"].as_str().unwrap();
    let (out, record) = pgkeep.verify(&[verified_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(record["status"], "verified");
    let locked = pgkeep.backup_ok(&[]);
    let locked_id = locked["id"].as_str().unwrap();
    let completed = pgkeep.backup_ok(&[]);
    let completed_id = completed["id"].as_str().unwrap();
    let services = moto.services(S3Options::default());
    let running = in_progress(&db);
    moto.runtime
        .block_on(services.catalog.insert(&running))
        .unwrap();

    let keys = |record: &Value| {
        let object = moto.s3_key(record["object_key"].as_str().unwrap());
        let manifest = object.replace(".pgkeep", ".manifest.json");
        (object, manifest)
    };
    let (locked_object, locked_manifest) = keys(&locked);
    moto.retain_until(
        &locked_object,
        "COMPLIANCE",
        Utc::now() + Duration::days(30),
    );
    let snapshot = |record: &Value| {
        let (object, manifest) = keys(record);
        (
            pgkeep.show(record["id"].as_str().unwrap()),
            moto.get(&object).0,
            moto.get(&manifest).0,
        )
    };

    let before = snapshot(&locked);
    assert_refused(&pgkeep, locked_id, "object_locked");
    let (_, _, stderr) = delete(&pgkeep, locked_id);
    assert!(stderr.contains("COMPLIANCE retention until"), "{stderr}");
    assert_eq!(snapshot(&locked), before, "a refusal changes nothing");
    let before = snapshot(&verified);
    assert_refused(&pgkeep, verified_id, "newest_verified");
    assert_eq!(snapshot(&verified), before, "a refusal changes nothing");
    assert_refused(&pgkeep, running.id.as_str(), "in_progress");
    assert_eq!(pgkeep.show(running.id.as_str())["status"], "in_progress");
    let objects = moto.objects();
    assert!(objects.contains(&locked_object) && objects.contains(&locked_manifest));

    let (out, json, stderr) = delete(&pgkeep, completed_id);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(json["status"], "deleted");
    let (object, manifest) = keys(&completed);
    let objects = moto.objects();
    assert!(!objects.contains(&object), "{objects:?}");
    assert!(!objects.contains(&manifest), "{objects:?}");
    assert_eq!(pgkeep.show(completed_id)["status"], "deleted");
    let audit = moto
        .runtime
        .block_on(services.catalog.list_audit(Some(&db), 100))
        .unwrap();
    assert_deletion_audited(&audit, completed_id, "ops-runbook");
}
