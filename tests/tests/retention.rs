//! Retention, reaping and health end to end: real PostgreSQL, the real `pgkeep` binary.
//!
//! Time-dependent checks are deterministic: `status` and `prune --dry-run` take a hidden
//! `--now`, so "older than the limit" is arranged by choosing the time of assessment, never by
//! waiting.

use std::path::PathBuf;

use chrono::{DateTime, TimeDelta, Utc};
use pgkeep::catalog::sqlite::SqliteCatalog;
use pgkeep::catalog::Catalog;
use pgkeep::model::{format_time, BackupId, BackupKind, BackupRecord, Compression};
use pgkeep::store::fs::FsStore;
use pgkeep::store::ObjectStore;
use pgkeep_tests::cli::Pgkeep;
use pgkeep_tests::{unique_name, PgCluster};
use serde_json::Value;

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn catalog(pgkeep: &Pgkeep) -> SqliteCatalog {
    SqliteCatalog::open(pgkeep.repo.join("catalog.sqlite3")).unwrap()
}

fn created_at(record: &Value) -> DateTime<Utc> {
    record["created_at"].as_str().unwrap().parse().unwrap()
}

fn manifest_path(pgkeep: &Pgkeep, record: &Value) -> PathBuf {
    let object = pgkeep.object_path(record);
    object.with_file_name(
        object
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".pgkeep", ".manifest.json"),
    )
}

