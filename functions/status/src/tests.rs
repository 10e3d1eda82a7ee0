//! Every sample event in events/status/ through the real handler, over embedded backends.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use pgkeep::api::Api;
use pgkeep::backends::{BackendConfig, KeyUrl, KeyUse, RepoUrl};
use pgkeep::model::{BackupId, BackupKind, BackupRecord, BackupStatus, Compression};
use pgkeep::ops::health::HealthPolicy;
use pgkeep::testing::{RecordingStarter, RecordingVerifyStarter};
use pgkeep::trigger::VerifyEvent;
use serde_json::Value;

use pgkeep::lambda::http::handle;

fn event(name: &str) -> String {
    pgkeep_tests::events::load("status", name).to_string()
}

async fn call(api: &Api, body: &str) -> (u16, Value, Option<String>) {
    let request = lambda_http::request::from_str(body).expect("a valid API Gateway event");
    let response = handle(api, request).await.unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    (status, body, location)
}

struct Fixture {
    _dir: tempfile::TempDir,
    api: Api,
    starter: Arc<RecordingStarter>,
    verifies: Arc<RecordingVerifyStarter>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let services = BackendConfig {
        repo: RepoUrl::File(dir.path().join("repo")),
        catalog: None,
        key: KeyUrl::File(dir.path().join("key")),
        old_key_files: Vec::new(),
        aws: Default::default(),
    }
    .open(KeyUse::None)
    .await
    .unwrap();
    let starter = Arc::new(RecordingStarter::default());
    let verifies = Arc::new(RecordingVerifyStarter::default());
    let api = Api {
        services,
        starter: starter.clone(),
        verify_starter: verifies.clone(),
        health: HealthPolicy::default(),
        admin_group: "admin".into(),
        databases: vec!["shop".into()],
        download_ttl: pgkeep::ops::download::DEFAULT_DOWNLOAD_TTL,
        notifier: Arc::new(pgkeep::alert::LogNotifier),
        retention: Default::default(),
    };
    Fixture {
        _dir: dir,
        api,
        starter,
        verifies,
    }
}

async fn add(api: &Api, id: BackupId, status: BackupStatus) {
    let mut r = BackupRecord::start(id, "shop", BackupKind::Scheduled, Compression::Zstd);
    r.created_at = Utc::now() - Duration::minutes(5);
    api.services.catalog.insert(&r).await.unwrap();
    let path: &[BackupStatus] = match status {
        BackupStatus::Verified => &[BackupStatus::Completed, BackupStatus::Verified],
        other => &[other],
    };
    for next in path {
        let before = r.status;
        r.transition(*next).unwrap();
        api.services.catalog.update(&r, before).await.unwrap();
    }
}

#[tokio::test]
async fn listing_paginates_and_filters() {
    let f = fixture().await;
    for minute in 0..3 {
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 1, minute, 0).unwrap();
        add(&f.api, BackupId::generate(at), BackupStatus::Completed).await;
    }
    add(&f.api, BackupId::generate(Utc::now()), BackupStatus::Failed).await;

    let (status, first, _) = call(&f.api, &event("list-backups")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["backups"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();

    let mut next: Value = serde_json::from_str(&event("list-backups")).unwrap();
    next["queryStringParameters"]["cursor"] = cursor.clone().into();
    next["rawQueryString"] = format!("limit=2&cursor={cursor}").into();
    let (status, second, _) = call(&f.api, &next.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(second["backups"].as_array().unwrap().len(), 2);
    assert!(second["next_cursor"].is_null());
    let ids: Vec<&Value> = first["backups"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["backups"].as_array().unwrap())
        .map(|r| &r["id"])
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.as_str().cmp(&a.as_str()));
    assert_eq!(ids, sorted, "newest first across pages");

    let (status, failed, _) = call(&f.api, &event("list-backups-failed")).await;
    assert_eq!(status, 200, "IAM callers are trusted: {failed}");
    assert_eq!(failed["backups"].as_array().unwrap().len(), 1);
    assert_eq!(failed["backups"][0]["status"], "failed");

    let (status, body, _) = call(&f.api, &event("list-backups-bad-limit")).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("limit"));
}

#[tokio::test]
async fn labels_and_selections_are_passed_on_checked_and_filtered() {
    let f = fixture().await;
    let (status, body, _) = call(&f.api, &event("create-backup-pre-migration")).await;
    assert_eq!(status, 202, "{body}");
    let started = f.starter.0.lock().unwrap().clone();
    assert_eq!(started.len(), 1);
    let trigger = &started[0];
    assert_eq!(trigger.kind, BackupKind::PreMigration);
    assert_eq!(trigger.labels.as_map()["release"], "2026.11.3");
    assert_eq!(trigger.labels.as_map()["ticket"], "OPS-7");
    let selection = trigger.selection.clone().unwrap();
    assert_eq!(selection.exclude_schemas, ["audit"]);
    assert_eq!(selection.exclude_table_data, ["public.sessions"]);

    let (status, body, _) = call(&f.api, &event("create-backup-bad-label")).await;
    assert_eq!(status, 400);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("label key \"Release\"") && error.contains("upper-case"),
        "{error}"
    );
    assert_eq!(f.starter.0.lock().unwrap().len(), 1, "nothing started");

    // The listing keeps only backups with the label.
    for (minute, release) in [(0, Some("2026.11.3")), (1, Some("2026.10.1")), (2, None)] {
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 1, minute, 0).unwrap();
        let mut r = BackupRecord::start(
            BackupId::generate(at),
            "shop",
            BackupKind::PreMigration,
            Compression::Zstd,
        );
        if let Some(v) = release {
            r.labels.insert("release".into(), v.into());
        }
        f.api.services.catalog.insert(&r).await.unwrap();
    }
    let (status, body, _) = call(&f.api, &event("list-backups-by-label")).await;
    assert_eq!(status, 200, "{body}");
    let backups = body["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1, "{body}");
    assert_eq!(backups[0]["labels"]["release"], "2026.11.3");
    assert_eq!(backups[0]["kind"], "pre_migration");
}

