//! The status API, independent of any HTTP framework: a request in, a JSON response out.
//!
//! The `status` Lambda turns API Gateway (HTTP API v2) events into [`ApiRequest`]s and
//! [`ApiResponse`]s back; everything else (routing, authorization, validation, the calls into
//! [`crate::ops`]) lives here, where it is tested without Lambda.
//!
//! Routes (all admin-only): `GET /backups`, `GET /backups/{id}`, `POST /backups`,
//! `POST /backups/{id}/verify`, `POST /backups/{id}/restore`, `DELETE /backups/{id}`,
//! `GET /backups/{id}/download`, `GET /status`. See docs/openapi.yaml.
//!
//! Dumps, verifications and restores run for minutes, so the API only checks the request,
//! hands it to the function that does the work (an asynchronous invocation) and answers 202.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::backends::Services;
use crate::catalog::{CatalogError, ListQuery};
use crate::invoke::{DumpStarter, VerifyStarter};
use crate::labels::{LabelSelector, Labels};
use crate::model::{BackupId, BackupKind, BackupStatus};
use crate::ops::health::{health, HealthPolicy};
use crate::ops::{self, DeleteRefusal, ErrorKind};
use crate::retention::Span;
use crate::selection::Selection;
use crate::store::StoreError;
use crate::trigger::{DumpTrigger, RestoreTrigger, VerifyEvent, VerifyTrigger};

/// Who is calling, as the gateway established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A JWT authorizer validated a token with these claims.
    Jwt {
        /// `sub` claim.
        subject: String,
        /// Groups from `cognito:groups` or `groups`.
        groups: Vec<String>,
    },
    /// IAM authorization: the gateway verified the SigV4 signature of this principal.
    Iam {
        /// The caller's ARN.
        principal: String,
    },
    /// No authorization context: never allowed.
    Anonymous,
}

impl Caller {
    /// A name for the audit trail.
    pub fn name(&self) -> String {
        match self {
            Caller::Jwt { subject, .. } => subject.clone(),
            Caller::Iam { principal } => principal.clone(),
            Caller::Anonymous => "anonymous".into(),
        }
    }
}

/// One HTTP request, reduced to what the API needs.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path without the stage, e.g. `/backups/ID`.
    pub path: String,
    /// Query string parameters.
    pub query: BTreeMap<String, String>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
    /// Who is calling.
    pub caller: Caller,
}

/// The response: a status code, extra headers, a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers besides `content-type: application/json`.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Value,
}

impl ApiResponse {
    fn json(status: u16, body: Value) -> Self {
        ApiResponse {
            status,
            headers: Vec::new(),
            body,
        }
    }

    fn error(status: u16, message: impl Into<String>) -> Self {
        Self::json(status, json!({ "error": message.into() }))
    }
}

/// The API's settings and backends, built once per Lambda container.
pub struct Api {
    /// Backends.
    pub services: Services,
    /// How dumps are started.
    pub starter: Arc<dyn DumpStarter>,
    /// How verifications and restores are started.
    pub verify_starter: Arc<dyn VerifyStarter>,
    /// What "healthy" means for `GET /status`.
    pub health: HealthPolicy,
    /// The JWT group that grants access.
    pub admin_group: String,
    /// Databases the deployment backs up; `POST /backups` accepts only these.
    pub databases: Vec<String>,
    /// How long a `GET /backups/{id}/download` URL works.
    pub download_ttl: Span,
}

/// Default and largest page size of `GET /backups`.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    database: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    selection: Option<Selection>,
}

const TRIGGER_BODY: &str = r#"{"database": "...", "kind": "manual", "labels": {"key": "value"}, "selection": {"exclude_schemas": ["..."]}}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    target_db: String,
    #[serde(default)]
    overwrite: bool,
    #[serde(default)]
    confirm: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    no_owner: bool,
}

const RESTORE_BODY: &str = r#"{"target_db": "...", "overwrite": false, "confirm": "...", "dry_run": false, "no_owner": false}"#;

