//! The repository is the source of truth: `pgkeep repair` rebuilds a lost catalog from it
//! (statuses, verification and recovery time included), a lost or emptied catalog is refused
//! until then, and `verify` catches a manifest that disagrees with its record or object.
//! Real PostgreSQL, the real binary; the AWS case against the emulator (moto).

use std::process::Output;

use pgkeep_tests::aws::Moto;
use pgkeep_tests::cli::Pgkeep;
use pgkeep_tests::{unique_name, PgCluster};
use serde_json::Value;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const SQL: &str = r#"
CREATE SCHEMA audit;
CREATE TABLE public.customers (id int PRIMARY KEY, name text);
INSERT INTO public.customers SELECT g, 'customer ' || g FROM generate_series(1, 321) g;
CREATE TABLE public."Order Lines" (id int, customer int, total numeric);
INSERT INTO public."Order Lines" SELECT g, 1 + g % 321, g * 1.5 FROM generate_series(1, 777) g;
CREATE TABLE audit.log (id int PRIMARY KEY, what text);
INSERT INTO audit.log SELECT g, 'did ' || g FROM generate_series(1, 55) g;
"#;

fn database(cluster: &PgCluster) -> String {
    let db = unique_name("repair");
    cluster.create_database(&db).unwrap();
    cluster.psql(&db, SQL).unwrap();
    db
}

