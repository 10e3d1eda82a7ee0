//! The four Lambda binaries run as production runs them: real processes under Lambda Runtime
//! APIs ([`FakeRuntimeApi`]), each with exactly the environment Terraform gives it (the names
//! come from infra/functions.json, the source `infra/locals.tf` builds the environments from),
//! against moto and a throwaway PostgreSQL. The status function's asynchronous `Invoke` of
//! dump reaches the real dump process through an [`InvokeForwarder`], and dump's invocation of
//! verify the real verify process.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use pgkeep::model::{BackupId, BackupStatus};
use pgkeep::store::s3::S3Options;
use pgkeep_tests::aws::Moto;
use pgkeep_tests::invoke_forwarder::InvokeForwarder;
use pgkeep_tests::lambda_runtime::{Answer, FakeRuntimeApi};
use pgkeep_tests::{events, function_bin, load_sample, unique_name, PgCluster};
use serde_json::Value;

const DUMP_FUNCTION: &str = "pgkeep-test-dump";
const VERIFY_FUNCTION: &str = "pgkeep-test-verify";
const WAIT: Duration = Duration::from_secs(180);

/// The variables `function` may be given: infra/functions.json's common and per-function
/// lists, plus those it names as never set in production (the emulator endpoint).
fn allowed_env(function: &str) -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/functions.json");
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect()
    };
    let mut allowed: BTreeSet<String> = names(&spec["common_env"]).into_iter().collect();
    allowed.extend(names(&spec["functions"][function]["env"]));
    allowed.insert("PGKEEP_AWS_ENDPOINT".into());
    allowed
}

/// The deployment: what Terraform would set for this stack, by variable name.
struct Stack {
    moto: Moto,
    forwarder: InvokeForwarder,
    cluster: PgCluster,
    database: String,
}

impl Stack {
    fn start() -> Option<Stack> {
        let moto = Moto::start()?;
        let forwarder = InvokeForwarder::start(&moto.endpoint).unwrap();
        let cluster = PgCluster::start().unwrap();
        let database = unique_name("shop");
        cluster.create_database(&database).unwrap();
        load_sample(&cluster, &database, 1).unwrap();
        Some(Stack {
            moto,
            forwarder,
            cluster,
            database,
        })
    }

    /// Every value this deployment gives any function; each function gets the ones
    /// infra/functions.json lists for it.
    fn deployment(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("PGKEEP_REPO", self.moto.repo_url()),
            ("PGKEEP_CATALOG", self.moto.catalog_url()),
            ("PGKEEP_KEY", self.moto.key_url()),
            (
                "PGKEEP_DATABASES",
                serde_json::json!({ "shop": { "url": self.cluster.url(&self.database) } })
                    .to_string(),
            ),
            ("PGKEEP_DATABASE_IAM_AUTH", "false".into()),
            ("PGKEEP_MAX_AGE", "25h".into()),
            ("PGKEEP_DOWNLOAD_URL_TTL", "15m".into()),
            ("PGKEEP_ADMIN_GROUP", "admin".into()),
            ("PGKEEP_DUMP_FUNCTION", DUMP_FUNCTION.into()),
            ("PGKEEP_VERIFY_FUNCTION", VERIFY_FUNCTION.into()),
            ("PGKEEP_ABANDON_AFTER", "2h".into()),
            // A level other than the default, to see the functions' setting reach the backup.
            ("PGKEEP_COMPRESSION", "zstd:1".into()),
            ("PGKEEP_KEEP_DAILY", "7".into()),
            ("PGKEEP_AWS_ENDPOINT", self.forwarder.endpoint()),
        ])
    }

    /// `function`'s binary under `api`, with the deployment's variables that function reads
    /// and the credentials and region Lambda gives every function.
    fn spawn(&self, function: &str, api: &FakeRuntimeApi) -> Child {
        let allowed = allowed_env(function);
        let mut cmd = api.command(&function_bin(function));
        for (name, value) in self.deployment() {
            if allowed.contains(name) {
                cmd.env(name, value);
            }
        }
        for name in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
        ] {
            if let Ok(value) = std::env::var(name) {
                cmd.env(name, value);
            }
        }
        cmd.env(
            "AWS_LAMBDA_FUNCTION_NAME",
            format!("pgkeep-test-{function}"),
        );
        cmd.spawn().unwrap()
    }

    fn record(&self, id: &BackupId) -> pgkeep::model::BackupRecord {
        let services = self.moto.services(S3Options::default());
        self.moto
            .runtime
            .block_on(services.catalog.get(id))
            .unwrap()
    }
}

