//! End-to-end test harness for pgkeep: a throwaway PostgreSQL cluster ([`PgCluster`]), sample
//! data ([`load_sample`]), the paths of the real `pgkeep` binary ([`pgkeep_bin`]) and Lambda
//! binaries ([`function_bin`]), a fake Lambda Runtime API to run those in
//! ([`lambda_runtime`]), and the sample events ([`events`]).

pub mod aws;
pub mod cli;
pub mod events;
pub mod http1;
pub mod invoke_forwarder;
pub mod lambda_runtime;
mod pg;
pub mod proxy;
mod sys;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};

pub use pg::{find_bin_dir, PgCluster};

/// SQL creating and filling `public.notes` (awkward text, unicode, NULLs, jsonb); shared with
/// `scripts/demo`.
pub const SAMPLE_NOTES_SQL: &str = include_str!("../../scripts/sql/sample_notes.sql");

/// Rows `SAMPLE_NOTES_SQL` inserts into `public.notes`.
pub const SAMPLE_NOTES_ROWS: i64 = 5000;

/// `pgbench -i -s SCALE -q` (pgbench_accounts gets 100000 × scale rows) plus `public.notes`.
pub fn load_sample(cluster: &PgCluster, db: &str, scale: u32) -> Result<()> {
    let scale = scale.to_string();
    let out = cluster
        .pgbench(db, &["-i", "-s", &scale, "-q"])
        .output()
        .context("running pgbench -i")?;
    if !out.status.success() {
        bail!(
            "pgbench -i failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    cluster
        .psql(db, SAMPLE_NOTES_SQL)
        .context("creating public.notes")?;
    Ok(())
}

/// A unique name for test databases and dirs: `{prefix}_{pid}_{counter}`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{n}", std::process::id())
}

/// Path of the built `pgkeep` binary.
///
/// `$PGKEEP_BIN` if set. Otherwise `<target>/<profile>/pgkeep`, derived from the running test
/// executable (`<target>/<profile>/deps/…`); it is built once per process with
/// `cargo build -p pgkeep-cli --bin pgkeep` when missing or older than the sources of `cli/`,
/// `shared/` or `Cargo.lock` (the tests crate does not depend on the CLI, so cargo would not
/// rebuild it for us). Panics if that build fails.
pub fn pgkeep_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("PGKEEP_BIN") {
        return PathBuf::from(path);
    }
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        locate_or_build("pgkeep-cli", "pgkeep", "cli")
            .unwrap_or_else(|e| panic!("pgkeep binary: {e:#}"))
    })
    .clone()
}

/// Path of the built binary of a Lambda function (`dump`, `verify`, `prune`, `status`), found
/// and rebuilt like [`pgkeep_bin`] (package `pgkeep-NAME`, sources `functions/NAME/`).
/// Panics if that build fails.
pub fn function_bin(name: &str) -> PathBuf {
    static BINS: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut bins = BINS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = bins.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let path = locate_or_build(
        &format!("pgkeep-{name}"),
        name,
        &format!("functions/{name}"),
    )
    .unwrap_or_else(|e| panic!("{name} binary: {e:#}"));
    bins.push((name.to_owned(), path.clone()));
    path
}

/// `<target>/<profile>/BIN`, built with `cargo build -p PACKAGE --bin BIN` unless it is newer
/// than `sources` (a directory of the workspace), `shared/` and `Cargo.lock`.
fn locate_or_build(package: &str, bin_name: &str, sources: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut profile_dir = exe.parent().context("test exe has no parent")?;
    if profile_dir.file_name().is_some_and(|n| n == "deps") {
        profile_dir = profile_dir.parent().context("deps dir has no parent")?;
    }
    let target_dir = profile_dir.parent().context("profile dir has no parent")?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("profile dir name")?;
    let bin = profile_dir.join(bin_name);

    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    if let Ok(built) = std::fs::metadata(&bin).and_then(|m| m.modified()) {
        let sources = [
            workspace.join(sources),
            workspace.join("shared"),
            workspace.join("Cargo.lock"),
        ];
        if sources.iter().all(|p| newest_mtime(p) <= Some(built)) {
            return Ok(bin);
        }
    }

    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-p", package, "--bin", bin_name])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(workspace);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    if !bin.exists() {
        bail!("{cmd:?} succeeded but {} does not exist", bin.display());
    }
    Ok(bin)
}

/// The newest modification time of a file or of any file under a directory.
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let own = meta.modified().ok();
    if !meta.is_dir() {
        return own;
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter(|e| e.file_name() != "target")
        .filter_map(|e| newest_mtime(&e.path()))
        .chain(own)
        .max()
}