fn status(pgkeep: &Pgkeep, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["status", "--json"];
    all.extend_from_slice(args);
    let out = pgkeep.run(&all);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn prune_keeps_what_the_policy_says_and_status_reports_health() {
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("retain");
    cluster.create_database(&db).unwrap();
    cluster
        .psql(
            &db,
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g;",
        )
        .unwrap();
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));

    // An empty catalog is not healthy: a monitor pointed at the wrong place must not be green.
    let (code, _, stderr) = status(&pgkeep, &[]);
    assert_eq!(code, 11, "{stderr}");
    assert!(stderr.contains("no backups in the catalog"), "{stderr}");

    let mut backups: Vec<Value> = (0..4).map(|_| pgkeep.backup_ok(&[])).collect();
    let safety = pgkeep.backup_ok(&["--kind", "pre_restore"]);
    backups.sort_by_key(|r| r["id"].as_str().unwrap().to_owned());
    let newest = backups.last().unwrap().clone();
    let ids = |rs: &[Value]| -> Vec<String> {
        rs.iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };

    // ---- status: healthy now, unhealthy when the newest good backup is older than the limit.
    let (code, json, stderr) = status(&pgkeep, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json[0]["database"], db.as_str());
    assert_eq!(json[0]["healthy"], true);
    assert_eq!(json[0]["max_age_seconds"], 25 * 3600);
    // The pre_restore safety copy is newer, but it is never the newest good backup.
    assert_eq!(json[0]["latest_good"]["id"], newest["id"]);
    let newest_good = created_at(&newest);
    let at = |d: TimeDelta| format_time(newest_good + d);
    let (code, json, stderr) = status(&pgkeep, &["--now", &at(TimeDelta::hours(26))]);
    assert_eq!(code, 11, "{json:#}");
    assert_eq!(json[0]["healthy"], false);
    assert!(
        json[0]["problems"][0]
            .as_str()
            .unwrap()
            .contains("more than the limit of 1d1h"),
        "{json:#}"
    );
    assert!(stderr.contains(&format!("unhealthy: {db}")), "{stderr}");
    let (code, _, _) = status(
        &pgkeep,
        &["--max-age", "2h", "--now", &at(TimeDelta::minutes(119))],
    );
    assert_eq!(code, 0);
    let out = pgkeep
        .command()
        .env("PGKEEP_MAX_AGE", "2h")
        .args(["status", "--now", &at(TimeDelta::minutes(121))])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(11));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{db}: UNHEALTHY")), "{text}");
    let out = pgkeep.run(&["status", "--max-age", "25"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a duration without a unit is refused"
    );

    // ---- prune --dry-run: the plan, and nothing changed.
    let files_before = pgkeep.stored_files();
    let list_before = pgkeep.list();
    let out = pgkeep.run_ok(&["prune", "--dry-run", "--keep-last", "2", "--json"]);
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["dry_run"], true);
    let decisions = plan["plan"]["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 5);
    let removed: Vec<Value> = decisions
        .iter()
        .filter(|d| d["action"] == "remove")
        .cloned()
        .collect();
    assert_eq!(
        ids(&removed),
        ids(&backups[..2]).into_iter().rev().collect::<Vec<_>>()
    );
    assert!(removed.iter().all(|d| d["reasons"][0] == "outside policy"));
    let kept_safety = decisions.iter().find(|d| d["id"] == safety["id"]).unwrap();
    assert_eq!(
        kept_safety["reasons"][0],
        "pre-restore copy younger than 30d"
    );
    assert_eq!(pgkeep.stored_files(), files_before);
    assert_eq!(pgkeep.list(), list_before);
    // The human plan says the same.
    let text = pgkeep.run_ok(&["prune", "--dry-run", "--keep-last", "2"]);
    assert!(text.contains("2 to remove, 3 kept"), "{text}");
    assert!(text.contains("dry run: nothing was changed"), "{text}");
    // As of 31 days later the safety copy would go too (what-if, still a dry run).
    let later = format_time(newest_good + TimeDelta::days(31));
    let out = pgkeep.run_ok(&[
        "prune",
        "--dry-run",
        "--keep-last",
        "2",
        "--json",
        "--now",
        &later,
    ]);
    let plan: Value = serde_json::from_str(&out).unwrap();
    let safety_decision = plan["plan"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == safety["id"])
        .unwrap()
        .clone();
    assert_eq!(safety_decision["action"], "remove", "{safety_decision:#}");
    let out = pgkeep.run(&["prune", "--keep-last", "2", "--now", &later]);
    assert_eq!(out.status.code(), Some(2), "--now only with --dry-run");
    assert_eq!(pgkeep.stored_files(), files_before);

    // ---- an empty policy is refused.
    let out = pgkeep.run(&["prune"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the retention policy is empty"));

    // ---- prune for real, the policy from the environment.
    let out = pgkeep
        .command()
        .env("PGKEEP_KEEP_LAST", "2")
        .args(["prune", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut deleted: Vec<String> = result["report"]["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    deleted.sort();
    assert_eq!(deleted, ids(&backups[..2]));
    for r in &backups[..2] {
        assert!(
            !pgkeep.object_path(r).exists(),
            "object of {} remains",
            r["id"]
        );
        assert!(
            !manifest_path(&pgkeep, r).exists(),
            "manifest of {} remains",
            r["id"]
        );
    }
    for r in backups[2..].iter().chain([&safety]) {
        assert!(pgkeep.object_path(r).exists());
        assert!(manifest_path(&pgkeep, r).exists());
    }
    let listed = pgkeep.list();
    for r in &listed {
        let expected = if deleted.contains(&r["id"].as_str().unwrap().to_owned()) {
            "deleted"
        } else {
            "completed"
        };
        assert_eq!(r["status"], expected, "{r:#}");
    }
    // Each deletion is in the audit trail.
    let audit = block_on(catalog(&pgkeep).list_audit(Some(&db), 10)).unwrap();
    let mut audited: Vec<String> = audit
        .iter()
        .map(|e| e.backup_id.as_ref().unwrap().to_string())
        .collect();
    audited.sort();
    assert_eq!(audited, deleted);
    assert!(audit
        .iter()
        .all(|e| e.action == "prune" && e.outcome == "ok"));

    // A kept backup still reads back whole.
    let restored = unique_name("retain_restored");
    cluster.create_database(&restored).unwrap();
    pgkeep
        .restore_with_cat(&cluster, newest["id"].as_str().unwrap(), &restored)
        .unwrap();

    // Pruning again removes nothing more.
    let out = pgkeep.run_ok(&["prune", "--keep-last", "2"]);
    assert!(out.contains("0 to remove, 3 kept"), "{out}");
    assert!(out.contains("removed 0 backups"), "{out}");
}

#[test]
fn a_backup_reaps_an_abandoned_run_of_its_database_first() {
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("reap");
    cluster.create_database(&db).unwrap();
    cluster.psql(&db, "CREATE TABLE t (id int);").unwrap();
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    pgkeep.backup_ok(&[]);

    // A run that died an hour ago: its record still in progress, its object already committed.
    let started = Utc::now() - TimeDelta::hours(1);
    let mut crashed = BackupRecord::start(
        BackupId::generate(started),
        &db,
        BackupKind::Scheduled,
        Compression::Zstd,
    );
    crashed.created_at = started;
    let store = FsStore::new(&pgkeep.repo);
    block_on(async {
        catalog(&pgkeep).insert(&crashed).await.unwrap();
        store
            .put(&crashed.object_key, b"partial".to_vec())
            .await
            .unwrap();
    });
    // And a young one: age does not matter, only whether a live run holds the lease, and no
    // run holds it (the runs that keep their leases are in failures/runs.rs).
    let mut young = BackupRecord::start(
        BackupId::generate(Utc::now()),
        &db,
        BackupKind::Scheduled,
        Compression::Zstd,
    );
    young.created_at = Utc::now();
    block_on(catalog(&pgkeep).insert(&young)).unwrap();

    pgkeep.backup_ok(&[]);
    for id in [&crashed.id, &young.id] {
        let reaped = block_on(catalog(&pgkeep).get(id)).unwrap();
        assert_eq!(reaped.status.as_str(), "failed");
        let error = reaped.error.as_deref().unwrap();
        assert!(error.starts_with("abandoned: its run is gone"), "{error}");
    }
    assert!(block_on(catalog(&pgkeep).get(&crashed.id))
        .unwrap()
        .error
        .unwrap()
        .contains("found 1h after it started"));
    assert!(!pgkeep.repo.join(&crashed.object_key).exists());

    // Nothing is left for a prune to reap.
    let out = pgkeep.run_ok(&["prune", "--keep-last", "5"]);
    assert!(out.contains("0 abandoned"), "{out}");
}

#[test]
fn per_kind_windows_prune_by_kind_and_show_when_each_backup_expires() {
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("perkind");
    cluster.create_database(&db).unwrap();
    cluster
        .psql(
            &db,
            "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g;",
        )
        .unwrap();
    let plain = Pgkeep::new().database_url(cluster.url(&db));
    let old_scheduled = plain.backup_ok(&["--kind", "scheduled"]);
    let manual = plain.backup_ok(&["--kind", "manual"]);
    let migration = plain.backup_ok(&["--kind", "pre-migration"]);
    let newest = plain.backup_ok(&["--kind", "scheduled"]);
    let kinds = "scheduled=7d,manual=30d,pre_migration=365d";
    // The policy prune would apply, from the environment as the functions get it.
    let with_policy = |args: &[&str]| -> String {
        let out = plain
            .command()
            .env("PGKEEP_KEEP_LAST", "1")
            .env("PGKEEP_KEEP_WITHIN_KIND", kinds)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let show = |r: &Value| -> Value {
        serde_json::from_str(&with_policy(&["show", r["id"].as_str().unwrap(), "--json"])).unwrap()
    };
    let id = |r: &Value| r["id"].as_str().unwrap().to_owned();
    let plus = |r: &Value, days: i64| created_at(r) + TimeDelta::days(days);

    // ---- show: the date each expires (its window from when it was taken), or why it stays.
    for (record, days, why) in [
        (&old_scheduled, 7, "scheduled backup younger than 7d"),
        (&manual, 30, "manual backup younger than 30d"),
        (&migration, 365, "pre_migration backup younger than 365d"),
    ] {
        let shown = show(record);
        let expires: DateTime<Utc> = shown["expires_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(expires, plus(record, days), "{shown:#}");
        assert_eq!(
            shown["expiry"].as_str().unwrap(),
            format!("kept until {}: {why}", format_time(expires)),
            "{shown:#}"
        );
        let text = with_policy(&["show", &id(record)]);
        assert!(
            text.contains(&format!("expires:         {}", format_time(expires))),
            "{text}"
        );
    }
    let shown = show(&newest);
    assert_eq!(shown["expires_at"], Value::Null, "{shown:#}");
    assert!(shown["expiry"]
        .as_str()
        .unwrap()
        .starts_with("kept while last (1 of 1)"));
    // list --json carries the same; without a policy neither shows an expiry.
    let listed: Vec<Value> = serde_json::from_str(&with_policy(&["list", "--json"])).unwrap();
    let of = |rs: &[Value], r: &Value| rs.iter().find(|x| x["id"] == r["id"]).unwrap().clone();
    assert_eq!(
        of(&listed, &manual)["expires_at"],
        show(&manual)["expires_at"]
    );
    assert!(plain.show(&id(&manual)).get("expiry").is_none());

    // ---- prune plans per kind, as of later dates (dry runs).
    let plan_at = |days: i64| -> Vec<String> {
        let out = with_policy(&[
            "prune",
            "--dry-run",
            "--json",
            "--now",
            &format_time(plus(&newest, days)),
        ]);
        let plan: Value = serde_json::from_str(&out).unwrap();
        let mut removed: Vec<String> = plan["plan"]["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["action"] == "remove")
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect();
        removed.sort();
        removed
    };
    assert!(plan_at(6).is_empty());
    assert_eq!(plan_at(8), [id(&old_scheduled)]);
    assert_eq!(plan_at(31), [id(&old_scheduled), id(&manual)]);
    assert_eq!(
        plan_at(366),
        [id(&old_scheduled), id(&manual), id(&migration)]
    );

    // ---- bad input is refused naming the setting; a per-kind window alone is not a policy.
    for (args, says) in [
        (
            vec![
                "prune",
                "--dry-run",
                "--keep-last",
                "1",
                "--keep-within-kind",
                "daily=3d",
            ],
            "unknown BackupKind \"daily\"",
        ),
        (
            vec![
                "prune",
                "--dry-run",
                "--keep-last",
                "1",
                "--keep-within-kind",
                "pre_restore=3d",
            ],
            "--pre-restore-keep-within",
        ),
    ] {
        let out = plain.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("--keep-within-kind") && stderr.contains(says),
            "{stderr}"
        );
    }
    let out = plain.run(&["prune", "--dry-run", "--keep-within-kind", "manual=1d"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the retention policy is empty"));

    // ---- prune for real with the flag: a window already over removes that kind only.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while Utc::now() <= created_at(&manual) + TimeDelta::seconds(2) {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = plain.run_ok(&[
        "prune",
        "--json",
        "--keep-last",
        "1",
        "--keep-within-kind",
        "scheduled=7d,manual=1s,pre_migration=365d",
    ]);
    let result: Value = serde_json::from_str(&out).unwrap();
    let deleted: Vec<&str> = result["report"]["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().or_else(|| d["id"].as_str()).unwrap())
        .collect();
    assert_eq!(deleted, [id(&manual)], "{result:#}");
    assert_eq!(plain.show(&id(&manual))["status"], "deleted");
    assert_eq!(plain.show(&id(&migration))["status"], "completed");
    assert_eq!(plain.show(&id(&old_scheduled))["status"], "completed");
}