/// The deployment's variables are those infra/functions.json lists (a value the functions do
/// not read would be a test that passes for the wrong reason).
#[test]
fn the_deployment_sets_only_variables_the_functions_read() {
    let Some(stack) = Stack::start() else { return };
    let all: BTreeSet<String> = ["dump", "verify", "prune", "status"]
        .iter()
        .flat_map(|f| allowed_env(f))
        .collect();
    for name in stack.deployment().keys() {
        assert!(all.contains(*name), "{name} is read by no function");
    }
}

fn log_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// `POST /backups` with an admin's JWT → 202 → the real dump process backs it up → the real
/// verify process verifies it; metrics in both logs, no secret in any.
#[test]
fn an_api_backup_is_dumped_and_verified_by_the_real_functions() {
    let Some(stack) = Stack::start() else { return };
    let dump_api = Arc::new(FakeRuntimeApi::start(Vec::new()).unwrap());
    let verify_api = Arc::new(FakeRuntimeApi::start(Vec::new()).unwrap());
    stack.forwarder.route(DUMP_FUNCTION, dump_api.clone());
    stack.forwarder.route(VERIFY_FUNCTION, verify_api.clone());
    let mut dump = stack.spawn("dump", &dump_api);
    let mut verify = stack.spawn("verify", &verify_api);

    let status_api = FakeRuntimeApi::start(vec![events::load("status", "create-backup")]).unwrap();
    let mut status = stack.spawn("status", &status_api);
    let (answers, status_log) = status_api.answers_and_log(&mut status, 1, WAIT);
    let response = answers[0].1.response();
    assert_eq!(response["statusCode"], 202, "{response}\n{status_log}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    let id: BackupId = body["id"].as_str().unwrap().parse().unwrap();

    let (dumped, dump_log) = dump_api.answers_and_log(&mut dump, 1, WAIT);
    let outcome = dumped[0].1.response();
    assert_eq!(outcome["outcome"], "completed", "{outcome}\n{dump_log}");
    assert_eq!(outcome["verify_started"], true, "{outcome}");
    let (verified, verify_log) = verify_api.answers_and_log(&mut verify, 1, WAIT);
    let outcome = verified[0].1.response();
    assert_eq!(outcome["outcome"], "verified", "{outcome}\n{verify_log}");

    let record = stack.record(&id);
    assert_eq!(record.status, BackupStatus::Verified, "{record:?}");
    assert_eq!(record.row_counts["public.pgbench_accounts"], 100_000);
    assert_eq!(record.compression_level, Some(1), "PGKEEP_COMPRESSION");
    let invoked: Vec<String> = stack
        .forwarder
        .invocations()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(invoked, [DUMP_FUNCTION, VERIFY_FUNCTION]);

    // Metrics as CloudWatch embedded metric format lines, from both functions.
    for (function, log) in [("dump", &dump_log), ("verify", &verify_log)] {
        assert!(
            log_lines(log).iter().any(|l| l.get("_aws").is_some()),
            "no EMF metrics line in the {function} log:\n{log}"
        );
    }
    for log in [&status_log, &dump_log, &verify_log] {
        assert!(
            !log.contains(stack.cluster.password()),
            "a secret in:\n{log}"
        );
    }
}

/// `"jobs": 2` on a dump event makes the real dump function take a parallel backup (a schema
/// part and data parts, listed in the manifest), and the verification it starts carries the
/// same `jobs` and passes.
#[test]
fn a_dump_event_with_jobs_takes_a_parallel_backup_that_verifies() {
    let Some(stack) = Stack::start() else { return };
    let event = serde_json::json!({ "database": "shop", "kind": "manual", "jobs": 2 });
    let dump_api = Arc::new(FakeRuntimeApi::start(vec![event]).unwrap());
    let verify_api = Arc::new(FakeRuntimeApi::start(Vec::new()).unwrap());
    stack.forwarder.route(DUMP_FUNCTION, dump_api.clone());
    stack.forwarder.route(VERIFY_FUNCTION, verify_api.clone());
    let mut dump = stack.spawn("dump", &dump_api);
    let mut verify = stack.spawn("verify", &verify_api);

    let (dumped, dump_log) = dump_api.answers_and_log(&mut dump, 1, WAIT);
    let outcome = dumped[0].1.response();
    assert_eq!(outcome["outcome"], "completed", "{outcome}\n{dump_log}");
    assert_eq!(outcome["verify_started"], true, "{outcome}");
    let id: BackupId = outcome["backup"]["id"]
        .as_str()
        .or_else(|| outcome["id"].as_str())
        .unwrap_or_else(|| panic!("no backup id in {outcome}"))
        .parse()
        .unwrap();
    let record = stack.record(&id);
    assert!(
        record.parts.len() >= 2,
        "a parallel backup has parts: {record:?}"
    );
    let manifest: Value = serde_json::from_slice(
        &stack
            .moto
            .get(
                &stack
                    .moto
                    .s3_key(&record.object_key.replace(".pgkeep", ".manifest.json")),
            )
            .0,
    )
    .unwrap();
    assert_eq!(
        manifest["backup"]["parts"].as_array().map(Vec::len),
        Some(record.parts.len()),
        "{manifest:#}"
    );
    let (_, verify_event) = stack
        .forwarder
        .invocations()
        .into_iter()
        .find(|(name, _)| name == VERIFY_FUNCTION)
        .expect("dump started the verification");
    assert_eq!(verify_event["jobs"], 2, "{verify_event}");

    let (verified, verify_log) = verify_api.answers_and_log(&mut verify, 1, WAIT);
    let outcome = verified[0].1.response();
    assert_eq!(outcome["outcome"], "verified", "{outcome}\n{verify_log}");
    let record = stack.record(&id);
    assert_eq!(record.status, BackupStatus::Verified, "{record:?}");
    assert_eq!(record.row_counts["public.pgbench_accounts"], 100_000);
}

/// A dump killed mid-run (the container dies) fails its invocation; Lambda's retry of the same
/// event ends the killed run as failed and backs up again.
#[test]
fn a_killed_dump_fails_and_its_retry_backs_up() {
    let Some(stack) = Stack::start() else { return };
    // Enough data that the dump is still running when it is killed.
    let db = &stack.database;
    stack
        .cluster
        .psql(
            db,
            "CREATE TABLE bulk AS SELECT g, repeat(md5(g::text), 20) AS filler FROM generate_series(1, 400000) g",
        )
        .unwrap();
    let event = events::load("dump", "scheduled");
    let dump_api = FakeRuntimeApi::start(vec![event.clone()]).unwrap();
    let mut dump = stack.spawn("dump", &dump_api);

    // Kill it once its record exists and is running.
    let services = stack.moto.services(S3Options::default());
    let deadline = std::time::Instant::now() + WAIT;
    let running = loop {
        let page = stack
            .moto
            .runtime
            .block_on(services.catalog.list(&Default::default()))
            .unwrap();
        if let Some(r) = page
            .records
            .into_iter()
            .find(|r| r.status == BackupStatus::InProgress)
        {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "no running dump");
        std::thread::sleep(Duration::from_millis(20));
    };
    dump.kill().unwrap();
    dump.wait().unwrap();
    assert!(
        dump_api.wait_for(1, Duration::from_millis(1)).is_err(),
        "the killed invocation has no answer: Lambda reports it failed"
    );

    // Lambda retries the event in a new container.
    let retry_api = FakeRuntimeApi::start(vec![event]).unwrap();
    let mut retry = stack.spawn("dump", &retry_api);
    let (answers, log) = retry_api.answers_and_log(&mut retry, 1, WAIT);
    let outcome = match &answers[0].1 {
        Answer::Response(v) => v.clone(),
        Answer::Error(e) => panic!("the retry failed: {e}\n{log}"),
    };
    assert_eq!(outcome["outcome"], "completed", "{outcome}\n{log}");
    assert_eq!(
        outcome["backup"]["retry_of"],
        running.id.as_str(),
        "{outcome}"
    );
    let killed = stack.record(&running.id);
    assert_eq!(killed.status, BackupStatus::Failed, "{killed:?}");

    assert!(
        stack.moto.open_uploads().is_empty(),
        "open uploads: {:?}",
        stack.moto.open_uploads()
    );
}

/// A dump that would outlive its invocation's time limit (Lambda kills it without a signal) is
/// stopped shortly before it, while it can still end honestly: recorded failed with the reason,
/// its lease given back, nothing left in the bucket, so Lambda's retry of the event backs up
/// at once. Here pg_dump waits on a lock a migration holds, for longer than the invocation may run.
#[test]
fn a_dump_near_its_time_limit_ends_failed_and_its_retry_backs_up() {
    let Some(stack) = Stack::start() else { return };
    let mut migration = stack.cluster.hold_lock(&stack.database, "notes").unwrap();

    let event = events::load("dump", "scheduled");
    let api = FakeRuntimeApi::start(vec![]).unwrap();
    // 20 s are kept for ending honestly: this run has about 4 s of work.
    api.set_timeout(Duration::from_secs(24));
    api.push(event.clone());
    let mut dump = stack.spawn("dump", &api);
    let answers = api.wait_for(1, WAIT).unwrap_or_else(|e| panic!("{e}"));
    let error = match &answers[0].1 {
        Answer::Error(e) => e.to_string(),
        Answer::Response(v) => panic!("the stopped dump answered {v}"),
    };
    assert!(error.contains("time limit"), "{error}");
    let services = stack.moto.services(S3Options::default());
    let records = stack
        .moto
        .runtime
        .block_on(services.catalog.list(&Default::default()))
        .unwrap()
        .records;
    assert_eq!(records.len(), 1, "{records:?}");
    let stopped = &records[0];
    assert_eq!(stopped.status, BackupStatus::Failed, "{stopped:?}");
    assert!(
        stopped
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("time limit"),
        "{stopped:?}"
    );
    assert!(
        stack.moto.open_uploads().is_empty(),
        "open uploads: {:?}",
        stack.moto.open_uploads()
    );

    // The migration commits; Lambda retries the event (same container, usual timeout).
    migration.kill().unwrap();
    migration.wait().unwrap();
    api.set_timeout(Duration::from_secs(300));
    api.push(event);
    let (answers, log) = api.answers_and_log(&mut dump, 2, WAIT);
    let outcome = match &answers[1].1 {
        Answer::Response(v) => v.clone(),
        Answer::Error(e) => panic!("the retry failed: {e}\n{log}"),
    };
    assert_eq!(outcome["outcome"], "completed", "{outcome}\n{log}");
    assert_eq!(
        outcome["backup"]["retry_of"],
        stopped.id.as_str(),
        "{outcome}"
    );
}

/// A function that cannot start reports the error to the Runtime API (so its invocation fails
/// at once): the prune function without any retention rule.
#[test]
fn a_function_that_cannot_start_reports_an_init_error() {
    let Some(stack) = Stack::start() else { return };
    let api = FakeRuntimeApi::start(vec![events::load("prune", "scheduled")]).unwrap();
    let mut cmd = api.command(&function_bin("prune"));
    for (name, value) in stack.deployment() {
        if allowed_env("prune").contains(name) && !name.starts_with("PGKEEP_KEEP_") {
            cmd.env(name, value);
        }
    }
    let mut prune = cmd.spawn().unwrap();
    let err = api
        .wait_for(1, Duration::from_secs(60))
        .expect_err("no invocation may run");
    assert!(err.contains("PGKEEP_KEEP_"), "{err}");
    assert!(err.contains("Runtime.InitError"), "{err}");
    let status = prune.wait().unwrap();
    assert!(!status.success());
}

/// Runs `function`'s binary once with `events` queued and returns its answers (in order) with
/// its log.
fn run_events(stack: &Stack, function: &str, events: Vec<Value>) -> (Vec<Answer>, String) {
    let count = events.len();
    let api = FakeRuntimeApi::start(events).unwrap();
    let mut child = stack.spawn(function, &api);
    let (answers, log) = api.answers_and_log(&mut child, count, WAIT);
    let answers = answers.into_iter().map(|(_, answer)| answer).collect();
    (answers, log)
}

fn outcome<'a>(answer: &'a Answer, name: &str, log: &str) -> &'a Value {
    match answer {
        Answer::Response(v) => v,
        Answer::Error(e) => panic!("{name}: the invocation failed: {e}\n{log}"),
    }
}

