//! The PostgreSQL version matrix: servers 13 to 18, each backed up, read back through `cat |
//! pg_restore`, verified and restored by the real `pgkeep` binary with exact counts, using each
//! version's features; the client tools chosen by the server's major; an older pg_dump refused.
//!
//! The servers come from `scripts/test` (`ensure_pg_matrix`): `PGKEEP_TEST_PG_MATRIX` lists
//! `major=bin dir` pairs (server binaries only), `PGKEEP_TEST_PG_CLIENT_18` holds PostgreSQL
//! 18's pg_dump, pg_restore and psql. Without them a test skips with a message, except under
//! CI, where it fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

use pgkeep_tests::cli::{counts_by_name, record_counts, Pgkeep};
use pgkeep_tests::{unique_name, PgCluster};

/// Debian's PostgreSQL 15 client tools, the older client the matrix pairs with newer servers.
const DEBIAN_15: &str = "/usr/lib/postgresql/15/bin";

struct Matrix {
    servers: BTreeMap<u32, PathBuf>,
    client_18: PathBuf,
}

fn matrix() -> Option<Matrix> {
    let servers = std::env::var("PGKEEP_TEST_PG_MATRIX").ok();
    let client = std::env::var_os("PGKEEP_TEST_PG_CLIENT_18");
    let (Some(servers), Some(client)) = (servers, client) else {
        let why = "PGKEEP_TEST_PG_MATRIX / PGKEEP_TEST_PG_CLIENT_18 are not set (scripts/test installs the matrix)";
        if std::env::var_os("CI").is_some() {
            panic!("{why}; under CI the version matrix must run");
        }
        eprintln!("skipped: {why}");
        return None;
    };
    let servers = servers
        .split(',')
        .map(|pair| {
            let (major, dir) = pair.split_once('=').expect("major=dir");
            (major.parse().expect("a major version"), PathBuf::from(dir))
        })
        .collect();
    Some(Matrix {
        servers,
        client_18: PathBuf::from(client),
    })
}

/// A database using the features of `major`: identity and stored generated columns,
/// declarative partitions, large objects, a materialized view; virtual generated columns on 18.
fn dataset(cluster: &PgCluster, major: u32) -> String {
    let db = unique_name(&format!("pg{major} data"));
    cluster.create_database(&db).unwrap();
    let mut sql = String::from(
        r#"CREATE TABLE items (
               id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
               price numeric(10,2) NOT NULL,
               quantity int NOT NULL,
               total numeric GENERATED ALWAYS AS (price * quantity) STORED,
               note text);
           INSERT INTO items (price, quantity, note)
               SELECT g % 97 + 0.5, g % 13, 'item ' || g || E'\ttab\\slash'
               FROM generate_series(1, 5000) g;
           CREATE TABLE events (at date NOT NULL, what text) PARTITION BY RANGE (at);
           CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
           CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
           INSERT INTO events SELECT date '2025-06-01' + (g % 400), 'event ' || g FROM generate_series(1, 3000) g;
           CREATE TABLE "Odd ""name""; here" (k int);
           INSERT INTO "Odd ""name""; here" SELECT generate_series(1, 77);
           CREATE TABLE empty_one (k int);
           SELECT lo_from_bytea(0, convert_to('large object ' || g, 'UTF8')) FROM generate_series(1, 3) g;
           CREATE MATERIALIZED VIEW item_totals AS SELECT quantity, sum(total) FROM items GROUP BY quantity;
        "#,
    );
    if major >= 18 {
        sql.push_str(
            "CREATE TABLE virtual_cols (a int, doubled int GENERATED ALWAYS AS (a * 2) VIRTUAL);
             INSERT INTO virtual_cols (a) SELECT generate_series(1, 250);",
        );
    }
    cluster.psql(&db, &sql).unwrap();
    db
}

