//! docs/OPERATIONS.md's disaster recovery runs as written: the shell blocks between its
//! `<!-- dr:NAME -->` markers (but those marked `<!-- dr:untested: why -->`) are extracted and run with bash (`set -euo pipefail`) from a
//! fresh directory, with only the variables the doc tells the reader to set (checked against
//! the doc's own list), the real `pgkeep` first on `PATH` and the PostgreSQL client tools next.
//! Before: a repository with backups made by the real binary, then its catalog lost (the SQLite
//! file deleted; on the emulator, the DynamoDB table dropped). After: the list equals the one
//! before the loss, and the restored database holds exactly the chosen backup's rows.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgkeep_tests::aws::Moto;
use pgkeep_tests::cli::{counts_by_name, record_counts, working_databases, Pgkeep};
use pgkeep_tests::{pgkeep_bin, unique_name, PgCluster};
use serde_json::Value;

const DOC: &str = include_str!("../../docs/OPERATIONS.md");

/// The fenced `sh` blocks between `<!-- dr:NAME -->` and `<!-- /dr:NAME -->`, in order.
fn blocks(name: &str) -> Vec<String> {
    let open = format!("<!-- dr:{name} -->");
    let close = format!("<!-- /dr:{name} -->");
    let start = DOC
        .find(&open)
        .unwrap_or_else(|| panic!("OPERATIONS.md has no {open}"));
    let region = &DOC[start + open.len()..];
    let region = &region[..region
        .find(&close)
        .unwrap_or_else(|| panic!("OPERATIONS.md has no {close}"))];
    let mut out = Vec::new();
    let mut rest = region;
    while let Some(at) = rest.find("```sh\n") {
        let body = &rest[at + "```sh\n".len()..];
        let end = body.find("\n```").expect("an unclosed ```sh block");
        // A block the doc marks `<!-- dr:untested: why -->` (on the line before) is skipped.
        let untested = rest[..at]
            .trim_end()
            .rsplit('\n')
            .next()
            .is_some_and(|line| line.starts_with("<!-- dr:untested:"));
        if !untested {
            out.push(body[..end].to_owned());
        }
        rest = &body[end + 4..];
    }
    assert!(!out.is_empty(), "no ```sh block in {open}");
    out
}

/// The names a block of `NAME=value` / `export NAME=value …` lines assigns (comments ignored).
fn assigned(block: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in block.lines() {
        let code = line.split(" #").next().unwrap_or("");
        for word in code.split_whitespace().filter(|w| *w != "export") {
            let (name, _) = word
                .split_once('=')
                .unwrap_or_else(|| panic!("not an assignment in a variables block: {line}"));
            names.insert(name.to_owned());
        }
    }
    names
}

/// Where the doc's steps run: a fresh working directory, and a directory put first on `PATH`
/// holding the real `pgkeep` (and `python3`, the Python of scripts/test, when given); the
/// test's own checkpoint files go there too, out of the steps' way.
struct Shell {
    cwd: tempfile::TempDir,
    bin: tempfile::TempDir,
    path: String,
}