/// The backups the acceptance list names: gzip and zstd, one verified, one selective, one
/// deleted and one failed. Returns `list --json` afterwards and the ids by role.
fn history(
    pgkeep: &Pgkeep,
    cluster: &PgCluster,
    get: Get,
) -> (Vec<Value>, Vec<(&'static str, String)>) {
    let gzip = pgkeep.backup_ok(&["--compression", "gzip"]);
    let zstd = pgkeep.backup_ok(&["--compression", "zstd", "--label", "release=7"]);
    let selective = pgkeep.backup_ok(&["--exclude-schema", "audit"]);
    let doomed = pgkeep.backup_ok(&[]);
    let failed = pgkeep
        .command()
        .env("PGKEEP_DATABASE_URL", cluster.url(&unique_name("missing")))
        .args(["backup", "--json"])
        .output()
        .unwrap();
    assert!(!failed.status.success());
    let failed: Value = serde_json::from_slice(&failed.stdout).unwrap_or(Value::Null);

    let id = |r: &Value| r["id"].as_str().unwrap().to_owned();
    let (out, verified) = pgkeep.verify(&[&id(&gzip)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(verified["status"], "verified");
    let (out, _) = pgkeep.verify(&[&id(&selective)]);
    assert!(out.status.success(), "{}", stderr(&out));
    pgkeep.run_ok(&["delete", &id(&doomed)]);

    // The manifest carries the record as completed: same completion time and duration.
    let manifest = manifest_of(get, &zstd);
    assert_eq!(manifest["backup"]["completed_at"], zstd["completed_at"]);
    assert!(zstd["duration_ms"].as_u64().is_some(), "{zstd:#}");
    assert_eq!(manifest["backup"]["duration_ms"], zstd["duration_ms"]);

    let before = pgkeep.list();
    let statuses: Vec<&str> = before
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["failed", "deleted", "verified", "completed", "verified"],
        "{before:#?}"
    );
    let failed_id = before[0]["id"].as_str().unwrap().to_owned();
    if !failed.is_null() {
        assert_eq!(failed["id"], failed_id.as_str());
    }
    assert!(before[2]["verification"]["restore_duration_ms"]
        .as_u64()
        .is_some());
    let ids = vec![
        ("gzip", id(&gzip)),
        ("zstd", id(&zstd)),
        ("selective", id(&selective)),
        ("deleted", id(&doomed)),
        ("failed", failed_id),
    ];
    (before, ids)
}

/// Reads a repository key (a directory's file, or an object in the emulator's bucket).
type Get<'a> = &'a dyn Fn(&str) -> Vec<u8>;

fn manifest_of(get: Get, record: &Value) -> Value {
    let key = record["object_key"]
        .as_str()
        .unwrap()
        .replace(".pgkeep", ".manifest.json");
    serde_json::from_slice(&get(&key)).unwrap()
}

fn repair_json(pgkeep: &Pgkeep, args: &[&str]) -> Value {
    let mut all = vec!["repair", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&pgkeep.run_ok(&all)).expect("repair --json is JSON")
}

/// `list` and `backup` refuse beside a lost catalog, naming `pgkeep repair`; a dry run changes
/// nothing; repair brings back exactly the list from before; a second repair changes nothing.
fn refuse_then_repair(pgkeep: &Pgkeep, before: &[Value]) {
    for args in [&["list", "--json"][..], &["backup", "--json"][..]] {
        let out = pgkeep.run(args);
        assert!(!out.status.success(), "{args:?} ran beside a lost catalog");
        assert!(stderr(&out).contains("pgkeep repair"), "{}", stderr(&out));
    }

    let dry = repair_json(pgkeep, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        dry["changes"].as_array().unwrap().len(),
        before.len(),
        "{dry:#}"
    );
    assert!(!pgkeep.run(&["list"]).status.success(), "a dry run wrote");

    let report = repair_json(pgkeep, &[]);
    assert_eq!(report["backups"], before.len(), "{report:#}");
    assert!(report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["action"] == "add"));
    assert!(
        report["strays"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    assert_eq!(pgkeep.list(), before);

    let again = repair_json(pgkeep, &[]);
    assert!(again["changes"].as_array().unwrap().is_empty(), "{again:#}");
    assert_eq!(again["unchanged"], before.len());
    assert_eq!(pgkeep.list(), before);
}

#[test]
fn a_deleted_catalog_is_refused_then_rebuilt_from_the_repository() {
    let cluster = PgCluster::start().unwrap();
    let db = database(&cluster);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let get = |key: &str| std::fs::read(pgkeep.repo.join(key)).unwrap();
    let (before, ids) = history(&pgkeep, &cluster, &get);

    for name in [
        "catalog.sqlite3",
        "catalog.sqlite3-wal",
        "catalog.sqlite3-shm",
    ] {
        let _ = std::fs::remove_file(pgkeep.repo.join(name));
    }
    refuse_then_repair(&pgkeep, &before);

    // A stray object (no manifest, no state) is reported, left alone, and removed on request.
    let zstd = before
        .iter()
        .find(|r| r["id"] == ids[1].1.as_str())
        .unwrap();
    let stray_key = zstd["object_key"]
        .as_str()
        .unwrap()
        .replace(&ids[1].1[20..], "0badf00d");
    std::fs::copy(pgkeep.object_path(zstd), pgkeep.repo.join(&stray_key)).unwrap();
    let report = repair_json(&pgkeep, &[]);
    assert_eq!(report["strays"][0]["key"], stray_key.as_str(), "{report:#}");
    assert!(pgkeep.repo.join(&stray_key).exists());
    assert_eq!(pgkeep.list(), before);
    let report = repair_json(&pgkeep, &["--remove-strays"]);
    assert_eq!(report["removed"][0], stray_key.as_str(), "{report:#}");
    assert!(!pgkeep.repo.join(&stray_key).exists());

    // The rebuilt catalog works: the verified backup verifies again.
    let (out, verified) = pgkeep.verify(&[&ids[0].1]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(verified["status"], "verified");
}

#[test]
fn an_emptied_catalog_is_refused_and_a_new_repository_needs_nothing() {
    let cluster = PgCluster::start().unwrap();
    let db = database(&cluster);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    // A new repository: no ceremony.
    assert!(pgkeep.list().is_empty());
    let record = pgkeep.backup_ok(&[]);

    // Emptied (a zero-byte file is an empty SQLite database).
    for name in ["catalog.sqlite3-wal", "catalog.sqlite3-shm"] {
        let _ = std::fs::remove_file(pgkeep.repo.join(name));
    }
    std::fs::write(pgkeep.repo.join("catalog.sqlite3"), b"").unwrap();
    for args in [&["list"][..], &["backup"][..], &["status"][..]] {
        let out = pgkeep.run(args);
        assert!(
            !out.status.success(),
            "{args:?} ran beside an emptied catalog"
        );
        let err = stderr(&out);
        assert!(
            err.contains("holds no backups") && err.contains("run `pgkeep repair`"),
            "{err}"
        );
    }
    // Nothing was backed up while refused.
    assert_eq!(
        pgkeep.stored_files().len(),
        2,
        "{:?}",
        pgkeep.stored_files()
    );
    repair_json(&pgkeep, &[]);
    assert_eq!(pgkeep.list()[0]["id"], record["id"]);
}

#[test]
fn a_dropped_dynamodb_table_is_rebuilt_from_s3() {
    let Some(moto) = Moto::start() else { return };
    let cluster = PgCluster::start().unwrap();
    let db = database(&cluster);
    let pgkeep = Pgkeep::new()
        .database_url(cluster.url(&db))
        .with_urls(&moto.repo_url(), &moto.catalog_url(), &moto.key_url())
        .env("PGKEEP_AWS_ENDPOINT", &moto.endpoint);
    let get = |key: &str| moto.get(&moto.s3_key(key)).0;
    let (before, _) = history(&pgkeep, &cluster, &get);
    // Each change after completion is in the bucket too.
    let states = moto
        .objects()
        .into_iter()
        .filter(|k| k.ends_with(".state.json"))
        .count();
    assert_eq!(states, 4, "verified ×2, deleted, failed");

    // The table is lost and made again, empty (as `pgkeep init` will).
    moto.runtime.block_on(async {
        let client = aws_sdk_dynamodb::Client::new(&moto.config);
        client
            .delete_table()
            .table_name(&moto.table)
            .send()
            .await
            .unwrap();
        pgkeep::catalog::dynamodb::create_table(&client, &moto.table)
            .await
            .unwrap();
    });
    refuse_then_repair(&pgkeep, &before);
}

/// Each tampering with a manifest makes `verify` fail (non-zero exit, `verification_failed`)
/// with the difference named: two manifests swapped, 1000 added to every row count, the
/// wrapped keys of two manifests swapped, and an unknown `manifest_version`.
#[test]
fn verify_refuses_a_manifest_that_disagrees_with_its_backup() {
    let cluster = PgCluster::start().unwrap();
    let db = database(&cluster);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let backups: Vec<Value> = (0..6).map(|_| pgkeep.backup_ok(&[])).collect();
    let path = |r: &Value| {
        pgkeep.repo.join(
            r["object_key"]
                .as_str()
                .unwrap()
                .replace(".pgkeep", ".manifest.json"),
        )
    };
    let read =
        |r: &Value| -> Value { serde_json::from_slice(&std::fs::read(path(r)).unwrap()).unwrap() };
    let write =
        |r: &Value, m: &Value| std::fs::write(path(r), serde_json::to_vec(m).unwrap()).unwrap();

    // 0 and 1: manifests swapped.
    let (m0, m1) = (read(&backups[0]), read(&backups[1]));
    write(&backups[0], &m1);
    write(&backups[1], &m0);
    // 2: 1000 more rows in every count, in both places the manifest gives them.
    let mut m2 = read(&backups[2]);
    for n in m2["backup"]["row_counts"]
        .as_object_mut()
        .unwrap()
        .values_mut()
    {
        *n = (n.as_u64().unwrap() + 1000).into();
    }
    for t in m2["archive"]["tables"].as_array_mut().unwrap() {
        t["rows"] = (t["rows"].as_u64().unwrap() + 1000).into();
    }
    write(&backups[2], &m2);
    // 3 and 4: wrapped keys swapped.
    let (mut m3, mut m4) = (read(&backups[3]), read(&backups[4]));
    let k3 = m3["encryption"]["wrapped_key"].clone();
    m3["encryption"]["wrapped_key"] = m4["encryption"]["wrapped_key"].clone();
    m4["encryption"]["wrapped_key"] = k3;
    write(&backups[3], &m3);
    write(&backups[4], &m4);
    // 5: a version this pgkeep does not know.
    let mut m5 = read(&backups[5]);
    m5["manifest_version"] = 99.into();
    write(&backups[5], &m5);

    let one_count = backups[2]["row_counts"]["public.customers"]
        .as_u64()
        .unwrap();
    for (i, named) in [
        (
            0,
            format!("backup.id is {}", backups[1]["id"].as_str().unwrap()),
        ),
        (
            2,
            format!(
                "backup.row_counts[public.customers] is {}, the record says {one_count}",
                one_count + 1000
            ),
        ),
        (
            3,
            "encryption.wrapped_key differs from the object header's".to_owned(),
        ),
        (
            5,
            "manifest_version 99 is not one this pgkeep reads (1)".to_owned(),
        ),
    ] {
        let id = backups[i]["id"].as_str().unwrap();
        let (out, record) = pgkeep.verify(&[id]);
        assert_eq!(out.status.code(), Some(9), "backup {i}: {}", stderr(&out));
        assert_eq!(record["status"], "verification_failed", "backup {i}");
        let reason = record["verification"]["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("the manifest disagrees with the backup") && reason.contains(&named),
            "backup {i}: {reason}"
        );
        assert_eq!(pgkeep.show(id)["status"], "verification_failed");
    }
    // Put back, the same backup verifies.
    write(&backups[5], &{
        let mut m = m5.clone();
        m["manifest_version"] = 1.into();
        m
    });
    let (out, record) = pgkeep.verify(&[backups[5]["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(record["status"], "verified");
}
