//! Runs that die, are stopped, or cannot record their end: the next backup of the database
//! starts at once, nothing they stored is left over, and the record says what happened. See
//! the table in `main.rs`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgkeep::backends::Services;
use pgkeep::catalog::sqlite::SqliteCatalog;
use pgkeep::catalog::Catalog;
use pgkeep::keys::file::FileKeyProvider;
use pgkeep::model::{path_segment, BackupId, BackupKind, BackupStatus};
use pgkeep::ops::backup::{backup, BackupRequest};
use pgkeep::postgres::PgTarget;
use pgkeep::store::fs::FsStore;
use pgkeep::testing::{CatalogFaults, FaultyCatalog};
use pgkeep_tests::cli::Pgkeep;
use pgkeep_tests::{load_sample, unique_name, PgCluster};
use serde_json::Value;

/// A database with the sample data (scale 1: a dump of a few MB).
fn source(cluster: &PgCluster) -> String {
    let db = unique_name("runs");
    cluster.create_database(&db).unwrap();
    load_sample(cluster, &db, 1).unwrap();
    db
}

/// A directory holding a `pg_dump` that runs the real one, then announces itself by writing
/// its pid to `marker` and (with `hang`) keeps its stdout open so pgkeep waits: a dump
/// frozen after writing everything, for as long as the test wants. Without `hang` it first
/// sleeps `delay` and then dumps: a slow dump.
fn fake_pg_dump(pgkeep: &Pgkeep, cluster: &PgCluster, name: &str, script: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = pgkeep.dir.path().join(name);
    std::fs::create_dir_all(&bin).unwrap();
    let real = cluster.bin_dir().join("pg_dump");
    let text = format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then exec '{}' --version; fi\nREAL='{}'\n{script}\n",
        real.display(),
        real.display()
    );
    let path = bin.join("pg_dump");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// pg_dump that dumps everything, writes its pid to `marker` and then hangs with its stdout
/// open (pgkeep has streamed the whole archive into its partial object and waits for EOF).
fn hanging_pg_dump(pgkeep: &Pgkeep, cluster: &PgCluster, marker: &Path) -> PathBuf {
    fake_pg_dump(
        pgkeep,
        cluster,
        "hanging-bin",
        &format!(
            "\"$REAL\" \"$@\" || exit $?\necho $$ > '{m}.tmp' && mv '{m}.tmp' '{m}'\nexec sleep 600",
            m = marker.display()
        ),
    )
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after 60 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `pgkeep backup --json` with the pg_dump of `bin`.
/// A backup (with `extra` arguments) whose pg_dump has streamed its whole dump and then hangs,
/// so the run stays in progress: the running `pgkeep`, and the marker file whose existence
/// said the dump was written (for [`kill_leftover_dump`]).
fn start_hanging_backup(pgkeep: &Pgkeep, cluster: &PgCluster, extra: &[&str]) -> (Child, PathBuf) {
    let marker = pgkeep.dir.path().join("pg_dump-hangs");
    let bin = hanging_pg_dump(pgkeep, cluster, &marker);
    let child = start_backup(pgkeep, &bin, extra);
    wait_for("pg_dump to finish writing", || marker.exists());
    (child, marker)
}

fn start_backup(pgkeep: &Pgkeep, bin: &Path, extra: &[&str]) -> Child {
    pgkeep
        .command()
        .env("PGKEEP_PG_BIN", bin)
        .args(["backup", "--json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting pgkeep backup")
}

fn send(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Kills the hanging fake pg_dump left behind (its parent was killed outright).
fn kill_leftover_dump(marker: &Path) {
    if let Ok(pid) = std::fs::read_to_string(marker) {
        let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
    }
}

/// Hidden temporary files (partial objects) anywhere in the repository.
fn partial_files(repo: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                walk(&path, out);
            } else if name.starts_with('.') && name.contains(".tmp-") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(repo, &mut out);
    out
}

fn the_only(records: &[Value], status: &str) -> Value {
    let found: Vec<&Value> = records.iter().filter(|r| r["status"] == status).collect();
    assert_eq!(found.len(), 1, "one {status} record expected: {records:#?}");
    found[0].clone()
}

/// The in-progress record of the run under way, once the catalog has it.
fn wait_for_in_progress(pgkeep: &Pgkeep) -> Value {
    let mut found = None;
    wait_for("the run's in_progress record", || {
        found = pgkeep
            .list()
            .into_iter()
            .find(|r| r["status"] == "in_progress");
        found.is_some()
    });
    found.unwrap()
}

/// `kill -9` of a local backup that has streamed its dump into its partial object: the next
/// backup starts at once (the lease names a process that is gone), the killed run is recorded
/// as abandoned with the reason, and its partial object is removed.
#[test]
fn kill_9_of_a_local_backup_blocks_nothing_and_leaves_nothing() {
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let (mut child, marker) = start_hanging_backup(&pgkeep, &cluster, &[]);
    let killed = wait_for_in_progress(&pgkeep);
    assert!(
        !partial_files(&pgkeep.repo).is_empty(),
        "the killed run is mid-write"
    );
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    kill_leftover_dump(&marker);
    assert_eq!(out.status.code(), None, "killed by SIGKILL");

    let started = Instant::now();
    let next = pgkeep.backup_ok(&["--pg-bin", cluster.bin_dir().to_str().unwrap()]);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the next backup did not wait out a lease"
    );
    let records = pgkeep.list();
    let failed = the_only(&records, "failed");
    assert_eq!(failed["id"], killed["id"]);
    let error = failed["error"].as_str().unwrap();
    assert!(error.starts_with("abandoned"), "{error}");
    assert!(error.contains("crashed, was killed"), "{error}");
    assert_eq!(the_only(&records, "completed")["id"], next["id"]);
    assert!(
        partial_files(&pgkeep.repo).is_empty(),
        "{:?}",
        partial_files(&pgkeep.repo)
    );
    assert!(!pgkeep.object_path(&killed).exists());
}

/// SIGTERM (what systemd, ECS and Kubernetes send) and SIGINT (Ctrl-C) end a backup honestly:
/// exit 143 / 130, the record failed with the signal's name, no partial object, the lease
/// free for the next backup at once.
#[test]
fn sigterm_and_sigint_record_the_run_failed_and_free_the_database() {
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    for (signal, code) in [("TERM", 143), ("INT", 130)] {
        let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
        let (child, marker) = start_hanging_backup(&pgkeep, &cluster, &[]);
        let stopped = wait_for_in_progress(&pgkeep);
        send(signal, child.id());
        let out = child.wait_with_output().unwrap();
        kill_leftover_dump(&marker);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "SIG{signal}: {stderr}");
        assert!(stderr.contains("recorded as failed"), "{stderr}");

        let record = pgkeep.show(stopped["id"].as_str().unwrap());
        assert_eq!(record["status"], "failed");
        assert_eq!(
            record["error"],
            format!("interrupted (SIG{signal})"),
            "{record:#}"
        );
        assert!(partial_files(&pgkeep.repo).is_empty());
        assert!(!pgkeep.object_path(&stopped).exists());
        pgkeep.backup_ok(&["--pg-bin", cluster.bin_dir().to_str().unwrap()]);
    }
}

