//! `pgkeep verify` end to end: real PostgreSQL, the real binary, real restores into scratch
//! databases. Every test ends by checking that no scratch database is left on the server.

use std::collections::BTreeMap;
use std::process::Stdio;

use pgkeep_tests::cli::{counts_by_name, record_counts, working_databases, Pgkeep};
use pgkeep_tests::{load_sample, unique_name, PgCluster};
use serde_json::Value;

/// Several schemas, mixed-case and quoted names (a table named with a space, a quote and a
/// semicolon), an empty table, a partitioned table with an index and a primary key, a
/// materialized view with an index, a view, a standalone sequence, serial and identity
/// columns, functions and a procedure (one taking an extension's type), two large objects and
/// two extensions.
const AWKWARD_SQL: &str = r#"
CREATE EXTENSION pg_trgm;
CREATE EXTENSION hstore;
CREATE SCHEMA "Sales";
CREATE SCHEMA inventory;
CREATE TABLE "Sales"."Order Lines; x""y" (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text, attrs hstore);
INSERT INTO "Sales"."Order Lines; x""y" (note, attrs)
    SELECT 'line ' || g, hstore('k', g::text) FROM generate_series(1, 777) g;
CREATE INDEX "Order Notes (trgm)" ON "Sales"."Order Lines; x""y" USING gin (note gin_trgm_ops);
CREATE TABLE "Sales"."MixedCase" ("Id" int PRIMARY KEY, "Name" text UNIQUE);
INSERT INTO "Sales"."MixedCase" SELECT g, 'name ' || g FROM generate_series(1, 50) g;
CREATE VIEW "Sales"."Recent Lines" AS
    SELECT id, note FROM "Sales"."Order Lines; x""y" WHERE id > 700;
CREATE TABLE public.empty_table (id int);
CREATE TABLE public.serials (id serial PRIMARY KEY, v text);
INSERT INTO public.serials (v) SELECT 'v' || g FROM generate_series(1, 10) g;
CREATE TABLE inventory.events (id bigint, at date NOT NULL, payload text) PARTITION BY RANGE (at);
CREATE TABLE inventory.events_2023 PARTITION OF inventory.events
    FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE inventory.events_2024 PARTITION OF inventory.events
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
ALTER TABLE inventory.events ADD PRIMARY KEY (id, at);
CREATE INDEX events_at ON inventory.events (at);
INSERT INTO inventory.events
    SELECT g, DATE '2023-06-01' + (g % 400), 'payload ' || g FROM generate_series(1, 3000) g;
CREATE MATERIALIZED VIEW inventory.event_totals AS
    SELECT at, count(*) AS n FROM inventory.events GROUP BY at;
CREATE UNIQUE INDEX event_totals_at ON inventory.event_totals (at);
CREATE SEQUENCE inventory.ticket_seq START 1000;
SELECT nextval('inventory.ticket_seq') FROM generate_series(1, 5);
CREATE FUNCTION inventory.total(p_from date, p_to date) RETURNS bigint LANGUAGE sql
    AS $$ SELECT count(*) FROM inventory.events WHERE at BETWEEN p_from AND p_to $$;
CREATE FUNCTION "Sales"."Tag Of"(h hstore) RETURNS text LANGUAGE sql AS $$ SELECT h -> 'k' $$;
CREATE PROCEDURE inventory.touch() LANGUAGE sql AS $$ SELECT 1 $$;
SELECT lo_from_bytea(0, 'large object one'), lo_from_bytea(0, 'large object two');
"#;

fn awkward_database(cluster: &PgCluster) -> String {
    let db = format!("{} it's; \"awkward\"", unique_name("awkward"));
    cluster.create_database(&db).unwrap();
    cluster.psql(&db, AWKWARD_SQL).unwrap();
    db
}

