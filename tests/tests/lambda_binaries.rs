//! The real Lambda binaries, started the way Lambda starts them: a process whose
//! `AWS_LAMBDA_RUNTIME_API` is a fake Runtime API ([`FakeRuntimeApi`]) handing it an event and
//! taking its answer. What only the built binary shows (its logging set-up, its start-up from
//! the environment) is checked here.

use std::time::Duration;

use chrono::Utc;
use pgkeep::backends::{BackendConfig, KeyUrl, KeyUse, RepoUrl};
use pgkeep::model::{BackupId, BackupKind, BackupRecord, BackupStatus, Compression};
use pgkeep_tests::lambda_runtime::FakeRuntimeApi;
use pgkeep_tests::{events, function_bin};
use serde_json::Value;

/// A verified record of `shop` taken `minutes_ago` (no object: a deletion does not need one).
async fn add_verified(catalog: &dyn pgkeep::catalog::Catalog, id: BackupId, minutes_ago: i64) {
    let mut r = BackupRecord::start(id, "shop", BackupKind::Scheduled, Compression::Zstd);
    r.created_at = Utc::now() - chrono::Duration::minutes(minutes_ago);
    catalog.insert(&r).await.unwrap();
    for (before, next) in [
        (BackupStatus::InProgress, BackupStatus::Completed),
        (BackupStatus::Completed, BackupStatus::Verified),
    ] {
        r.transition(next).unwrap();
        catalog.update(&r, before).await.unwrap();
    }
}

/// Without `RUST_LOG` or `AWS_LAMBDA_LOG_LEVEL` the status function logs at INFO, as JSON: a
/// deletion through `DELETE /backups/{id}` reaches the log (it once logged only errors).
#[test]
fn status_logs_a_deletion_at_info_without_any_log_setting() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let key = dir.path().join("pgkeep.key");
    let event = events::load("status", "delete-backup-iam");
    let named: BackupId = "20261124T020000000Z-0a1b2c3d".parse().unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let services = BackendConfig {
            repo: RepoUrl::File(repo.clone()),
            catalog: None,
            key: KeyUrl::File(key.clone()),
            old_key_files: Vec::new(),
            aws: Default::default(),
        }
        .open(KeyUse::Write)
        .await
        .unwrap();
        add_verified(&*services.catalog, named.clone(), 60).await;
        // A newer verified backup, so that the named one may be deleted.
        add_verified(&*services.catalog, BackupId::generate(Utc::now()), 1).await;
    });

    let api = FakeRuntimeApi::start(vec![event]).unwrap();
    let mut child = api
        .command(&function_bin("status"))
        .env("PGKEEP_REPO", &repo)
        .env("PGKEEP_KEY_FILE", &key)
        .env(
            "PGKEEP_DATABASES",
            r#"{"shop": {"url": "postgresql://u@127.0.0.1:1/shop"}}"#,
        )
        .spawn()
        .unwrap();
    let (answers, log) = api.answers_and_log(&mut child, 1, Duration::from_secs(60));

    let (id, answer) = &answers[0];
    assert_eq!(id, "req-1");
    let response = answer.response();
    assert_eq!(response["statusCode"], 200, "{response}\n{log}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], "deleted", "{body}");

    let lines: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let deleted = lines
        .iter()
        .find(|l| l["fields"]["message"] == "backup deleted")
        .unwrap_or_else(|| panic!("no JSON log line of the deletion in:\n{log}"));
    assert_eq!(deleted["level"], "INFO", "{deleted}");
    assert_eq!(deleted["fields"]["backup"], named.as_str(), "{deleted}");
}