impl Shell {
    fn new(cluster: &PgCluster, python: Option<&str>) -> Shell {
        let bin = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(pgkeep_bin(), bin.path().join("pgkeep")).unwrap();
        if let Some(python) = python {
            let wrapper = bin.path().join("python3");
            std::fs::write(&wrapper, format!("#!/bin/sh\nexec '{python}' \"$@\"\n")).unwrap();
            std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let inherited = std::env::var("PATH").unwrap_or_default();
        let path = format!(
            "{}:{}:{inherited}",
            bin.path().display(),
            cluster.bin_dir().display()
        );
        Shell {
            cwd: tempfile::tempdir().unwrap(),
            bin,
            path,
        }
    }

    /// Runs `steps` (the doc's blocks, with test-only lines between them, never inside) with
    /// exactly `vars` (the reader's) and `env` (the password, the emulator's settings) set.
    fn run(&self, steps: &str, vars: &BTreeMap<&str, String>, env: &[(&str, String)]) {
        let script = format!("set -euo pipefail\n{steps}\n");
        let mut cmd = Command::new("bash");
        cmd.env_clear()
            .current_dir(self.cwd.path())
            .env("PATH", &self.path)
            .env("LANG", "C.UTF-8")
            .args(["-c", &script]);
        for name in ["HOME", "USER"] {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        for (name, value) in vars {
            cmd.env(name, value);
        }
        for (name, value) in env {
            cmd.env(name, value);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "the documented steps failed ({}):\n--- script\n{script}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Concatenates a path's steps (its blocks after the variables block), inserting `after[i]`
/// after step `i`.
fn steps(blocks: &[String], after: &[(usize, String)]) -> String {
    let mut script = String::new();
    for (i, block) in blocks.iter().enumerate().skip(1) {
        script.push_str(block);
        script.push('\n');
        for (_, line) in after.iter().filter(|(at, _)| *at == i) {
            script.push_str(line);
            script.push('\n');
        }
    }
    script
}

/// Checks the test gives exactly the variables the doc's first block names, and returns them.
fn reader_vars<'a>(
    doc_blocks: &[&[String]],
    vars: BTreeMap<&'a str, String>,
) -> BTreeMap<&'a str, String> {
    let doc: BTreeSet<String> = doc_blocks.iter().flat_map(|b| assigned(&b[0])).collect();
    let given: BTreeSet<String> = vars.keys().map(|k| (*k).to_owned()).collect();
    assert_eq!(
        given, doc,
        "the variables the doc tells the reader to set changed"
    );
    vars
}

const SQL: &str = r#"
CREATE SCHEMA sales;
CREATE TABLE public.customers (id int PRIMARY KEY, name text);
INSERT INTO public.customers SELECT g, 'customer ' || g FROM generate_series(1, 321) g;
CREATE TABLE sales."Order Lines" (id int, customer int, total numeric);
INSERT INTO sales."Order Lines" SELECT g, 1 + g % 321, g * 1.5 FROM generate_series(1, 777) g;
"#;

/// A database and three backups of it with different counts: the first completed, the second
/// verified (the one the steps must bring back), the newest deleted. Returns the database, its
/// `pgkeep`, the list before the loss and the chosen record.
fn history(
    pgkeep_for: impl Fn(&str) -> Pgkeep,
    cluster: &PgCluster,
) -> (String, Pgkeep, Vec<Value>, Value) {
    let db = unique_name("dr");
    cluster.create_database(&db).unwrap();
    cluster.psql(&db, SQL).unwrap();
    let pgkeep = pgkeep_for(&db);
    pgkeep.backup_ok(&["--compression", "gzip"]);
    cluster
        .psql(
            &db,
            "INSERT INTO public.customers SELECT g, 'more' FROM generate_series(1000, 1049) g;",
        )
        .unwrap();
    let chosen = pgkeep.backup_ok(&[]);
    let id = chosen["id"].as_str().unwrap().to_owned();
    let (out, verified) = pgkeep.verify(&[&id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(verified["status"], "verified");
    cluster
        .psql(&db, "DELETE FROM sales.\"Order Lines\" WHERE id > 700;")
        .unwrap();
    let doomed = pgkeep.backup_ok(&[]);
    pgkeep.run_ok(&["delete", doomed["id"].as_str().unwrap()]);
    let before = pgkeep.list();
    assert_eq!(before.len(), 3, "{before:#?}");
    // The live database differs from the chosen backup, so a restore of the wrong one shows.
    assert_ne!(
        counts_by_name(cluster, &db).unwrap(),
        record_counts(&chosen)
    );
    (db, pgkeep, before, chosen)
}

fn pg_vars(cluster: &PgCluster) -> [(&'static str, String); 3] {
    [
        ("PGHOST", cluster.host().to_owned()),
        ("PGPORT", cluster.port().to_string()),
        ("PGUSER", cluster.user().to_owned()),
    ]
}

/// The restored database holds exactly the chosen backup's rows; nothing of pgkeep's working
/// databases is left; the restored database is dropped for the next path.
fn check_restored(cluster: &PgCluster, db: &str, chosen: &Value) {
    let restored = format!("{db}_restored");
    assert_eq!(
        counts_by_name(cluster, &restored).unwrap(),
        record_counts(chosen),
        "the restored database is not the chosen backup"
    );
    assert!(working_databases(cluster).is_empty());
    cluster.drop_database(&restored).unwrap();
}

fn read_list(path: &Path) -> Vec<Value> {
    serde_json::from_slice(&std::fs::read(path).unwrap()).expect("list --json is JSON")
}

/// The Python with `cryptography` and `zstandard` that scripts/test prepares, for the path
/// without the pgkeep binary.
fn python() -> Option<String> {
    match std::env::var("PGKEEP_TEST_PYTHON") {
        Ok(p) => Some(p),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("PGKEEP_TEST_PYTHON is not set: run the tests through scripts/test")
        }
        Err(_) => {
            eprintln!("skipped the path without pgkeep: PGKEEP_TEST_PYTHON is not set (scripts/test sets it)");
            None
        }
    }
}

fn decrypt_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/pgkeep_decrypt.py")
}

#[test]
fn the_embedded_disaster_recovery_steps_run_as_written() {
    let cluster = PgCluster::start().unwrap();
    let (db, pgkeep, before, chosen) =
        history(|db| Pgkeep::new().database_url(cluster.url(db)), &cluster);
    for name in [
        "catalog.sqlite3",
        "catalog.sqlite3-wal",
        "catalog.sqlite3-shm",
    ] {
        let _ = std::fs::remove_file(pgkeep.repo.join(name));
    }
    assert!(
        !pgkeep.run(&["list"]).status.success(),
        "the loss is refused"
    );

    let main = blocks("embedded");
    // Variables, rebuild (the checkpoint goes after it), restore.
    assert_eq!(main.len(), 3, "{main:#?}");
    let mut vars = BTreeMap::from([
        ("REPO", pgkeep.repo.display().to_string()),
        ("KEY_FILE", pgkeep.key.display().to_string()),
        ("DB", db.clone()),
    ]);
    vars.extend(pg_vars(&cluster));
    let vars = reader_vars(&[&main], vars);
    let password = [("PGPASSWORD", cluster.password().to_owned())];

    let python = python();
    let shell = Shell::new(&cluster, python.as_deref());
    let checkpoint = shell.bin.path().join("after-repair.json");
    shell.run(
        &steps(
            &main,
            &[(
                1,
                format!("pgkeep list --json > '{}'", checkpoint.display()),
            )],
        ),
        &vars,
        &password,
    );
    assert_eq!(read_list(&checkpoint), before, "the list after repair");
    check_restored(&cluster, &db, &chosen);

    // Without the pgkeep binary: the same variables and DECRYPT.
    let Some(python) = python else { return };
    let by_hand = blocks("by-hand");
    let embedded_by_hand = blocks("embedded-by-hand");
    let mut vars = vars;
    vars.insert("DECRYPT", decrypt_path().display().to_string());
    let vars = reader_vars(&[&main, &by_hand], vars);
    let shell = Shell::new(&cluster, Some(&python));
    let mut all = vec![String::new()];
    all.extend(embedded_by_hand);
    shell.run(&steps(&all, &[]), &vars, &password);
    check_restored(&cluster, &db, &chosen);
}

#[test]
fn the_aws_disaster_recovery_steps_run_as_written_against_the_emulator() {
    let Some(moto) = Moto::start() else { return };
    let cluster = PgCluster::start().unwrap();
    let (db, pgkeep, before, chosen) = history(
        |db| {
            Pgkeep::new()
                .database_url(cluster.url(db))
                .with_urls(&moto.repo_url(), &moto.catalog_url(), &moto.key_url())
                .env("PGKEEP_AWS_ENDPOINT", &moto.endpoint)
        },
        &cluster,
    );
    moto.runtime.block_on(async {
        aws_sdk_dynamodb::Client::new(&moto.config)
            .delete_table()
            .table_name(&moto.table)
            .send()
            .await
            .unwrap();
    });
    let lost = pgkeep.run(&["list"]);
    assert!(!lost.status.success(), "the lost table is refused");
    assert!(
        String::from_utf8_lossy(&lost.stderr).contains("pgkeep init"),
        "{}",
        String::from_utf8_lossy(&lost.stderr)
    );

    let region = std::env::var("AWS_DEFAULT_REGION")
        .or_else(|_| std::env::var("AWS_REGION"))
        .unwrap_or_else(|_| "us-east-1".to_owned());
    let main = blocks("aws");
    // Variables, (the table restore, untested), init and rebuild, restore.
    assert_eq!(main.len(), 3, "{main:#?}");
    assert!(main[1].starts_with("export PGKEEP_REPO="), "{main:#?}");
    let mut vars = BTreeMap::from([
        ("BUCKET", moto.bucket.clone()),
        ("PREFIX", moto.prefix.clone()),
        ("TABLE", moto.table.clone()),
        ("KEY_ARN", moto.key_arn.clone()),
        ("DB", db.clone()),
        ("AWS_DEFAULT_REGION", region),
    ]);
    vars.extend(pg_vars(&cluster));
    let vars = reader_vars(&[&main], vars);
    // Not the reader's: the password, and the emulator in place of AWS (dummy credentials;
    // no configuration file may send anything elsewhere).
    let env = [
        ("PGPASSWORD", cluster.password().to_owned()),
        ("PGKEEP_AWS_ENDPOINT", moto.endpoint.clone()),
        ("AWS_ENDPOINT_URL", moto.endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
    ];

    let python = python();
    let shell = Shell::new(&cluster, python.as_deref());
    let checkpoint = shell.bin.path().join("after-repair.json");
    shell.run(
        &steps(
            &main,
            &[(
                1,
                format!("pgkeep list --json > '{}'", checkpoint.display()),
            )],
        ),
        &vars,
        &env,
    );
    assert_eq!(
        read_list(&checkpoint),
        before,
        "the list after init and repair"
    );
    check_restored(&cluster, &db, &chosen);
    // The table init made is Terraform's: point-in-time recovery on.
    let pitr = moto.runtime.block_on(async {
        aws_sdk_dynamodb::Client::new(&moto.config)
            .describe_continuous_backups()
            .table_name(&moto.table)
            .send()
            .await
            .unwrap()
    });
    assert_eq!(
        pitr.continuous_backups_description()
            .and_then(|d| d.point_in_time_recovery_description())
            .and_then(|p| p.point_in_time_recovery_status())
            .map(|s| s.as_str()),
        Some("ENABLED")
    );

    // Without the pgkeep binary: the AWS CLI, KMS and the Python reader.
    let Some(python) = python else { return };
    if which("aws").is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the AWS CLI (`aws`) is not on PATH"
        );
        eprintln!("skipped the AWS path without pgkeep: no `aws` on PATH");
        return;
    }
    let by_hand = blocks("by-hand");
    let mut vars = vars;
    vars.insert("DECRYPT", decrypt_path().display().to_string());
    let vars = reader_vars(&[&main, &by_hand], vars);
    let shell = Shell::new(&cluster, Some(&python));
    let mut all = vec![String::new()];
    all.extend(blocks("aws-by-hand"));
    shell.run(&steps(&all, &[]), &vars, &env);
    check_restored(&cluster, &db, &chosen);
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