/// How many tables, sequences, indexes, constraints, views, materialized views, functions,
/// procedures and extensions `pg_restore --list` shows for a backup: an independent count of
/// what a verification must compare.
fn declared_objects(pgkeep: &Pgkeep, cluster: &PgCluster, id: &str) -> usize {
    let archive = pgkeep.dir.path().join("listed.dump");
    pgkeep.run_ok(&["cat", id, "-o", archive.to_str().unwrap()]);
    let out = cluster
        .command("pg_restore")
        .arg("--list")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::remove_file(&archive).unwrap();
    // Longest first, so "TABLE DATA" is not taken for "TABLE".
    const DESCS: &[(&str, bool)] = &[
        ("MATERIALIZED VIEW DATA", false),
        ("MATERIALIZED VIEW", true),
        ("SEQUENCE OWNED BY", false),
        ("SEQUENCE SET", false),
        ("SEQUENCE", true),
        ("TABLE ATTACH", false),
        ("TABLE DATA", false),
        ("TABLE", true),
        ("INDEX ATTACH", false),
        ("INDEX", true),
        ("CONSTRAINT", true),
        ("VIEW", true),
        ("FUNCTION", true),
        ("PROCEDURE", true),
        ("EXTENSION", true),
    ];
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .filter(|rest| {
            DESCS
                .iter()
                .find(|(d, _)| rest.starts_with(&format!("{d} ")))
                .is_some_and(|(_, counted)| *counted)
        })
        .count()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The verification's per-table report as `table -> (expected, actual)`.
fn table_report(record: &Value) -> BTreeMap<String, (Option<u64>, Option<u64>)> {
    record["verification"]["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_owned(),
                (t["expected"].as_u64(), t["actual"].as_u64()),
            )
        })
        .collect()
}

