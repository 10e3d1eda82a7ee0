//! `pgkeep restore` end to end: real PostgreSQL, the real binary. Each test checks that what
//! was refused changed nothing and that no working database is left behind.

use std::path::{Path, PathBuf};
use std::process::Output;

use pgkeep_tests::cli::{counts_by_name, record_counts, working_databases, Pgkeep};
use pgkeep_tests::{load_sample, unique_name, PgCluster};
use serde_json::Value;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A source with the sample data, a schema with awkward names and a large object.
fn source(cluster: &PgCluster) -> String {
    let db = format!("{} src's", unique_name("src"));
    cluster.create_database(&db).unwrap();
    load_sample(cluster, &db, 1).unwrap();
    cluster
        .psql(
            &db,
            r#"CREATE SCHEMA "Sales";
               CREATE TABLE "Sales"."Order Lines; x""y" (id int PRIMARY KEY, note text);
               INSERT INTO "Sales"."Order Lines; x""y" SELECT g, 'line ' || g FROM generate_series(1, 777) g;
               CREATE TABLE public.empty_table (id int);
               SELECT lo_from_bytea(0, 'a large object');"#,
        )
        .unwrap();
    db
}

/// A database the restore tests try to overwrite, with content of its own.
fn live_database(cluster: &PgCluster, name: &str) {
    cluster.create_database(name).unwrap();
    cluster
        .psql(
            name,
            "CREATE TABLE live_only (id int PRIMARY KEY, v text);
             INSERT INTO live_only SELECT g, 'live ' || g FROM generate_series(1, 321) g;",
        )
        .unwrap();
}

/// Stops background work that changes database sizes (autovacuum, autoanalyze) and settles
/// `databases`, so that sizes compared before and after something show only its writes. The
/// last step connects once more to each: the first session after a VACUUM rewrites the
/// relation cache file (`pg_internal.init`) in the database's directory, which counts in its
/// size.
fn quiesce(cluster: &PgCluster, databases: &[&str]) {
    cluster
        .psql(
            "postgres",
            "ALTER SYSTEM SET autovacuum = off; SELECT pg_reload_conf();",
        )
        .unwrap();
    for db in databases {
        cluster.psql(db, "VACUUM ANALYZE;").unwrap();
    }
    cluster.psql("postgres", "CHECKPOINT;").unwrap();
    for db in databases.iter().chain(&["postgres"]) {
        cluster.psql(db, "SELECT 1;").unwrap();
    }
}