impl Api {
    /// Answers one request at time `now`.
    pub async fn handle(&self, request: &ApiRequest, now: DateTime<Utc>) -> ApiResponse {
        if let Err(response) = self.authorize(&request.caller) {
            return response;
        }
        let segments: Vec<&str> = request
            .path
            .trim_end_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let result = match (request.method.as_str(), segments.as_slice()) {
            ("GET", ["backups"]) => self.list(request).await,
            ("POST", ["backups"]) => self.trigger(request, now).await,
            ("GET", ["backups", id]) => self.show(id).await,
            ("POST", ["backups", id, "verify"]) => self.verify(id, request).await,
            ("POST", ["backups", id, "restore"]) => self.restore(id, request).await,
            ("DELETE", ["backups", id]) => self.delete(id, request).await,
            ("GET", ["backups", id, "download"]) => self.download(id, now).await,
            ("GET", ["status"]) => self.status(now).await,
            (_, ["backups"])
            | (_, ["backups", _])
            | (_, ["backups", _, "verify" | "restore" | "download"])
            | (_, ["status"]) => Err(ApiResponse::error(
                405,
                format!("{} is not allowed on {}", request.method, request.path),
            )),
            _ => Err(ApiResponse::error(
                404,
                format!("no route {}", request.path),
            )),
        };
        result.unwrap_or_else(|response| response)
    }

    fn authorize(&self, caller: &Caller) -> Result<(), ApiResponse> {
        match caller {
            Caller::Iam { .. } => Ok(()),
            Caller::Jwt { groups, .. } if groups.iter().any(|g| g == &self.admin_group) => Ok(()),
            Caller::Jwt { .. } => Err(ApiResponse::error(
                403,
                format!(
                    "forbidden: the token lacks the {:?} group",
                    self.admin_group
                ),
            )),
            Caller::Anonymous => Err(ApiResponse::error(403, "forbidden: no authorization")),
        }
    }

