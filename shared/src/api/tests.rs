use super::*;
use crate::backends::{BackendConfig, KeyUrl, KeyUse, RepoUrl};
use crate::model::{format_time, BackupRecord, Compression};
use crate::testing::{RecordingStarter, RecordingVerifyStarter};
use chrono::{Duration, TimeZone};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
}

async fn api(dir: &std::path::Path) -> (Api, Arc<RecordingStarter>) {
    let services = BackendConfig {
        repo: RepoUrl::File(dir.join("repo")),
        catalog: None,
        key: KeyUrl::File(dir.join("key")),
        old_key_files: Vec::new(),
        aws: Default::default(),
    }
    .open(KeyUse::None)
    .await
    .unwrap();
    let starter = Arc::new(RecordingStarter::default());
    let api = Api {
        services,
        starter: starter.clone(),
        verify_starter: Arc::new(RecordingVerifyStarter::default()),
        health: HealthPolicy::default(),
        admin_group: "admin".into(),
        databases: vec!["shop".into()],
        download_ttl: ops::download::DEFAULT_DOWNLOAD_TTL,
        notifier: Arc::new(crate::alert::LogNotifier),
        retention: Default::default(),
    };
    (api, starter)
}

async fn add(api: &Api, hours_ago: i64, status: BackupStatus) -> BackupRecord {
    let at = now() - Duration::hours(hours_ago);
    let mut r = BackupRecord::start(
        BackupId::generate(at),
        "shop",
        BackupKind::Scheduled,
        Compression::Zstd,
    );
    r.created_at = at;
    api.services.catalog.insert(&r).await.unwrap();
    let path: &[BackupStatus] = match status {
        BackupStatus::Verified => &[BackupStatus::Completed, BackupStatus::Verified],
        BackupStatus::InProgress => &[],
        other => &[other],
    };
    for next in path {
        let before = r.status;
        r.transition(*next).unwrap();
        api.services.catalog.update(&r, before).await.unwrap();
    }
    r
}

fn get(path: &str, caller: Caller) -> ApiRequest {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    ApiRequest {
        method: "GET".into(),
        path: path.into(),
        query: query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        body: None,
        caller,
    }
}

fn admin() -> Caller {
    Caller::Jwt {
        subject: "alice".into(),
        groups: vec!["ops".into(), "admin".into()],
    }
}

#[tokio::test]
async fn only_admins_and_iam_callers_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let (api, _) = api(dir.path()).await;
    for caller in [
        Caller::Anonymous,
        Caller::Jwt {
            subject: "bob".into(),
            groups: vec!["ops".into()],
        },
    ] {
        assert_eq!(
            api.handle(&get("/backups", caller), now()).await.status,
            403
        );
    }
    assert_eq!(
        api.handle(&get("/backups", admin()), now()).await.status,
        200
    );
    let iam = Caller::Iam {
        principal: "arn:aws:iam::1:role/ops".into(),
    };
    assert_eq!(api.handle(&get("/backups", iam), now()).await.status, 200);
}