/// Every file of events/ through the real binary of its function, in one deployment: the
/// dumps the other events name first, then each function's events with the outcome each must
/// have (the status function's deletion last, so the others find the backup it deletes).
#[test]
fn every_sample_event_goes_through_the_real_binaries() {
    let Some(stack) = Stack::start() else { return };
    stack
        .cluster
        .psql(
            &stack.database,
            "CREATE TABLE public.sessions AS SELECT g AS id FROM generate_series(1, 50) g",
        )
        .unwrap();
    // The verifications the dumps start go to a queue nobody serves: the verify events below
    // are the ones under test.
    let unserved = Arc::new(FakeRuntimeApi::start(Vec::new()).unwrap());
    stack.forwarder.route(VERIFY_FUNCTION, unserved.clone());
    stack.forwarder.route(DUMP_FUNCTION, unserved);

    // dump: the backup the verify and status events name, then every sample event.
    let named = events::load("verify", "direct")["backup_id"].clone();
    let expected = [
        ("scheduled", "scheduled"),
        ("console", "manual"),
        ("console-pre-migration", "pre_migration"),
        ("from-api", "manual"),
        ("task-stopped", "task_failed"),
    ];
    let samples = events::each("dump", &expected);
    let mut queue =
        vec![serde_json::json!({"database": "shop", "kind": "manual", "backup_id": named})];
    queue.extend(samples.iter().map(|(_, event, _)| event.clone()));
    let (answers, log) = run_events(&stack, "dump", queue);
    assert_eq!(outcome(&answers[0], "named", &log)["outcome"], "completed");
    for ((name, _, kind), answer) in samples.iter().zip(&answers[1..]) {
        let out = outcome(answer, name, &log);
        if *name == "task-stopped" {
            assert_eq!(out["outcome"], **kind, "dump {name}: {out}");
            continue;
        }
        assert_eq!(out["outcome"], "completed", "dump {name}: {out}");
        assert_eq!(out["backup"]["kind"], **kind, "dump {name}: {out}");
    }

    // verify: the scheduled one finds the oldest backup not yet verified.
    let expected = [
        ("direct", "verified"),
        ("from-dump", "verified"),
        ("restore-dry-run", "restored"),
        ("restore", "restored"),
        ("scheduled", "verified"),
    ];
    let samples = events::each("verify", &expected);
    let (answers, log) = run_events(
        &stack,
        "verify",
        samples.iter().map(|(_, e, _)| e.clone()).collect(),
    );
    for ((name, _, want), answer) in samples.iter().zip(&answers) {
        let out = outcome(answer, name, &log);
        assert_eq!(out["outcome"], **want, "verify {name}: {out}");
    }

    // prune: every database has a fresh good backup, so nothing is stale.
    let expected: [(&str, usize); 2] = [("scheduled", 0), ("health", 0)];
    let samples = events::each("prune", &expected);
    let (answers, log) = run_events(
        &stack,
        "prune",
        samples.iter().map(|(_, e, _)| e.clone()).collect(),
    );
    for ((name, _, stale), answer) in samples.iter().zip(&answers) {
        let out = outcome(answer, name, &log);
        assert_eq!(
            out["stale"].as_array().map(Vec::len),
            Some(**stale),
            "prune {name}: {out}"
        );
    }

    // status: the HTTP status each must answer.
    let expected = [
        ("create-backup", 202),
        ("create-backup-bad-body", 400),
        ("create-backup-bad-label", 400),
        ("create-backup-pre-migration", 202),
        ("download-backup", 200),
        ("forbidden-anonymous", 403),
        ("forbidden-not-admin", 403),
        ("get-backup", 200),
        ("get-backup-malformed-id", 400),
        ("get-status", 200),
        ("list-backups", 200),
        ("list-backups-bad-limit", 400),
        ("list-backups-by-label", 200),
        ("list-backups-failed", 200),
        ("restore-backup", 202),
        ("restore-backup-dry-run", 202),
        ("restore-backup-not-admin", 403),
        ("restore-backup-unconfirmed", 400),
        ("verify-backup", 202),
        ("delete-backup-iam", 200),
    ];
    let samples = events::each("status", &expected);
    let (answers, log) = run_events(
        &stack,
        "status",
        samples.iter().map(|(_, e, _)| e.clone()).collect(),
    );
    for ((name, _, status), answer) in samples.iter().zip(&answers) {
        let out = outcome(answer, name, &log);
        assert_eq!(out["statusCode"], **status, "status {name}: {out}");
    }
    assert!(
        !log.contains(stack.cluster.password()),
        "a secret in:\n{log}"
    );
}
