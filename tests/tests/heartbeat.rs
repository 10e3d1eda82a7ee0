//! The dead man's switch for backups that cannot say they failed: a real `pgkeep backup` whose
//! real pg_dump waits on a lock a "migration" holds, killed with SIGKILL (the next backup finds
//! the run abandoned and sends its `/fail`) or stopped with SIGTERM (the signal path sends it),
//! heard by a loopback heartbeat server that records every ping in order; and a restore
//! killed the same way, whose record the reaper fails as abandoned instead of leaving it
//! `running` for ever.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgkeep::testing::http::{recording_server, Request as Ping};
use pgkeep_tests::cli::Pgkeep;
use pgkeep_tests::{unique_name, PgCluster};
use serde_json::Value;

/// A loopback heartbeat server answering 200 to every ping, keeping each in arrival order.
fn heartbeat_server() -> (String, Arc<Mutex<Vec<Ping>>>) {
    recording_server("/ping/c0ffee")
}

fn paths(seen: &Mutex<Vec<Ping>>) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|p| format!("{} {}", p.method, p.path))
        .collect()
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after 60 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a backend of `db` is waiting for a lock (pg_dump blocked by the migration).
fn dump_is_waiting(cluster: &PgCluster, db: &str) -> bool {
    let out = cluster
        .command("psql")
        .args([
            "-X",
            "-At",
            "-d",
            db,
            "-c",
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() != "0"
}

struct Setup {
    cluster: PgCluster,
    db: String,
    pgkeep: Pgkeep,
    seen: Arc<Mutex<Vec<Ping>>>,
    url: String,
}

fn setup() -> Setup {
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("heartbeat");
    cluster.create_database(&db).unwrap();
    cluster
        .psql(
            &db,
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g;",
        )
        .unwrap();
    let (url, seen) = heartbeat_server();
    let pgkeep = Pgkeep::new()
        .database_url(cluster.url(&db))
        .env("PGKEEP_HEARTBEAT_URL", &url);
    Setup {
        cluster,
        db,
        pgkeep,
        seen,
        url,
    }
}

/// Starts `pgkeep backup --json` and waits until its pg_dump is blocked by the lock, the run
/// is recorded in progress and the heartbeat heard `/start`.
fn start_blocked_backup(s: &Setup) -> (Child, Value) {
    let mut child = s
        .pgkeep
        .command()
        .args(["backup", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Value::Null;
    wait_for("the run's in_progress record", || {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            panic!("the backup ended ({status}) before it was blocked: {stderr}");
        }
        running = s
            .pgkeep
            .list()
            .into_iter()
            .find(|r| r["status"] == "in_progress")
            .unwrap_or(Value::Null);
        !running.is_null()
    });
    wait_for("pg_dump to wait on the lock", || {
        dump_is_waiting(&s.cluster, &s.db)
    });
    assert_eq!(
        paths(&s.seen),
        [format!("POST {}/start", path_of(&s.url))],
        "only /start so far"
    );
    (child, running)
}

fn path_of(url: &str) -> String {
    format!("/{}", url.splitn(4, '/').nth(3).unwrap())
}

#[test]
fn a_backup_killed_mid_dump_gets_its_fail_ping_from_the_next_run() {
    let s = setup();
    let base = path_of(&s.url);
    let mut migration = s.cluster.hold_lock(&s.db, "t").unwrap();
    let (mut child, killed) = start_blocked_backup(&s);

    child.kill().unwrap(); // SIGKILL: no signal path, nothing recorded by the run itself
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), None, "killed by SIGKILL");
    assert_eq!(paths(&s.seen).len(), 1, "a killed run sends nothing");
    migration.kill().unwrap();
    migration.wait().unwrap();

    // The next backup finds the run abandoned (its process is gone), fails and alerts it,
    // then runs its own.
    let next = s.pgkeep.backup_ok(&[]);
    assert_eq!(
        paths(&s.seen),
        [
            format!("POST {base}/start"),
            format!("POST {base}/fail"),
            format!("POST {base}/start"),
            format!("POST {base}"),
        ]
    );
    let pings = s.seen.lock().unwrap().clone();
    let fail: Value = serde_json::from_str(&pings[1].body).unwrap();
    assert_eq!(fail["backup_id"], killed["id"], "{fail:#}");
    assert_eq!(fail["kind"], "backup_failed", "{fail:#}");
    let ok: Value = serde_json::from_str(&pings[3].body).unwrap();
    assert_eq!(ok["backup_id"], next["id"], "{ok:#}");
    let record = s.pgkeep.show(killed["id"].as_str().unwrap());
    assert_eq!(record["status"], "failed");
    assert!(
        record["error"].as_str().unwrap().contains("abandoned"),
        "{record:#}"
    );
    // A later run has nothing more to report about it.
    s.pgkeep.backup_ok(&[]);
    let after = paths(&s.seen);
    assert_eq!(after.len(), 6);
    assert_eq!(
        after[4..],
        [format!("POST {base}/start"), format!("POST {base}")]
    );
}

#[test]
fn a_backup_stopped_with_sigterm_sends_its_fail_ping_itself() {
    let s = setup();
    let base = path_of(&s.url);
    let mut migration = s.cluster.hold_lock(&s.db, "t").unwrap();
    let (child, stopped) = start_blocked_backup(&s);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        paths(&s.seen),
        [format!("POST {base}/start"), format!("POST {base}/fail")]
    );
    let fail: Value = serde_json::from_str(&s.seen.lock().unwrap()[1].body).unwrap();
    assert_eq!(fail["backup_id"], stopped["id"], "{fail:#}");
    assert!(
        fail["reason"].as_str().unwrap().contains("interrupted"),
        "{fail:#}"
    );
    migration.kill().unwrap();
    migration.wait().unwrap();
    // Already failed by its own run: the next backup does not alert it again.
    s.pgkeep.backup_ok(&[]);
    assert_eq!(
        paths(&s.seen)[2..],
        [format!("POST {base}/start"), format!("POST {base}")]
    );
}