/// Ctrl-C in the first milliseconds of a backup, at whatever point it lands: either nothing
/// was recorded and pgkeep says so, or the record is failed; never a lease that blocks the
/// database, never an `in_progress` record left.
#[test]
fn ctrl_c_at_once_says_the_truth_and_blocks_nothing() {
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let real = cluster.bin_dir().to_path_buf();
    for delay_ms in [0u64, 5, 10, 20, 40, 80] {
        let child = start_backup(&pgkeep, &real, &[]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        send("INT", child.id());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let records = pgkeep.list();
        assert!(
            records.iter().all(|r| r["status"] != "in_progress"),
            "after {delay_ms} ms: {records:#?}"
        );
        if stderr.contains("nothing was recorded") {
            assert_eq!(out.status.code(), Some(130), "{stderr}");
        } else if stderr.contains("recorded as failed") {
            assert_eq!(out.status.code(), Some(130), "{stderr}");
            assert!(records.iter().any(|r| r["status"] == "failed"));
        }
        // Whatever happened, the next backup runs at once.
        pgkeep.backup_ok(&["--pg-bin", real.to_str().unwrap()]);
    }
}

/// A dump that runs longer than the abandon-after (a slow pg_dump) keeps its lease: a prune
/// and a second backup meanwhile, both with `--abandon-after 1s`, neither reap it nor take
/// its lease, and it completes.
#[test]
fn a_dump_longer_than_the_abandon_after_is_not_reaped() {
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let marker = pgkeep.dir.path().join("pg_dump-slow");
    let release = pgkeep.dir.path().join("pg_dump-go");
    let bin = fake_pg_dump(
        &pgkeep,
        &cluster,
        "slow-bin",
        &format!(
            "touch '{m}'\nwhile [ ! -e '{r}' ]; do sleep 0.05; done\nexec \"$REAL\" \"$@\"",
            m = marker.display(),
            r = release.display()
        ),
    );
    let child = start_backup(&pgkeep, &bin, &["--abandon-after", "1s"]);
    wait_for("the slow pg_dump to start", || marker.exists());
    let running = wait_for_in_progress(&pgkeep);
    // Older than the abandon-after by a margin.
    let started = Instant::now();
    wait_for("the run to outlive --abandon-after", || {
        started.elapsed() > Duration::from_secs(3)
    });

    let prune = pgkeep.run(&[
        "prune",
        "--abandon-after",
        "1s",
        "--keep-last",
        "10",
        "--json",
    ]);
    assert!(
        prune.status.success(),
        "{}",
        String::from_utf8_lossy(&prune.stderr)
    );
    let report: Value = serde_json::from_slice(&prune.stdout).unwrap();
    assert_eq!(
        report["plan"]["abandoned"],
        serde_json::json!([]),
        "{report:#}"
    );
    assert_eq!(
        report["report"]["reaped"],
        serde_json::json!([]),
        "{report:#}"
    );
    let (second, _) = pgkeep.backup(&[
        "--abandon-after",
        "1s",
        "--pg-bin",
        cluster.bin_dir().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(8), "{stderr}");
    assert!(stderr.contains(running["id"].as_str().unwrap()), "{stderr}");
    assert_eq!(
        pgkeep.show(running["id"].as_str().unwrap())["status"],
        "in_progress"
    );

    std::fs::write(&release, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        pgkeep.show(running["id"].as_str().unwrap())["status"],
        "completed"
    );
}

/// The library's view of a local repository (what `pgkeep` opens), optionally with a catalog
/// whose updates fail.
fn local_services(pgkeep: &Pgkeep, faults: CatalogFaults) -> Services {
    let catalog: Arc<dyn Catalog> =
        Arc::new(SqliteCatalog::open(pgkeep.repo.join("catalog.sqlite3")).unwrap());
    Services {
        store: Arc::new(FsStore::new(&pgkeep.repo)),
        catalog: Arc::new(FaultyCatalog::new(catalog, faults)),
        keys: Arc::new(FileKeyProvider::load_or_create(&pgkeep.key).unwrap()),
    }
}

/// The heartbeat: a run renews its lease while it runs, so a lease timeout far shorter than
/// the dump never frees it; once the run ends the lease is gone.
#[test]
fn the_heartbeat_keeps_a_long_runs_lease_past_its_timeout() {
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let pgkeep = Pgkeep::new();
    let release = pgkeep.dir.path().join("pg_dump-go");
    let bin = fake_pg_dump(
        &pgkeep,
        &cluster,
        "slow-bin",
        &format!(
            "while [ ! -e '{r}' ]; do sleep 0.05; done\nexec \"$REAL\" \"$@\"",
            r = release.display()
        ),
    );
    let services = local_services(&pgkeep, CatalogFaults::default());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut request = BackupRequest::new(
        PgTarget::parse(&cluster.url(&db)).unwrap(),
        BackupKind::Manual,
    );
    request.pg_bin = Some(bin);
    request.lease_ttl = chrono::Duration::seconds(1);
    let catalog = services.catalog.clone();
    let first_lease = runtime.block_on(async {
        let run = tokio::spawn({
            let services = Services {
                store: services.store.clone(),
                catalog: services.catalog.clone(),
                keys: services.keys.clone(),
            };
            let request = request.clone();
            async move { backup(&services, &request, Arc::default()).await }
        });
        let mut first = None;
        while first.is_none() {
            first = catalog.get_lease(&db).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let first = first.unwrap();
        // Three timeouts later the lease is still this run's, and not expired.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = chrono::Utc::now();
        let lease = catalog.get_lease(&db).await.unwrap().unwrap();
        assert_eq!(lease.holder, first.holder);
        assert!(lease.expires_at > now, "renewed: {lease:?}");
        assert!(lease.expires_at > first.expires_at + chrono::Duration::seconds(2));
        std::fs::write(&release, b"").unwrap();
        let record = run.await.unwrap().unwrap();
        assert_eq!(record.status, BackupStatus::Completed);
        first
    });
    assert_eq!(runtime.block_on(catalog.get_lease(&db)).unwrap(), None);
    assert!(first_lease.process.is_some());
}

/// The final catalog write fails (a full disk under the catalog, a lost connection): the run
/// fails loudly with its object and manifest published and its record `in_progress`. It gives
/// its lease back, and the next reaper pass (here: the next backup) settles the record as
/// `completed` from the manifest; a published run whose manifest does not check out is failed
/// and its keys removed instead. Prune settles such a run the same way and reports it as
/// settled, not as an abandoned run.
#[test]
fn a_failed_final_catalog_write_is_settled_by_the_next_reaper_pass() {
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let broken = local_services(
        &pgkeep,
        CatalogFaults {
            update: true,
            ..Default::default()
        },
    );
    let mut request = BackupRequest::new(
        PgTarget::parse(&cluster.url(&db)).unwrap(),
        BackupKind::Manual,
    );
    request.pg_bin = Some(cluster.bin_dir().to_path_buf());

    let mut ids: Vec<BackupId> = Vec::new();
    for _ in 0..2 {
        let id = BackupId::generate(chrono::Utc::now());
        request.id = Some(id.clone());
        let err = runtime
            .block_on(backup(&broken, &request, Arc::default()))
            .unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        let record = runtime.block_on(broken.catalog.get(&id)).unwrap();
        assert_eq!(record.status, BackupStatus::InProgress);
        assert!(runtime
            .block_on(broken.store.head(&record.object_key))
            .unwrap()
            .is_some());
        assert_eq!(
            runtime.block_on(broken.catalog.get_lease(&db)).unwrap(),
            None
        );
        ids.push(id);
    }
    // The second run's manifest is damaged: it cannot be settled as completed.
    let damaged = runtime.block_on(broken.catalog.get(&ids[1])).unwrap();
    runtime
        .block_on(broken.store.put(&damaged.manifest_key(), b"{".to_vec()))
        .unwrap();

    let next = pgkeep.backup_ok(&[]);
    let settled = pgkeep.show(ids[0].as_str());
    assert_eq!(settled["status"], "completed", "{settled:#}");
    assert!(settled["sha256"].is_string());
    assert!(pgkeep.object_path(&settled).exists());
    let failed = pgkeep.show(ids[1].as_str());
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert!(failed["error"].as_str().unwrap().starts_with("abandoned"));
    assert!(!pgkeep.object_path(&failed).exists());
    assert!(pgkeep.list().iter().all(|r| r["status"] != "in_progress"));
    assert_eq!(next["status"], "completed");
    // The settled backup is a real one: it verifies.
    let (out, verified) = pgkeep.verify(&[ids[0].as_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(verified["status"], "verified");

    // Settled by prune instead: reported as settled, not among the abandoned runs.
    let id = BackupId::generate(chrono::Utc::now());
    request.id = Some(id.clone());
    runtime
        .block_on(backup(&broken, &request, Arc::default()))
        .unwrap_err();
    let done = prune_json(&pgkeep, &[]);
    assert_eq!(
        done["report"]["settled"],
        serde_json::json!([id.as_str()]),
        "{done:#}"
    );
    assert_eq!(done["report"]["reaped"], serde_json::json!([]), "{done:#}");
    assert_eq!(pgkeep.show(id.as_str())["status"], "completed");
}

/// `kill -9` of a backup to S3 with the DynamoDB catalog (moto): the next backup starts at
/// once (same host: the lease's process is gone; elsewhere it would wait at most the
/// heartbeat timeout), the killed run is recorded as abandoned, and no multipart upload stays
/// open.
#[test]
fn kill_9_of_an_s3_backup_blocks_nothing_and_leaves_no_open_upload() {
    let Some(moto) = pgkeep_tests::aws::Moto::start() else {
        return;
    };
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let pgkeep = Pgkeep::new()
        .database_url(cluster.url(&db))
        .with_urls(&moto.repo_url(), &moto.catalog_url(), &moto.key_url())
        .env("PGKEEP_AWS_ENDPOINT", &moto.endpoint)
        .env("PGKEEP_S3_PART_SIZE_MIB", "5");
    let (mut child, marker) = start_hanging_backup(&pgkeep, &cluster, &[]);
    let killed = wait_for_in_progress(&pgkeep);
    child.kill().unwrap();
    child.wait().unwrap();
    kill_leftover_dump(&marker);

    let started = Instant::now();
    let next = pgkeep.backup_ok(&["--pg-bin", cluster.bin_dir().to_str().unwrap()]);
    assert!(started.elapsed() < Duration::from_secs(60));
    let failed = pgkeep.show(killed["id"].as_str().unwrap());
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert!(failed["error"].as_str().unwrap().starts_with("abandoned"));
    assert_eq!(
        pgkeep.show(next["id"].as_str().unwrap())["status"],
        "completed"
    );
    assert!(moto.open_uploads().is_empty(), "{:?}", moto.open_uploads());
    // Of the killed run only its state object (which says `failed`) remains.
    let left: Vec<String> = moto
        .objects()
        .into_iter()
        .filter(|k| k.contains(killed["id"].as_str().unwrap()))
        .collect();
    assert!(
        left.len() == 1 && left[0].ends_with(".state.json"),
        "{left:?}"
    );
}

/// `pgkeep prune --json ARGS` (keeping every backup), required to succeed; its JSON.
fn prune_json(pgkeep: &Pgkeep, args: &[&str]) -> Value {
    let out = pgkeep
        .command()
        .args(["prune", "--keep-last", "100", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn file_size(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).unwrap().len()
}

/// A killed local backup whose record was settled without removing its hidden partial object
/// (what an older pgkeep left, or a run whose clean-up failed): prune's orphan sweep lists it
/// under `--dry-run` and keeps it, then removes it and reports how many and how large. The
/// partial object of a live run (a pg_dump still running) is never touched.
#[test]
fn prune_sweeps_the_partial_object_of_a_killed_run_and_keeps_a_live_ones() {
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let marker = pgkeep.dir.path().join("pg_dump-hangs");
    let bin = hanging_pg_dump(&pgkeep, &cluster, &marker);

    // A run killed with its dump streamed into its partial object.
    let mut child = start_backup(&pgkeep, &bin, &[]);
    wait_for("pg_dump to finish writing", || marker.exists());
    let killed = wait_for_in_progress(&pgkeep);
    child.kill().unwrap();
    child.wait().unwrap();
    kill_leftover_dump(&marker);
    std::fs::remove_file(&marker).unwrap();
    let orphan = partial_files(&pgkeep.repo);
    assert_eq!(orphan.len(), 1, "{orphan:?}");
    let orphan = orphan[0].clone();
    let orphan_bytes = file_size(&orphan);
    assert!(orphan_bytes > 0);
    // Its record settled as failed, its partial object left behind.
    let services = local_services(&pgkeep, CatalogFaults::default());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let id: BackupId = killed["id"].as_str().unwrap().parse().unwrap();
        let mut record = services.catalog.get(&id).await.unwrap();
        record.transition(BackupStatus::Failed).unwrap();
        record.error = Some("killed (settled by hand in this test)".into());
        services
            .catalog
            .update(&record, BackupStatus::InProgress)
            .await
            .unwrap();
    });

    // A live run, mid-write, older than the abandon-after prune is given.
    let mut live = start_backup(&pgkeep, &bin, &[]);
    wait_for("the live pg_dump to finish writing", || marker.exists());
    let running = wait_for_in_progress(&pgkeep);
    let live_partials: Vec<PathBuf> = partial_files(&pgkeep.repo)
        .into_iter()
        .filter(|p| p != &orphan)
        .collect();
    assert_eq!(live_partials.len(), 1, "{live_partials:?}");
    let started = Instant::now();
    wait_for("the live run to outlive --abandon-after", || {
        started.elapsed() > Duration::from_secs(2)
    });

    let dry = prune_json(&pgkeep, &["--dry-run", "--abandon-after", "1s"]);
    let orphans = dry["plan"]["orphans"].as_array().unwrap();
    assert_eq!(orphans.len(), 1, "{dry:#}");
    assert_eq!(orphans[0]["kind"], "upload");
    assert_eq!(orphans[0]["backup"], killed["id"]);
    assert_eq!(orphans[0]["size"], orphan_bytes);
    assert!(orphan.exists(), "a dry run removes nothing");

    let done = prune_json(&pgkeep, &["--abandon-after", "1s"]);
    assert_eq!(done["report"]["swept"]["count"], 1, "{done:#}");
    assert_eq!(done["report"]["swept"]["bytes"], orphan_bytes, "{done:#}");
    assert!(!orphan.exists());
    assert!(live_partials[0].exists(), "the live run's partial object");
    assert_eq!(
        pgkeep.show(running["id"].as_str().unwrap())["status"],
        "in_progress"
    );

    send("TERM", live.id());
    live.wait().unwrap();
    kill_leftover_dump(&marker);
    assert!(partial_files(&pgkeep.repo).is_empty());
}

/// Staged restore files named like ours in `dir`.
fn staged_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".pgkeep-restore-")
        })
        .map(|e| e.path())
        .collect()
}

/// `kill -9` of a `restore --jobs` while pg_restore reads its staged plaintext archive: the
/// staged file stays (nothing can remove it at that moment); the next prune lists it
/// (`--dry-run` keeps it) and removes it, reporting its size. While the restore was alive,
/// prune left its staged file alone.
#[test]
fn prune_sweeps_the_staged_file_of_a_killed_parallel_restore() {
    use std::os::unix::fs::PermissionsExt;
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let pgkeep = Pgkeep::new().database_url(cluster.url(&db));
    let backup = pgkeep.backup_ok(&["--pg-bin", cluster.bin_dir().to_str().unwrap()]);
    let staging = pgkeep.dir.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let staging_arg = staging.to_str().unwrap();

    // A pg_restore that announces itself and hangs: the staged file is complete and in use.
    let bin = pgkeep.dir.path().join("restore-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let marker = pgkeep.dir.path().join("pg_restore-pid");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then exec '{}' --version; fi\necho $$ > '{m}.tmp' && mv '{m}.tmp' '{m}'\nexec sleep 600\n",
        cluster.bin_dir().join("pg_restore").display(),
        m = marker.display()
    );
    std::fs::write(bin.join("pg_restore"), script).unwrap();
    std::fs::set_permissions(
        bin.join("pg_restore"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let target = unique_name("staged");
    let mut child = pgkeep
        .command()
        .env("PGKEEP_PG_BIN", &bin)
        .args([
            "restore",
            backup["id"].as_str().unwrap(),
            "--target-db",
            &target,
            "--jobs",
            "2",
            "--staging-dir",
            staging_arg,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("pg_restore to start on the staged file", || marker.exists());
    let staged = staged_files(&staging);
    assert_eq!(staged.len(), 1, "{staged:?}");
    let staged = staged[0].clone();
    let staged_bytes = file_size(&staged);
    assert!(staged_bytes > 0);

    let alive = prune_json(&pgkeep, &["--dry-run", "--staging-dir", staging_arg]);
    assert_eq!(alive["plan"]["orphans"], serde_json::json!([]), "{alive:#}");
    prune_json(&pgkeep, &["--staging-dir", staging_arg]);
    assert!(staged.exists(), "a live restore's staged file is kept");

    child.kill().unwrap();
    child.wait().unwrap();
    kill_leftover_dump(&marker);
    assert!(staged.exists(), "kill -9 leaves the staged file");

    let dry = prune_json(&pgkeep, &["--dry-run", "--staging-dir", staging_arg]);
    let orphans = dry["plan"]["orphans"].as_array().unwrap();
    assert_eq!(orphans.len(), 1, "{dry:#}");
    assert_eq!(orphans[0]["kind"], "staged");
    assert_eq!(orphans[0]["path"], staged.to_str().unwrap());
    assert_eq!(orphans[0]["size"], staged_bytes);
    assert!(staged.exists(), "a dry run removes nothing");

    let done = prune_json(&pgkeep, &["--staging-dir", staging_arg]);
    assert_eq!(done["report"]["swept"]["count"], 1, "{done:#}");
    assert_eq!(done["report"]["swept"]["bytes"], staged_bytes);
    assert!(staged_files(&staging).is_empty());

    // Killed again: the next `restore --jobs` into the same staging directory removes it too.
    std::fs::remove_file(&marker).unwrap();
    let mut child = pgkeep
        .command()
        .env("PGKEEP_PG_BIN", &bin)
        .args([
            "restore",
            backup["id"].as_str().unwrap(),
            "--target-db",
            &unique_name("staged"),
            "--jobs",
            "2",
            "--staging-dir",
            staging_arg,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("pg_restore to start on the staged file", || marker.exists());
    child.kill().unwrap();
    child.wait().unwrap();
    kill_leftover_dump(&marker);
    assert_eq!(staged_files(&staging).len(), 1);
    let (out, _) = pgkeep.restore(&[
        backup["id"].as_str().unwrap(),
        "--target-db",
        &unique_name("restored"),
        "--jobs",
        "2",
        "--staging-dir",
        staging_arg,
        "--pg-bin",
        cluster.bin_dir().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        staged_files(&staging).is_empty(),
        "{:?}",
        staged_files(&staging)
    );
}

/// Opens a multipart upload of `s3_key` with one 5 MiB part, as a run does before S3 goes
/// away; returns the part's size.
fn open_upload(moto: &pgkeep_tests::aws::Moto, s3_key: &str) -> u64 {
    let part = vec![7u8; 5 * 1024 * 1024];
    let len = part.len() as u64;
    moto.runtime.block_on(async {
        let s3 = moto.s3();
        let upload = s3
            .create_multipart_upload()
            .bucket(&moto.bucket)
            .key(s3_key)
            .send()
            .await
            .unwrap();
        s3.upload_part()
            .bucket(&moto.bucket)
            .key(s3_key)
            .upload_id(upload.upload_id().unwrap())
            .part_number(1)
            .body(part.into())
            .send()
            .await
            .unwrap();
    });
    len
}

/// S3 went away mid-upload, so the failed run's abort failed too: its multipart upload stays
/// open although its record is `failed` (the reaper never looks at it again). The next prune
/// (S3 and DynamoDB on moto) lists it under `--dry-run`, then aborts it and reports its
/// bytes. An open upload no record names is aborted once older than the abandon-after: moto
/// dates every upload 2010-11-10 whatever its age, so here it is always old enough (on AWS the
/// real start time decides).
#[test]
fn prune_aborts_the_open_upload_of_a_failed_s3_run() {
    let Some(moto) = pgkeep_tests::aws::Moto::start() else {
        return;
    };
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let pgkeep = Pgkeep::new()
        .database_url(cluster.url(&db))
        .with_urls(&moto.repo_url(), &moto.catalog_url(), &moto.key_url())
        .env("PGKEEP_AWS_ENDPOINT", &moto.endpoint);
    let bin = fake_pg_dump(
        &pgkeep,
        &cluster,
        "failing-bin",
        "echo 'server closed the connection' >&2\nexit 1",
    );
    let (out, _) = pgkeep.backup(&["--pg-bin", bin.to_str().unwrap()]);
    assert!(!out.status.success());
    let failed = the_only(&pgkeep.list(), "failed");
    let object_key = failed["object_key"].as_str().unwrap();
    let failed_bytes = open_upload(&moto, &moto.s3_key(object_key));
    let stray_key = format!(
        "{}/2026/01/20260101T000000000Z-0badf00d.pgkeep",
        path_segment(&db)
    );
    let stray_bytes = open_upload(&moto, &moto.s3_key(&stray_key));
    assert_eq!(moto.open_uploads().len(), 2);

    let dry = prune_json(&pgkeep, &["--dry-run"]);
    let orphans = dry["plan"]["orphans"].as_array().unwrap();
    assert_eq!(orphans.len(), 2, "{dry:#}");
    let of = |key: &str| {
        orphans
            .iter()
            .find(|o| o["key"] == key)
            .unwrap_or_else(|| panic!("{key} not listed: {dry:#}"))
            .clone()
    };
    assert_eq!(of(object_key)["backup"], failed["id"]);
    assert_eq!(of(&stray_key)["backup"], Value::Null);
    // The uploaded parts' bytes, or null where S3 does not say: moto answers ListParts with
    // a `ListPartsResponse` root the SDK cannot parse.
    let size_of = |key: &str, bytes: u64| {
        let size = of(key)["size"].clone();
        assert!(size == bytes || size.is_null(), "{key}: {size}");
        size.as_u64().unwrap_or(0)
    };
    let known = size_of(object_key, failed_bytes) + size_of(&stray_key, stray_bytes);
    assert_eq!(moto.open_uploads().len(), 2, "a dry run aborts nothing");

    let done = prune_json(&pgkeep, &[]);
    assert_eq!(done["report"]["swept"]["count"], 2, "{done:#}");
    assert_eq!(done["report"]["swept"]["bytes"], known, "{done:#}");
    assert!(moto.open_uploads().is_empty(), "{:?}", moto.open_uploads());
    // A backup after that works as usual.
    pgkeep.backup_ok(&["--pg-bin", cluster.bin_dir().to_str().unwrap()]);
}

/// Upstream bytes after which the proxy goes away in
/// [`s3_going_away_mid_upload_leaves_an_open_upload_that_prune_aborts`]: three 5 MiB parts and
/// a bit, with at most three parts in flight, so at least one part's body went through whole.
const CUT_AFTER: u64 = 16 * 1024 * 1024;

/// S3 goes away mid-upload, for real: `pgkeep backup` talks to S3 (moto) through a TCP proxy
/// that is cut once 16 MiB of parts went through, after which connections are reset and
/// refused, so the part uploads and the abort of the multipart upload both fail. The backup
/// exits non-zero with a `failed` record, and its upload stays open in S3. Then, with S3
/// reachable again, the next backup succeeds and prune's orphan sweep aborts the open upload.
/// (The catalog and key are local so only S3 goes away.)
#[test]
fn s3_going_away_mid_upload_leaves_an_open_upload_that_prune_aborts() {
    let Some(moto) = pgkeep_tests::aws::Moto::start() else {
        return;
    };
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("bulk");
    cluster.create_database(&db).unwrap();
    // About 70 MB of hex text: some 35 MB once compressed, seven 5 MiB parts.
    cluster
        .psql(
            &db,
            "CREATE TABLE bulk AS SELECT g AS id, md5(random()::text) || md5(random()::text) \
             || md5(random()::text) || md5(random()::text) AS payload \
             FROM generate_series(1, 500000) AS g",
        )
        .unwrap();
    let local = Pgkeep::new();
    let catalog = format!(
        "sqlite://{}",
        local.dir.path().join("catalog.sqlite3").display()
    );
    let key = format!("file://{}", local.key.display());
    let through = |endpoint: &str| {
        Pgkeep::new()
            .database_url(cluster.url(&db))
            .with_urls(&moto.repo_url(), &catalog, &key)
            .env("PGKEEP_AWS_ENDPOINT", endpoint)
            .env("PGKEEP_S3_PART_SIZE_MIB", "5")
    };
    let bin = cluster.bin_dir().to_str().unwrap().to_owned();

    let proxy = pgkeep_tests::proxy::Proxy::start(&moto.endpoint, Some(CUT_AFTER)).unwrap();
    let via_proxy = through(&proxy.endpoint());
    let started = Instant::now();
    let (out, record) = via_proxy.backup(&["--pg-bin", &bin]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(out.status.code(), Some(7), "a storage failure: {stderr}");
    assert!(proxy.is_cut(), "the upload finished before the cut");
    assert!(proxy.upstream_bytes() >= CUT_AFTER);
    assert_eq!(record["status"], "failed", "{record:#}");
    eprintln!(
        "cut after {} bytes; the backup failed after {took:?}: {}",
        proxy.upstream_bytes(),
        record["error"]
    );
    let s3_key = moto.s3_key(record["object_key"].as_str().unwrap());
    assert_eq!(
        moto.open_uploads(),
        vec![s3_key.clone()],
        "the abort failed too: the upload stays open"
    );
    drop(proxy);

    let direct = through(&moto.endpoint);
    let next = direct.backup_ok(&["--pg-bin", &bin]);
    assert_eq!(
        direct.show(record["id"].as_str().unwrap())["status"],
        "failed"
    );
    assert_eq!(
        moto.open_uploads(),
        vec![s3_key],
        "the next backup leaves it"
    );
    let done = prune_json(&direct, &[]);
    assert_eq!(done["report"]["swept"]["count"], 1, "{done:#}");
    assert!(moto.open_uploads().is_empty(), "{:?}", moto.open_uploads());
    assert!(moto
        .objects()
        .iter()
        .any(|k| k.ends_with(next["object_key"].as_str().unwrap())));
}

/// A run on another host whose heartbeat stops (its host froze or lost the network): with the
/// DynamoDB catalog, the next backup of the database is refused while the lease's heartbeat
/// timeout (`--lease-timeout 6s`) runs, and succeeds as soon as it has passed, without waiting
/// longer; the frozen run is recorded as abandoned. The run is a real `pgkeep backup` stopped
/// with SIGSTOP, its lease rewritten to name a process on another host, as a run elsewhere
/// would have written it (so its process cannot be checked, only its heartbeat).
#[test]
fn a_run_on_another_host_whose_heartbeat_stops_frees_the_database_after_the_timeout() {
    let Some(moto) = pgkeep_tests::aws::Moto::start() else {
        return;
    };
    let cluster = PgCluster::start().unwrap();
    let db = source(&cluster);
    let pgkeep = Pgkeep::new()
        .database_url(cluster.url(&db))
        .with_urls(&moto.repo_url(), &moto.catalog_url(), &moto.key_url())
        .env("PGKEEP_AWS_ENDPOINT", &moto.endpoint);
    let timeout = ["--lease-timeout", "6s"];
    let (mut frozen, marker) = start_hanging_backup(&pgkeep, &cluster, &timeout);
    let running = wait_for_in_progress(&pgkeep);
    send("STOP", frozen.id());
    let catalog = moto.services(Default::default()).catalog;
    let lease = moto.runtime.block_on(async {
        let mut lease = catalog
            .get_lease(&db)
            .await
            .unwrap()
            .expect("the run's lease");
        assert_eq!(lease.holder, running["id"].as_str().unwrap());
        let mut process = lease.process.clone().expect("the run's process");
        process.host = "db-runner-2 pid:[4026531836]".into();
        lease.process = Some(process);
        assert!(catalog.renew_lease(&lease).await.unwrap());
        lease
    });
    let real = cluster.bin_dir().to_str().unwrap().to_owned();

    // Within the timeout: the run on the other host may be alive.
    let (refused, _) = pgkeep.backup(&["--pg-bin", &real, timeout[0], timeout[1]]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        chrono::Utc::now() < lease.expires_at,
        "the refusal came too late to show anything"
    );
    assert_eq!(refused.status.code(), Some(8), "{stderr}");
    assert!(stderr.contains(running["id"].as_str().unwrap()), "{stderr}");

    // As soon as the heartbeat is older than the timeout, the next backup runs.
    wait_for("the lease's heartbeat timeout", || {
        chrono::Utc::now() >= lease.expires_at
    });
    let next = pgkeep.backup_ok(&["--pg-bin", &real, timeout[0], timeout[1]]);
    let waited = chrono::Utc::now() - lease.expires_at;
    assert!(
        waited < chrono::Duration::seconds(10),
        "the backup took {waited} after the timeout"
    );
    eprintln!("the next backup completed {waited} after the lease's expiry");
    let abandoned = pgkeep.show(running["id"].as_str().unwrap());
    assert_eq!(abandoned["status"], "failed", "{abandoned:#}");
    let error = abandoned["error"].as_str().unwrap();
    assert!(error.starts_with("abandoned"), "{error}");
    assert!(error.contains("not renewed"), "{error}");
    assert_eq!(
        pgkeep.show(next["id"].as_str().unwrap())["status"],
        "completed"
    );
    assert!(moto.open_uploads().is_empty(), "{:?}", moto.open_uploads());

    frozen.kill().unwrap();
    frozen.wait().unwrap();
    kill_leftover_dump(&marker);
}
