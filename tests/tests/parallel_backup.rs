//! `pgkeep backup --jobs N` end to end: one snapshot, a schema object and data parts, restored
//! and verified in parallel; any stream failing leaves nothing (directory and S3); the
//! single-stream format is unchanged beside it. Real PostgreSQL, the real binary, moto.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use pgkeep_tests::aws::Moto;
use pgkeep_tests::cli::{counts_by_name, record_counts, Pgkeep};
use pgkeep_tests::{load_sample, unique_name, PgCluster};
use serde_json::Value;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after 120 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The sample data, partitions, large objects, an empty table, a free sequence, a
/// materialized view and names that are hostile as identifiers and as pg_dump patterns.
fn source(cluster: &PgCluster) -> String {
    let db = unique_name("par");
    cluster.create_database(&db).unwrap();
    load_sample(cluster, &db, 1).unwrap();
    cluster
        .psql(
            &db,
            r#"CREATE SCHEMA "We""ird.*?$";
               CREATE TABLE "We""ird.*?$"."Order Lines; x""y*" (id serial PRIMARY KEY, note text);
               INSERT INTO "We""ird.*?$"."Order Lines; x""y*"(note)
                 SELECT 'line ' || g || E'\nwith a newline' FROM generate_series(1, 777) g;
               CREATE TABLE "We""ird.*?$"."Order Lines; x""y?" (id int);
               INSERT INTO "We""ird.*?$"."Order Lines; x""y?" SELECT generate_series(1, 5);
               CREATE TABLE public.empty_table (id int);
               CREATE TABLE public.meas (d date NOT NULL, v int) PARTITION BY RANGE (d);
               CREATE TABLE public.meas_2025 PARTITION OF public.meas
                 FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
               CREATE TABLE public.meas_2026 PARTITION OF public.meas
                 FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
               INSERT INTO public.meas SELECT date '2025-06-01' + (g % 400), g
                 FROM generate_series(1, 5000) g;
               ALTER TABLE public.pgbench_tellers ADD FOREIGN KEY (bid)
                 REFERENCES public.pgbench_branches (bid);
               SELECT lo_from_bytea(0, 'a large object');
               SELECT lo_from_bytea(0, 'another one');
               CREATE SEQUENCE public.free_seq;
               SELECT setval('public.free_seq', 41);
               CREATE MATERIALIZED VIEW public.mv AS SELECT count(*) AS n FROM pgbench_accounts;"#,
        )
        .unwrap();
    db
}

/// A new database (named from `prefix`) made by `sql`.
fn tables_db(cluster: &PgCluster, prefix: &str, sql: &str) -> String {
    let db = unique_name(prefix);
    cluster.create_database(&db).unwrap();
    cluster.psql(&db, sql).unwrap();
    db
}

fn scalar(cluster: &PgCluster, db: &str, sql: &str) -> String {
    cluster.psql(db, sql).unwrap().trim().to_owned()
}

