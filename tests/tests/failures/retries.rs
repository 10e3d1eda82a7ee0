//! Retried and repeated requests, run through the real `dump` Lambda binary (under a fake
//! Runtime API) against a real PostgreSQL cluster and the embedded default (a directory
//! repository with its SQLite catalog), which the test reads back with the library.
//!
//! See the table in `main.rs`.

use std::io::Read;
use std::process::Child;
use std::time::{Duration, Instant};

use pgkeep::backends::{BackendConfig, KeyUrl, KeyUse, RepoUrl, Services};
use pgkeep::model::{BackupRecord, BackupStatus};
use pgkeep_tests::cli::Pgkeep;
use pgkeep_tests::lambda_runtime::{Answer, FakeRuntimeApi};
use pgkeep_tests::{events, function_bin, load_sample, PgCluster};
use serde_json::{json, Value};

/// How long a dump binary may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(120);

/// The dump function started on `events` against `cluster`'s database `shop`, sharing the
/// repository and key of `pgkeep`.
struct DumpFunction {
    api: FakeRuntimeApi,
    child: Child,
}

impl DumpFunction {
    fn start(pgkeep: &Pgkeep, cluster: &PgCluster, events: Vec<Value>) -> Self {
        let api = FakeRuntimeApi::start(events).unwrap();
        let databases = json!({ "shop": { "url": cluster.url("shop") } }).to_string();
        let child = api
            .command(&function_bin("dump"))
            .env("PGKEEP_REPO", &pgkeep.repo)
            .env("PGKEEP_KEY_FILE", &pgkeep.key)
            .env("PGKEEP_PG_BIN", cluster.bin_dir())
            .env("PGKEEP_DATABASES", databases)
            .spawn()
            .unwrap();
        DumpFunction { api, child }
    }

