//! End to end on the embedded default: real PostgreSQL, the real `pgkeep` binary.

use std::process::Stdio;

use pgkeep_tests::cli::{counts_by_name, record_counts, Pgkeep};
use pgkeep_tests::{load_sample, unique_name, PgCluster};

/// A source database with awkward names, the sample data, and an extra schema.
fn source(cluster: &PgCluster) -> String {
    let db = format!("{} shop's", unique_name("src"));
    cluster.create_database(&db).unwrap();
    load_sample(cluster, &db, 1).unwrap();
    cluster
        .psql(
            &db,
            r#"CREATE SCHEMA "Sales";
               CREATE TABLE "Sales"."Order Lines; x""y" (id int primary key, note text);
               INSERT INTO "Sales"."Order Lines; x""y" SELECT g, 'line ' || g FROM generate_series(1, 777) g;
               CREATE TABLE public.empty_table (id int);"#,
        )
        .unwrap();
    db
}

#[test]
fn round_trip_through_cat_and_pg_restore_for_both_compressions() {
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let expected = counts_by_name(&cluster, &db).unwrap();
    assert_eq!(expected["public.pgbench_accounts"], 100_000);
    assert_eq!(expected["\"Sales\".\"Order Lines; x\"\"y\""], 777);
    assert_eq!(expected["public.empty_table"], 0);

    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    // `backup --json`, with PGKEEP_COMPRESSION set to `setting` when given.
    let backup = |setting: Option<&str>, args: &[&str]| {
        let mut cmd = pgkeep.command();
        cmd.args(["backup", "--json"]).args(args);
        if let Some(setting) = setting {
            cmd.env("PGKEEP_COMPRESSION", setting);
        }
        cmd.output().unwrap()
    };
    // The flag with and without a level, and the setting the functions read too.
    for (setting, args, compression, level) in [
        (None, &["--compression", "zstd"][..], "zstd", 3),
        (None, &["--compression", "gzip:1"][..], "gzip", 1),
        (Some("zstd:1"), &[][..], "zstd", 1),
    ] {
        let out = backup(setting, args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(record["compression"], compression);
        assert_eq!(record["compression_level"], level, "{args:?} {setting:?}");
        assert_eq!(record["database"], db.as_str());
        assert_eq!(
            record_counts(&record),
            expected,
            "{compression}: manifest vs source"
        );

        // The manifest beside the object says the same, and the object is really encrypted.
        let object = pgkeep.object_path(&record);
        let manifest_path = object.with_file_name(
            object
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".pgkeep", ".manifest.json"),
        );
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
        assert_eq!(manifest["backup"]["row_counts"], record["row_counts"]);
        assert_eq!(manifest["backup"]["sha256"], record["sha256"]);
        let stored = std::fs::read(&object).unwrap();
        assert!(stored.starts_with(b"PGKEEP"));
        assert_eq!(stored.len() as u64, record["size_bytes"].as_u64().unwrap());
        assert!(
            !stored.windows(16).any(|w| w == b"pgbench_accounts"),
            "plaintext leaked"
        );

        let target = unique_name(&format!("restored_{compression}"));
        cluster.create_database(&target).unwrap();
        pgkeep
            .restore_with_cat(&cluster, record["id"].as_str().unwrap(), &target)
            .unwrap();
        assert_eq!(
            counts_by_name(&cluster, &target).unwrap(),
            expected,
            "{compression}: restored vs source"
        );
    }
    let listed = pgkeep.list();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|r| r["status"] == "completed"));

    // A level the algorithm does not have is refused before anything starts, naming the range.
    for (setting, args) in [
        (None, &["--compression", "zstd:10"][..]),
        (Some("gzip:0"), &[][..]),
    ] {
        let out = backup(setting, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("is not one of 1-"), "{stderr}");
    }
    assert_eq!(pgkeep.list().len(), 3, "a refused backup left a record");
}

#[test]
fn counts_match_exactly_while_pgbench_writes() {
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("busy");
    cluster.create_database(&db).unwrap();
    load_sample(&cluster, &db, 3).unwrap();
    let mut bench = cluster
        .pgbench(&db, &["-c", "2", "-j", "2", "-T", "120", "--no-vacuum"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until writes are really happening (a condition, not a guess).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n: i64 = cluster
            .psql(&db, "SELECT count(*) FROM pgbench_history")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        if n > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "pgbench never wrote");
        std::thread::yield_now();
    }
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let record = pgkeep.backup_ok(&[]);
    let after_backup: i64 = cluster
        .psql(&db, "SELECT count(*) FROM pgbench_history")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    bench.kill().unwrap();
    bench.wait().unwrap();

    let manifest = record_counts(&record);
    let in_backup = manifest["public.pgbench_history"] as i64;
    assert!(in_backup > 0, "writes started before the backup");
    assert!(
        after_backup > in_backup,
        "writes continued during the backup ({after_backup} vs {in_backup})"
    );

    let target = unique_name("busy_restored");
    cluster.create_database(&target).unwrap();
    pgkeep
        .restore_with_cat(&cluster, record["id"].as_str().unwrap(), &target)
        .unwrap();
    assert_eq!(counts_by_name(&cluster, &target).unwrap(), manifest);
}

