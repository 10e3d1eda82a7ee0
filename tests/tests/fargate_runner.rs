//! Beyond 15 minutes: the real `pgkeep job` run as the Fargate task runs it (only the
//! functions' environment, `PGKEEP_JOB` set), and the real dump and verify binaries under a
//! fake Lambda Runtime API handing a database's work to ECS (moto records the `RunTask`),
//! against moto and a throwaway PostgreSQL.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::ContainerDefinition;
use pgkeep::model::{BackupId, BackupKind, BackupRecord, BackupStatus, Compression};
use pgkeep::store::s3::S3Options;
use pgkeep::trigger::{DumpTrigger, Job, JobFunction, VerifyEvent};
use pgkeep_tests::aws::Moto;
use pgkeep_tests::lambda_runtime::{Answer, FakeRuntimeApi};
use pgkeep_tests::{events, function_bin, load_sample, pgkeep_bin, unique_name, PgCluster};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(180);

/// One deployment: moto's bucket, table and key, and a database `shop` with sample data.
struct Stack {
    moto: Moto,
    cluster: PgCluster,
    database: String,
}

impl Stack {
    fn start() -> Option<Stack> {
        let moto = Moto::start()?;
        let cluster = PgCluster::start().unwrap();
        let database = unique_name("shop");
        cluster.create_database(&database).unwrap();
        load_sample(&cluster, &database, 1).unwrap();
        Some(Stack {
            moto,
            cluster,
            database,
        })
    }