    /// Waits for `count` answers, then ends the process (it waits for its next event for
    /// ever) and returns the answers and everything it logged.
    fn answers(mut self, count: usize) -> (Vec<Answer>, String) {
        let answers = self.api.wait_for(count, ANSWER_WITHIN);
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let mut log = String::new();
        for mut pipe in [
            Box::new(self.child.stdout.take().unwrap()) as Box<dyn Read>,
            Box::new(self.child.stderr.take().unwrap()),
        ] {
            pipe.read_to_string(&mut log).unwrap();
        }
        let answers = answers.unwrap_or_else(|e| panic!("{e}\n{log}"));
        (answers.into_iter().map(|(_, a)| a).collect(), log)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// The repository's backends, as the dump function opens them.
async fn services(pgkeep: &Pgkeep) -> Services {
    BackendConfig {
        repo: RepoUrl::File(pgkeep.repo.clone()),
        catalog: None,
        key: KeyUrl::File(pgkeep.key.clone()),
        old_key_files: Vec::new(),
        aws: Default::default(),
    }
    .open(KeyUse::Write)
    .await
    .unwrap()
}

/// Every record, oldest first.
fn records(rt: &tokio::runtime::Runtime, services: &Services) -> Vec<BackupRecord> {
    let mut all = rt
        .block_on(pgkeep::ops::list::list_all(services, &Default::default()))
        .unwrap();
    all.reverse();
    all
}

/// A scheduled event no other test uses (its id names the backup).
fn scheduled_event(id: &str) -> Value {
    let mut event = events::load("dump", "scheduled");
    event["id"] = json!(id);
    event["time"] = json!(chrono::Utc::now().to_rfc3339());
    event
}

fn error_type(answer: &Answer) -> String {
    match answer {
        Answer::Error(e) => e["errorType"].as_str().unwrap_or_default().to_owned(),
        Answer::Response(r) => panic!("expected the invocation to fail, it answered {r}"),
    }
}

/// Polls `condition` every 50 ms until it holds, at most `within`.
fn wait_until(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A scheduled dump fails because its database is unreachable (it does not exist yet); the
/// same event delivered again (Lambda's retry) after the database came up takes the backup as
/// a second attempt, and a third delivery takes nothing more.
#[test]
fn a_scheduled_event_retried_after_a_failure_takes_a_second_attempt_that_succeeds() {
    let cluster = PgCluster::start().unwrap();
    let pgkeep = Pgkeep::new();
    let rt = runtime();
    let services = rt.block_on(services(&pgkeep));
    let event = scheduled_event("retry-after-failure");

    let (answers, log) = DumpFunction::start(&pgkeep, &cluster, vec![event.clone()]).answers(1);
    assert_eq!(error_type(&answers[0]), "Failed", "{answers:?}\n{log}");
    let first = records(&rt, &services);
    assert_eq!(first.len(), 1, "{first:?}");
    let failed = &first[0];
    assert_eq!(failed.status, BackupStatus::Failed);
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("does not exist"),
        "the record says why: {failed:?}"
    );
    assert!(
        log.contains("backup_failed"),
        "the failure was alerted:\n{log}"
    );

    // The database becomes reachable; Lambda retries the same event.
    cluster.create_database("shop").unwrap();
    load_sample(&cluster, "shop", 1).unwrap();
    let (answers, log) =
        DumpFunction::start(&pgkeep, &cluster, vec![event.clone(), event.clone()]).answers(2);
    let retaken = answers[0].response();
    assert_eq!(retaken["outcome"], "completed", "{retaken}\n{log}");
    let again = answers[1].response();
    assert_eq!(again["outcome"], "duplicate", "{again}\n{log}");
    assert_eq!(again["backup"]["id"], retaken["backup"]["id"]);

    let history = records(&rt, &services);
    assert_eq!(history.len(), 2, "both attempts, nothing more: {history:?}");
    assert_eq!(history[0], *failed, "the failed attempt is kept as it was");
    let second = &history[1];
    assert_eq!(second.status, BackupStatus::Completed);
    assert_eq!(second.retry_of.as_ref(), Some(&failed.id), "{second:?}");
    assert_eq!(retaken["backup"]["id"], second.id.as_str());
    assert_eq!(
        second.id.as_str()[..19],
        failed.id.as_str()[..19],
        "both attempts carry the event's time"
    );
    assert!(second.row_counts.values().sum::<u64>() > 0, "{second:?}");
}

/// The same scheduled event delivered twice while its first run is still dumping (pg_dump
/// waits for a table another session has locked): the second delivery answers with the
/// running backup and takes none; the first completes. One backup.
#[test]
fn the_same_event_delivered_twice_while_the_first_runs_takes_one_backup() {
    let cluster = PgCluster::start().unwrap();
    cluster.create_database("shop").unwrap();
    load_sample(&cluster, "shop", 1).unwrap();
    let pgkeep = Pgkeep::new();
    let rt = runtime();
    let services = rt.block_on(services(&pgkeep));
    let event = scheduled_event("delivered-twice");

    let lock = Locked::take(&rt, &cluster);

    let first = DumpFunction::start(&pgkeep, &cluster, vec![event.clone()]);
    wait_until(
        ANSWER_WITHIN,
        "the first delivery's backup is in progress",
        || {
            records(&rt, &services)
                .iter()
                .any(|r| r.status == BackupStatus::InProgress)
        },
    );
    let (answers, log) = DumpFunction::start(&pgkeep, &cluster, vec![event.clone()]).answers(1);
    let duplicate = answers[0].response();
    assert_eq!(duplicate["outcome"], "duplicate", "{duplicate}\n{log}");
    assert_eq!(duplicate["backup"]["status"], "in_progress", "{duplicate}");

    lock.release(&rt);
    let (answers, log) = first.answers(1);
    let completed = answers[0].response();
    assert_eq!(completed["outcome"], "completed", "{completed}\n{log}");
    assert_eq!(completed["backup"]["id"], duplicate["backup"]["id"]);
    let all = records(&rt, &services);
    assert_eq!(all.len(), 1, "one backup: {all:?}");
    assert_eq!(all[0].status, BackupStatus::Completed);
    assert_eq!(all[0].retry_of, None);
}

/// Locks one table of `shop` in a transaction of its own, so that a pg_dump of `shop` waits
/// (keeping its run, and the database's lease, alive) until [`Locked::release`].
struct Locked {
    client: tokio_postgres::Client,
}

impl Locked {
    fn take(rt: &tokio::runtime::Runtime, cluster: &PgCluster) -> Self {
        let (client, connection) = rt
            .block_on(tokio_postgres::connect(
                &cluster.url("shop"),
                tokio_postgres::NoTls,
            ))
            .unwrap();
        rt.spawn(connection);
        rt.block_on(
            client.batch_execute("BEGIN; LOCK TABLE public.notes IN ACCESS EXCLUSIVE MODE"),
        )
        .unwrap();
        Locked { client }
    }

    fn release(self, rt: &tokio::runtime::Runtime) {
        rt.block_on(self.client.batch_execute("COMMIT")).unwrap();
    }
}

/// `POST /backups` answered 202 and queued the dump, but the database's lease is held by the
/// safety backup of a restore (`pgkeep restore --overwrite`, waiting on a locked table): the
/// accepted backup becomes a `failed` record that says why, with a `backup_failed` alert; the
/// same request delivered again once the restore is done (Lambda's retry) takes it.
#[test]
fn an_accepted_api_backup_that_cannot_start_is_recorded_failed_and_alerted() {
    let cluster = PgCluster::start().unwrap();
    cluster.create_database("shop").unwrap();
    load_sample(&cluster, "shop", 1).unwrap();
    let pgkeep = Pgkeep::new().database_url(cluster.url("shop"));
    let rt = runtime();
    let earlier = pgkeep.backup_ok(&[]);
    let earlier = earlier["id"].as_str().unwrap().to_owned();
    let services = rt.block_on(services(&pgkeep));

    let lock = Locked::take(&rt, &cluster);
    let mut restore = pgkeep
        .command()
        .args([
            "restore",
            &earlier,
            "--target-db",
            "shop",
            "--overwrite",
            "--confirm",
            "shop",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut safety = None;
    wait_until(
        ANSWER_WITHIN,
        "the restore's safety backup is running",
        || {
            safety = records(&rt, &services).into_iter().find(|r| {
                r.kind == pgkeep::model::BackupKind::PreRestore
                    && r.status == BackupStatus::InProgress
            });
            safety.is_some()
        },
    );
    let safety = safety.unwrap();

    // What the status API queues for `POST /backups` (events/dump/from-api.json), with an id
    // allocated now.
    let accepted = pgkeep::model::BackupId::generate(chrono::Utc::now());
    let mut event = events::load("dump", "from-api");
    event["backup_id"] = json!(accepted.as_str());
    let (answers, log) = DumpFunction::start(&pgkeep, &cluster, vec![event.clone()]).answers(1);
    assert_eq!(error_type(&answers[0]), "LeaseHeld", "{answers:?}\n{log}");
    let failed = rt
        .block_on(services.catalog.get(&accepted))
        .expect("the accepted backup has a record");
    assert_eq!(failed.status, BackupStatus::Failed);
    let reason = failed.error.clone().unwrap();
    assert!(
        reason.contains("could not start") && reason.contains(safety.id.as_str()),
        "the record names the run in the way: {reason}"
    );
    let alert = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["alert"] == "backup_failed")
        .unwrap_or_else(|| panic!("no backup_failed alert in:\n{log}"));
    assert_eq!(alert["fields"]["backup"], accepted.as_str(), "{alert}");

    lock.release(&rt);
    // Whatever the restore then does, its safety backup has ended and given the lease back.
    restore.wait().unwrap();
    let (answers, log) = DumpFunction::start(&pgkeep, &cluster, vec![event]).answers(1);
    let retaken = answers[0].response();
    assert_eq!(retaken["outcome"], "completed", "{retaken}\n{log}");
    assert_eq!(
        retaken["backup"]["retry_of"],
        accepted.as_str(),
        "{retaken}"
    );
}

/// A completed record of `database` that started `hours_ago` (the health check reads only the
/// catalog).
fn add_completed(
    rt: &tokio::runtime::Runtime,
    services: &Services,
    database: &str,
    hours_ago: i64,
) -> BackupRecord {
    let started = chrono::Utc::now() - chrono::Duration::hours(hours_ago);
    let mut r = BackupRecord::start(
        pgkeep::model::BackupId::generate(started),
        database,
        pgkeep::model::BackupKind::Scheduled,
        pgkeep::model::Compression::Zstd,
    );
    r.created_at = started;
    rt.block_on(services.catalog.insert(&r)).unwrap();
    r.transition(BackupStatus::Completed).unwrap();
    rt.block_on(services.catalog.update(&r, BackupStatus::InProgress))
        .unwrap();
    r
}

/// A database whose newest good backup is older than the maximum age is noticed by the hourly
/// health check (the real prune binary given the `health` sample event), not only when prune
/// runs: a `stale` alert and the age metric, and nothing reaped or deleted.
#[test]
fn the_hourly_health_check_alerts_a_stale_database_without_pruning() {
    let pgkeep = Pgkeep::new();
    let rt = runtime();
    let services = rt.block_on(services(&pgkeep));
    let stale = add_completed(&rt, &services, "shop", 26);
    add_completed(&rt, &services, "crm", 1);

    let api = FakeRuntimeApi::start(vec![events::load("prune", "health")]).unwrap();
    let mut child = api
        .command(&function_bin("prune"))
        .env("PGKEEP_REPO", &pgkeep.repo)
        .env("PGKEEP_KEY_FILE", &pgkeep.key)
        .env("PGKEEP_KEEP_LAST", "1")
        .env("PGKEEP_MAX_AGE", "25h")
        .env(
            "PGKEEP_DATABASES",
            json!({
                "shop": {"url": "postgresql://u@127.0.0.1:1/shop"},
                "crm": {"url": "postgresql://u@127.0.0.1:1/crm"}
            })
            .to_string(),
        )
        .spawn()
        .unwrap();
    let (answers, log) = api.answers_and_log(&mut child, 1, ANSWER_WITHIN);
    let out = answers[0].1.response();
    assert_eq!(out["stale"], json!(["shop"]), "{out}\n{log}");

    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let alert = lines
        .iter()
        .find(|l| l["fields"]["alert"] == "stale")
        .unwrap_or_else(|| panic!("no stale alert in:\n{log}"));
    assert_eq!(alert["fields"]["database"], "shop", "{alert}");
    assert!(
        log.contains("NewestGoodBackupAge"),
        "the age metric is written:\n{log}"
    );
    let after = rt.block_on(services.catalog.get(&stale.id)).unwrap();
    assert_eq!(after.status, BackupStatus::Completed, "nothing pruned");
}

/// A verified record of `database` whose id carries `asked` and that started at `started`.
fn add_verified(
    rt: &tokio::runtime::Runtime,
    services: &Services,
    asked: chrono::DateTime<chrono::Utc>,
    started: chrono::DateTime<chrono::Utc>,
) -> BackupRecord {
    let mut r = BackupRecord::start(
        pgkeep::model::BackupId::generate(asked),
        "shop",
        pgkeep::model::BackupKind::Scheduled,
        pgkeep::model::Compression::Zstd,
    );
    r.created_at = started;
    rt.block_on(services.catalog.insert(&r)).unwrap();
    for (before, next) in [
        (BackupStatus::InProgress, BackupStatus::Completed),
        (BackupStatus::Completed, BackupStatus::Verified),
    ] {
        r.transition(next).unwrap();
        rt.block_on(services.catalog.update(&r, before)).unwrap();
    }
    r
}

/// "Newest verified" is the newest by start everywhere: a retried backup asked for at 02:00
/// but started at 02:30 is newer than one asked for and started at 02:10, although its id
/// sorts first. `pgkeep list` shows it first and `pgkeep delete` refuses it (and deletes the
/// other), as `status` and retention already judged.
#[test]
fn newest_verified_is_the_newest_by_start_for_delete_and_list() {
    let pgkeep = Pgkeep::new();
    let rt = runtime();
    let services = rt.block_on(services(&pgkeep));
    let at = |minutes: i64| chrono::Utc::now() - chrono::Duration::minutes(60 - minutes);
    let retried = add_verified(&rt, &services, at(0), at(30));
    let earlier = add_verified(&rt, &services, at(10), at(10));
    assert!(retried.id < earlier.id, "the retried one's id sorts first");

    let listed: Vec<String> = pgkeep
        .list()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        listed,
        [retried.id.to_string(), earlier.id.to_string()],
        "newest start first"
    );

    let refused = pgkeep.run(&["delete", retried.id.as_str(), "--json"]);
    assert!(
        !refused.status.success(),
        "the newest verified backup is kept"
    );
    let answer: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(answer["reason"], "newest_verified", "{answer}");
    let deleted = pgkeep.run(&["delete", earlier.id.as_str(), "--json"]);
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    let status = records(&rt, &services);
    assert_eq!(status.len(), 2);
    assert_eq!(status[1].id, retried.id);
    assert_eq!(status[1].status, BackupStatus::Verified);
    assert_eq!(status[0].status, BackupStatus::Deleted);
}