#[test]
fn an_awkward_database_verifies_with_exact_counts() {
    let cluster = PgCluster::start().unwrap();
    let db = awkward_database(&cluster);
    let source = counts_by_name(&cluster, &db).unwrap();
    assert_eq!(source["\"Sales\".\"Order Lines; x\"\"y\""], 777);
    assert_eq!(source["public.empty_table"], 0);
    assert_eq!(
        source["inventory.events_2023"] + source["inventory.events_2024"],
        3000
    );

    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let backup = pgkeep.backup_ok(&[]);
    let id = backup["id"].as_str().unwrap();
    let (out, record) = pgkeep.verify(&[id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(record["status"], "verified", "{record:#}");
    let v = &record["verification"];
    assert_eq!(v["ok"], true);
    assert_eq!(v["result"], "verified");
    assert!(v["restore_duration_ms"].as_u64().is_some(), "{v:#}");
    let declared = declared_objects(&pgkeep, &cluster, id);
    assert!(
        declared >= 25,
        "the fixture declares only {declared} objects"
    );
    assert_eq!(v["objects_checked"], declared as u64, "{v:#}");
    assert_eq!(v["missing_objects"], serde_json::json!([]), "{v:#}");
    assert_eq!(v["extra_objects"], serde_json::json!([]), "{v:#}");
    assert_eq!(v["large_objects"]["expected"], 2);
    assert_eq!(v["large_objects"]["actual"], 2);
    // Every table of the source, with exactly its rows, expected and found.
    let report = table_report(&record);
    let wanted: BTreeMap<String, (Option<u64>, Option<u64>)> = source
        .iter()
        .map(|(t, n)| (t.clone(), (Some(*n), Some(*n))))
        .collect();
    assert_eq!(report, wanted);
    assert_eq!(record_counts(&record), source);

    // Stored: `show` says the same, and the audit trail has the verification.
    assert_eq!(pgkeep.show(id)["status"], "verified");
    let audit = pgkeep.audit();
    assert_eq!(audit[0].action, "verify");
    assert_eq!(audit[0].outcome, "ok");
    assert!(
        working_databases(&cluster).is_empty(),
        "{:?}",
        working_databases(&cluster)
    );

    // Verifying again is allowed and still verifies; without an id there is nothing to do.
    let (out, again) = pgkeep.verify(&[id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(again["status"], "verified");
    let (out, none) = pgkeep.verify(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(none, Value::Null);
    assert!(working_databases(&cluster).is_empty());
}

#[test]
fn a_backup_taken_while_pgbench_writes_verifies() {
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("busy");
    cluster.create_database(&db).unwrap();
    load_sample(&cluster, &db, 2).unwrap();
    let mut bench = cluster
        .pgbench(&db, &["-c", "2", "-j", "2", "-T", "300", "--no-vacuum"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let history = || -> i64 {
        cluster
            .psql(&db, "SELECT count(*) FROM pgbench_history")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while history() == 0 {
        assert!(std::time::Instant::now() < deadline, "pgbench never wrote");
        std::thread::yield_now();
    }
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let backup = pgkeep.backup_ok(&[]);
    let in_backup = record_counts(&backup)["public.pgbench_history"] as i64;
    assert!(in_backup > 0);
    // Writes go on while the backup is verified (without an id: the scheduled path).
    let (out, record) = pgkeep.verify(&[]);
    let after = history();
    bench.kill().unwrap();
    bench.wait().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(record["id"], backup["id"]);
    assert_eq!(record["status"], "verified", "{record:#}");
    assert!(
        after > in_backup,
        "pgbench kept writing ({after} vs {in_backup})"
    );
    let report = table_report(&record);
    assert_eq!(
        report["public.pgbench_history"],
        (Some(in_backup as u64), Some(in_backup as u64))
    );
    assert!(
        report.values().all(|(e, a)| e.is_some() && e == a),
        "{report:?}"
    );
    assert!(working_databases(&cluster).is_empty());
}

#[test]
fn a_flipped_byte_fails_verification_with_the_checksum_reason() {
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("flipped");
    cluster.create_database(&db).unwrap();
    load_sample(&cluster, &db, 1).unwrap();
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let backup = pgkeep.backup_ok(&[]);
    let id = backup["id"].as_str().unwrap();
    let object = pgkeep.object_path(&backup);
    let original = std::fs::read(&object).unwrap();

    // In a data chunk (authentication fails first), in the header (the key does not unwrap
    // or the header does not parse), and in the last byte: the reason is the checksum each time.
    for pos in [original.len() / 2, 40, original.len() - 1] {
        let mut bytes = original.clone();
        bytes[pos] ^= 0x01;
        std::fs::write(&object, &bytes).unwrap();
        let (out, record) = pgkeep.verify(&[id]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "byte {pos}: {err}");
        assert_eq!(record["status"], "verification_failed", "byte {pos}");
        let v = &record["verification"];
        assert_eq!(v["result"], "unreadable");
        let reason = v["reason"].as_str().unwrap();
        assert!(reason.contains("checksum mismatch"), "byte {pos}: {reason}");
        assert!(err.contains("checksum mismatch"), "byte {pos}: {err}");
        assert!(v["restore_duration_ms"].is_null());
        assert!(working_databases(&cluster).is_empty(), "byte {pos}");
    }

    // Restored, the object verifies again (a verification_failed backup can be re-proven).
    std::fs::write(&object, &original).unwrap();
    let (out, record) = pgkeep.verify(&[id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(record["status"], "verified");
    assert!(working_databases(&cluster).is_empty());
}

#[test]
fn differences_from_the_manifest_fail_with_their_own_code_and_a_per_table_report() {
    let cluster = PgCluster::start().unwrap();
    let db = awkward_database(&cluster);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let backup = pgkeep.backup_ok(&[]);
    let id: pgkeep::model::BackupId = backup["id"].as_str().unwrap().parse().unwrap();

    // The catalog claims one more row in one table and lists a table that never existed.
    let catalog =
        pgkeep::catalog::sqlite::SqliteCatalog::open(pgkeep.repo.join("catalog.sqlite3")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        use pgkeep::catalog::Catalog;
        let mut record = catalog.get(&id).await.unwrap();
        *record
            .row_counts
            .get_mut("\"Sales\".\"MixedCase\"")
            .unwrap() += 1;
        record.row_counts.insert("public.ghost".into(), 3);
        catalog.update(&record, record.status).await.unwrap();
        // The manifest's copy says the same (else verify stops at the manifest check).
        let path = pgkeep.repo.join(record.manifest_key());
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        manifest["backup"]["row_counts"] = serde_json::to_value(&record.row_counts).unwrap();
        std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    });

    let (out, record) = pgkeep.verify(&[id.as_str()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(9), "{err}");
    assert_eq!(record["status"], "verification_failed");
    let v = &record["verification"];
    assert_eq!(v["result"], "differences");
    assert!(v["restore_duration_ms"].as_u64().is_some());
    let report = table_report(&record);
    assert_eq!(report["\"Sales\".\"MixedCase\""], (Some(51), Some(50)));
    assert_eq!(report["public.ghost"], (Some(3), None));
    assert_eq!(
        report["\"Sales\".\"Order Lines; x\"\"y\""],
        (Some(777), Some(777))
    );
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("\"Sales\".\"MixedCase\" has 50 rows, the manifest says 51"),
        "{reason}"
    );
    assert!(reason.contains("public.ghost was not restored"), "{reason}");
    assert!(working_databases(&cluster).is_empty());
}

#[test]
fn scratch_databases_left_by_a_crashed_run_are_dropped() {
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("stale");
    cluster.create_database(&db).unwrap();
    cluster
        .psql(
            &db,
            "CREATE TABLE t AS SELECT g FROM generate_series(1, 10) g;",
        )
        .unwrap();
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let backup = pgkeep.backup_ok(&[]);

    // An hour-old scratch database (a crashed run), one just created (a run in progress on
    // another machine, not connected yet), and a database that only looks similar.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let crashed = format!("pgkeep_verify_x_{}_0badcafe", now - 3600);
    let recent = format!("pgkeep_verify_x_{now}_1badcafe");
    let lookalike = "pgkeep_verify_notes".to_owned();
    for name in [&crashed, &recent, &lookalike] {
        cluster.create_database(name).unwrap();
    }
    let (out, record) = pgkeep.verify(&[backup["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(record["status"], "verified");
    let names = cluster.database_names().unwrap();
    assert!(!names.contains(&crashed), "{names:?}");
    assert!(names.contains(&recent), "{names:?}");
    assert!(names.contains(&lookalike), "{names:?}");
    cluster.drop_database(&recent).unwrap();
    cluster.drop_database(&lookalike).unwrap();
    assert!(working_databases(&cluster).is_empty());
}

#[test]
fn scratch_server_key_and_object_failures_each_say_what_and_exit_differently() {
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("failing");
    cluster.create_database(&db).unwrap();
    cluster
        .psql(
            &db,
            "CREATE TABLE t AS SELECT g FROM generate_series(1, 10) g;",
        )
        .unwrap();
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let backup = pgkeep.backup_ok(&[]);
    let id = backup["id"].as_str().unwrap();

    // A scratch server that cannot be reached: exit 6, the backup stays `completed`, and the
    // attempt is noted as inconclusive.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = format!("postgresql://nobody:x@127.0.0.1:{port}/postgres");
    let (out, record) = pgkeep.verify(&[id, "--scratch-url", &unreachable]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains("scratch server") && err.contains("cannot connect"),
        "{err}"
    );
    assert!(!err.contains("nobody:x"), "password shown: {err}");
    assert_eq!(record["status"], "completed");
    assert_eq!(record["verification"]["result"], "inconclusive");

    // A scratch role without CREATEDB: exit 10, named as such.
    let password = cluster.create_role("no_createdb", "NOCREATEDB").unwrap();
    let weak = cluster.url_as("no_createdb", &password, "postgres");
    let out = pgkeep
        .command()
        .env("PGKEEP_SCRATCH_URL", &weak)
        .args(["verify", id])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(10), "{err}");
    assert!(
        err.contains("lacks CREATEDB") && err.contains("no_createdb"),
        "{err}"
    );
    assert_eq!(pgkeep.show(id)["status"], "completed");

    // Another key: exit 5, the backup is not blamed.
    let other_key = pgkeep.dir.path().join("other.key");
    std::fs::write(&other_key, [7u8; 32]).unwrap();
    std::fs::set_permissions(
        &other_key,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();
    let out = pgkeep
        .command()
        .env("PGKEEP_KEY_FILE", &other_key)
        .args(["verify", id])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("encrypted with key"), "{err}");
    assert_eq!(pgkeep.show(id)["status"], "completed");

    // The object gone: exit 4, and that backup is recorded as failing verification.
    std::fs::remove_file(pgkeep.object_path(&backup)).unwrap();
    let (out, record) = pgkeep.verify(&[id]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("not found"), "{err}");
    assert_eq!(record["status"], "verification_failed");
    assert_eq!(record["verification"]["result"], "unreadable");
    assert!(working_databases(&cluster).is_empty());
}

#[test]
fn an_interrupted_verification_drops_its_scratch_database_and_leaves_the_status() {
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("interrupted");
    cluster.create_database(&db).unwrap();
    load_sample(&cluster, &db, 1).unwrap();
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let backup = pgkeep.backup_ok(&[]);
    let id = backup["id"].as_str().unwrap();
    let out = pgkeep.interrupt_during_pg_restore(&cluster, &["verify", id]);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        working_databases(&cluster).is_empty(),
        "{:?}",
        working_databases(&cluster)
    );
    assert_eq!(pgkeep.show(id)["status"], "completed");
}

#[test]
fn an_archive_that_does_not_restore_fails_verification_with_pg_restores_reason() {
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("unrestorable");
    cluster.create_database(&db).unwrap();
    // pg_buffercache is not a trusted extension: only a superuser can create it.
    cluster
        .psql(
            &db,
            "CREATE EXTENSION pg_buffercache; CREATE TABLE t AS SELECT g FROM generate_series(1, 5) g;",
        )
        .unwrap();
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let backup = pgkeep.backup_ok(&[]);
    let id = backup["id"].as_str().unwrap();
    let password = cluster.create_role("scratch_owner", "CREATEDB").unwrap();
    let scratch = cluster.url_as("scratch_owner", &password, "postgres");
    let (out, record) = pgkeep.verify(&[id, "--scratch-url", &scratch]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(9), "{err}");
    assert_eq!(record["status"], "verification_failed");
    let v = &record["verification"];
    assert_eq!(v["result"], "restore_failed");
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.contains("pg_restore failed"), "{reason}");
    assert!(reason.contains("pg_buffercache"), "{reason}");
    assert!(working_databases(&cluster).is_empty());

    // On a scratch server where it can be created, the same backup verifies.
    let (out, record) = pgkeep.verify(&[id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(record["status"], "verified");
    assert!(working_databases(&cluster).is_empty());
}

/// A whole-server run's globals backup is a script: verify reads it whole, compares its roles
/// (names, attributes, memberships) and databases with the manifest and rehearses the role
/// statements on the scratch server in a transaction it rolls back. The scratch server's roles
/// stay exactly as they were, one of the same name as a backed-up role included.
#[test]
fn a_globals_backup_verifies_without_touching_the_scratch_servers_roles() {
    let source = PgCluster::start().unwrap();
    source
        .psql(
            "postgres",
            "CREATE ROLE app_owner LOGIN CONNECTION LIMIT 4;
             CREATE ROLE app_readers;
             GRANT app_readers TO app_owner;
             CREATE DATABASE app OWNER app_owner;",
        )
        .unwrap();
    let pgkeep = Pgkeep::new().database_url(source.url("postgres"));
    let out = pgkeep.run(&["backup", "--all-databases", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    let globals_id = run["globals"]["backup_id"].as_str().unwrap().to_owned();

    let scratch = PgCluster::start().unwrap();
    scratch
        .psql("postgres", "CREATE ROLE app_readers CONNECTION LIMIT 9;")
        .unwrap();
    let roles = || {
        scratch
            .psql(
                "postgres",
                "SELECT string_agg(rolname || ':' || rolconnlimit || ':' || rolcanlogin, ',' ORDER BY rolname) FROM pg_roles;",
            )
            .unwrap()
    };
    let before = roles();
    let out = pgkeep
        .command()
        .env("PGKEEP_SCRATCH_URL", scratch.url("postgres"))
        .args(["verify", "--json", &globals_id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["status"], "verified", "{record:#}");
    assert!(record["verification"]["objects_checked"].as_u64().unwrap() > 5);
    assert_eq!(roles(), before, "the scratch server's roles changed");
    assert_eq!(working_databases(&scratch), Vec::<String>::new());
}

/// The control and script files of a test extension whose script makes configuration tables
/// (with a primary key, a serial, a unique constraint, an index), written once into the
/// server's extension directory as PostGIS's `spatial_ref_sys` would be installed.
fn install_config_table_extension(cluster: &PgCluster) -> &'static str {
    use std::io::Write;
    const NAME: &str = "pgkeep_test_config";
    let files = [
        (
            format!("{NAME}.control"),
            "default_version = '1.0'\nrelocatable = false\nschema = pgkeep_test_config\n",
        ),
        (
            format!("{NAME}--1.0.sql"),
            "CREATE TABLE pgkeep_test_config.settings (k text PRIMARY KEY, v text);
SELECT pg_catalog.pg_extension_config_dump('pgkeep_test_config.settings', '');
CREATE TABLE pgkeep_test_config.serials (id serial PRIMARY KEY, v text UNIQUE);
SELECT pg_catalog.pg_extension_config_dump('pgkeep_test_config.serials', '');
CREATE TABLE pgkeep_test_config.cache (id int);
CREATE INDEX cache_id ON pgkeep_test_config.cache (id);
",
        ),
    ];
    let share = cluster
        .psql(
            "postgres",
            "SELECT setting FROM pg_catalog.pg_config WHERE name = 'SHAREDIR'",
        )
        .unwrap();
    let dir = std::path::Path::new(share.trim()).join("extension");
    for (name, text) in files {
        let path = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => file.write_all(text.as_bytes()).unwrap(),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let meta = std::fs::symlink_metadata(&path).unwrap();
                assert!(meta.is_file(), "{} is not a plain file", path.display());
                assert_eq!(
                    std::fs::read_to_string(&path).unwrap(),
                    text,
                    "{}",
                    path.display()
                );
            }
            Err(e) => panic!(
                "cannot install the test extension into {} ({e}): the tests need to write there",
                dir.display()
            ),
        }
    }
    NAME
}

/// An extension whose script makes tables (configuration tables with keys, as PostGIS's
/// `spatial_ref_sys`): their rows are in the backup, and verify does not count the keys and
/// indexes CREATE EXTENSION makes as objects missing from the archive (it failed on them),
/// single stream or `--jobs`.
#[test]
fn a_database_with_an_extensions_configuration_tables_verifies() {
    let cluster = PgCluster::start().unwrap();
    let extension = install_config_table_extension(&cluster);
    let db = unique_name("extconfig");
    cluster.create_database(&db).unwrap();
    cluster
        .psql(
            &db,
            &format!(
                "CREATE EXTENSION {extension};
                 INSERT INTO pgkeep_test_config.settings SELECT 'k' || g, 'v' FROM generate_series(1, 50) g;
                 INSERT INTO pgkeep_test_config.serials (v) SELECT md5(g::text) FROM generate_series(1, 7) g;
                 INSERT INTO pgkeep_test_config.cache SELECT generate_series(1, 30);
                 CREATE INDEX settings_v ON pgkeep_test_config.settings (v);
                 CREATE TABLE pgkeep_test_config.mine AS SELECT generate_series(1, 400) AS id;
                 CREATE TABLE public.big AS SELECT generate_series(1, 20000) AS id;"
            ),
        )
        .unwrap();
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    for jobs in ["1", "3"] {
        let backup = pgkeep.backup_ok(&["--jobs", jobs]);
        let counts = record_counts(&backup);
        assert_eq!(counts["pgkeep_test_config.settings"], 50, "{backup:#}");
        assert_eq!(counts["pgkeep_test_config.serials"], 7, "{backup:#}");
        assert_eq!(counts["pgkeep_test_config.mine"], 400, "{backup:#}");
        let id = backup["id"].as_str().unwrap();
        let (out, record) = pgkeep.verify(&[id]);
        assert!(out.status.success(), "--jobs {jobs}: {}", stderr(&out));
        assert_eq!(record["status"], "verified", "{record:#}");

        let copy = unique_name("extconfig_copy");
        let (out, _) = pgkeep.restore(&[id, "--target-db", &copy, "--jobs", "2"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let restored = counts_by_name(&cluster, &copy).unwrap();
        assert_eq!(restored["pgkeep_test_config.settings"], 50);
        assert_eq!(restored["pgkeep_test_config.serials"], 7);
        assert_eq!(restored["pgkeep_test_config.mine"], 400);
    }
    assert!(working_databases(&cluster).is_empty());
}
