//! Running the real `pgkeep` binary against a throwaway repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{pgkeep_bin, PgCluster};

/// A repository and key file in a temporary directory, and the command to use them.
pub struct Pgkeep {
    /// Holds the repository and the key; removed on drop.
    pub dir: tempfile::TempDir,
    /// `--repo`.
    pub repo: PathBuf,
    /// `--key-file` (outside the repository, as pgkeep insists).
    pub key: PathBuf,
    database_url: Option<String>,
    /// Backends chosen by URL (`PGKEEP_REPO`, `PGKEEP_CATALOG`, `PGKEEP_KEY`) instead of the
    /// local directory, plus settings such as `PGKEEP_AWS_ENDPOINT`.
    env: Vec<(String, String)>,
    urls: bool,
}

/// Settings pgkeep reads from the environment that a test must not inherit by accident.
const PGKEEP_SETTINGS: &[&str] = &[
    "PGKEEP_CATALOG",
    "PGKEEP_KEY",
    "PGKEEP_KEY_FILE",
    "PGKEEP_OLD_KEY_FILES",
    "PGKEEP_PG_BIN",
    "PGKEEP_AWS_ENDPOINT",
    "PGKEEP_DATABASE_SECRET_ARN",
    "PGKEEP_S3_PART_SIZE_MIB",
    "PGKEEP_S3_SSE_KMS_KEY_ID",
    "PGKEEP_ACTOR",
    "PGKEEP_COMPRESSION",
];