#[tokio::test]
async fn showing_one_backup() {
    let f = fixture().await;
    let (status, _, _) = call(&f.api, &event("get-backup")).await;
    assert_eq!(status, 404);
    add(
        &f.api,
        "20261124T020000000Z-0a1b2c3d".parse().unwrap(),
        BackupStatus::Completed,
    )
    .await;
    let (status, body, _) = call(&f.api, &event("get-backup")).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], "20261124T020000000Z-0a1b2c3d");
    let (status, body, _) = call(&f.api, &event("get-backup-malformed-id")).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("not a backup id"));
}

#[tokio::test]
async fn creating_a_backup_starts_the_dump_function() {
    let f = fixture().await;
    let (status, body, location) = call(&f.api, &event("create-backup")).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap();
    assert_eq!(location.as_deref(), Some(format!("/backups/{id}").as_str()));
    let started = f.starter.0.lock().unwrap().clone();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].database, "shop");
    assert_eq!(started[0].backup_id.as_ref().unwrap().as_str(), id);

    let (status, _, _) = call(&f.api, &event("create-backup-bad-body")).await;
    assert_eq!(status, 400);
    assert_eq!(
        f.starter.0.lock().unwrap().len(),
        1,
        "a bad request starts nothing"
    );
}

#[tokio::test]
async fn verifying_a_backup_queues_the_verify_function() {
    let f = fixture().await;
    let (status, body, _) = call(&f.api, &event("verify-backup")).await;
    assert_eq!(status, 404, "{body}");
    let id: BackupId = "20261124T020000000Z-0a1b2c3d".parse().unwrap();
    add(&f.api, id.clone(), BackupStatus::Completed).await;
    let (status, body, location) = call(&f.api, &event("verify-backup")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(location.as_deref(), Some(format!("/backups/{id}").as_str()));
    let queued = f.verifies.0.lock().unwrap().clone();
    match queued.as_slice() {
        [VerifyEvent::Verify(t)] => {
            assert_eq!(t.backup_id.as_ref(), Some(&id));
            assert_eq!(t.requested_by.as_deref(), Some("alice"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn restoring_a_backup_checks_the_confirmation_then_queues_it() {
    let f = fixture().await;
    let (status, body, _) = call(&f.api, &event("restore-backup")).await;
    assert_eq!(status, 404, "unknown id: {body}");
    let id: BackupId = "20261124T020000000Z-0a1b2c3d".parse().unwrap();
    add(&f.api, id.clone(), BackupStatus::Verified).await;

    let (status, body, _) = call(&f.api, &event("restore-backup")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["target_db"], "shop_restored");
    assert_eq!(body["dry_run"], false);
    let (status, body, _) = call(&f.api, &event("restore-backup-dry-run")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["dry_run"], true);

    let (status, body, _) = call(&f.api, &event("restore-backup-unconfirmed")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("--confirm"),
        "{body}"
    );
    let (status, body, _) = call(&f.api, &event("restore-backup-not-admin")).await;
    assert_eq!(status, 403, "{body}");

    let queued = f.verifies.0.lock().unwrap().clone();
    match queued.as_slice() {
        [VerifyEvent::Restore(real), VerifyEvent::Restore(dry)] => {
            assert_eq!(real.backup_id, id);
            assert_eq!(real.target_db, "shop_restored");
            assert!(!real.dry_run && !real.overwrite);
            assert_eq!(real.requested_by.as_deref(), Some("alice"));
            assert!(dry.dry_run);
        }
        other => panic!("refusals must queue nothing: {other:?}"),
    }
}

#[tokio::test]
async fn deleting_a_backup_is_refused_while_it_is_the_newest_verified_then_audited() {
    let f = fixture().await;
    let (status, body, _) = call(&f.api, &event("delete-backup-iam")).await;
    assert_eq!(status, 404, "unknown id: {body}");
    let id: BackupId = "20261124T020000000Z-0a1b2c3d".parse().unwrap();
    add(&f.api, id.clone(), BackupStatus::Verified).await;

    let (status, body, _) = call(&f.api, &event("delete-backup-iam")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["reason"], "newest_verified");
    assert_eq!(
        f.api.services.catalog.get(&id).await.unwrap().status,
        BackupStatus::Verified,
        "a refusal changes nothing"
    );

    add(
        &f.api,
        BackupId::generate(Utc::now()),
        BackupStatus::Verified,
    )
    .await;
    let (status, body, _) = call(&f.api, &event("delete-backup-iam")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["status"], "deleted");
    let audit = f.api.services.catalog.list_audit(None, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "delete");
    assert_eq!(audit[0].backup_id.as_ref(), Some(&id));
    assert_eq!(
        audit[0].actor, "arn:aws:sts::123456789012:assumed-role/ops/alice",
        "the caller the gateway authenticated"
    );
}

#[tokio::test]
async fn downloading_from_a_directory_repository_is_not_supported() {
    let f = fixture().await;
    let (status, body, _) = call(&f.api, &event("download-backup")).await;
    assert_eq!(status, 404, "unknown id: {body}");
    let id: BackupId = "20261124T020000000Z-0a1b2c3d".parse().unwrap();
    add(&f.api, id, BackupStatus::Completed).await;
    let (status, body, _) = call(&f.api, &event("download-backup")).await;
    assert_eq!(status, 501, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("pgkeep cat"),
        "{body}"
    );
}

#[tokio::test]
async fn status_is_503_until_a_recent_good_backup_exists() {
    let f = fixture().await;
    let old = Utc::now() - Duration::hours(30);
    let mut r = BackupRecord::start(
        BackupId::generate(old),
        "shop",
        BackupKind::Scheduled,
        Compression::Zstd,
    );
    r.created_at = old;
    f.api.services.catalog.insert(&r).await.unwrap();
    r.transition(BackupStatus::Completed).unwrap();
    f.api
        .services
        .catalog
        .update(&r, BackupStatus::InProgress)
        .await
        .unwrap();
    let (status, body, _) = call(&f.api, &event("get-status")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["healthy"], false);

    add(
        &f.api,
        BackupId::generate(Utc::now()),
        BackupStatus::Verified,
    )
    .await;
    let (status, body, _) = call(&f.api, &event("get-status")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["healthy"], true);
}

#[tokio::test]
async fn non_admins_and_anonymous_callers_are_refused() {
    let f = fixture().await;
    for name in ["forbidden-not-admin", "forbidden-anonymous"] {
        let (status, body, _) = call(&f.api, &event(name)).await;
        assert_eq!(status, 403, "{name}: {body}");
    }
}

/// Each file of events/status/ through the handler, each in a fresh deployment holding the
/// backup the events name (verified) and a newer verified one: the status each must answer.
#[tokio::test]
async fn every_sample_event_goes_through_the_handler() {
    let expected = [
        ("create-backup", 202),
        ("create-backup-bad-body", 400),
        ("create-backup-bad-label", 400),
        ("create-backup-pre-migration", 202),
        ("delete-backup-iam", 200),
        ("download-backup", 501),
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
    ];
    for (name, event, status) in pgkeep_tests::events::each("status", &expected) {
        let f = fixture().await;
        let named: BackupId = "20261124T020000000Z-0a1b2c3d".parse().unwrap();
        add(&f.api, named, BackupStatus::Verified).await;
        add(
            &f.api,
            BackupId::generate(Utc::now()),
            BackupStatus::Verified,
        )
        .await;
        let (got, body, _) = call(&f.api, &event.to_string()).await;
        assert_eq!(got, *status, "{name}: {body}");
    }
}

/// The status API built as the Lambda builds it (`wiring::api`) alerts through the configured
/// webhook when it accepted a dump it then cannot start (here the dump function is not
/// configured): 502 naming the id, a `failed` record, and one `backup_failed` POST naming the
/// database and the id.
#[tokio::test]
async fn an_accepted_dump_that_cannot_start_is_alerted_through_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let hook = pgkeep_tests::webhook::Webhook::start();
    let vars: std::collections::BTreeMap<&str, String> = [
        ("PGKEEP_REPO", dir.path().join("repo").display().to_string()),
        (
            "PGKEEP_KEY_FILE",
            dir.path().join("pgkeep.key").display().to_string(),
        ),
        (
            "PGKEEP_DATABASES",
            r#"{"shop": {"url": "postgresql://backup@db.internal/shop"}}"#.to_owned(),
        ),
        ("PGKEEP_ALERT_WEBHOOK_URL", hook.url.clone()),
    ]
    .into();
    let settings = pgkeep::config::LambdaSettings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let api = pgkeep::wiring::api(&settings).await.unwrap();
    let (status, body, _) = call(&api, &event("create-backup")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    let id: BackupId = body["id"].as_str().unwrap().parse().unwrap();
    let record = api.services.catalog.get(&id).await.unwrap();
    assert_eq!(record.status, BackupStatus::Failed);
    let post = hook
        .posts
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("one webhook POST");
    assert!(post.contains("backup of shop failed"), "{post}");
    assert!(post.contains(id.as_str()), "{post}");
    assert!(post.contains("shop"), "{post}");
    assert!(post.contains("PGKEEP_DUMP_FUNCTION"), "{post}");
    assert!(hook.posts.try_recv().is_err(), "exactly one alert");
}