#[test]
fn a_backup_killed_mid_dump_is_failed_and_alerted_by_prune() {
    let s = setup();
    let base = path_of(&s.url);
    let mut migration = s.cluster.hold_lock(&s.db, "t").unwrap();
    let (mut child, killed) = start_blocked_backup(&s);
    child.kill().unwrap();
    child.wait().unwrap();
    migration.kill().unwrap();
    migration.wait().unwrap();

    let out = s.pgkeep.run_ok(&["prune", "--keep-last", "5", "--json"]);
    let pruned: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        pruned["report"]["reaped"],
        serde_json::json!([killed["id"]]),
        "{pruned:#}"
    );
    assert_eq!(
        paths(&s.seen),
        [format!("POST {base}/start"), format!("POST {base}/fail")]
    );
    let fail: Value = serde_json::from_str(&s.seen.lock().unwrap()[1].body).unwrap();
    assert_eq!(fail["backup_id"], killed["id"], "{fail:#}");
    assert_eq!(fail["kind"], "backup_failed", "{fail:#}");
    // Settled once: a second prune has nobody left to alert.
    s.pgkeep.run_ok(&["prune", "--keep-last", "5"]);
    assert_eq!(paths(&s.seen).len(), 2);
}

#[test]
fn a_verification_pings_start_then_success_or_fail() {
    let s = setup();
    let base = path_of(&s.url);
    let good = s.pgkeep.backup_ok(&[]);
    let (out, record) = s.pgkeep.verify(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(record["id"], good["id"], "the newest unverified backup");
    let bad = s.pgkeep.backup_ok(&[]);
    let object = s.pgkeep.object_path(&bad);
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&object, &bytes).unwrap();
    let (out, _) = s.pgkeep.verify(&[bad["id"].as_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));

    let seen = paths(&s.seen);
    assert_eq!(
        seen[2..],
        [
            format!("POST {base}/start"),
            format!("POST {base}"),
            format!("POST {base}/start"),
            format!("POST {base}"),
            format!("POST {base}/start"),
            format!("POST {base}/fail"),
        ],
        "backup, verify, backup, failing verify"
    );
    let pings = s.seen.lock().unwrap().clone();
    let start: Value = serde_json::from_str(&pings[2].body).unwrap();
    assert_eq!(start["run"], "verification");
    assert_eq!(start["database"], s.db);
    let ok: Value = serde_json::from_str(&pings[3].body).unwrap();
    assert_eq!(ok["kind"], "verification_ok", "{ok:#}");
    assert_eq!(ok["backup_id"], good["id"]);
    let fail: Value = serde_json::from_str(&pings[7].body).unwrap();
    assert_eq!(fail["kind"], "verification_failed", "{fail:#}");
    assert_eq!(fail["backup_id"], bad["id"]);
    assert!(
        fail["reason"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch"),
        "{fail:#}"
    );
}

#[test]
fn a_restore_killed_mid_run_is_failed_as_abandoned_by_the_reaper() {
    let s = setup();
    let backup = s.pgkeep.backup_ok(&[]);
    let id = backup["id"].as_str().unwrap();
    // The target exists: overwriting it takes a safety backup first, whose pg_dump waits on
    // the migration's lock while the restore is recorded `running`.
    let live = unique_name("live");
    s.cluster.create_database(&live).unwrap();
    s.cluster
        .psql(&live, "CREATE TABLE busy AS SELECT 1 AS id;")
        .unwrap();
    let mut migration = s.cluster.hold_lock(&live, "busy").unwrap();
    let mut child = s
        .pgkeep
        .command()
        .args([
            "restore",
            id,
            "--target-db",
            &live,
            "--overwrite",
            "--confirm",
            &live,
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let restores = || -> Vec<Value> {
        serde_json::from_str(&s.pgkeep.run_ok(&["restores", "--json"])).unwrap()
    };
    let mut running = Value::Null;
    wait_for("the restore's running record", || {
        running = restores()
            .into_iter()
            .find(|r| r["state"] == "running")
            .unwrap_or(Value::Null);
        !running.is_null()
    });
    wait_for("the safety backup's pg_dump to wait on the lock", || {
        dump_is_waiting(&s.cluster, &live)
    });
    assert!(running["alive_at"].is_string(), "{running:#}");
    assert!(running["process"]["pid"].is_number(), "{running:#}");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), None, "killed by SIGKILL");
    migration.kill().unwrap();
    migration.wait().unwrap();
    let restore_id = running["id"].as_str().unwrap();
    let stuck: Value =
        serde_json::from_str(&s.pgkeep.run_ok(&["restores", "--json", "--id", restore_id]))
            .unwrap();
    assert_eq!(stuck["state"], "running", "nothing settled it yet");

    // The reaper's pass (every prune) fails it, saying it was abandoned and why.
    s.pgkeep.run_ok(&["prune", "--keep-last", "10"]);
    let reaped: Value =
        serde_json::from_str(&s.pgkeep.run_ok(&["restores", "--json", "--id", restore_id]))
            .unwrap();
    assert_eq!(reaped["state"], "failed", "{reaped:#}");
    let error = reaped["error"].as_str().unwrap();
    assert!(
        error.starts_with("abandoned:") && error.contains("is gone"),
        "{error}"
    );
    assert!(reaped["finished_at"].is_string(), "{reaped:#}");
    // Its unfinished safety backup was reaped like any killed backup.
    let safety = s
        .pgkeep
        .list()
        .into_iter()
        .find(|r| r["kind"] == "pre_restore")
        .unwrap();
    assert_eq!(safety["status"], "failed", "{safety:#}");
    // A second pass changes nothing more.
    s.pgkeep.run_ok(&["prune", "--keep-last", "10"]);
    let again: Value =
        serde_json::from_str(&s.pgkeep.run_ok(&["restores", "--json", "--id", restore_id]))
            .unwrap();
    assert_eq!(again, reaped);
}