impl Pgkeep {
    /// A fresh, empty repository.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path().join("repo");
        let key = dir.path().join("keys/pgkeep.key");
        Pgkeep {
            dir,
            repo,
            key,
            database_url: None,
            env: Vec::new(),
            urls: false,
        }
    }

    /// Uses the backends these URLs select (e.g. `s3://…`, `dynamodb://…`, `kms://…`)
    /// instead of the local repository and key file.
    pub fn with_urls(mut self, repo: &str, catalog: &str, key: &str) -> Self {
        self.urls = true;
        self.env.extend([
            ("PGKEEP_REPO".to_owned(), repo.to_owned()),
            ("PGKEEP_CATALOG".to_owned(), catalog.to_owned()),
            ("PGKEEP_KEY".to_owned(), key.to_owned()),
        ]);
        self
    }

    /// The local repository's directory (its catalog is `catalog.sqlite3` inside).
    pub fn repo_dir(&self) -> &Path {
        &self.repo
    }

    /// Adds an environment variable to every run.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the database to back up (passed in the environment, never argv).
    pub fn database_url(mut self, url: String) -> Self {
        self.database_url = Some(url);
        self
    }

    /// `pgkeep` with the repository, key and database in its environment.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(pgkeep_bin());
        for name in PGKEEP_SETTINGS {
            cmd.env_remove(name);
        }
        cmd.env_remove("RUST_LOG").stdin(Stdio::null());
        if !self.urls {
            cmd.env("PGKEEP_REPO", &self.repo)
                .env("PGKEEP_KEY_FILE", &self.key);
        }
        for (name, value) in &self.env {
            cmd.env(name, value);
        }
        match &self.database_url {
            Some(url) => cmd.env("PGKEEP_DATABASE_URL", url),
            None => cmd.env_remove("PGKEEP_DATABASE_URL"),
        };
        cmd
    }

    /// Runs `pgkeep ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("running pgkeep")
    }

    /// Runs `pgkeep ARGS`, requires success, returns stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "pgkeep {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// `pgkeep backup --json ARGS`: the exit status, stderr and the printed record.
    pub fn backup(&self, args: &[&str]) -> (Output, Value) {
        let mut all = vec!["backup", "--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let record = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out, record)
    }

    /// `pgkeep backup --json`, required to succeed with status `completed`.
    pub fn backup_ok(&self, args: &[&str]) -> Value {
        let (out, record) = self.backup(args);
        assert!(
            out.status.success(),
            "backup failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(record["status"], "completed", "{record:#}");
        record
    }

    /// `pgkeep verify --json ARGS`: the exit status, stderr and the printed record (`Null`
    /// when nothing was printed).
    pub fn verify(&self, args: &[&str]) -> (Output, Value) {
        let mut all = vec!["verify", "--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let record = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out, record)
    }

    /// `pgkeep restore --json ARGS`: the exit status, stderr and the printed report.
    pub fn restore(&self, args: &[&str]) -> (Output, Value) {
        let mut all = vec!["restore", "--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out, report)
    }

    /// `pgkeep show ID --json`.
    pub fn show(&self, id: &str) -> Value {
        serde_json::from_str(&self.run_ok(&["show", id, "--json"])).expect("show --json is JSON")
    }

    /// The audit trail, newest first, read from the repository's catalog.
    pub fn audit(&self) -> Vec<pgkeep::model::AuditEntry> {
        let catalog =
            pgkeep::catalog::sqlite::SqliteCatalog::open(self.repo.join("catalog.sqlite3"))
                .expect("opening the catalog");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime
            .block_on(pgkeep::catalog::Catalog::list_audit(&catalog, None, 1000))
            .expect("listing the audit trail")
    }

    /// Runs `pgkeep ARGS` with a pg_restore that hangs once started, waits until it runs (and
    /// pgkeep's working database exists), interrupts pgkeep as Ctrl-C does, and returns how it
    /// exited.
    pub fn interrupt_during_pg_restore(&self, cluster: &PgCluster, args: &[&str]) -> Output {
        use std::os::unix::fs::PermissionsExt;
        let bin = self.dir.path().join("hanging-bin");
        std::fs::create_dir_all(&bin).expect("creating the fake bin dir");
        let marker = self.dir.path().join("pg_restore-started");
        let _ = std::fs::remove_file(&marker);
        // The real --version, so pgkeep's version check passes.
        let script = format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then exec '{}' --version; fi\ntouch '{}'\nexec sleep 600\n",
            cluster.bin_dir().join("pg_restore").display(),
            marker.display()
        );
        let path = bin.join("pg_restore");
        std::fs::write(&path, script).expect("writing the fake pg_restore");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("making the fake pg_restore executable");
        let child = self
            .command()
            .env("PGKEEP_PG_BIN", &bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting pgkeep");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !marker.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "pg_restore never started"
            );
            std::thread::yield_now();
        }
        assert!(
            !working_databases(cluster).is_empty(),
            "pg_restore runs, so its working database exists"
        );
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success());
        child.wait_with_output().expect("waiting for pgkeep")
    }

    /// `pgkeep list --json`.
    pub fn list(&self) -> Vec<Value> {
        serde_json::from_str(&self.run_ok(&["list", "--json"])).expect("list --json is JSON")
    }

    /// Every file in the repository other than the catalog: backup objects and manifests.
    pub fn stored_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if !entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("catalog.sqlite3")
                {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.repo, &mut out);
        out.sort();
        out
    }

    /// Path of a backup's stored object.
    pub fn object_path(&self, record: &Value) -> PathBuf {
        self.repo
            .join(record["object_key"].as_str().expect("object_key"))
    }

    /// `pgkeep cat ID | pg_restore --dbname=TARGET` into an existing empty database.
    pub fn restore_with_cat(&self, cluster: &PgCluster, id: &str, target: &str) -> Result<()> {
        let mut cat = self
            .command()
            .args(["cat", id])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning pgkeep cat")?;
        let archive = cat.stdout.take().expect("piped");
        let restore = cluster
            .command("pg_restore")
            .args(["--no-owner", "--exit-on-error", "--dbname", target])
            .stdin(archive)
            .output()
            .context("running pg_restore")?;
        let cat = cat.wait_with_output().context("waiting for pgkeep cat")?;
        // pg_restore first: when it stops early, cat only sees a broken pipe.
        if !restore.status.success() {
            bail!(
                "pg_restore failed: {}",
                String::from_utf8_lossy(&restore.stderr)
            );
        }
        if !cat.status.success() {
            bail!(
                "pgkeep cat failed: {}",
                String::from_utf8_lossy(&cat.stderr)
            );
        }
        Ok(())
    }
}

impl Default for Pgkeep {
    fn default() -> Self {
        Self::new()
    }
}

/// A database's exact table counts keyed the way pgkeep's manifests key them.
pub fn counts_by_name(cluster: &PgCluster, database: &str) -> Result<BTreeMap<String, u64>> {
    Ok(cluster
        .table_counts(database)?
        .into_iter()
        .map(|((schema, table), n)| (pgkeep::model::qualified_name(&schema, &table), n as u64))
        .collect())
}

/// pgkeep's working databases on the cluster (scratch databases of verifications, databases
/// of restores in progress): after any pgkeep run, there must be none.
pub fn working_databases(cluster: &PgCluster) -> Vec<String> {
    cluster
        .database_names()
        .expect("listing databases")
        .into_iter()
        .filter(|n| n.starts_with("pgkeep_verify_") || n.starts_with("pgkeep_restore_"))
        .collect()
}

/// A record's `row_counts` as a map.
pub fn record_counts(record: &Value) -> BTreeMap<String, u64> {
    serde_json::from_value(record["row_counts"].clone()).expect("row_counts is a map")
}