#[test]
fn tampering_truncation_and_another_key_fail_cat_cleanly() {
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("tamper");
    cluster.create_database(&db).unwrap();
    load_sample(&cluster, &db, 1).unwrap();
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let record = pgkeep.backup_ok(&[]);
    let id = record["id"].as_str().unwrap();
    let object = pgkeep.object_path(&record);
    let original = std::fs::read(&object).unwrap();
    let out_file = pgkeep.dir.path().join("out.dump");

    // Sanity: the untouched object reads.
    let ok = pgkeep.run(&["cat", id, "-o", out_file.to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(std::fs::read(&out_file).unwrap().starts_with(b"PGDMP"));
    std::fs::remove_file(&out_file).unwrap();

    let mut damaged = Vec::new();
    for pos in [3, 30, original.len() / 2, original.len() - 1] {
        let mut bytes = original.clone();
        bytes[pos] ^= 0x01;
        damaged.push((format!("flipped byte {pos}"), bytes));
    }
    damaged.push((
        "truncated by one byte".into(),
        original[..original.len() - 1].to_vec(),
    ));
    damaged.push((
        "truncated to half".into(),
        original[..original.len() / 2].to_vec(),
    ));
    damaged.push((
        "extra byte appended".into(),
        [original.clone(), vec![0]].concat(),
    ));
    for (what, bytes) in damaged {
        std::fs::write(&object, &bytes).unwrap();
        let out = pgkeep.run(&["cat", id, "-o", out_file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{what}: {stderr}");
        let named = [
            "checksum mismatch",
            "authentication",
            "header",
            "not a pgkeep backup object",
            "truncated",
        ];
        assert!(named.iter().any(|m| stderr.contains(m)), "{what}: {stderr}");
        assert!(!out_file.exists(), "{what}: output file left behind");
        assert!(
            std::fs::read_dir(pgkeep.dir.path())
                .unwrap()
                .flatten()
                .all(|e| !e.file_name().to_string_lossy().contains("partial")),
            "{what}: partial file left behind"
        );
        // To stdout too: non-zero exit.
        let out = pgkeep
            .command()
            .args(["cat", id])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{what} (stdout)");
    }
    std::fs::write(&object, &original).unwrap();

    // Another key file: refused by key id, exit 5, nothing written.
    let other_key = pgkeep.dir.path().join("other.key");
    let mut k = [0u8; 32];
    k[0] = 1;
    std::fs::write(&other_key, k).unwrap();
    std::fs::set_permissions(
        &other_key,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();
    let out = pgkeep
        .command()
        .env("PGKEEP_KEY_FILE", &other_key)
        .args(["cat", id, "-o", out_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("encrypted with key"));
    assert!(!out_file.exists());
}

#[test]
fn failed_backups_leave_no_object_and_say_why() {
    let cluster = PgCluster::start().unwrap();
    let missing = Pgkeep::new().database_url(cluster.url("no_such_database"));
    let (out, record) = missing.backup(&[]);
    assert_eq!(out.status.code(), Some(6));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert_eq!(record["status"], "failed");
    assert!(record["error"].as_str().unwrap().contains("does not exist"));
    assert_only_states(missing.stored_files(), 1);

    let wrong = Pgkeep::new().database_url(
        cluster
            .url("postgres")
            .replace(cluster.password(), "wrong-password"),
    );
    let (out, record) = wrong.backup(&[]);
    assert_eq!(out.status.code(), Some(6));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong-password"),
        "the password leaked into the message"
    );
    assert_eq!(wrong.list()[0]["status"], "failed");
    assert!(record["error"]
        .as_str()
        .unwrap()
        .contains("password authentication failed"));
    assert_only_states(wrong.stored_files(), 1);
}

/// A stand-in pg_dump in a PGKEEP_PG_BIN directory.
fn fake_pg_bin(dir: &std::path::Path, version: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'pg_dump (PostgreSQL) {version}'; exit 0; fi\n{body}\n"
    );
    let path = bin.join("pg_dump");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn pg_dump_failing_after_output_or_too_old_fails_the_backup() {
    let cluster = PgCluster::start().unwrap();
    let pgkeep = Pgkeep::new().database_url(cluster.url("postgres"));

    // A whole, valid archive on stdout and then a failing exit: EOF is not success.
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/tests/fixtures/archive/sample-pg15.dump"
    );
    let failing = fake_pg_bin(
        pgkeep.dir.path(),
        "99.0",
        &format!("cat '{fixture}'; echo 'pg_dump: error: simulated failure' >&2; exit 1"),
    );
    let out = pgkeep
        .command()
        .env("PGKEEP_PG_BIN", &failing)
        .args(["backup", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("simulated failure"), "{stderr}");
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["status"], "failed");
    assert!(record["error"]
        .as_str()
        .unwrap()
        .contains("simulated failure"));
    assert_only_states(pgkeep.stored_files(), 1);

    std::fs::remove_dir_all(&failing).unwrap();
    let old = fake_pg_bin(pgkeep.dir.path(), "9.6.24", "exit 0");
    let out = pgkeep
        .command()
        .env("PGKEEP_PG_BIN", &old)
        .args(["backup"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("is version 9") && stderr.contains("major version or newer"),
        "{stderr}"
    );
    assert_only_states(pgkeep.stored_files(), 2);
}

/// Failed backups leave no object and no manifest: only their state objects, which say
/// `failed` (docs/FORMAT.md, "The state object").
fn assert_only_states(files: Vec<std::path::PathBuf>, n: usize) {
    assert_eq!(files.len(), n, "{files:?}");
    for file in &files {
        assert!(file.to_string_lossy().ends_with(".state.json"), "{files:?}");
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        assert_eq!(state["record"]["status"], "failed", "{state:#}");
    }
}