    /// What Terraform gives the functions (and so the task), for `databases` all on this
    /// stack's database, plus the credentials and region the task's role provides.
    fn env(&self, databases: &[&str]) -> Vec<(String, String)> {
        let url = self.cluster.url(&self.database);
        let databases: serde_json::Map<String, Value> = databases
            .iter()
            .map(|name| ((*name).to_owned(), json!({ "url": url })))
            .collect();
        let mut env: Vec<(String, String)> = [
            ("PGKEEP_REPO", self.moto.repo_url()),
            ("PGKEEP_CATALOG", self.moto.catalog_url()),
            ("PGKEEP_KEY", self.moto.key_url()),
            ("PGKEEP_DATABASES", Value::Object(databases).to_string()),
            ("PGKEEP_ABANDON_AFTER", "2h".into()),
            ("PGKEEP_KEEP_DAILY", "7".into()),
            ("PGKEEP_AWS_ENDPOINT", self.moto.endpoint.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for name in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "PATH",
        ] {
            if let Ok(value) = std::env::var(name) {
                env.push((name.to_owned(), value));
            }
        }
        env
    }

    /// `pgkeep job` with only the task's environment and `PGKEEP_JOB`.
    fn job(&self, job: &Value) -> Command {
        let mut cmd = Command::new(pgkeep_bin());
        cmd.env_clear()
            .envs(self.env(&["shop"]))
            .env("PGKEEP_JOB", job.to_string())
            .arg("job")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn run_job(&self, job: Value) -> Value {
        let out = self.job(&job).output().unwrap();
        assert!(out.status.success(), "{job}: {}", describe(&out));
        last_json_line(&out)
    }

    fn records(&self) -> Vec<BackupRecord> {
        let services = self.moto.services(S3Options::default());
        self.moto
            .runtime
            .block_on(services.catalog.list(&Default::default()))
            .unwrap()
            .records
    }
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The outcome: the last line of stdout (metric lines come before it).
fn last_json_line(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {}", describe(out)))
}

/// A scheduled dump, then its verification, then a restore, each as a task's `pgkeep job`:
/// the record ends verified and the restored database holds the same data.
#[test]
fn the_job_entry_point_backs_up_verifies_and_restores() {
    let Some(stack) = Stack::start() else { return };
    let dumped =
        stack.run_job(json!({"function": "dump", "event": events::load("dump", "scheduled")}));
    assert_eq!(dumped["outcome"], "completed", "{dumped}");
    let id: BackupId = dumped["backup"]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(dumped["backup"]["kind"], "scheduled");

    let verified = stack.run_job(json!({"function": "verify", "event": {"backup_id": id}}));
    assert_eq!(verified["outcome"], "verified", "{verified}");
    let record = stack.records().into_iter().find(|r| r.id == id).unwrap();
    assert_eq!(record.status, BackupStatus::Verified, "{record:?}");

    let target = unique_name("restored");
    let restored = stack.run_job(json!({"function": "verify", "event": {"restore": {
        "backup_id": id, "target_db": target, "requested_by": "alice"}}}));
    assert_eq!(restored["outcome"], "restored", "{restored}");
    assert_eq!(
        stack.cluster.table_counts(&target).unwrap(),
        stack.cluster.table_counts(&stack.database).unwrap()
    );
    let digest = "SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM public.notes t";
    assert_eq!(
        stack.cluster.psql(&target, digest).unwrap(),
        stack.cluster.psql(&stack.database, digest).unwrap()
    );

    // A job that is not one exits 2 naming what is expected, and runs nothing.
    let out = stack
        .job(&json!({"function": "backup", "event": {}}))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("\"dump\""),
        "{}",
        describe(&out)
    );
}

/// ECS stops a task with SIGTERM: the backup ends failed with the reason, its upload aborted
/// and its lease given back, and the job exits 143. pg_dump is held mid-backup by a lock a
/// migration holds.
#[test]
fn sigterm_mid_backup_ends_the_job_failed_with_nothing_left() {
    let Some(stack) = Stack::start() else { return };
    let mut migration = stack.cluster.hold_lock(&stack.database, "notes").unwrap();

    let job = stack
        .job(&json!({"function": "dump", "event": events::load("dump", "scheduled")}))
        .spawn()
        .unwrap();
    // Stop it once its record is running (pg_dump then waits on the lock).
    let deadline = Instant::now() + WAIT;
    let running = loop {
        if let Some(r) = stack
            .records()
            .into_iter()
            .find(|r| r.status == BackupStatus::InProgress)
        {
            break r;
        }
        assert!(Instant::now() < deadline, "no running backup");
        std::thread::sleep(Duration::from_millis(50));
    };
    let stopping = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &job.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = job.wait_with_output().unwrap();
    let took = stopping.elapsed();
    assert_eq!(out.status.code(), Some(143), "{}", describe(&out));
    // Within ECS's default stop timeout, after which it would be killed (SIGKILL).
    eprintln!("SIGTERM to exit: {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    // The alert went out (here to the log, the one notifier configured).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("backup_failed"), "{stderr}");

    let records = stack.records();
    assert_eq!(records.len(), 1, "{records:?}");
    let stopped = &records[0];
    assert_eq!(stopped.id, running.id);
    assert_eq!(stopped.status, BackupStatus::Failed, "{stopped:?}");
    assert!(
        stopped
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("SIGTERM"),
        "{stopped:?}"
    );
    assert!(
        stack.moto.open_uploads().is_empty(),
        "open uploads: {:?}",
        stack.moto.open_uploads()
    );
    let services = stack.moto.services(S3Options::default());
    let lease = stack
        .moto
        .runtime
        .block_on(services.catalog.get_lease(&stopped.database))
        .unwrap();
    assert!(lease.is_none(), "the lease is still held: {lease:?}");
    migration.kill().unwrap();
    migration.wait().unwrap();
}

/// An ECS cluster and one task definition per database in moto, as Terraform makes them
/// (container `pgkeep` running `pgkeep job`).
struct Ecs {
    client: aws_sdk_ecs::Client,
    cluster: String,
}

impl Ecs {
    fn create(moto: &Moto) -> Ecs {
        let client = aws_sdk_ecs::Client::new(&moto.config);
        let cluster = moto.runtime.block_on(async {
            client
                .create_cluster()
                .cluster_name(unique_name("pgkeep"))
                .send()
                .await
                .unwrap()
                .cluster()
                .unwrap()
                .cluster_arn()
                .unwrap()
                .to_owned()
        });
        Ecs { client, cluster }
    }

    fn task_definition(&self, moto: &Moto, database: &str) -> String {
        moto.runtime.block_on(async {
            self.client
                .register_task_definition()
                .family(unique_name(&format!("pgkeep-{database}")))
                // Neither FARGATE nor awsvpc as in Terraform: moto 5.2.5 gives a FARGATE
                // definition awsvpc, then refuses RunTask without a network configuration
                // and fails inside with one (creating the network interface). So the test
                // leaves PGKEEP_FARGATE_SUBNETS unset and the functions send none.
                .cpu("1024")
                .memory("2048")
                .container_definitions(
                    ContainerDefinition::builder()
                        .name("pgkeep")
                        .image("123456789012.dkr.ecr.us-east-1.amazonaws.com/pgkeep:test")
                        .entry_point("/var/task/pgkeep")
                        .command("job")
                        // moto sums the containers' memory to place a task.
                        .memory(2048)
                        .cpu(1024)
                        .essential(true)
                        .build(),
                )
                .send()
                .await
                .unwrap()
                .task_definition()
                .unwrap()
                .task_definition_arn()
                .unwrap()
                .to_owned()
        })
    }

    /// Every task of the cluster: its task definition, who started it, and the job its
    /// `pgkeep` container was given.
    fn tasks(&self, moto: &Moto) -> Vec<(String, String, Job)> {
        moto.runtime.block_on(async {
            let arns = self
                .client
                .list_tasks()
                .cluster(&self.cluster)
                .send()
                .await
                .unwrap()
                .task_arns()
                .to_vec();
            if arns.is_empty() {
                return Vec::new();
            }
            let described = self
                .client
                .describe_tasks()
                .cluster(&self.cluster)
                .set_tasks(Some(arns))
                .send()
                .await
                .unwrap();
            described
                .tasks()
                .iter()
                .map(|t| {
                    let overrides = t.overrides().unwrap().container_overrides();
                    assert_eq!(overrides.len(), 1, "{overrides:?}");
                    assert_eq!(overrides[0].name(), Some("pgkeep"));
                    let env = overrides[0].environment();
                    assert_eq!(env.len(), 1, "{env:?}");
                    assert_eq!(env[0].name(), Some("PGKEEP_JOB"));
                    (
                        t.task_definition_arn().unwrap().to_owned(),
                        t.started_by().unwrap_or_default().to_owned(),
                        Job::parse(env[0].value().unwrap()).unwrap(),
                    )
                })
                .collect()
        })
    }
}

/// A scheduled event for another database of the deployment.
fn scheduled(database: &str, id: &str) -> Value {
    let mut event = events::load("dump", "scheduled");
    event["id"] = json!(id);
    event["detail"]["database"] = json!(database);
    event
}

/// A completed backup of `database` that took `minutes`, written through the catalog API.
fn history(stack: &Stack, database: &str, minutes: u64) {
    let created = chrono::Utc::now() - chrono::Duration::days(1);
    let mut record = BackupRecord::start(
        BackupId::generate(created),
        database,
        BackupKind::Scheduled,
        Compression::Zstd,
    );
    record.status = BackupStatus::Completed;
    record.completed_at = Some(created + chrono::Duration::minutes(minutes as i64));
    record.duration_ms = Some(minutes * 60_000);
    record.size_bytes = Some(1024 * 1024);
    let services = stack.moto.services(S3Options::default());
    stack
        .moto
        .runtime
        .block_on(services.catalog.insert(&record))
        .unwrap();
}

/// The dump function with `PGKEEP_RUNNERS`: a scheduled event for a `fargate` database and
/// one for an `auto` database whose last backup took 20 minutes each start one task with the
/// database's task definition and the event as its job, and take no backup; an `auto`
/// database whose last backup was short is backed up by the function itself.
#[test]
fn the_dump_function_hands_fargate_and_long_auto_databases_to_ecs() {
    let Some(stack) = Stack::start() else { return };
    let ecs = Ecs::create(&stack.moto);
    let big = ecs.task_definition(&stack.moto, "shop");
    let grow = ecs.task_definition(&stack.moto, "grow");
    let small = ecs.task_definition(&stack.moto, "small");
    history(&stack, "grow", 20);
    history(&stack, "small", 1);

    let events = vec![
        events::load("dump", "scheduled"),
        scheduled("grow", "e2a5a1c6-0000-4000-8000-000000000001"),
        scheduled("small", "e2a5a1c6-0000-4000-8000-000000000002"),
    ];
    let api = FakeRuntimeApi::start(events.clone()).unwrap();
    let mut dump = api.command(&function_bin("dump"));
    dump.envs(stack.env(&["shop", "grow", "small"]))
        .env(
            "PGKEEP_RUNNERS",
            json!({"shop": "fargate", "grow": "auto", "small": "auto"}).to_string(),
        )
        .env("PGKEEP_FARGATE_CLUSTER", &ecs.cluster)
        .env(
            "PGKEEP_FARGATE_TASK_DEFINITIONS",
            json!({"shop": big, "grow": grow, "small": small}).to_string(),
        );
    let mut dump = dump.spawn().unwrap();
    let (answers, log) = api.answers_and_log(&mut dump, 3, WAIT);
    let outcomes: Vec<&Value> = answers
        .iter()
        .map(|(_, a)| match a {
            Answer::Response(v) => v,
            Answer::Error(e) => panic!("an invocation failed: {e}\n{log}"),
        })
        .collect();
    assert_eq!(
        outcomes[0]["outcome"], "handed_off",
        "{}\n{log}",
        outcomes[0]
    );
    assert_eq!(
        outcomes[1]["outcome"], "handed_off",
        "{}\n{log}",
        outcomes[1]
    );
    assert!(
        outcomes[1]["reason"].as_str().unwrap().contains("1200s"),
        "{}",
        outcomes[1]
    );
    assert_eq!(
        outcomes[2]["outcome"], "completed",
        "{}\n{log}",
        outcomes[2]
    );

    // Exactly one task per handed-off event, with the database's task definition and the
    // event as its job (the same request: the same backup id).
    let mut tasks = ecs.tasks(&stack.moto);
    tasks.sort_by_key(|(definition, _, _)| definition.clone());
    let mut expected = vec![(big.clone(), &events[0]), (grow.clone(), &events[1])];
    expected.sort_by_key(|(definition, _)| definition.clone());
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    for ((definition, started_by, job), (want, event)) in tasks.iter().zip(&expected) {
        assert_eq!(definition, want);
        assert_eq!(started_by, "pgkeep");
        assert_eq!(job.function, JobFunction::Dump);
        assert_eq!(
            DumpTrigger::from_event(&job.event).unwrap(),
            DumpTrigger::from_event(event).unwrap()
        );
    }
    for outcome in &outcomes[..2] {
        let arn = outcome["task_arn"].as_str().unwrap();
        assert!(arn.contains(":task/"), "{outcome}");
    }

    // No backup of the handed-off databases was taken here (the events' ids name their time);
    // the small one was.
    let records = stack.records();
    let taken: Vec<&BackupRecord> = records
        .iter()
        .filter(|r| r.id.as_str().starts_with("20261124T020000000Z-"))
        .collect();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].database, "small");
    assert_eq!(taken[0].status, BackupStatus::Completed);

    // The audit trail says where the work went.
    let services = stack.moto.services(S3Options::default());
    let audit = stack
        .moto
        .runtime
        .block_on(services.catalog.list_audit(None, 100))
        .unwrap();
    let handed: Vec<_> = audit.iter().filter(|e| e.action == "hand_off").collect();
    assert_eq!(handed.len(), 2, "{audit:?}");
    assert!(handed
        .iter()
        .all(|e| e.outcome == "ok" && e.details["task_arn"].is_string()));
}

/// The verify function with `PGKEEP_RUNNERS`: the verification of a `fargate` database's
/// backup starts one task with that backup named, and restores nothing itself.
#[test]
fn the_verify_function_hands_a_fargate_database_to_ecs() {
    let Some(stack) = Stack::start() else { return };
    let dumped =
        stack.run_job(json!({"function": "dump", "event": {"database": "shop", "kind": "manual"}}));
    let id = dumped["backup"]["id"].as_str().unwrap().to_owned();
    let ecs = Ecs::create(&stack.moto);
    let definition = ecs.task_definition(&stack.moto, "shop");
    let api = FakeRuntimeApi::start(vec![json!({})]).unwrap();
    let mut verify = api.command(&function_bin("verify"));
    verify
        .envs(stack.env(&["shop"]))
        .env("PGKEEP_RUNNERS", json!({"shop": "fargate"}).to_string())
        .env("PGKEEP_FARGATE_CLUSTER", &ecs.cluster)
        .env(
            "PGKEEP_FARGATE_TASK_DEFINITIONS",
            json!({ "shop": definition }).to_string(),
        );
    let mut verify = verify.spawn().unwrap();
    let (answers, log) = api.answers_and_log(&mut verify, 1, WAIT);
    let outcome = answers[0].1.response();
    assert_eq!(outcome["outcome"], "handed_off", "{outcome}\n{log}");
    assert_eq!(outcome["backup_id"], id.as_str());
    let tasks = ecs.tasks(&stack.moto);
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].0, definition);
    assert_eq!(tasks[0].2.function, JobFunction::Verify);
    match VerifyEvent::from_event(&tasks[0].2.event).unwrap() {
        VerifyEvent::Verify(t) => assert_eq!(t.backup_id.unwrap().as_str(), id),
        other => panic!("{other:?}"),
    }
    let record = stack
        .records()
        .into_iter()
        .find(|r| r.id.as_str() == id)
        .unwrap();
    assert_eq!(record.status, BackupStatus::Completed, "not verified here");
}
