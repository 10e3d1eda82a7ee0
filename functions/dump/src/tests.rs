//! Every sample event in events/dump/ through the real handler, over the embedded backends and
//! a real PostgreSQL; the failure alerts through the real SNS (moto) and webhook notifiers.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Duration, Utc};
use pgkeep::alert::AlertKind;
use pgkeep::backends::KeyUse;
use pgkeep::config::LambdaSettings;
use pgkeep::model::{BackupId, BackupKind, BackupRecord, BackupStatus, Compression, Lease};
use pgkeep::ops::jobs::Jobs;
use pgkeep::testing::{RecordingMetrics, RecordingNotifier, RecordingVerifyStarter};
use pgkeep::trigger::VerifyEvent;
use pgkeep_tests::aws::Moto;
use pgkeep_tests::PgCluster;
use serde_json::Value;

use super::handle;

fn event(name: &str) -> Value {
    pgkeep_tests::events::load("dump", name)
}

/// Settings for the embedded backends in `dir`, backing up `shop` at `url`, plus `extra`.
fn settings(dir: &std::path::Path, url: &str, extra: &[(&str, String)]) -> LambdaSettings {
    let mut vars: BTreeMap<String, String> = [
        ("PGKEEP_REPO", dir.join("repo").display().to_string()),
        (
            "PGKEEP_KEY_FILE",
            dir.join("pgkeep.key").display().to_string(),
        ),
        (
            "PGKEEP_DATABASES",
            serde_json::json!({ "shop": { "url": url } }).to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    LambdaSettings::from_lookup(|name| vars.get(name).cloned()).expect("valid settings")
}

struct Fixture {
    _dir: tempfile::TempDir,
    jobs: Jobs,
    metrics: Arc<RecordingMetrics>,
    verifies: Arc<RecordingVerifyStarter>,
}

async fn fixture(url: &str, extra: &[(&str, String)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut jobs = Jobs::connect(settings(dir.path(), url, extra), KeyUse::Write)
        .await
        .expect("jobs");
    let metrics = Arc::new(RecordingMetrics::default());
    let verifies = Arc::new(RecordingVerifyStarter::default());
    jobs.metrics = metrics.clone();
    jobs.verify_starter = Some(verifies.clone());
    Fixture {
        _dir: dir,
        jobs,
        metrics,
        verifies,
    }
}

/// Keys of stored backup objects (not manifests) of `shop`.
async fn objects(jobs: &Jobs) -> Vec<String> {
    let mut keys: Vec<String> = jobs
        .services
        .store
        .list("shop/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .filter(|k| !k.ends_with(".manifest.json"))
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn every_sample_event_backs_up_once_with_metrics_and_a_verification() {
    let cluster = PgCluster::start().unwrap();
    cluster.create_database("shop").unwrap();
    cluster
        .psql(
            "shop",
            "CREATE TABLE items (id int PRIMARY KEY, name text);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 250) g;",
        )
        .unwrap();
    let mut f = fixture(&cluster.url("shop"), &[]).await;
    let notices = Arc::new(pgkeep::testing::RecordingNotifier::new());
    f.jobs.notifier = notices.clone();

    // The same scheduled event, delivered twice: one backup.
    let first = handle(&f.jobs, event("scheduled")).await.unwrap();
    // Who asked, on the record; the start and the good news told to the notifiers (a
    // heartbeat's /start and success pings).
    assert_eq!(first["backup"]["requested_by"], "schedule");
    assert_eq!(
        notices.starts(),
        [(pgkeep::alert::RunKind::Backup, "shop".to_owned())]
    );
    let kinds: Vec<_> = notices.notices().iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [pgkeep::alert::AlertKind::BackupOk]);
    assert!(notices.alerts().is_empty());
    assert_eq!(first["outcome"], "completed", "{first}");
    assert_eq!(first["verify_started"], true);
    let backup = &first["backup"];
    assert_eq!(backup["status"], "completed");
    assert_eq!(backup["database"], "shop");
    assert_eq!(backup["kind"], "scheduled");
    assert_eq!(backup["row_counts"]["public.items"], 250);
    let id = backup["id"].as_str().unwrap().to_owned();
    let again = handle(&f.jobs, event("scheduled")).await.unwrap();
    assert_eq!(again["outcome"], "duplicate", "{again}");
    assert_eq!(again["backup"]["id"], id.as_str());
    let records = pgkeep::ops::list::list_all(&f.jobs.services, &Default::default())
        .await
        .unwrap();
    assert_eq!(records.len(), 1, "one record for two deliveries");
    assert_eq!(
        objects(&f.jobs).await.len(),
        1,
        "one object for two deliveries"
    );

    // The metric line of that backup, in Embedded Metric Format.
    let lines = f.metrics.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let emf: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(emf["_aws"]["CloudWatchMetrics"][0]["Namespace"], "pgkeep");
    assert_eq!(
        emf["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0][0],
        "Database"
    );
    assert_eq!(emf["Database"], "shop");
    assert_eq!(emf["BackupId"], id.as_str());
    assert_eq!(emf["BackupSize"], backup["size_bytes"]);
    assert_eq!(emf["BackupDuration"], backup["duration_ms"]);

    // A console invocation: a fresh id. The API's invocation: the id it allocated.
    let manual = handle(&f.jobs, event("console")).await.unwrap();
    assert_eq!(manual["outcome"], "completed", "{manual}");
    assert_eq!(manual["backup"]["kind"], "manual");
    assert_ne!(manual["backup"]["id"], id.as_str());
    assert_eq!(manual["backup"]["requested_by"], "console");
    let api = handle(&f.jobs, event("from-api")).await.unwrap();
    assert_eq!(api["backup"]["id"], event("from-api")["backup_id"], "{api}");
    assert_eq!(objects(&f.jobs).await.len(), 3);
    assert_eq!(f.metrics.lines().len(), 3);

    // Each new backup's verification was started, once.
    let started: Vec<String> = f
        .verifies
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|e| match e {
            VerifyEvent::Verify(t) => {
                assert_eq!(t.requested_by.as_deref(), Some("dump"));
                t.backup_id.as_ref().unwrap().to_string()
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let taken: Vec<String> = [&first, &manual, &api]
        .iter()
        .map(|o| o["backup"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(started, taken);
}

#[tokio::test]
async fn selections_come_from_the_configuration_or_the_event_and_labels_are_recorded() {
    let cluster = PgCluster::start().unwrap();
    cluster.create_database("shop").unwrap();
    cluster
        .psql(
            "shop",
            "CREATE SCHEMA audit;
             CREATE TABLE audit.log (id int);
             INSERT INTO audit.log SELECT generate_series(1, 40);
             CREATE TABLE items (id int PRIMARY KEY, name text);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 250) g;
             CREATE TABLE sessions (id int);
             INSERT INTO sessions SELECT generate_series(1, 77);",
        )
        .unwrap();
    let f = fixture(
        &cluster.url("shop"),
        &[(
            "PGKEEP_SELECTIONS",
            r#"{"shop": {"exclude_schemas": ["audit"]}}"#.to_owned(),
        )],
    )
    .await;

    // A scheduled run: the database's configured selection.
    let out = handle(&f.jobs, event("scheduled")).await.unwrap();
    assert_eq!(out["outcome"], "completed", "{out}");
    let backup = &out["backup"];
    assert_eq!(backup["selection"]["exclude_schemas"][0], "audit");
    let tables: Vec<&String> = backup["row_counts"].as_object().unwrap().keys().collect();
    assert_eq!(tables, ["public.items", "public.sessions"]);
    assert!(backup.get("labels").is_none(), "{backup}");

    // An event with its own selection replaces the configured one; its labels and kind are
    // recorded.
    let out = handle(&f.jobs, event("console-pre-migration"))
        .await
        .unwrap();
    assert_eq!(out["outcome"], "completed", "{out}");
    let backup = &out["backup"];
    assert_eq!(backup["kind"], "pre_migration");
    assert_eq!(
        backup["labels"],
        serde_json::json!({"release": "2026.11.3", "ticket": "OPS-7"})
    );
    assert_eq!(
        backup["selection"],
        serde_json::json!({"exclude_table_data": ["public.sessions"]})
    );
    assert_eq!(backup["row_counts"]["audit.log"], 40);
    assert_eq!(backup["row_counts"]["public.items"], 250);
    assert!(backup["row_counts"].get("public.sessions").is_none());
    assert_eq!(
        backup["schema_only_tables"],
        serde_json::json!(["public.sessions"])
    );

    // A bad label in an event fails the invocation before anything is recorded.
    let before = pgkeep::ops::list::list_all(&f.jobs.services, &Default::default())
        .await
        .unwrap()
        .len();
    let mut bad = event("console-pre-migration");
    bad["labels"]["Release"] = "x".into();
    let err = handle(&f.jobs, bad).await.unwrap_err();
    assert_eq!(err.error_type, "InvalidEvent", "{err:?}");
    assert!(err.error_message.contains("upper-case"), "{err:?}");
    assert_eq!(
        pgkeep::ops::list::list_all(&f.jobs.services, &Default::default())
            .await
            .unwrap()
            .len(),
        before
    );
}

#[tokio::test]
async fn unknown_databases_and_malformed_events_fail_the_invocation() {
    let cluster = PgCluster::start().unwrap();
    let f = fixture(&cluster.url("shop"), &[]).await;
    let err = handle(&f.jobs, serde_json::json!({"database": "crm"}))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "Failed");
    assert!(
        err.error_message.contains("\"crm\" is not configured"),
        "{err:?}"
    );
    let err = handle(&f.jobs, serde_json::json!({"db": "shop"}))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "InvalidEvent", "{err:?}");
    assert!(f.metrics.lines().is_empty());
}

#[tokio::test]
async fn a_held_lease_refuses_a_schedule_quietly_a_request_on_record_and_abandoned_runs_are_alerted(
) {
    let cluster = PgCluster::start().unwrap();
    cluster.create_database("shop").unwrap();
    let mut f = fixture(&cluster.url("shop"), &[]).await;
    let alerts = Arc::new(RecordingNotifier::new());
    f.jobs.notifier = alerts.clone();
    let catalog = &f.jobs.services.catalog;

    // Another run of shop holds the lease: a scheduled dump is refused, records nothing,
    // alerts nothing (the running backup is the one that counts).
    let now = Utc::now();
    let lease = Lease {
        database: "shop".into(),
        holder: "20261124T000000000Z-00000000".into(),
        expires_at: now + Duration::minutes(30),
        process: None,
    };
    assert!(catalog.acquire_lease(&lease, now).await.unwrap().is_none());
    let err = handle(&f.jobs, event("scheduled")).await.unwrap_err();
    assert_eq!(err.error_type, "LeaseHeld", "{err:?}");
    assert!(err.error_message.contains(&lease.holder), "{err:?}");
    assert!(alerts.alerts().is_empty());
    assert!(catalog
        .list(&Default::default())
        .await
        .unwrap()
        .records
        .is_empty());
    // A dump someone asked for (here from the console) is refused too, but recorded failed
    // and alerted: someone holds its id.
    let err = handle(&f.jobs, event("console")).await.unwrap_err();
    assert_eq!(err.error_type, "LeaseHeld", "{err:?}");
    let refused = alerts.alerts();
    assert_eq!(refused.len(), 1, "{refused:?}");
    let refused_id = refused[0].backup_id.clone().unwrap();
    let record = catalog.get(&refused_id).await.unwrap();
    assert_eq!(record.status, BackupStatus::Failed);
    assert!(
        record
            .error
            .as_deref()
            .unwrap_or_default()
            .contains(&lease.holder),
        "{record:?}"
    );
    catalog.release_lease("shop", &lease.holder).await.unwrap();

    // A run that never finished (its Lambda timed out): the next dump fails it and says so.
    let started = now - Duration::hours(2);
    let mut stuck = BackupRecord::start(
        BackupId::generate(started),
        "shop",
        BackupKind::Scheduled,
        Compression::Zstd,
    );
    stuck.created_at = started;
    catalog.insert(&stuck).await.unwrap();
    let out = handle(&f.jobs, event("console")).await.unwrap();
    assert_eq!(out["outcome"], "completed", "{out}");
    assert_eq!(
        catalog.get(&stuck.id).await.unwrap().status,
        BackupStatus::Failed
    );
    let alerts = alerts.alerts();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[1].kind, AlertKind::BackupFailed);
    assert_eq!(alerts[1].backup_id.as_ref(), Some(&stuck.id));
    assert!(
        alerts[1].reason.contains("abandoned"),
        "{}",
        alerts[1].reason
    );
}

/// An SNS topic with an SQS queue subscribed to it, to read published alerts back.
struct Topic {
    arn: String,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl Topic {
    async fn create(config: &pgkeep::aws::SdkConfig, name: &str) -> Topic {
        let sns = aws_sdk_sns::Client::new(config);
        let sqs = aws_sdk_sqs::Client::new(config);
        let arn = sns
            .create_topic()
            .name(name)
            .send()
            .await
            .unwrap()
            .topic_arn()
            .unwrap()
            .to_owned();
        let queue_url = sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_owned();
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap();
        let queue_arn = attributes
            .attributes()
            .unwrap()
            .get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .unwrap()
            .clone();
        sns.subscribe()
            .topic_arn(&arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .send()
            .await
            .unwrap();
        Topic {
            arn,
            sqs,
            queue_url,
        }
    }

    /// The SNS envelopes (`Subject`, `Message`, `MessageAttributes`) waiting in the queue.
    async fn received(&self) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let batch = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            let messages = batch.messages();
            if messages.is_empty() {
                return out;
            }
            for m in messages {
                out.push(serde_json::from_str(m.body().unwrap()).unwrap());
            }
        }
    }
}

#[test]
fn a_failed_dump_alerts_once_through_sns_and_the_webhook_without_secrets() {
    let Some(moto) = Moto::start() else { return };
    let cluster = PgCluster::start().unwrap();
    // `shop` is configured but does not exist on the server: every dump of it fails. The URL
    // carries the cluster's password, which no alert may contain.
    let url = cluster.url("shop");
    let password = cluster.password().to_owned();
    assert!(url.contains(&password));
    let hook = pgkeep_tests::webhook::Webhook::start();
    moto.runtime.block_on(async {
        let topic = Topic::create(
            &moto.config,
            &format!("pgkeep-alerts-{}", std::process::id()),
        )
        .await;
        let f = fixture(
            &url,
            &[
                ("PGKEEP_AWS_ENDPOINT", moto.endpoint.clone()),
                ("PGKEEP_ALERT_TOPIC_ARN", topic.arn.clone()),
                ("PGKEEP_ALERT_WEBHOOK_URL", hook.url.clone()),
            ],
        )
        .await;

        let err = handle(&f.jobs, event("scheduled")).await.unwrap_err();
        assert_eq!(err.error_type, "Failed", "{err:?}");
        assert!(err.error_message.contains("shop"), "{err:?}");
        assert!(!err.error_message.contains(&password), "{err:?}");
        let records = pgkeep::ops::list::list_all(&f.jobs.services, &Default::default())
            .await
            .unwrap();
        assert_eq!(records.len(), 1);
        let failed = &records[0];
        assert_eq!(failed.status, BackupStatus::Failed);
        assert_eq!(failed.kind, BackupKind::Scheduled);
        let reason = failed.error.clone().unwrap();
        assert!(reason.contains("does not exist"), "{reason}");
        let stored = objects(&f.jobs).await;
        assert_eq!(
            stored,
            vec![failed.state_key()],
            "a failed run stores only its state, which says it failed"
        );

        // The event again (Lambda's retry): a second attempt, which fails the same way and
        // is recorded (naming the first) and alerted on its own.
        let again = handle(&f.jobs, event("scheduled")).await.unwrap_err();
        assert_eq!(again.error_type, "Failed", "{again:?}");
        let records = pgkeep::ops::list::list_all(&f.jobs.services, &Default::default())
            .await
            .unwrap();
        assert_eq!(records.len(), 2, "{records:?}");
        assert_eq!(records[0].retry_of.as_ref(), Some(&failed.id));
        assert_eq!(records[0].status, BackupStatus::Failed);

        let messages = topic.received().await;
        assert_eq!(
            messages.len(),
            2,
            "one SNS message per attempt: {messages:?}"
        );
        let sns = &messages[0];
        let text = sns["Message"].as_str().unwrap();
        assert_eq!(sns["Subject"], "pgkeep: backup of shop failed");
        assert!(text.contains("database: shop"), "{text}");
        assert!(text.contains(&format!("backup: {}", failed.id)), "{text}");
        assert!(text.contains("does not exist"), "{text}");
        assert_eq!(sns["MessageAttributes"]["kind"]["Value"], "backup_failed");
        assert!(!sns.to_string().contains(&password), "{sns}");

        let post = hook.posts.try_recv().expect("one webhook POST");
        hook.posts
            .try_recv()
            .expect("a second webhook POST, for the second attempt");
        assert!(
            hook.posts.try_recv().is_err(),
            "one webhook POST per attempt"
        );
        let body: Value = serde_json::from_str(&post).unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(text.contains("database: shop"), "{text}");
        assert!(text.contains(&format!("backup: {}", failed.id)), "{text}");
        assert!(text.contains("does not exist"), "{text}");
        assert!(!post.contains(&password), "{post}");
        assert!(f.metrics.lines().is_empty(), "no metrics for a failed dump");
        assert!(f.verifies.0.lock().unwrap().is_empty(), "nothing to verify");
    });
}

#[test]
fn a_database_named_by_a_secret_is_backed_up_under_its_configured_name() {
    let Some(moto) = Moto::start() else { return };
    let cluster = PgCluster::start().unwrap();
    cluster.create_database("shop_production").unwrap();
    // An RDS-style secret; the deployment calls the database `shop`, the server `shop_production`.
    let arn = moto.secret(
        &serde_json::json!({
            "engine": "postgres",
            "username": cluster.user(),
            "password": cluster.password(),
            "host": cluster.host(),
            "port": cluster.port(),
            "dbname": "shop_production",
        })
        .to_string(),
    );
    moto.runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let vars: BTreeMap<&str, String> = [
            ("PGKEEP_REPO", dir.path().join("repo").display().to_string()),
            (
                "PGKEEP_KEY_FILE",
                dir.path().join("pgkeep.key").display().to_string(),
            ),
            ("PGKEEP_AWS_ENDPOINT", moto.endpoint.clone()),
            (
                "PGKEEP_DATABASES",
                serde_json::json!({ "shop": { "secret_arn": arn } }).to_string(),
            ),
        ]
        .into();
        let settings = LambdaSettings::from_lookup(|k| vars.get(k).cloned()).unwrap();
        let mut jobs = Jobs::connect(settings, KeyUse::Write).await.unwrap();
        let metrics = Arc::new(RecordingMetrics::default());
        jobs.metrics = metrics.clone();
        let out = handle(&jobs, event("console")).await.unwrap();
        assert_eq!(out["outcome"], "completed", "{out}");
        assert_eq!(out["backup"]["database"], "shop");
        assert_eq!(objects(&jobs).await.len(), 1, "stored under shop/");
        assert_eq!(metrics.lines().len(), 1);
        assert!(!out.to_string().contains(cluster.password()));
    });
}

/// Each file of events/dump/ through the handler, one after the other against one database:
/// each takes its own backup of `shop`.
#[tokio::test]
async fn every_sample_event_goes_through_the_handler() {
    let cluster = PgCluster::start().unwrap();
    cluster.create_database("shop").unwrap();
    cluster
        .psql(
            "shop",
            "CREATE TABLE sessions (id int); INSERT INTO sessions VALUES (1);",
        )
        .unwrap();
    let f = fixture(&cluster.url("shop"), &[]).await;
    let expected = [
        ("scheduled", "scheduled"),
        ("console", "manual"),
        ("console-pre-migration", "pre_migration"),
        ("from-api", "manual"),
        // ECS's event of a Fargate task killed before it recorded its backup.
        ("task-stopped", "task_failed"),
    ];
    for (name, event, kind) in pgkeep_tests::events::each("dump", &expected) {
        let out = handle(&f.jobs, event)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        if name == "task-stopped" {
            assert_eq!(out["outcome"], *kind, "{name}: {out}");
            continue;
        }
        assert_eq!(out["outcome"], "completed", "{name}: {out}");
        assert_eq!(out["backup"]["kind"], *kind, "{name}: {out}");
    }
    // One object per backup; the failed task's attempt left only its state (why it failed).
    let objects = objects(&f.jobs).await;
    assert_eq!(
        objects.iter().filter(|k| k.ends_with(".pgkeep")).count(),
        expected.len() - 1,
        "{objects:?}"
    );
}

/// `all_databases: true`: the whole server of the configured database in one run (every
/// database and the globals), each completed backup measured and its verification started; a
/// repeated delivery (same backup id) finds the run and starts nothing.
#[tokio::test]
async fn an_all_databases_event_backs_up_the_whole_server_once() {
    let cluster = PgCluster::start().unwrap();
    for db in ["shop", "crm"] {
        cluster.create_database(db).unwrap();
        cluster
            .psql(
                db,
                "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);",
            )
            .unwrap();
    }
    let f = fixture(&cluster.url("shop"), &[]).await;
    let event = serde_json::json!({
        "database": "shop", "all_databases": true,
        "backup_id": "20261124T020000000Z-0a1b2c3d", "requested_by": "alice"
    });
    let out = handle(&f.jobs, event.clone()).await.unwrap();
    assert_eq!(out["outcome"], "run", "{out}");
    assert_eq!(out["run"]["run_id"], "20261124T020000000Z-0a1b2c3d");
    assert_eq!(out["run"]["failed"], serde_json::json!([]), "{out}");
    let databases: Vec<&str> = out["run"]["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["database"].as_str().unwrap())
        .collect();
    assert_eq!(databases, ["crm", "postgres", "shop"]);
    assert_eq!(out["verify_started"], 4);
    assert_eq!(f.verifies.0.lock().unwrap().len(), 4);
    let records =
        pgkeep::ops::server::run_members(&f.jobs.services, "20261124T020000000Z-0a1b2c3d")
            .await
            .unwrap();
    assert_eq!(records.len(), 4);
    assert!(records.iter().all(|r| r.status == BackupStatus::Completed));
    assert_eq!(records.iter().filter(|r| r.globals.is_some()).count(), 1);

    // The run's backups name databases that are not configured (`crm`, `@globals`): they are
    // verified on the server of the connection the run used.
    for r in records.iter().filter(|r| r.database != "shop") {
        let outcome = f
            .jobs
            .run_verify(&pgkeep::trigger::VerifyTrigger {
                backup_id: Some(r.id.clone()),
                requested_by: None,
                jobs: None,
            })
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", r.database));
        let outcome = serde_json::to_value(outcome).unwrap();
        assert_eq!(outcome["outcome"], "verified", "{}: {outcome}", r.database);
    }

    let again = handle(&f.jobs, event).await.unwrap();
    assert_eq!(again["outcome"], "duplicate_run", "{again}");
    assert_eq!(again["backups"], 4);
    assert_eq!(f.verifies.0.lock().unwrap().len(), 4);
}

/// The sample stopped-task event with the job's request named `backup_id` and the container's
/// exit code `exit` (`None`: it never ran).
fn task_stopped(backup_id: &str, exit: Option<i64>, selection: Option<Value>) -> Value {
    let mut event = event("task-stopped");
    let mut job = serde_json::json!({"function": "dump", "event": {
        "database": "shop", "kind": "scheduled", "backup_id": backup_id, "requested_by": "schedule"}});
    if let Some(selection) = selection {
        job["event"]["selection"] = selection;
    }
    event["detail"]["overrides"]["containerOverrides"][0]["environment"][0]["value"] =
        Value::String(job.to_string());
    let container = event["detail"]["containers"][0].as_object_mut().unwrap();
    match exit {
        Some(code) => container.insert("exitCode".into(), code.into()),
        None => container.remove("exitCode"),
    };
    event
}

/// ECS's stopped-task event: a task that died before it recorded anything gets its attempt
/// recorded failed with the exit code and ECS's reason, and one alert (a second delivery adds
/// none); a task killed mid-backup has its running record ended failed and alerted; a job that
/// recorded and alerted its own failure is not alerted again; exit 0 changes nothing.
#[tokio::test]
async fn a_failed_fargate_task_is_recorded_and_alerted_once() {
    let cluster = PgCluster::start().unwrap();
    cluster.create_database("shop").unwrap();
    cluster
        .psql(
            "shop",
            "CREATE TABLE items (id int); INSERT INTO items VALUES (1);",
        )
        .unwrap();
    let mut f = fixture(&cluster.url("shop"), &[]).await;
    let notices = Arc::new(RecordingNotifier::new());
    f.jobs.notifier = notices.clone();
    let failed_alerts = || {
        notices
            .alerts()
            .into_iter()
            .filter(|a| a.kind == AlertKind::BackupFailed)
            .count()
    };

    // Never recorded (the container was OOM-killed, or never ran).
    let out = handle(&f.jobs, event("task-stopped")).await.unwrap();
    assert_eq!(out["outcome"], "task_failed", "{out}");
    assert_eq!(out["alerted"], true, "{out}");
    let id: BackupId = out["backup_id"].as_str().unwrap().parse().unwrap();
    let record = f.jobs.services.catalog.get(&id).await.unwrap();
    assert_eq!(record.status, BackupStatus::Failed);
    let error = record.error.clone().unwrap_or_default();
    assert!(
        error.contains("exited with code 137") && error.contains("OutOfMemoryError"),
        "{error}"
    );
    assert_eq!(failed_alerts(), 1);
    let again = handle(&f.jobs, event("task-stopped")).await.unwrap();
    assert_eq!(again["alerted"], false, "{again}");
    assert_eq!(failed_alerts(), 1, "a repeated event alerts nothing");
    let never = handle(
        &f.jobs,
        task_stopped("20261124T040000000Z-00000001", None, None),
    )
    .await
    .unwrap();
    assert_eq!(never["alerted"], true, "{never}");
    let never_id: BackupId = never["backup_id"].as_str().unwrap().parse().unwrap();
    let never = f.jobs.services.catalog.get(&never_id).await.unwrap();
    assert!(never
        .error
        .unwrap_or_default()
        .contains("before its container ran"));
    assert_eq!(failed_alerts(), 2);

    // Killed mid-backup: its running record (and lease) ended here.
    let running_id: BackupId = "20261124T050000000Z-00000002".parse().unwrap();
    let running = BackupRecord::start(
        running_id.clone(),
        "shop",
        BackupKind::Scheduled,
        Compression::Zstd,
    );
    f.jobs.services.catalog.insert(&running).await.unwrap();
    let out = handle(&f.jobs, task_stopped(running_id.as_str(), Some(137), None))
        .await
        .unwrap();
    assert_eq!(out["alerted"], true, "{out}");
    let ended = f.jobs.services.catalog.get(&running_id).await.unwrap();
    assert_eq!(ended.status, BackupStatus::Failed, "{ended:?}");
    assert!(ended.error.unwrap_or_default().contains("137"));
    assert_eq!(failed_alerts(), 3);

    // The job failed on its own (no table matches its selection): recorded and alerted by
    // the job, not again by its stopped task.
    let selection = serde_json::json!({"include_tables": ["public.no_such_table"]});
    let own = task_stopped("20261124T060000000Z-00000003", Some(6), Some(selection));
    let stopped = pgkeep::trigger::TaskStopped::from_event(&own)
        .unwrap()
        .unwrap();
    f.jobs.run_job(&stopped.job).await.unwrap_err();
    assert_eq!(failed_alerts(), 4);
    let out = handle(&f.jobs, own).await.unwrap();
    assert_eq!(out["alerted"], false, "{out}");
    assert_eq!(failed_alerts(), 4, "the job's own failure is alerted once");

    // A verification's task killed before its verdict: one verification_failed alert, also
    // when the event comes twice; one whose job failed on its own (exit 6) alerted itself.
    let verify_failed = || {
        notices
            .alerts()
            .into_iter()
            .filter(|a| a.kind == AlertKind::VerificationFailed)
            .count()
    };
    let mut verify = event("task-stopped");
    verify["detail"]["overrides"]["containerOverrides"][0]["environment"][0]["value"] =
        Value::String(
            serde_json::json!({"function": "verify", "event": {"backup_id": running_id.as_str()}})
                .to_string(),
        );
    for _ in 0..2 {
        let out = handle(&f.jobs, verify.clone()).await.unwrap();
        assert_eq!(out["outcome"], "task_failed", "{out}");
    }
    assert_eq!(verify_failed(), 1);
    verify["detail"]["taskArn"] = "arn:aws:ecs:eu-west-1:123456789012:task/pgkeep/other".into();
    verify["detail"]["containers"][0]["exitCode"] = 6.into();
    let out = handle(&f.jobs, verify).await.unwrap();
    assert_eq!(out["alerted"], false, "{out}");
    assert_eq!(verify_failed(), 1);

    // Exit 0: nothing.
    let ok = handle(
        &f.jobs,
        task_stopped("20261124T070000000Z-00000004", Some(0), None),
    )
    .await
    .unwrap();
    assert_eq!(ok["outcome"], "task_succeeded", "{ok}");
    assert_eq!(failed_alerts(), 4);
}