    async fn list(&self, request: &ApiRequest) -> Result<ApiResponse, ApiResponse> {
        let q = &request.query;
        let limit = match q.get("limit") {
            None => DEFAULT_LIMIT,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiResponse::error(
                        400,
                        format!("limit must be 1 to {MAX_LIMIT}, not {l:?}"),
                    ))
                }
            },
        };
        let status = q
            .get("status")
            .map(|s| s.parse::<BackupStatus>())
            .transpose()
            .map_err(|e| ApiResponse::error(400, e))?;
        let label = q
            .get("label")
            .map(|l| l.parse::<LabelSelector>())
            .transpose()
            .map_err(|e| ApiResponse::error(400, format!("label: {e}")))?;
        let query = ListQuery {
            database: q.get("database").cloned(),
            status,
            limit: Some(limit),
            cursor: q.get("cursor").cloned(),
            label,
        };
        let page = ops::list::list(&self.services, &query)
            .await
            .map_err(error_response)?;
        Ok(ApiResponse::json(
            200,
            json!({ "backups": page.records, "next_cursor": page.next_cursor }),
        ))
    }

    async fn show(&self, id: &str) -> Result<ApiResponse, ApiResponse> {
        let id: BackupId = id
            .parse()
            .map_err(|e: crate::model::InvalidBackupId| ApiResponse::error(400, e.to_string()))?;
        let record = self
            .services
            .catalog
            .get(&id)
            .await
            .map_err(|e| error_response(e.into()))?;
        Ok(ApiResponse::json(200, json!(record)))
    }

    async fn trigger(
        &self,
        request: &ApiRequest,
        now: DateTime<Utc>,
    ) -> Result<ApiResponse, ApiResponse> {
        let body = request.body.as_deref().unwrap_or_default();
        let body: TriggerBody = serde_json::from_slice(body).map_err(|e| {
            ApiResponse::error(400, format!("invalid body: {e}; expected {TRIGGER_BODY}"))
        })?;
        if let Some(selection) = &body.selection {
            selection
                .validate()
                .map_err(|e| ApiResponse::error(400, format!("selection: {e}")))?;
        }
        if !self.databases.iter().any(|d| d == &body.database) {
            return Err(ApiResponse::error(
                400,
                format!(
                    "unknown database {:?}; this deployment backs up: {}",
                    body.database,
                    self.databases.join(", ")
                ),
            ));
        }
        let kind = match body.kind.as_deref() {
            None => BackupKind::Manual,
            Some(k) => k.parse().map_err(|e: String| ApiResponse::error(400, e))?,
        };
        let id = BackupId::generate(now);
        let trigger = DumpTrigger {
            database: body.database,
            kind,
            backup_id: Some(id.clone()),
            requested_by: Some(request.caller.name()),
            labels: body.labels,
            selection: body.selection,
        };
        self.starter
            .start(&trigger)
            .await
            .map_err(|e| ApiResponse::error(502, format!("could not start the dump: {e}")))?;
        let mut response = ApiResponse::json(
            202,
            json!({ "id": id, "status": "accepted", "database": trigger.database }),
        );
        response
            .headers
            .push(("location".into(), format!("/backups/{id}")));
        Ok(response)
    }

    /// The stored backup `id` (400 malformed, 404 unknown, 409 without an object).
    async fn stored_backup(&self, id: &str, action: &str) -> Result<BackupId, ApiResponse> {
        let id: BackupId = id
            .parse()
            .map_err(|e: crate::model::InvalidBackupId| ApiResponse::error(400, e.to_string()))?;
        let record = self
            .services
            .catalog
            .get(&id)
            .await
            .map_err(|e| error_response(e.into()))?;
        if !record.status.has_object() {
            return Err(ApiResponse::error(
                409,
                format!(
                    "backup {id} is {}: only a stored backup (completed, verified or verification_failed) can be {action}",
                    record.status
                ),
            ));
        }
        Ok(id)
    }

    async fn verify(&self, id: &str, request: &ApiRequest) -> Result<ApiResponse, ApiResponse> {
        let body = request.body.as_deref().unwrap_or_default();
        let empty = body.iter().all(u8::is_ascii_whitespace)
            || serde_json::from_slice::<serde_json::Map<String, Value>>(body)
                .is_ok_and(|m| m.is_empty());
        if !empty {
            return Err(ApiResponse::error(
                400,
                "this route takes no body (or {}); the backup is named in the path",
            ));
        }
        let id = self.stored_backup(id, "verified").await?;
        let event = VerifyEvent::Verify(VerifyTrigger {
            backup_id: Some(id.clone()),
            requested_by: Some(request.caller.name()),
        });
        self.verify_starter.start(&event).await.map_err(|e| {
            ApiResponse::error(502, format!("could not start the verification: {e}"))
        })?;
        let mut response = ApiResponse::json(
            202,
            json!({ "id": id, "status": "accepted", "action": "verify" }),
        );
        response
            .headers
            .push(("location".into(), format!("/backups/{id}")));
        Ok(response)
    }

    async fn restore(&self, id: &str, request: &ApiRequest) -> Result<ApiResponse, ApiResponse> {
        let body = request.body.as_deref().unwrap_or_default();
        let body: RestoreBody = serde_json::from_slice(body).map_err(|e| {
            ApiResponse::error(400, format!("invalid body: {e}; expected {RESTORE_BODY}"))
        })?;
        if body.confirm.is_some() && !body.overwrite {
            return Err(ApiResponse::error(
                400,
                "confirm is only for overwrite: set \"overwrite\": true as well, or leave confirm out to restore into a new database",
            ));
        }
        ops::restore::check_intent(&body.target_db, body.overwrite, body.confirm.as_deref())
            .map_err(error_response)?;
        let id = self.stored_backup(id, "restored").await?;
        let trigger = RestoreTrigger {
            backup_id: id.clone(),
            target_db: body.target_db,
            overwrite: body.overwrite,
            confirm: body.confirm,
            dry_run: body.dry_run,
            no_owner: body.no_owner,
            requested_by: Some(request.caller.name()),
        };
        self.verify_starter
            .start(&VerifyEvent::Restore(trigger.clone()))
            .await
            .map_err(|e| ApiResponse::error(502, format!("could not start the restore: {e}")))?;
        Ok(ApiResponse::json(
            202,
            json!({
                "backup_id": id,
                "status": "accepted",
                "action": if trigger.dry_run { "restore_dry_run" } else { "restore" },
                "target_db": trigger.target_db,
                "overwrite": trigger.overwrite,
                "dry_run": trigger.dry_run,
            }),
        ))
    }

    /// Deletes one backup for the caller (audited under the caller's name); refusals are 409
    /// (newest verified, in progress) or 423 (S3 Object Lock), with a stable `reason`.
    async fn delete(&self, id: &str, request: &ApiRequest) -> Result<ApiResponse, ApiResponse> {
        if request
            .body
            .as_deref()
            .is_some_and(|b| !b.iter().all(u8::is_ascii_whitespace))
        {
            return Err(ApiResponse::error(
                400,
                "this route takes no body; the backup is named in the path",
            ));
        }
        let id: BackupId = id
            .parse()
            .map_err(|e: crate::model::InvalidBackupId| ApiResponse::error(400, e.to_string()))?;
        let record = ops::delete::delete(&self.services, &id, &request.caller.name())
            .await
            .map_err(error_response)?;
        Ok(ApiResponse::json(200, json!(record)))
    }

    /// A presigned URL of the encrypted object and what decrypting it takes.
    async fn download(&self, id: &str, now: DateTime<Utc>) -> Result<ApiResponse, ApiResponse> {
        let id: BackupId = id
            .parse()
            .map_err(|e: crate::model::InvalidBackupId| ApiResponse::error(400, e.to_string()))?;
        let download = ops::download::download(&self.services, &id, self.download_ttl, now)
            .await
            .map_err(error_response)?;
        let mut response = ApiResponse::json(200, json!(download));
        // The URL is a credential until it expires: no cache may keep it.
        response
            .headers
            .push(("cache-control".into(), "no-store".into()));
        Ok(response)
    }

    async fn status(&self, now: DateTime<Utc>) -> Result<ApiResponse, ApiResponse> {
        let databases = health(&self.services, now, &self.health)
            .await
            .map_err(error_response)?;
        let healthy = databases.iter().all(|d| d.healthy);
        Ok(ApiResponse::json(
            if healthy { 200 } else { 503 },
            json!({ "healthy": healthy, "databases": databases }),
        ))
    }
}