/// What a restore must reproduce beyond the row counts: large objects and their bytes, the
/// sequences, the materialized view, the foreign key and the indexes.
fn fingerprint(cluster: &PgCluster, db: &str) -> Vec<String> {
    [
        "SELECT string_agg(encode(lo_get(oid), 'escape'), ',' ORDER BY oid) FROM pg_largeobject_metadata",
        "SELECT last_value FROM public.free_seq",
        "SELECT last_value FROM \"We\"\"ird.*?$\".\"Order Lines; x\"\"y*_id_seq\"",
        "SELECT n FROM public.mv",
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f'",
        "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    ]
    .iter()
    .map(|sql| scalar(cluster, db, sql))
    .collect()
}

fn manifest_of(pgkeep: &Pgkeep, record: &Value) -> Value {
    let object = pgkeep.object_path(record);
    let name = object
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(".pgkeep", ".manifest.json");
    serde_json::from_slice(&std::fs::read(object.with_file_name(name)).unwrap()).unwrap()
}

#[test]
fn jobs_3_restores_and_verifies_exactly_and_single_stream_is_unchanged() {
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let expected = counts_by_name(&cluster, &db).unwrap();
    assert_eq!(expected["\"We\"\"ird.*?$\".\"Order Lines; x\"\"y*\""], 777);
    assert_eq!(expected["\"We\"\"ird.*?$\".\"Order Lines; x\"\"y?\""], 5);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));

    let record = pgkeep.backup_ok(&["--jobs", "3"]);
    assert_eq!(record_counts(&record), expected);
    let parts = record["parts"]
        .as_array()
        .expect("a parallel backup lists its parts");
    assert_eq!(parts.len(), 3, "{record:#}");
    // Every table's data is in exactly one part, the large objects too.
    let mut in_parts: Vec<String> = parts
        .iter()
        .flat_map(|p| p["tables"].as_array().unwrap().iter())
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    in_parts.sort();
    let mut tables: Vec<String> = expected.keys().cloned().collect();
    tables.sort();
    assert_eq!(in_parts, tables);
    let los: Vec<u64> = parts
        .iter()
        .map(|p| p["large_objects"].as_u64().unwrap())
        .collect();
    assert_eq!(los.iter().sum::<u64>(), 2, "{los:?}");
    assert_eq!(los.iter().filter(|n| **n > 0).count(), 1, "{los:?}");
    // Each part is an object of its own, encrypted, with its checksum in the manifest.
    let manifest = manifest_of(&pgkeep, &record);
    assert_eq!(manifest["backup"]["parts"], record["parts"]);
    assert_eq!(manifest["archive"]["large_objects"], 2);
    for part in parts {
        let path = pgkeep.repo.join(part["object_key"].as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"PGKEEP"));
        assert_eq!(bytes.len() as u64, part["size_bytes"].as_u64().unwrap());
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        assert_eq!(sha, part["sha256"].as_str().unwrap());
    }

    // Restored in parallel: counts, large objects, sequences, constraints, indexes.
    let source_print = fingerprint(&cluster, &db);
    let staging = tempfile::tempdir().unwrap();
    let target = format!("{} copy; \"it's\"", unique_name("par_restored"));
    let id = record["id"].as_str().unwrap();
    let (out, report) = pgkeep.restore(&[
        id,
        "--target-db",
        &target,
        "--jobs",
        "2",
        "--staging-dir",
        staging.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["large_objects"], 2);
    assert_eq!(counts_by_name(&cluster, &target).unwrap(), expected);
    assert_eq!(fingerprint(&cluster, &target), source_print);
    assert_eq!(std::fs::read_dir(staging.path()).unwrap().count(), 0);
    // Over an existing database (every part read whole first, then a safety backup).
    cluster
        .psql(&target, "DROP TABLE public.empty_table;")
        .unwrap();
    let (out, report) = pgkeep.restore(&[
        id,
        "--target-db",
        &target,
        "--overwrite",
        "--confirm",
        &target,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report["action"], "replace_existing");
    assert_eq!(counts_by_name(&cluster, &target).unwrap(), expected);
    assert_eq!(fingerprint(&cluster, &target), source_print);

    // Verified (counts and the object comparison), with and without post-data workers.
    for jobs in ["1", "2"] {
        let (out, verified) = pgkeep.verify(&[id, "--jobs", jobs]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(verified["status"], "verified", "{verified:#}");
        assert!(
            verified["verification"]["objects_checked"]
                .as_u64()
                .unwrap()
                > 10
        );
    }

    // cat writes one archive (cat_of_a_parallel_backup_... checks it restores); the dry run
    // reads every part.
    let out = pgkeep.run(&["cat", id]);
    assert!(
        out.status.success() && out.stdout.starts_with(b"PGDMP"),
        "{}",
        stderr(&out)
    );
    let (out, dry) = pgkeep.restore(&[id, "--target-db", "never_made", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        dry["rows"].as_u64().unwrap(),
        expected.values().sum::<u64>()
    );

    // A damaged part is found by verify and the restore refuses it, touching nothing.
    let part_path = pgkeep.repo.join(parts[1]["object_key"].as_str().unwrap());
    let original = std::fs::read(&part_path).unwrap();
    let mut damaged = original.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 1;
    std::fs::write(&part_path, &damaged).unwrap();
    let broken_target = unique_name("par_broken");
    let (out, _) = pgkeep.restore(&[id, "--target-db", &broken_target]);
    assert!(!out.status.success());
    let databases = scalar(
        &cluster,
        "postgres",
        "SELECT string_agg(datname, ',') FROM pg_database",
    );
    assert!(!databases.contains(&broken_target), "{databases}");
    std::fs::write(&part_path, &original).unwrap();

    // Deleting a parallel backup removes every part (another one: the verified one is the
    // newest verified, which pgkeep never deletes).
    let single = pgkeep.backup_ok(&[]);
    let doomed = pgkeep.backup_ok(&["--jobs", "2"]);
    let doomed_id = doomed["id"].as_str().unwrap();
    assert_eq!(doomed["parts"].as_array().unwrap().len(), 2);
    let out = pgkeep.run(&["delete", doomed_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let left: Vec<PathBuf> = pgkeep
        .stored_files()
        .into_iter()
        .filter(|p| {
            let p = p.to_string_lossy();
            p.contains(doomed_id) && !p.ends_with(".state.json")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A single-stream backup beside it: the format every earlier repository holds, no parts,
    // restored streamed and staged, and read by cat.
    assert!(single.get("parts").is_none(), "{single:#}");
    assert!(manifest_of(&pgkeep, &single)["backup"]
        .get("parts")
        .is_none());
    let single_id = single["id"].as_str().unwrap();
    for (i, jobs) in ["1", "2"].iter().enumerate() {
        let target = unique_name(&format!("single_{i}"));
        let (out, _) = pgkeep.restore(&[single_id, "--target-db", &target, "--jobs", jobs]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(counts_by_name(&cluster, &target).unwrap(), expected);
        assert_eq!(fingerprint(&cluster, &target), source_print);
    }
    let out = pgkeep.run(&["cat", single_id]);
    assert!(
        out.status.success() && out.stdout.starts_with(b"PGDMP"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn parts_come_from_one_snapshot_while_pgbench_writes() {
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("par_busy");
    cluster.create_database(&db).unwrap();
    load_sample(&cluster, &db, 3).unwrap();
    let mut bench = cluster
        .pgbench(&db, &["-c", "2", "-j", "2", "-T", "120", "--no-vacuum"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let history = || -> i64 {
        scalar(&cluster, &db, "SELECT count(*) FROM pgbench_history")
            .parse()
            .unwrap()
    };
    wait_for("pgbench to write", || history() > 0);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let record = pgkeep.backup_ok(&["--jobs", "3"]);
    let after_backup = history();
    bench.kill().unwrap();
    bench.wait().unwrap();

    let counts = record_counts(&record);
    let in_backup = counts["public.pgbench_history"] as i64;
    assert!(
        in_backup > 0 && after_backup > in_backup,
        "{in_backup} vs {after_backup}"
    );
    // The tables that every pgbench transaction writes together are in different parts.
    let part_of = |table: &str| {
        record["parts"]
            .as_array()
            .unwrap()
            .iter()
            .position(|p| p["tables"].as_array().unwrap().iter().any(|t| t == table))
            .unwrap()
    };
    assert_ne!(
        part_of("public.pgbench_accounts"),
        part_of("public.pgbench_history")
    );

    let target = unique_name("par_busy_restored");
    let (out, _) = pgkeep.restore(&[record["id"].as_str().unwrap(), "--target-db", &target]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts_by_name(&cluster, &target).unwrap(), counts);
    // One snapshot: every transaction is in all four tables or in none, so the balances
    // each table keeps add up to the same total.
    let sums = scalar(
        &cluster,
        &target,
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ',' ||
                (SELECT sum(tbalance) FROM pgbench_tellers) || ',' ||
                (SELECT sum(bbalance) FROM pgbench_branches) || ',' ||
                (SELECT coalesce(sum(delta), 0) FROM pgbench_history)",
    );
    let sums: Vec<&str> = sums.split(',').collect();
    assert!(sums.iter().all(|s| *s == sums[0]), "{sums:?}");
}

/// A directory with a `pg_dump` that is the shell `script`, with `$REAL` the real pg_dump (which
/// the script runs or not) and `$MARK` a file in `dir` it may use to signal another run.
fn wrapped_pg_dump(dir: &Path, cluster: &PgCluster, script: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("wrapped-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let text = format!(
        "#!/bin/sh\nREAL='{}'\nMARK='{}'\n{script}\n",
        cluster.bin_dir().join("pg_dump").display(),
        dir.join("mark").display()
    );
    let path = bin.join("pg_dump");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// A directory with a `pg_dump` that runs the real one, except for the data streams that name
/// tables (`--table=`), which run `script` with `$REAL` the real pg_dump.
fn failing_data_stream(dir: &Path, cluster: &PgCluster, script: &str) -> PathBuf {
    wrapped_pg_dump(
        dir,
        cluster,
        &format!("case \"$*\" in *--table=*) ;; *) exec \"$REAL\" \"$@\";; esac\n{script}"),
    )
}

#[test]
fn a_stream_killed_midway_fails_the_backup_and_leaves_no_part() {
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    // The data streams that name tables die by SIGKILL after 20 kB of archive.
    let bin = failing_data_stream(
        pgkeep.dir.path(),
        &cluster,
        "\"$REAL\" \"$@\" | head -c 20000\nkill -KILL $$",
    );
    let out = pgkeep
        .command()
        .env("PGKEEP_PG_BIN", &bin)
        .args(["backup", "--json", "--jobs", "3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["status"], "failed", "{record:#}");
    assert!(
        record["error"].as_str().unwrap().contains("pg_dump"),
        "{record:#}"
    );
    // Nothing stored but the failed run's state object: no part, no schema object, no
    // manifest, no hidden partial file.
    let files = pgkeep.stored_files();
    assert!(
        files
            .iter()
            .all(|f| f.to_string_lossy().ends_with(".state.json")),
        "{files:?}"
    );
    // The next run (no fault) succeeds.
    let record = pgkeep.backup_ok(&["--jobs", "3"]);
    assert_eq!(
        record_counts(&record),
        counts_by_name(&cluster, &db).unwrap()
    );
}

#[test]
fn on_s3_a_failing_stream_leaves_no_open_upload_of_any_part() {
    let Some(moto) = Moto::start() else { return };
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("par_s3");
    cluster.create_database(&db).unwrap();
    // Three tables of random bytes (about 16 MiB each after compression), so each data stream
    // has a multipart upload with parts in flight even while its zstd worker still holds the
    // output of its last jobs (a few MiB) when pg_dump stalls.
    let mut sql = String::new();
    for t in ["noise_a", "noise_b", "noise_c"] {
        sql.push_str(&format!(
            "CREATE TABLE public.{t} AS SELECT g AS id,
               (SELECT decode(string_agg(md5(random()::text || i::text || g::text), ''), 'hex')
                FROM generate_series(1, 64) i) AS payload
             FROM generate_series(1, 16000) g;"
        ));
    }
    cluster.psql(&db, &sql).unwrap();
    let marker = tempfile::tempdir().unwrap();
    let go = marker.path().join("fail-now");
    let pgkeep = Pgkeep::new()
        .database_url(cluster.url(&db))
        .with_urls(&moto.repo_url(), &moto.catalog_url(), &moto.key_url())
        .env("PGKEEP_AWS_ENDPOINT", &moto.endpoint)
        .env("PGKEEP_S3_PART_SIZE_MIB", "5");
    // Streams naming tables dump everything, then wait for the test's word and fail.
    let bin = failing_data_stream(
        pgkeep.dir.path(),
        &cluster,
        &format!(
            "\"$REAL\" \"$@\" || exit $?\nwhile [ ! -e '{}' ]; do sleep 0.05; done\necho 'pg_dump: error: injected' >&2\nexit 1",
            go.display()
        ),
    );
    let child = Running(Some(
        pgkeep
            .command()
            .env("PGKEEP_PG_BIN", &bin)
            .args(["backup", "--json", "--jobs", "3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let prefix = moto.s3_key("");
    let ours = |keys: Vec<String>| -> Vec<String> {
        keys.into_iter()
            .filter(|k| k.starts_with(&prefix))
            .collect()
    };
    wait_for("multipart uploads of several streams", || {
        ours(moto.open_uploads()).len() >= 2
    });
    let in_flight = ours(moto.open_uploads());
    std::fs::write(&go, b"").unwrap();
    let out = child.finish();
    assert!(!out.status.success(), "{}", stderr(&out));
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["status"], "failed", "{record:#}");
    assert!(
        record["error"].as_str().unwrap().contains("injected"),
        "{record:#}"
    );
    assert!(
        ours(moto.open_uploads()).is_empty(),
        "before: {in_flight:?}, after: {:?}",
        moto.open_uploads()
    );
    let objects: Vec<String> = ours(moto.objects())
        .into_iter()
        .filter(|k| !k.ends_with(".state.json"))
        .collect();
    assert!(objects.is_empty(), "{objects:?}");
}

/// A directory with a `pg_restore` that runs the real one, logging each run's arguments and
/// exit status to `runs.log` beside it; the data restores after the first wait for the file
/// `release` there, and an early post-data step (one without `--jobs`) fails while the file
/// `fail-early` exists.
fn holding_pg_restore(dir: &Path, cluster: &PgCluster) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("holding-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let d = bin.display();
    let text = format!(
        r#"#!/bin/sh
REAL='{real}'
case "$*" in
*--section=data*)
    mkdir '{d}/first' 2>/dev/null ||
        while [ -d '{d}' ] && [ ! -e '{d}/release' ]; do sleep 0.02; done ;;
*--section=post-data*--jobs*|*--jobs*--section=post-data*) ;;
*--section=post-data*)
    if [ -e '{d}/fail-early' ]; then echo 'pg_restore: error: injected' >&2; exit 1; fi ;;
esac
"$REAL" "$@"
status=$?
echo "$status $*" >> '{d}/runs.log'
exit $status
"#,
        real = cluster.bin_dir().join("pg_restore").display(),
    );
    let path = bin.join("pg_restore");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// A running pgkeep, killed if the test fails before waiting for it.
struct Running(Option<std::process::Child>);

impl Running {
    fn finish(mut self) -> Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A part's indexes and keys are built as soon as its tables are in, while another part still
/// loads; a failure of that step fails the restore and leaves no database and no staged file.
#[test]
fn indexes_of_a_loaded_part_are_built_while_another_part_still_loads() {
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let expected = counts_by_name(&cluster, &db).unwrap();
    let source_print = fingerprint(&cluster, &db);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let record = pgkeep.backup_ok(&["--jobs", "2"]);
    let id = record["id"].as_str().unwrap();
    let bin = holding_pg_restore(pgkeep.dir.path(), &cluster);
    let pg_bin = std::env::join_paths([bin.as_path(), cluster.bin_dir()]).unwrap();
    let staging = tempfile::tempdir().unwrap();
    let restore = |target: &str| {
        let child = pgkeep
            .command()
            .env("PGKEEP_PG_BIN", &pg_bin)
            .args([
                "restore",
                "--json",
                id,
                "--target-db",
                target,
                "--jobs",
                "2",
            ])
            .arg("--staging-dir")
            .arg(staging.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Running(Some(child))
    };
    let log = bin.join("runs.log");
    let early_runs = || -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("--section=post-data") && !l.contains("--jobs"))
            .map(str::to_owned)
            .collect()
    };
    let indexes = |target: &str| {
        scalar(
            &cluster,
            target,
            "SELECT count(*) FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        )
    };

    // One part is held back before its pg_restore starts; the other's indexes and keys are
    // built meanwhile, by a step of their own.
    let target = unique_name("early");
    let child = restore(&target);
    wait_for("the early post-data step", || !early_runs().is_empty());
    assert!(early_runs()[0].starts_with("0 "), "{:?}", early_runs());
    assert!(early_runs()[0].contains("--use-list"), "{:?}", early_runs());
    // The restore loads into a database of its own, renamed to the target at the end.
    let loading = scalar(
        &cluster,
        "postgres",
        "SELECT datname FROM pg_database WHERE datname LIKE 'pgkeep\\_restore\\_%'",
    );
    let built: u64 = indexes(&loading).parse().unwrap();
    assert!(
        built > 0,
        "no index in {loading} while the other part is held"
    );
    std::fs::write(bin.join("release"), b"").unwrap();
    let out = child.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts_by_name(&cluster, &target).unwrap(), expected);
    assert_eq!(fingerprint(&cluster, &target), source_print);
    let all: u64 = indexes(&target).parse().unwrap();
    assert!(all > built, "{all} indexes in all, {built} early");
    assert_eq!(std::fs::read_dir(staging.path()).unwrap().count(), 0);

    // The early step fails: the restore fails naming it, while the held part still waits.
    std::fs::remove_file(bin.join("release")).unwrap();
    std::fs::remove_dir(bin.join("first")).unwrap();
    std::fs::write(bin.join("fail-early"), b"").unwrap();
    let target = unique_name("early_fails");
    let out = restore(&target).finish();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("injected"), "{}", stderr(&out));
    let databases = scalar(
        &cluster,
        "postgres",
        "SELECT string_agg(datname, ',') FROM pg_database",
    );
    assert!(!databases.contains(&target), "{databases}");
    assert_eq!(std::fs::read_dir(staging.path()).unwrap().count(), 0);
}

/// A whole-database backup starts its data streams with the schema stream, not after it; a
/// table dealt to a stream that pg_dump's schema then lacks sends the data round again from
/// the schema's own table list, so the backup stays exact.
#[test]
fn whole_database_streams_start_with_the_schema_and_pg_dump_still_decides_the_tables() {
    let cluster = PgCluster::start().unwrap();
    let db = tables_db(
        &cluster,
        "early",
        "CREATE TABLE big AS SELECT g AS id FROM generate_series(1, 20000) g;
         CREATE TABLE mid AS SELECT g AS id FROM generate_series(1, 10000) g;
         CREATE TABLE hidden AS SELECT g AS id FROM generate_series(1, 5000) g;",
    );
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let dir = tempfile::tempdir().unwrap();

    // The schema stream ends only once a stream naming tables has started (within 60 s).
    let bin = wrapped_pg_dump(
        dir.path(),
        &cluster,
        r#"case "$*" in
  *--table=*) : > "$MARK" ;;
  *--section=pre-data*)
    i=0
    while [ ! -e "$MARK" ]; do
      i=$((i + 1)); [ $i -le 1200 ] || { echo "no data stream started before the schema ended" >&2; exit 1; }
      sleep 0.05
    done ;;
esac
exec "$REAL" "$@""#,
    );
    let out = pgkeep
        .command()
        .env("PGKEEP_PG_BIN", &bin)
        .args(["backup", "--json", "--jobs", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first["parts"].as_array().unwrap().len(), 3, "{first:#}");
    assert_eq!(
        record_counts(&first),
        counts_by_name(&cluster, &db).unwrap()
    );

    // pg_dump (here, a wrapper excluding a table from the streams that do not name tables)
    // leaves out a table the catalog listed: the data is dumped again without it.
    std::fs::remove_dir_all(&bin).unwrap();
    let bin = wrapped_pg_dump(
        dir.path(),
        &cluster,
        r#"case "$*" in
  *--table=*) exec "$REAL" "$@" ;;
  *) exec "$REAL" "$@" --exclude-table=public.hidden ;;
esac"#,
    );
    let out = pgkeep
        .command()
        .env("PGKEEP_PG_BIN", &bin)
        .args(["backup", "--json", "--jobs", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("dumping the data again"),
        "{}",
        stderr(&out)
    );
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut expected = counts_by_name(&cluster, &db).unwrap();
    expected.retain(|name, _| !name.contains("hidden"));
    assert_eq!(record_counts(&record), expected);
    let named: Vec<&str> = record["parts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["tables"].as_array().unwrap())
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(!named.iter().any(|t| t.contains("hidden")), "{named:?}");
    let (out, verified) = pgkeep.verify(&[record["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(verified["status"], "verified", "{verified:#}");
    // Only the two backups' objects remain: nothing of the round that was dumped again.
    let ids = [
        first["id"].as_str().unwrap(),
        record["id"].as_str().unwrap(),
    ];
    let stray: Vec<PathBuf> = pgkeep
        .stored_files()
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with('.') || !ids.iter().any(|id| name.contains(id))
        })
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

/// `PGKEEP_JOBS` (database → streams) is `backup`'s default when `--jobs` is not given, and
/// `verify`'s for a backup of that database; the flag wins; a bad value is refused naming it.
#[test]
fn pgkeep_jobs_sets_the_default_streams_per_database() {
    let cluster = PgCluster::start().unwrap();
    let db = tables_db(
        &cluster,
        "jobsenv",
        "CREATE TABLE a AS SELECT g AS id FROM generate_series(1, 5000) g;
         CREATE TABLE b AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g;",
    );
    let setting = serde_json::json!({ db.clone(): 2 }).to_string();
    let pgkeep = Pgkeep::new()
        .database_url(cluster.url(&db))
        .env("PGKEEP_JOBS", &setting);
    let parallel = pgkeep.backup_ok(&[]);
    assert!(
        parallel["parts"].as_array().is_some_and(|p| p.len() >= 2),
        "{parallel:#}"
    );
    let single = pgkeep.backup_ok(&["--jobs", "1"]);
    assert!(
        single["parts"].as_array().is_none_or(|p| p.is_empty()),
        "{single:#}"
    );
    let (out, verified) = pgkeep.verify(&[parallel["id"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(verified["status"], "verified", "{verified:#}");

    let bad = Pgkeep::new()
        .database_url(cluster.url(&db))
        .env("PGKEEP_JOBS", r#"{"x": 0}"#);
    let (out, _) = bad.backup(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("PGKEEP_JOBS") && stderr(&out).contains("between 1 and 32"),
        "{}",
        stderr(&out)
    );
}

/// Per table (keyed as [`counts_by_name`] keys it): the md5 of its rows as text, in order.
fn table_digests(cluster: &PgCluster, db: &str) -> std::collections::BTreeMap<String, String> {
    let sql = r"
SELECT coalesce(json_agg(json_build_array(n.nspname, c.relname,
         (xpath('/row/h/text()',
                query_to_xml(format('SELECT md5(coalesce(string_agg(t::text, chr(10) ORDER BY t::text), '''')) AS h FROM ONLY %I.%I t', n.nspname, c.relname),
                             false, true, '')))[1]::text)
       ORDER BY n.nspname, c.relname), '[]')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%';";
    let rows: Vec<(String, String, String)> =
        serde_json::from_str(cluster.psql(db, sql).unwrap().trim()).unwrap();
    rows.into_iter()
        .map(|(s, t, h)| (pgkeep::model::qualified_name(&s, &t), h))
        .collect()
}

#[test]
fn cat_of_a_parallel_backup_is_one_archive_pg_restore_reads_piped_and_in_parallel_from_a_file() {
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let expected = counts_by_name(&cluster, &db).unwrap();
    let digests = table_digests(&cluster, &db);
    assert_eq!(digests.len(), expected.len());
    let source_print = fingerprint(&cluster, &db);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let record = pgkeep.backup_ok(&["--jobs", "3"]);
    assert_eq!(record["parts"].as_array().unwrap().len(), 3, "{record:#}");
    let id = record["id"].as_str().unwrap();
    let same_as_source = |target: &str| {
        assert_eq!(counts_by_name(&cluster, target).unwrap(), expected);
        assert_eq!(table_digests(&cluster, target), digests);
        assert_eq!(fingerprint(&cluster, target), source_print);
    };

    // Piped: offsets not set, pg_restore reads the blocks in order.
    let piped = unique_name("cat_piped");
    cluster.create_database(&piped).unwrap();
    pgkeep.restore_with_cat(&cluster, id, &piped).unwrap();
    same_as_source(&piped);

    // Into a file: private, every table's data listed, restored with two workers.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("merged.dump");
    let out = pgkeep.run(&["cat", id, "-o", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::symlink_metadata(&file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let list = cluster
        .command("pg_restore")
        .arg("-l")
        .arg(&file)
        .output()
        .unwrap();
    assert!(list.status.success(), "{}", stderr(&list));
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    for (schema, table) in cluster.table_counts(&db).unwrap().keys() {
        assert!(
            list.contains(&format!(" TABLE DATA {schema} {table} ")),
            "{schema}.{table} has no data in:\n{list}"
        );
    }
    assert!(list.contains(" BLOBS "), "{list}");
    assert!(list.contains(" SEQUENCE SET public free_seq "), "{list}");
    let parallel = unique_name("cat_file");
    cluster.create_database(&parallel).unwrap();
    let restored = cluster
        .command("pg_restore")
        .args([
            "--no-owner",
            "--exit-on-error",
            "-j",
            "2",
            "--dbname",
            &parallel,
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(restored.status.success(), "{}", stderr(&restored));
    same_as_source(&parallel);

    // The file is the piped archive with the offsets filled in: same length, other bytes.
    let piped_bytes = pgkeep.run(&["cat", id]).stdout;
    let file_bytes = std::fs::read(&file).unwrap();
    assert_eq!(piped_bytes.len(), file_bytes.len());
    assert_ne!(piped_bytes, file_bytes);

    // With no catalog, from a copy of the manifest, the schema object and the parts: the same
    // archive (a lost catalog's by-hand path); a missing part is refused, nothing written.
    let object = pgkeep.object_path(&record);
    let manifest = object.with_extension("manifest.json");
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    let parts: Vec<std::path::PathBuf> = (1..=3)
        .map(|n| object.with_extension(format!("data-{n}.pgkeep")))
        .collect();
    for file in [&object, &manifest].into_iter().chain(&parts) {
        std::fs::copy(file, copy.join(file.file_name().unwrap())).unwrap();
    }
    let catalog = pgkeep.repo.join("catalog.sqlite3");
    std::fs::rename(&catalog, dir.path().join("catalog.kept")).unwrap();
    let copied_manifest = copy.join(manifest.file_name().unwrap());
    let out = pgkeep.run(&["cat", "--manifest", copied_manifest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        out.stdout == piped_bytes,
        "cat --manifest differs from cat ID"
    );
    assert!(!catalog.exists(), "cat --manifest opened a catalog");
    std::fs::remove_file(copy.join(parts[1].file_name().unwrap())).unwrap();
    let missing = copy.join("missing.dump");
    let out = pgkeep.run(&[
        "cat",
        "--manifest",
        copied_manifest.to_str().unwrap(),
        "-o",
        missing.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("data-2.pgkeep"), "{}", stderr(&out));
    assert!(!missing.exists());
}
