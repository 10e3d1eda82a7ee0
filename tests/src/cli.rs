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
    "PGKEEP_PG_BIN",
    "PGKEEP_AWS_ENDPOINT",
    "PGKEEP_DATABASE_SECRET_ARN",
    "PGKEEP_S3_PART_SIZE_MIB",
    "PGKEEP_S3_SSE_KMS_KEY_ID",
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
        if !cat.status.success() {
            bail!(
                "pgkeep cat failed: {}",
                String::from_utf8_lossy(&cat.stderr)
            );
        }
        if !restore.status.success() {
            bail!(
                "pg_restore failed: {}",
                String::from_utf8_lossy(&restore.stderr)
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

/// A record's `row_counts` as a map.
pub fn record_counts(record: &Value) -> BTreeMap<String, u64> {
    serde_json::from_value(record["row_counts"].clone()).expect("row_counts is a map")
}