#[tokio::test]
async fn listing_paginates_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let (api, _) = api(dir.path()).await;
    let mut ids = Vec::new();
    for h in 1..=5 {
        ids.push(add(&api, h, BackupStatus::Completed).await.id);
    }
    let first = api.handle(&get("/backups?limit=3", admin()), now()).await;
    assert_eq!(first.status, 200);
    let page: Vec<String> = first.body["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        page,
        ids[..3].iter().map(|i| i.to_string()).collect::<Vec<_>>()
    );
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = api
        .handle(
            &get(&format!("/backups?limit=3&cursor={cursor}"), admin()),
            now(),
        )
        .await;
    assert_eq!(second.body["backups"].as_array().unwrap().len(), 2);
    assert!(second.body["next_cursor"].is_null());
    for bad in [
        "/backups?limit=0",
        "/backups?limit=x",
        "/backups?status=nope",
        "/backups?cursor=%%%",
    ] {
        assert_eq!(
            api.handle(&get(bad, admin()), now()).await.status,
            400,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn backups_carry_their_expiry_under_the_retention_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (mut api, _) = api(dir.path()).await;
    let newest = add(&api, 1, BackupStatus::Completed).await;
    let older = add(&api, 30, BackupStatus::Completed).await;
    let oldest = add(&api, 24 * 9, BackupStatus::Completed).await;
    // No policy configured: no expiry fields.
    let plain = api
        .handle(&get(&format!("/backups/{}", older.id), admin()), now())
        .await;
    assert!(plain.body.get("expiry").is_none(), "{}", plain.body);
    api.retention.keep_last = 1;
    api.retention.keep_within_kind = crate::retention::parse_kind_spans("scheduled=7d").unwrap();
    let shown = api
        .handle(&get(&format!("/backups/{}", older.id), admin()), now())
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(
        shown.body["expires_at"],
        json!(older.created_at + Duration::days(7)),
        "{}",
        shown.body
    );
    assert_eq!(
        shown.body["expiry"].as_str().unwrap(),
        format!(
            "kept until {}: scheduled backup younger than 7d",
            format_time(older.created_at + Duration::days(7))
        )
    );
    let listed = api.handle(&get("/backups", admin()), now()).await;
    let by_id = |id: &BackupId| {
        listed.body["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id.as_str())
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id(&newest.id)["expires_at"], Value::Null);
    assert!(by_id(&newest.id)["expiry"]
        .as_str()
        .unwrap()
        .starts_with("kept while last (1 of 1)"));
    assert_eq!(
        by_id(&oldest.id)["expiry"].as_str(),
        Some("due for removal: outside policy")
    );
    assert_eq!(by_id(&older.id)["expires_at"], shown.body["expires_at"]);
}

#[tokio::test]
async fn show_answers_404_for_unknown_and_400_for_malformed_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (api, _) = api(dir.path()).await;
    let r = add(&api, 1, BackupStatus::Completed).await;
    let ok = api
        .handle(&get(&format!("/backups/{}", r.id), admin()), now())
        .await;
    assert_eq!(
        (ok.status, ok.body["id"].as_str()),
        (200, Some(r.id.as_str()))
    );
    let unknown = BackupId::generate(now());
    assert_eq!(
        api.handle(&get(&format!("/backups/{unknown}"), admin()), now())
            .await
            .status,
        404
    );
    assert_eq!(
        api.handle(&get("/backups/not-an-id", admin()), now())
            .await
            .status,
        400
    );
    assert_eq!(
        api.handle(&get("/nowhere", admin()), now()).await.status,
        404
    );
}

#[tokio::test]
async fn posting_a_backup_starts_a_dump_and_answers_202() {
    let dir = tempfile::tempdir().unwrap();
    let (api, starter) = api(dir.path()).await;
    let mut req = get("/backups", admin());
    req.method = "POST".into();
    req.body = Some(br#"{"database": "shop"}"#.to_vec());
    let res = api.handle(&req, now()).await;
    assert_eq!(res.status, 202);
    let id = res.body["id"].as_str().unwrap();
    assert!(res
        .headers
        .contains(&("location".into(), format!("/backups/{id}"))));
    let started = starter.0.lock().unwrap().clone();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].backup_id.as_ref().unwrap().as_str(), id);
    assert_eq!(started[0].requested_by.as_deref(), Some("alice"));
    for bad in [
        &br#"{"database": "crm"}"#[..],
        b"{",
        br#"{"database": "shop", "kind": "hourly"}"#,
    ] {
        req.body = Some(bad.to_vec());
        assert_eq!(api.handle(&req, now()).await.status, 400);
    }
    assert_eq!(starter.0.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn labels_and_selections_reach_the_dump_and_bad_ones_answer_400() {
    let dir = tempfile::tempdir().unwrap();
    let (api, starter) = api(dir.path()).await;
    let mut req = get("/backups", admin());
    req.method = "POST".into();
    req.body = Some(
        br#"{"database": "shop", "kind": "pre_migration",
             "labels": {"release": "2026.11", "ticket": "OPS-7"},
             "selection": {"exclude_schemas": ["audit"], "exclude_table_data": ["public.sessions"]}}"#
            .to_vec(),
    );
    let res = api.handle(&req, now()).await;
    assert_eq!(res.status, 202, "{}", res.body);
    let started = starter.0.lock().unwrap().clone();
    assert_eq!(started[0].kind, BackupKind::PreMigration);
    assert_eq!(started[0].labels.as_map()["release"], "2026.11");
    let selection = started[0].selection.clone().unwrap();
    assert_eq!(selection.exclude_schemas, ["audit"]);
    assert_eq!(selection.exclude_table_data, ["public.sessions"]);

    for (body, needle) in [
        (
            r#"{"database": "shop", "labels": {"Release": "x"}}"#,
            "upper-case",
        ),
        (
            r#"{"database": "shop", "labels": {"-x": "x"}}"#,
            "does not start",
        ),
        (
            r#"{"database": "shop", "labels": {"k": "a"}}"#,
            "control character",
        ),
        (
            r#"{"database": "shop", "labels": {"k": "1", "k": "2"}}"#,
            "more than once",
        ),
        (
            r#"{"database": "shop", "labels": {"k": 1}}"#,
            "invalid type",
        ),
        (
            r#"{"database": "shop", "labels": "k=v"}"#,
            "an object of label keys",
        ),
        (
            r#"{"database": "shop", "selection": {"exclude_schemas": [""]}}"#,
            "is empty",
        ),
        (
            r#"{"database": "shop", "selection": {"tables": ["x"]}}"#,
            "unknown field",
        ),
    ] {
        req.body = Some(body.as_bytes().to_vec());
        let res = api.handle(&req, now()).await;
        assert_eq!(res.status, 400, "{body}: {}", res.body);
        let error = res.body["error"].as_str().unwrap();
        assert!(error.contains(needle), "{body}: {error}");
    }
    let long = format!(
        r#"{{"database": "shop", "labels": {{"k": "{}"}}}}"#,
        "v".repeat(256)
    );
    req.body = Some(long.into_bytes());
    let res = api.handle(&req, now()).await;
    assert_eq!(res.status, 400);
    assert!(res.body["error"]
        .as_str()
        .unwrap()
        .contains("longer than 255"));
    assert_eq!(starter.0.lock().unwrap().len(), 1, "refusals start nothing");
}

#[tokio::test]
async fn listing_filters_by_label_across_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (api, _) = api(dir.path()).await;
    let mut pinned = Vec::new();
    for h in 1..=7 {
        let mut r = add(&api, h, BackupStatus::InProgress).await;
        if h % 2 == 1 {
            r.labels.insert("pinned".into(), format!("h{h}"));
            pinned.push(r.id.to_string());
        }
        // Records are written once; relabel through a legal no-op update.
        api.services.catalog.update(&r, r.status).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut path = "/backups?limit=2&label=pinned".to_owned();
    loop {
        let res = api.handle(&get(&path, admin()), now()).await;
        assert_eq!(res.status, 200, "{}", res.body);
        let page = res.body["backups"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        match res.body["next_cursor"].as_str() {
            Some(c) => path = format!("/backups?limit=2&label=pinned&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, pinned);
    let one = api
        .handle(&get("/backups?label=pinned=h3", admin()), now())
        .await;
    let ids: Vec<&str> = one.body["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [pinned[1].as_str()]);
    for bad in [
        "/backups?label=Pinned",
        "/backups?label=",
        "/backups?label=a%20b",
    ] {
        let res = api.handle(&get(bad, admin()), now()).await;
        assert_eq!(res.status, 400, "{bad}: {}", res.body);
        assert!(res.body["error"].as_str().unwrap().starts_with("label: "));
    }
}

#[tokio::test]
async fn verify_and_restore_routes_check_before_queueing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut api, _) = api(dir.path()).await;
    let verifies = Arc::new(RecordingVerifyStarter::default());
    api.verify_starter = verifies.clone();
    let stored = add(&api, 1, BackupStatus::Completed).await;
    let failed = add(&api, 2, BackupStatus::Failed).await;
    let mut deleted = add(&api, 3, BackupStatus::Completed).await;
    deleted.transition(BackupStatus::Deleted).unwrap();
    api.services
        .catalog
        .update(&deleted, BackupStatus::Completed)
        .await
        .unwrap();
    let post = |path: String, body: &str| {
        let mut req = get(&path, admin());
        req.method = "POST".into();
        req.body = Some(body.as_bytes().to_vec());
        req
    };
    let verify = |id: &BackupId| format!("/backups/{id}/verify");
    let restore = |id: &BackupId| format!("/backups/{id}/restore");

    let res = api.handle(&post(verify(&stored.id), ""), now()).await;
    assert_eq!(res.status, 202, "{}", res.body);
    let res = api
        .handle(
            &post(
                restore(&stored.id),
                r#"{"target_db": "shop", "overwrite": true, "confirm": "shop"}"#,
            ),
            now(),
        )
        .await;
    assert_eq!(res.status, 202, "{}", res.body);
    let queued = verifies.0.lock().unwrap().clone();
    assert_eq!(queued.len(), 2);
    assert!(
        matches!(&queued[0], VerifyEvent::Verify(t) if t.backup_id.as_ref() == Some(&stored.id) && t.requested_by.as_deref() == Some("alice"))
    );
    assert!(matches!(&queued[1], VerifyEvent::Restore(t) if t.overwrite && t.target_db == "shop"));

    let unknown = BackupId::generate(now());
    for (req, status) in [
        (post(verify(&unknown), ""), 404),
        (post(verify(&failed.id), ""), 409),
        // Deleted: gone for good (issue 13), not a conflict.
        (post(verify(&deleted.id), ""), 410),
        (post(restore(&deleted.id), r#"{"target_db": "copy"}"#), 410),
        (post(verify(&stored.id), r#"{"x": 1}"#), 400),
        (post("/backups/nope/verify".into(), ""), 400),
        (post(restore(&unknown), r#"{"target_db": "copy"}"#), 404),
        (post(restore(&failed.id), r#"{"target_db": "copy"}"#), 409),
        (
            post(
                restore(&stored.id),
                r#"{"target_db": "shop", "overwrite": true}"#,
            ),
            400,
        ),
        (
            post(
                restore(&stored.id),
                r#"{"target_db": "shop", "overwrite": true, "confirm": "shp"}"#,
            ),
            400,
        ),
        (
            post(
                restore(&stored.id),
                r#"{"target_db": "copy", "confirm": "copy"}"#,
            ),
            400,
        ),
        (post(restore(&stored.id), r#"{"target_db": ""}"#), 400),
        (
            post(restore(&stored.id), r#"{"target_db": "pgkeep_verify_x"}"#),
            400,
        ),
        (
            post(restore(&stored.id), r#"{"target_db": "copy", "jobs": 4}"#),
            400,
        ),
        (post(restore(&stored.id), "{"), 400),
        (get(&restore(&stored.id), admin()), 405),
    ] {
        let res = api.handle(&req, now()).await;
        assert_eq!(
            res.status, status,
            "{} {}: {}",
            req.method, req.path, res.body
        );
    }
    assert_eq!(
        verifies.0.lock().unwrap().len(),
        2,
        "refusals queue nothing"
    );
}

/// Stores an object and a manifest for `r`, as a completed backup has.
async fn store_keys(api: &Api, r: &BackupRecord) {
    let store = &api.services.store;
    store.put(&r.object_key, b"object".to_vec()).await.unwrap();
    store.put(&r.manifest_key(), b"{}".to_vec()).await.unwrap();
}

fn delete(id: &BackupId) -> ApiRequest {
    let mut req = get(&format!("/backups/{id}"), admin());
    req.method = "DELETE".into();
    req
}

#[tokio::test]
async fn delete_refuses_with_a_stable_reason_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut api, _) = api(dir.path()).await;
    let older = add(&api, 3, BackupStatus::Verified).await;
    let newest = add(&api, 2, BackupStatus::Verified).await;
    let running = add(&api, 1, BackupStatus::InProgress).await;
    let completed = add(&api, 4, BackupStatus::Completed).await;
    for r in [&older, &newest, &completed] {
        store_keys(&api, r).await;
    }
    let plain = api.services.store.clone();
    let locked_until = |until: DateTime<Utc>| {
        Arc::new(
            crate::testing::FaultyStore::new(plain.clone(), Default::default()).with_lock(
                crate::store::ObjectLock {
                    mode: Some("COMPLIANCE".into()),
                    retain_until: Some(until),
                    legal_hold: false,
                },
            ),
        )
    };

    let refusals = [
        (&newest, 409, "newest_verified", "newest verified backup"),
        (&running, 409, "in_progress", "still being written"),
    ];
    for (r, status, reason, words) in refusals {
        let res = api.handle(&delete(&r.id), now()).await;
        assert_eq!(res.status, status, "{}", res.body);
        assert_eq!(res.body["reason"], reason);
        assert_eq!(res.body["id"], r.id.as_str());
        let error = res.body["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("refused: {reason}: ")),
            "{error}"
        );
        assert!(error.contains(words), "{error}");
    }
    api.services.store = locked_until(Utc::now() + Duration::days(1));
    let res = api.handle(&delete(&completed.id), now()).await;
    assert_eq!(res.status, 423, "{}", res.body);
    assert_eq!(res.body["reason"], "object_locked");
    assert!(
        res.body["error"]
            .as_str()
            .unwrap()
            .contains("COMPLIANCE retention until"),
        "{}",
        res.body
    );
    // Refusals changed nothing: statuses, keys, audit trail.
    for r in [&older, &newest, &running, &completed] {
        let stored = api.services.catalog.get(&r.id).await.unwrap();
        assert_eq!(stored, *r, "{}", r.id);
    }
    for r in [&older, &newest, &completed] {
        assert!(plain.head(&r.object_key).await.unwrap().is_some());
        assert!(plain.head(&r.manifest_key()).await.unwrap().is_some());
    }
    assert!(api
        .services
        .catalog
        .list_audit(None, 10)
        .await
        .unwrap()
        .is_empty());

    // A lock that has lapsed does not hold the backup back.
    api.services.store = locked_until(Utc::now() - Duration::days(1));
    let res = api.handle(&delete(&completed.id), now()).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["status"], "deleted");
    api.services.store = plain.clone();
    let res = api.handle(&delete(&older.id), now()).await;
    assert_eq!(res.status, 200, "{}", res.body);
    for r in [&older, &completed] {
        assert_eq!(
            api.services.catalog.get(&r.id).await.unwrap().status,
            BackupStatus::Deleted
        );
        assert!(plain.head(&r.object_key).await.unwrap().is_none());
        assert!(plain.head(&r.manifest_key()).await.unwrap().is_none());
    }
    let audit = api.services.catalog.list_audit(None, 10).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert!(audit
        .iter()
        .all(|a| a.action == "delete" && a.actor == "alice"));

    let unknown = BackupId::generate(now());
    assert_eq!(api.handle(&delete(&unknown), now()).await.status, 404);
    let mut malformed = delete(&unknown);
    malformed.path = "/backups/nope".into();
    assert_eq!(api.handle(&malformed, now()).await.status, 400);
    let mut with_body = delete(&newest.id);
    with_body.body = Some(br#"{"force": true}"#.to_vec());
    assert_eq!(api.handle(&with_body, now()).await.status, 400);
}

#[tokio::test]
async fn download_needs_a_stored_backup_and_a_store_that_presigns() {
    let dir = tempfile::tempdir().unwrap();
    let (api, _) = api(dir.path()).await;
    let stored = add(&api, 1, BackupStatus::Completed).await;
    let failed = add(&api, 2, BackupStatus::Failed).await;
    let mut deleted = add(&api, 3, BackupStatus::Completed).await;
    deleted.transition(BackupStatus::Deleted).unwrap();
    api.services
        .catalog
        .update(&deleted, BackupStatus::Completed)
        .await
        .unwrap();
    let download = |id: &str| get(&format!("/backups/{id}/download"), admin());
    let res = api.handle(&download(stored.id.as_str()), now()).await;
    assert_eq!(res.status, 501, "{}", res.body);
    assert!(
        res.body["error"].as_str().unwrap().contains("pgkeep cat"),
        "{}",
        res.body
    );
    let unknown = BackupId::generate(now());
    for (req, status) in [
        (download(failed.id.as_str()), 409),
        (download(deleted.id.as_str()), 410),
        (download(unknown.as_str()), 404),
        (download("nope"), 400),
    ] {
        let res = api.handle(&req, now()).await;
        assert_eq!(res.status, status, "{}: {}", req.path, res.body);
    }
    let mut post = download(stored.id.as_str());
    post.method = "POST".into();
    assert_eq!(api.handle(&post, now()).await.status, 405);
}

#[tokio::test]
async fn status_turns_503_when_the_newest_good_backup_is_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let (api, _) = api(dir.path()).await;
    add(&api, 30, BackupStatus::Completed).await;
    add(&api, 2, BackupStatus::Failed).await;
    let res = api.handle(&get("/status", admin()), now()).await;
    assert_eq!(res.status, 503, "{}", res.body);
    assert_eq!(res.body["healthy"], false);
    add(&api, 3, BackupStatus::Verified).await;
    let res = api.handle(&get("/status", admin()), now()).await;
    assert_eq!(res.status, 200, "{}", res.body);
}

/// The dump function cannot be invoked (here: not configured): the caller gets 502 with the
/// id, the id's record is `failed` with the reason, never nothing, and a `backup_failed`
/// alert names it.
#[tokio::test]
async fn a_backup_that_cannot_be_started_is_recorded_failed_and_alerted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut api, _) = api(dir.path()).await;
    api.starter = Arc::new(crate::invoke::Unconfigured("PGKEEP_DUMP_FUNCTION"));
    let alerts = Arc::new(crate::testing::RecordingNotifier::new());
    api.notifier = alerts.clone();
    let mut req = get("/backups", admin());
    req.method = "POST".into();
    req.body = Some(br#"{"database": "shop", "labels": {"ticket": "OPS-9"}}"#.to_vec());
    let res = api.handle(&req, now()).await;
    assert_eq!(res.status, 502, "{}", res.body);
    assert_eq!(res.body["status"], "failed", "{}", res.body);
    let id: BackupId = res.body["id"].as_str().unwrap().parse().unwrap();
    let record = api.services.catalog.get(&id).await.unwrap();
    assert_eq!(record.status, BackupStatus::Failed);
    assert_eq!(record.labels["ticket"], "OPS-9");
    assert_eq!(record.requested_by.as_deref(), Some("alice"));
    let reason = record.error.unwrap();
    assert!(reason.contains("PGKEEP_DUMP_FUNCTION"), "{reason}");
    let sent = alerts.alerts();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].kind, crate::alert::AlertKind::BackupFailed);
    assert_eq!(sent[0].backup_id.as_ref(), Some(&id));
    assert_eq!(sent[0].database, "shop");
    assert!(
        sent[0].reason.contains("PGKEEP_DUMP_FUNCTION"),
        "{}",
        sent[0].reason
    );
    let shown = api
        .handle(&get(&format!("/backups/{id}"), admin()), now())
        .await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body["status"], "failed");
}

/// A catalog that holds nothing beside a repository that holds manifests was lost: every
/// route answers 503 naming `pgkeep repair`, and no dump is started.
#[tokio::test]
async fn a_lost_catalog_answers_503_naming_repair_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (api, starter) = api(dir.path()).await;
    // A new repository: no ceremony.
    assert_eq!(
        api.handle(&get("/backups", admin()), now()).await.status,
        200
    );
    // A backup the repository holds and the (lost) catalog does not.
    let r = BackupRecord::start(
        BackupId::generate(now()),
        "shop",
        BackupKind::Scheduled,
        Compression::Zstd,
    );
    store_keys(&api, &r).await;

    let mut trigger = get("/backups", admin());
    trigger.method = "POST".into();
    trigger.body = Some(br#"{"database": "shop"}"#.to_vec());
    for req in [
        get("/backups", admin()),
        get("/status", admin()),
        get(&format!("/backups/{}", r.id), admin()),
        delete(&r.id),
        trigger,
    ] {
        let res = api.handle(&req, now()).await;
        assert_eq!(res.status, 503, "{} {}: {}", req.method, req.path, res.body);
        let error = res.body["error"].as_str().unwrap();
        assert!(error.contains("run `pgkeep repair`"), "{error}");
    }
    assert!(starter.0.lock().unwrap().is_empty());
    // Still refused to anonymous callers first, as before.
    assert_eq!(
        api.handle(&get("/backups", Caller::Anonymous), now())
            .await
            .status,
        403
    );
}

fn audit_entry(minutes_ago: i64, database: &str, actor: &str) -> crate::model::AuditEntry {
    let at = now() - Duration::minutes(minutes_ago);
    crate::model::AuditEntry {
        id: BackupId::generate(at),
        at,
        actor: actor.into(),
        action: "restore".into(),
        backup_id: None,
        database: database.into(),
        outcome: "ok".into(),
        details: serde_json::json!({}),
    }
}

#[tokio::test]
async fn the_audit_trail_pages_filters_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let (api, _) = api(dir.path()).await;
    // Five entries, 10 minutes apart; every other one about `crm`.
    for (i, m) in [50, 40, 30, 20, 10].into_iter().enumerate() {
        let db = if i % 2 == 0 { "shop" } else { "crm" };
        let entry = audit_entry(m, db, &format!("user{i}"));
        api.services.catalog.append_audit(&entry).await.unwrap();
    }
    // A deletion through the API is audited under the caller and shows up first.
    let doomed = add(&api, 30, BackupStatus::Completed).await;
    add(&api, 1, BackupStatus::Verified).await;
    assert_eq!(api.handle(&delete(&doomed.id), now()).await.status, 200);

    let actors = |body: &Value| -> Vec<String> {
        body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["actor"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut seen = Vec::new();
    let mut path = "/audit?limit=2".to_owned();
    loop {
        let page = api.handle(&get(&path, admin()), now()).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let got = actors(&page.body);
        assert!(got.len() <= 2);
        seen.extend(got);
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/audit?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ["alice", "user4", "user3", "user2", "user1", "user0"]);

    let crm = api
        .handle(&get("/audit?database=crm", admin()), now())
        .await;
    assert_eq!(actors(&crm.body), ["user3", "user1"]);
    // `since`: a duration back from now, or a time.
    let recent = api.handle(&get("/audit?since=25m", admin()), now()).await;
    assert_eq!(actors(&recent.body), ["alice", "user4", "user3"]);
    let since = format_time(now() - Duration::minutes(35));
    let timed = api
        .handle(
            &get(&format!("/audit?since={since}&database=shop"), admin()),
            now(),
        )
        .await;
    assert_eq!(actors(&timed.body), ["alice", "user4", "user2"]);

    for bad in [
        "/audit?since=yesterday",
        "/audit?limit=0",
        "/audit?cursor=nope",
    ] {
        let r = api.handle(&get(bad, admin()), now()).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    let mut post = get("/audit", admin());
    post.method = "POST".into();
    assert_eq!(api.handle(&post, now()).await.status, 405);
    let outsider = Caller::Jwt {
        subject: "bob".into(),
        groups: vec!["ops".into()],
    };
    assert_eq!(
        api.handle(&get("/audit", outsider), now()).await.status,
        403
    );
}

#[tokio::test]
async fn listing_filters_by_kind_and_records_say_who_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (api, _) = api(dir.path()).await;
    let mut manual = Vec::new();
    for h in 1..=6 {
        let mut r = add(&api, h, BackupStatus::Completed).await;
        if h % 2 == 0 {
            let before = r.clone();
            r.kind = BackupKind::Manual;
            r.requested_by = Some("alice".into());
            api.services.catalog.replace(&r).await.unwrap();
            assert_ne!(before.kind, r.kind);
            manual.push(r.id.to_string());
        }
    }
    let mut seen = Vec::new();
    let mut path = "/backups?kind=manual&limit=2".to_owned();
    loop {
        let page = api.handle(&get(&path, admin()), now()).await;
        assert_eq!(page.status, 200, "{}", page.body);
        for b in page.body["backups"].as_array().unwrap() {
            assert_eq!(b["kind"], "manual");
            assert_eq!(b["requested_by"], "alice");
            seen.push(b["id"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/backups?kind=manual&limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, manual);
    let bad = api
        .handle(&get("/backups?kind=weekly", admin()), now())
        .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body["error"]
            .as_str()
            .unwrap()
            .contains("pre_migration"),
        "{}",
        bad.body
    );
}

#[tokio::test]
async fn a_queued_restore_gets_an_id_to_follow() {
    let dir = tempfile::tempdir().unwrap();
    let (mut api, _) = api(dir.path()).await;
    let verifies = Arc::new(RecordingVerifyStarter::default());
    api.verify_starter = verifies.clone();
    let stored = add(&api, 1, BackupStatus::Completed).await;
    let post = |body: &str| {
        let mut req = get(&format!("/backups/{}/restore", stored.id), admin());
        req.method = "POST".into();
        req.body = Some(body.as_bytes().to_vec());
        req
    };
    let res = api
        .handle(&post(r#"{"target_db": "copy", "dry_run": true}"#), now())
        .await;
    assert_eq!(res.status, 202, "{}", res.body);
    let restore_id = res.body["restore_id"].as_str().unwrap().to_owned();
    assert!(res
        .headers
        .contains(&("location".into(), format!("/restores/{restore_id}"))));
    // The function gets the id; until it runs, the restore is queued.
    let queued = verifies.0.lock().unwrap().clone();
    assert!(
        matches!(&queued[0], VerifyEvent::Restore(t) if t.restore_id.as_ref().map(BackupId::as_str) == Some(restore_id.as_str())),
        "{queued:?}"
    );
    let shown = api
        .handle(&get(&format!("/restores/{restore_id}"), admin()), now())
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.body["state"], "queued");
    assert_eq!(shown.body["backup_id"], stored.id.as_str());
    assert_eq!(shown.body["target_db"], "copy");
    assert_eq!(shown.body["dry_run"], true);
    assert_eq!(shown.body["requested_by"], "alice");
    let listed = api.handle(&get("/restores", admin()), now()).await;
    assert_eq!(listed.body["restores"][0]["id"], restore_id.as_str());

    // A restore that cannot be handed over is recorded failed, saying why.
    api.verify_starter = Arc::new(crate::invoke::Unconfigured("PGKEEP_VERIFY_FUNCTION"));
    let res = api.handle(&post(r#"{"target_db": "copy2"}"#), now()).await;
    assert_eq!(res.status, 502, "{}", res.body);
    let failed_id = res.body["restore_id"].as_str().unwrap();
    let shown = api
        .handle(&get(&format!("/restores/{failed_id}"), admin()), now())
        .await;
    assert_eq!(shown.body["state"], "failed");
    let error = shown.body["error"].as_str().unwrap();
    assert!(error.contains("PGKEEP_VERIFY_FUNCTION"), "{error}");

    let unknown = BackupId::generate(now());
    for (path, status) in [
        (format!("/restores/{unknown}"), 404),
        ("/restores/nope".to_owned(), 400),
        ("/restores?limit=0".to_owned(), 400),
    ] {
        let res = api.handle(&get(&path, admin()), now()).await;
        assert_eq!(res.status, status, "{path}: {}", res.body);
    }
    let mut delete = get(&format!("/restores/{restore_id}"), admin());
    delete.method = "DELETE".into();
    assert_eq!(api.handle(&delete, now()).await.status, 405);
}

#[tokio::test]
async fn the_dashboard_is_an_html_page_for_admins_only() {
    let dir = tempfile::tempdir().unwrap();
    let (api, _) = api(dir.path()).await;
    add(&api, 2, BackupStatus::Verified).await;
    let res = api.handle(&get("/dashboard", admin()), now()).await;
    assert_eq!(res.status, 200);
    assert!(res
        .headers
        .contains(&("content-type".into(), "text/html; charset=utf-8".into())));
    let page = res.raw_body().expect("sent as it is, not as JSON");
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(page.contains("data-database=\"shop\""));
    // JSON answers stay JSON.
    assert!(api
        .handle(&get("/status", admin()), now())
        .await
        .raw_body()
        .is_none());
    let outsider = Caller::Jwt {
        subject: "bob".into(),
        groups: vec!["ops".into()],
    };
    assert_eq!(
        api.handle(&get("/dashboard", outsider), now()).await.status,
        403
    );
}

#[tokio::test]
async fn a_run_lists_its_backups_and_names_the_failed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (api, _) = api(dir.path()).await;
    let run = "20261124T110000000Z-0badc0de";
    let mut ids = Vec::new();
    for (hours, status) in [(3, BackupStatus::Completed), (2, BackupStatus::Failed)] {
        let mut r = add(&api, hours, BackupStatus::InProgress).await;
        let before = r.status;
        r.run_id = Some(run.into());
        r.database = if hours == 3 {
            "shop".into()
        } else {
            "crm".into()
        };
        api.services.catalog.replace(&r).await.unwrap();
        r.transition(status).unwrap();
        api.services.catalog.update(&r, before).await.unwrap();
        ids.push(r.id);
    }
    add(&api, 1, BackupStatus::Completed).await; // not in the run

    let response = api
        .handle(&get(&format!("/runs/{run}"), admin()), now())
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let body = &response.body;
    let listed: Vec<&str> = body["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[1].as_str(), ids[0].as_str()]);
    assert_eq!(body["failed"], serde_json::json!(["crm"]));
    assert_eq!(body["complete"], false);

    let listed = api
        .handle(&get(&format!("/backups?run={run}"), admin()), now())
        .await;
    assert_eq!(listed.body["backups"].as_array().unwrap().len(), 2);

    let missing = api
        .handle(&get("/runs/20261124T110000000Z-00000000", admin()), now())
        .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
}