fn large_objects(cluster: &PgCluster, db: &str) -> i64 {
    cluster
        .psql(db, "SELECT count(*) FROM pg_largeobject_metadata")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[test]
fn restores_into_new_databases_streamed_or_staged_match_the_manifest() {
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let backup = pgkeep.backup_ok(&[]);
    let id = backup["id"].as_str().unwrap();
    let manifest = record_counts(&backup);
    assert_eq!(manifest, counts_by_name(&cluster, &db).unwrap());

    // Streamed, into a name that needs quoting everywhere.
    let target = format!("{} copy; it's \"new\"", unique_name("restored"));
    let (out, report) = pgkeep.restore(&[id, "--target-db", &target]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["action"], "create_new");
    assert_eq!(report["target_database"], target.as_str());
    assert_eq!(report["safety_backup"], Value::Null);
    assert_eq!(counts_by_name(&cluster, &target).unwrap(), manifest);
    assert_eq!(large_objects(&cluster, &target), 1);

    // Staged for two parallel jobs: the staged plaintext is gone afterwards.
    let staging = tempfile::tempdir().unwrap();
    let staged_target = unique_name("restored_jobs");
    let (out, report) = pgkeep.restore(&[
        id,
        "--target-db",
        &staged_target,
        "--jobs",
        "2",
        "--staging-dir",
        staging.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["jobs"], 2);
    assert_eq!(counts_by_name(&cluster, &staged_target).unwrap(), manifest);
    assert!(
        files_in(staging.path()).is_empty(),
        "{:?}",
        files_in(staging.path())
    );

    // Each restore is in the audit trail: who, what, where, how it ended.
    let audit = pgkeep.audit();
    let restores: Vec<_> = audit.iter().filter(|a| a.action == "restore").collect();
    assert_eq!(restores.len(), 2);
    assert_eq!(restores[0].database, staged_target);
    assert_eq!(restores[1].database, target);
    for entry in &restores {
        assert_eq!(entry.outcome, "ok");
        assert_eq!(entry.backup_id.as_ref().map(|b| b.as_str()), Some(id));
        assert!(!entry.actor.is_empty());
        assert!(entry.details["duration_ms"].as_u64().is_some());
    }
    assert_eq!(restores[0].details["options"]["jobs"], 2);
    assert!(working_databases(&cluster).is_empty());
}

#[test]
fn an_existing_database_is_replaced_only_with_the_typed_confirmation_after_a_safety_backup() {
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let backup = pgkeep.backup_ok(&[]);
    let id = backup["id"].as_str().unwrap();
    let live = format!("{} live", unique_name("live"));
    live_database(&cluster, &live);
    quiesce(&cluster, &[&db, &live]);
    let live_counts = counts_by_name(&cluster, &live).unwrap();
    let sizes = cluster.database_sizes().unwrap();

    let refusals: [(&[&str], i32, &str); 4] = [
        (&[], 8, "already exists"),
        (&["--overwrite"], 2, "needs its name typed again"),
        (&["--overwrite", "--confirm", "live"], 2, "does not match"),
        (&["--confirm", &live], 2, "--overwrite"),
    ];
    for (extra, code, message) in refusals {
        let mut args = vec![id, "--target-db", &live];
        args.extend_from_slice(extra);
        let (out, _) = pgkeep.restore(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{extra:?}: {err}");
        assert!(err.contains(message), "{extra:?}: {err}");
        assert_eq!(
            counts_by_name(&cluster, &live).unwrap(),
            live_counts,
            "{extra:?}"
        );
        assert_eq!(cluster.database_sizes().unwrap(), sizes, "{extra:?}");
        assert_eq!(pgkeep.list().len(), 1, "{extra:?}: a backup was taken");
    }

    let (out, report) =
        pgkeep.restore(&[id, "--target-db", &live, "--overwrite", "--confirm", &live]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["action"], "replace_existing");
    assert_eq!(
        counts_by_name(&cluster, &live).unwrap(),
        record_counts(&backup)
    );

    // The safety backup holds the database as it was, and completed before it was touched.
    let safety_id = report["safety_backup"].as_str().expect("a safety backup");
    let safety = pgkeep.show(safety_id);
    assert_eq!(safety["kind"], "pre_restore");
    assert_eq!(safety["status"], "completed");
    assert_eq!(safety["database"], live.as_str());
    assert_eq!(record_counts(&safety), live_counts);
    let completed = chrono_time(&safety["completed_at"]);
    let touched = chrono_time(&report["target_replaced_at"]);
    assert!(
        completed < touched,
        "safety backup completed {completed}, target touched {touched}"
    );
    let audit = pgkeep.audit();
    let entry = audit
        .iter()
        .find(|a| a.action == "restore" && a.outcome == "ok")
        .unwrap();
    assert_eq!(entry.details["report"]["safety_backup"], safety_id);
    assert_eq!(entry.details["options"]["overwrite"], true);
    // The refusals are on record too.
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.action == "restore" && a.outcome.starts_with("failed"))
            .count(),
        3
    );

    // And the previous contents can be brought back the same way.
    let (out, _) = pgkeep.restore(&[safety_id, "--target-db", &unique_name("previous")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(working_databases(&cluster).is_empty());
}

fn chrono_time(v: &Value) -> String {
    // RFC 3339 with a fixed format (UTC, milliseconds or more) sorts as text.
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    assert!(s.ends_with('Z'), "{s}");
    s.to_owned()
}

#[test]
fn a_dry_run_checks_and_lists_but_writes_nothing() {
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let live = unique_name("live");
    live_database(&cluster, &live);
    quiesce(&cluster, &[&db, &live]);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let backup = pgkeep.backup_ok(&[]);
    let id = backup["id"].as_str().unwrap();

    let names = cluster.database_names().unwrap();
    let sizes = cluster.database_sizes().unwrap();
    let stored = pgkeep.stored_files();
    let audit = pgkeep.audit().len();
    let staging = tempfile::tempdir().unwrap();

    let new_target = unique_name("would_be_new");
    let out = pgkeep.run(&["restore", id, "--target-db", &new_target, "--dry-run"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        listing.contains("TABLE DATA public pgbench_accounts"),
        "{listing}"
    );
    assert!(listing.contains("Nothing was written"), "{listing}");
    let (out, report) = pgkeep.restore(&[
        id,
        "--target-db",
        &live,
        "--overwrite",
        "--confirm",
        &live,
        "--dry-run",
        "--jobs",
        "2",
        "--staging-dir",
        staging.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["action"], "replace_existing");
    assert_eq!(report["tables"], record_counts(&backup).len());
    assert!(report["listing"].as_str().unwrap().contains("BLOBS"));

    assert_eq!(cluster.database_names().unwrap(), names);
    assert_eq!(cluster.database_sizes().unwrap(), sizes);
    assert_eq!(pgkeep.stored_files(), stored);
    assert_eq!(pgkeep.list().len(), 1, "a safety backup was taken");
    assert_eq!(pgkeep.audit().len(), audit);
    assert!(files_in(staging.path()).is_empty());

    // A dry run reads the whole object: a flipped byte anywhere is caught.
    let object = pgkeep.object_path(&backup);
    let mut bytes = std::fs::read(&object).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&object, &bytes).unwrap();
    let (out, _) = pgkeep.restore(&[id, "--target-db", &new_target, "--dry-run"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("checksum mismatch"),
        "{}",
        stderr(&out)
    );
    assert_eq!(cluster.database_names().unwrap(), names);
}

#[test]
fn a_corrupt_backup_is_refused_before_any_database_is_touched() {
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let live = unique_name("live");
    live_database(&cluster, &live);
    let live_counts = counts_by_name(&cluster, &live).unwrap();
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let backup = pgkeep.backup_ok(&[]);
    let id = backup["id"].as_str().unwrap();
    let object = pgkeep.object_path(&backup);
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&object, &bytes).unwrap();
    let names = cluster.database_names().unwrap();

    let new_target = unique_name("never");
    for args in [
        vec![id, "--target-db", new_target.as_str()],
        vec![id, "--target-db", new_target.as_str(), "--jobs", "2"],
        vec![
            id,
            "--target-db",
            live.as_str(),
            "--overwrite",
            "--confirm",
            live.as_str(),
        ],
    ] {
        let (out, _) = pgkeep.restore(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains("checksum mismatch"), "{args:?}: {err}");
        assert_eq!(cluster.database_names().unwrap(), names, "{args:?}");
        assert_eq!(counts_by_name(&cluster, &live).unwrap(), live_counts);
        assert_eq!(
            pgkeep.list().len(),
            1,
            "{args:?}: a safety backup was taken"
        );
    }
}

#[test]
fn a_restore_failing_midway_leaves_no_target_and_the_old_one_intact() {
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let admin = Pgkeep::new().database_url(cluster.url(&db));
    let backup = admin.backup_ok(&[]);
    let id = backup["id"].as_str().unwrap();

    // A role that may create databases but cannot hand objects to the original owner: with
    // the owners kept, pg_restore fails after it has created tables and loaded data.
    let password = cluster.create_role("restorer", "CREATEDB").unwrap();
    let restore = |args: &[&str]| -> Output {
        let mut all = vec!["restore"];
        all.extend_from_slice(args);
        admin
            .command()
            .env(
                "PGKEEP_DATABASE_URL",
                cluster.url_as("restorer", &password, "postgres"),
            )
            .args(&all)
            .output()
            .unwrap()
    };
    let names = cluster.database_names().unwrap();
    let staging = tempfile::tempdir().unwrap();
    let target = unique_name("half");
    for extra in [
        &[][..],
        &[
            "--jobs",
            "2",
            "--staging-dir",
            staging.path().to_str().unwrap(),
        ][..],
    ] {
        let mut args = vec![id, "--target-db", &target];
        args.extend_from_slice(extra);
        let out = restore(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(6), "{extra:?}: {err}");
        assert!(err.contains("pg_restore failed"), "{extra:?}: {err}");
        assert_eq!(cluster.database_names().unwrap(), names, "{extra:?}");
        assert!(files_in(staging.path()).is_empty());
    }
    let audit = admin.audit();
    assert!(
        audit[0].outcome.contains("pg_restore failed"),
        "{}",
        audit[0].outcome
    );

    // Replacing a database of its own fails the same way: the old one is left as it was,
    // and its safety backup (into the same repository) was taken first.
    let own = unique_name("own");
    cluster.create_database(&own).unwrap();
    cluster
        .psql(
            "postgres",
            &format!("ALTER DATABASE {own} OWNER TO restorer;"),
        )
        .unwrap();
    let psql_as_restorer = |sql: &str| {
        let mut child = cluster
            .command("psql")
            .env("PGUSER", "restorer")
            .env("PGPASSWORD", &password)
            .env("PGDATABASE", &own)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .spawn()
            .unwrap();
        assert!(child.wait().unwrap().success());
    };
    psql_as_restorer("CREATE TABLE mine AS SELECT g FROM generate_series(1, 42) g;");
    let own_counts = counts_by_name(&cluster, &own).unwrap();
    let out = restore(&[id, "--target-db", &own, "--overwrite", "--confirm", &own]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("pg_restore failed"), "{err}");
    assert_eq!(counts_by_name(&cluster, &own).unwrap(), own_counts);
    let safety: Vec<Value> = admin
        .list()
        .into_iter()
        .filter(|r| r["kind"] == "pre_restore")
        .collect();
    assert_eq!(safety.len(), 1);
    assert_eq!(safety[0]["status"], "completed");

    // Without the original owners it restores.
    let out = restore(&[id, "--target-db", &target, "--no-owner"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        counts_by_name(&cluster, &target).unwrap(),
        record_counts(&backup)
    );
    assert!(working_databases(&cluster).is_empty());
}

#[test]
fn an_interrupted_restore_leaves_nothing_behind() {
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let backup = pgkeep.backup_ok(&[]);
    let id = backup["id"].as_str().unwrap();
    let names = cluster.database_names().unwrap();
    let target = unique_name("interrupted");
    let out =
        pgkeep.interrupt_during_pg_restore(&cluster, &["restore", id, "--target-db", &target]);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert_eq!(cluster.database_names().unwrap(), names);
    assert!(working_databases(&cluster).is_empty());
}