/// Maps an operation's failure to a status code and a JSON error. A refused deletion also
/// carries its stable `reason` (`newest_verified`, `in_progress`: 409; `object_locked`: 423);
/// a backup that was deleted answers 410, one without a stored object yet (or ever) 409.
pub fn error_response(e: ops::Error) -> ApiResponse {
    if let ops::Error::DeleteRefused { id, reason, .. } = &e {
        let status = match reason {
            DeleteRefusal::ObjectLocked => 423,
            DeleteRefusal::NewestVerified | DeleteRefusal::InProgress => 409,
        };
        return ApiResponse::json(
            status,
            json!({ "error": e.to_string(), "reason": reason, "id": id }),
        );
    }
    let status = match (&e, e.kind()) {
        (ops::Error::Catalog(CatalogError::BadCursor(_)), _) => 400,
        (ops::Error::Store(StoreError::Unsupported { .. }), _) => 501,
        // Deleted (by hand or by retention): the id was valid, the backup is gone for good.
        (
            ops::Error::Unusable {
                status: BackupStatus::Deleted,
                ..
            },
            _,
        ) => 410,
        (_, ErrorKind::NotFound) => 404,
        (_, ErrorKind::Config) => 400,
        (_, ErrorKind::Conflict) => 409,
        (_, ErrorKind::Verification) => 422,
        (_, ErrorKind::Permission) => 403,
        _ => 500,
    };
    if status == 500 {
        tracing::error!(error = %e, "request failed");
    }
    ApiResponse::error(status, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::{BackendConfig, KeyUrl, KeyUse, RepoUrl};
    use crate::invoke::{RecordingStarter, RecordingVerifyStarter};
    use crate::model::{BackupRecord, Compression};
    use chrono::{Duration, TimeZone};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
    }

    async fn api(dir: &std::path::Path) -> (Api, Arc<RecordingStarter>) {
        let services = BackendConfig {
            repo: RepoUrl::File(dir.join("repo")),
            catalog: None,
            key: KeyUrl::File(dir.join("key")),
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
        assert!(
            matches!(&queued[1], VerifyEvent::Restore(t) if t.overwrite && t.target_db == "shop")
        );

        let unknown = BackupId::generate(now());
        for (req, status) in [
            (post(verify(&unknown), ""), 404),
            (post(verify(&failed.id), ""), 409),
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
}