fn large_objects(cluster: &PgCluster, db: &str) -> u64 {
    cluster
        .psql(db, "SELECT count(*) FROM pg_largeobject_metadata")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The manifest stored beside a backup's object in a directory repository.
fn manifest(pgkeep: &Pgkeep, record: &Value) -> Value {
    let object = pgkeep.object_path(record);
    let name = object.file_name().unwrap().to_string_lossy().to_string();
    let path = object.with_file_name(name.replace(".pgkeep", ".manifest.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `pgkeep cat | pg_restore` with PostgreSQL 18's pg_restore into a server before 17: every
/// session's `SET transaction_timeout = 0` fails there, so it runs without `--exit-on-error`
/// and that must be the only error (as docs/OPERATIONS.md tells a reader restoring by hand).
fn restore_with_cat_on_older_server(pgkeep: &Pgkeep, cluster: &PgCluster, id: &str, target: &str) {
    let mut cat = pgkeep
        .command()
        .args(["cat", id])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let restore = cluster
        .command("pg_restore")
        .args(["--no-owner", "--dbname", target])
        .stdin(cat.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(cat.wait().unwrap().success());
    let stderr = String::from_utf8_lossy(&restore.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("pg_restore: error:"))
        .collect();
    assert!(
        !errors.is_empty()
            && errors
                .iter()
                .all(|l| l.contains("unrecognized configuration parameter \"transaction_timeout\"")),
        "{stderr}"
    );
}

fn joined(dirs: &[&Path]) -> String {
    std::env::join_paths(dirs)
        .unwrap()
        .into_string()
        .expect("UTF-8 paths")
}

/// Backup, `cat | pg_restore`, verify and restore of one server major with the newest client
/// tools and, where this machine has them, the server's own major's tools.
fn round_trip(major: u32) {
    let Some(matrix) = matrix() else { return };
    let server = &matrix.servers[&major];
    let cluster = PgCluster::start_with(server, &matrix.client_18).unwrap();
    let db = dataset(&cluster, major);
    let expected = counts_by_name(&cluster, &db).unwrap();
    assert_eq!(expected["public.items"], 5000);
    assert_eq!(
        expected["public.events_2026"] + expected["public.events_2025"],
        3000
    );
    assert_eq!(large_objects(&cluster, &db), 3);

    // Both tool sets on the path, the older first: the server's major wins when present, else
    // the newest.
    let debian_15 = Path::new(DEBIAN_15);
    let tools = if debian_15.join("pg_dump").is_file() {
        joined(&[debian_15, &matrix.client_18])
    } else {
        joined(&[&matrix.client_18])
    };
    let pgkeep = Pgkeep::new()
        .database_url(cluster.url(&db))
        .env("PGKEEP_PG_BIN", &tools);
    let record = pgkeep.backup_ok(&[]);
    assert_eq!(
        record_counts(&record),
        expected,
        "PostgreSQL {major}: manifest vs source"
    );
    let manifest = manifest(&pgkeep, &record);
    let dump_version = manifest["archive"]["dump_version"]
        .as_str()
        .unwrap()
        .to_owned();
    let chosen_major = if major == 15 && debian_15.join("pg_dump").is_file() {
        15
    } else {
        18
    };
    assert!(
        dump_version.starts_with(&format!("{chosen_major}.")),
        "PostgreSQL {major}: dumped by {dump_version}, expected pg_dump {chosen_major}"
    );
    assert_eq!(manifest["archive"]["large_objects"], 3);
    eprintln!(
        "PostgreSQL {major} ({}): pg_dump {dump_version}, archive version {}",
        record["server_version"].as_str().unwrap_or("?"),
        manifest["archive"]["archive_version"]
            .as_str()
            .unwrap_or("?"),
    );

    // The stranger's path: cat | pg_restore (PostgreSQL 18's pg_restore reads every archive).
    let id = record["id"].as_str().unwrap();
    let by_cat = unique_name("by_cat");
    cluster.create_database(&by_cat).unwrap();
    if major >= 17 {
        pgkeep.restore_with_cat(&cluster, id, &by_cat).unwrap();
    } else {
        restore_with_cat_on_older_server(&pgkeep, &cluster, id, &by_cat);
    }
    assert_eq!(counts_by_name(&cluster, &by_cat).unwrap(), expected);
    assert_eq!(large_objects(&cluster, &by_cat), 3);

    let (out, verified) = pgkeep.verify(&[id]);
    assert!(
        out.status.success(),
        "PostgreSQL {major}: verify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(verified["status"], "verified", "{verified}");

    let target = unique_name("restored");
    let (out, report) = pgkeep.restore(&[id, "--target-db", &target]);
    assert!(
        out.status.success(),
        "PostgreSQL {major}: restore failed: {}\n{report}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(counts_by_name(&cluster, &target).unwrap(), expected);
    assert_eq!(large_objects(&cluster, &target), 3);
    if major == 16 {
        // Parallel workers each open a session: each meets transaction_timeout, all tolerated.
        let parallel = unique_name("parallel");
        let (out, report) = pgkeep.restore(&[id, "--target-db", &parallel, "--jobs", "2"]);
        assert!(
            out.status.success(),
            "restore --jobs 2: {}\n{report}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(counts_by_name(&cluster, &parallel).unwrap(), expected);
    }
    if major >= 18 {
        let doubled = cluster
            .psql(&target, "SELECT sum(doubled) FROM virtual_cols")
            .unwrap();
        assert_eq!(doubled.trim(), (2 * (1..=250).sum::<i64>()).to_string());
    }
    let totals = "SELECT sum(total)::text FROM items";
    assert_eq!(
        cluster.psql(&target, totals).unwrap(),
        cluster.psql(&db, totals).unwrap()
    );
}

#[test]
fn postgresql_13() {
    round_trip(13);
}

#[test]
fn postgresql_14() {
    round_trip(14);
}

#[test]
fn postgresql_15() {
    round_trip(15);
}

#[test]
fn postgresql_16() {
    round_trip(16);
}

#[test]
fn postgresql_17() {
    round_trip(17);
}

#[test]
fn postgresql_18() {
    round_trip(18);
}

/// An older pg_dump is refused for a newer server, naming both versions and what to do.
#[test]
fn an_older_pg_dump_is_refused_for_a_newer_server() {
    let Some(matrix) = matrix() else { return };
    if !Path::new(DEBIAN_15).join("pg_dump").is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{DEBIAN_15}/pg_dump is missing; scripts/test installs PostgreSQL 15"
        );
        eprintln!("skipped: no {DEBIAN_15}/pg_dump");
        return;
    }
    let cluster = PgCluster::start_with(&matrix.servers[&17], &matrix.client_18).unwrap();
    let db = unique_name("newer");
    cluster.create_database(&db).unwrap();
    let pgkeep = Pgkeep::new()
        .database_url(cluster.url(&db))
        .env("PGKEEP_PG_BIN", DEBIAN_15);
    let out = pgkeep.run(&["backup", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("PostgreSQL 17") && stderr.contains("is version 15"),
        "{stderr}"
    );
    assert!(stderr.contains("PGKEEP_PG_BIN"), "{stderr}");
    assert!(pgkeep.list().is_empty() || pgkeep.list().iter().all(|r| r["status"] == "failed"));
}
