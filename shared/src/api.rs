//! The status API, independent of any HTTP framework: a request in, a JSON response out.
//!
//! The `status` Lambda turns API Gateway (HTTP API v2) events into [`ApiRequest`]s and
//! [`ApiResponse`]s back; everything else (routing, authorization, validation, the calls into
//! [`crate::ops`]) lives here, where it is tested without Lambda.
//!
//! Routes (all admin-only): `GET /backups`, `GET /backups/{id}`, `POST /backups`,
//! `POST /backups/{id}/verify`, `POST /backups/{id}/restore`, `DELETE /backups/{id}`,
//! `GET /backups/{id}/download`, `GET /status`, `GET /audit`, `GET /restores`,
//! `GET /restores/{id}`, `GET /dashboard` (the HTML history page), `GET /runs/{id}` (a
//! whole-server run's backups). See docs/openapi.yaml.
//!
//! Dumps, verifications and restores run for minutes, so the API only checks the request,
//! hands it to the function that does the work (an asynchronous invocation) and answers 202.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::alert::{Alert, AlertKind, Notifier};
use crate::backends::Services;
use crate::catalog::{AuditQuery, CatalogError, ListQuery};
use crate::invoke::{DumpStarter, VerifyStarter};
use crate::labels::{LabelSelector, Labels};
use crate::model::{BackupId, BackupKind, BackupStatus, RestoreRun};
use crate::ops::health::{health, HealthPolicy};
use crate::ops::{self, DeleteRefusal, ErrorKind};
use crate::retention::{with_expiries, RetentionPolicy, Span};
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

    /// A 200 HTML page: the body is the document as a JSON string, sent as it is (the
    /// `content-type` header says so; see [`ApiResponse::raw_body`]).
    fn html(document: String) -> Self {
        ApiResponse {
            status: 200,
            headers: vec![
                ("content-type".into(), "text/html; charset=utf-8".into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body: Value::String(document),
        }
    }

    /// The body to send when a header sets a content type of its own (an HTML page): the
    /// string itself rather than its JSON encoding; `None` for the usual JSON body.
    pub fn raw_body(&self) -> Option<&str> {
        let custom = self
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
        match &self.body {
            Value::String(s) if custom => Some(s),
            _ => None,
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
    /// Where alerts go (an accepted dump that could not be started).
    pub notifier: Arc<dyn Notifier>,
    /// The retention policy prune applies (`PGKEEP_KEEP_*`): backups are shown with the date
    /// it expires them (nothing when it is not configured).
    pub retention: RetentionPolicy,
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
        // As every CLI command does: beside a lost catalog, every answer would be a lie
        // ("no backups") and a triggered dump would start a second history.
        if let Err(e) = ops::repair::check_catalog(&self.services).await {
            return error_response(e);
        }
        let segments: Vec<&str> = request
            .path
            .trim_end_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let result = match (request.method.as_str(), segments.as_slice()) {
            ("GET", ["backups"]) => self.list(request, now).await,
            ("POST", ["backups"]) => self.trigger(request, now).await,
            ("GET", ["backups", id]) => self.show(id, now).await,
            ("POST", ["backups", id, "verify"]) => self.verify(id, request).await,
            ("POST", ["backups", id, "restore"]) => self.restore(id, request, now).await,
            ("DELETE", ["backups", id]) => self.delete(id, request).await,
            ("GET", ["backups", id, "download"]) => self.download(id, now).await,
            ("GET", ["status"]) => self.status(now).await,
            ("GET", ["audit"]) => self.audit(request, now).await,
            ("GET", ["dashboard"]) => self.dashboard(now).await,
            ("GET", ["restores"]) => self.list_restores(request).await,
            ("GET", ["restores", id]) => self.show_restore(id).await,
            ("GET", ["runs", id]) => self.run(id).await,
            (_, ["audit"])
            | (_, ["dashboard"])
            | (_, ["restores"])
            | (_, ["restores", _])
            | (_, ["runs", _])
            | (_, ["backups"])
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

    /// `GET /audit`: the audit trail, newest first, paginated like `GET /backups`.
    async fn audit(
        &self,
        request: &ApiRequest,
        now: DateTime<Utc>,
    ) -> Result<ApiResponse, ApiResponse> {
        let q = &request.query;
        let since = q
            .get("since")
            .map(|s| ops::audit::parse_since(s, now))
            .transpose()
            .map_err(|e| ApiResponse::error(400, e))?;
        let query = AuditQuery {
            database: q.get("database").cloned(),
            since,
            limit: Some(page_limit(q)?),
            cursor: q.get("cursor").cloned(),
        };
        let page = ops::audit::page(&self.services, &query)
            .await
            .map_err(error_response)?;
        Ok(ApiResponse::json(
            200,
            json!({ "entries": page.entries, "next_cursor": page.next_cursor }),
        ))
    }

    async fn list(
        &self,
        request: &ApiRequest,
        now: DateTime<Utc>,
    ) -> Result<ApiResponse, ApiResponse> {
        let q = &request.query;
        let limit = page_limit(q)?;
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
        let kind = q
            .get("kind")
            .map(|k| k.parse::<BackupKind>())
            .transpose()
            .map_err(|e| ApiResponse::error(400, format!("kind: {e}")))?;
        let query = ListQuery {
            database: q.get("database").cloned(),
            status,
            limit: Some(limit),
            cursor: q.get("cursor").cloned(),
            label,
            kind,
            run_id: q.get("run").cloned(),
        };
        let page = ops::list::list(&self.services, &query)
            .await
            .map_err(error_response)?;
        let databases: Vec<&str> = page.records.iter().map(|r| r.database.as_str()).collect();
        let expiries = ops::list::expiries(&self.services, &self.retention, Some(&databases), now)
            .await
            .map_err(error_response)?;
        Ok(ApiResponse::json(
            200,
            json!({ "backups": with_expiries(&page.records, &expiries), "next_cursor": page.next_cursor }),
        ))
    }

    async fn show(&self, id: &str, now: DateTime<Utc>) -> Result<ApiResponse, ApiResponse> {
        let id: BackupId = id
            .parse()
            .map_err(|e: crate::model::InvalidBackupId| ApiResponse::error(400, e.to_string()))?;
        let record = self
            .services
            .catalog
            .get(&id)
            .await
            .map_err(|e| error_response(e.into()))?;
        let expiries = ops::list::expiries(
            &self.services,
            &self.retention,
            Some(&[record.database.as_str()]),
            now,
        )
        .await
        .map_err(error_response)?;
        let shown = with_expiries(std::slice::from_ref(&record), &expiries);
        Ok(ApiResponse::json(200, json!(shown[0])))
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
            all_databases: false,
            jobs: None,
        };
        if let Err(e) = self.starter.start(&trigger).await {
            return Err(self.not_started(&trigger, &id, &e).await);
        }
        let mut response = ApiResponse::json(
            202,
            json!({ "id": id, "status": "accepted", "database": trigger.database }),
        );
        response
            .headers
            .push(("location".into(), format!("/backups/{id}")));
        Ok(response)
    }

    /// A dump the API could not hand to the dump function: its id gets a `failed` record that
    /// says why (so `GET /backups/{id}` and the history show the attempt), and the caller a
    /// 502 naming the id.
    async fn not_started(&self, trigger: &DumpTrigger, id: &BackupId, error: &str) -> ApiResponse {
        let reason = format!("could not start the dump: {error}");
        let record = trigger.not_started_record(id, reason.clone());
        let recorded = match self.services.catalog.insert(&record).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(backup = %id, error = %e, "could not record the dump that did not start");
                false
            }
        };
        tracing::error!(backup = %id, database = %trigger.database, error = %reason, "an asked-for backup did not start");
        // The caller may not be watching: alert as for any failed dump.
        let alert = Alert::new(
            AlertKind::BackupFailed,
            &trigger.database,
            Some(id.clone()),
            &reason,
            Utc::now(),
        );
        if let Err(e) = self.notifier.notify(&alert).await {
            tracing::error!(backup = %id, error = %e, "the alert for a dump that did not start could not be sent");
        }
        ApiResponse::json(
            502,
            json!({ "error": reason, "id": id, "status": if recorded { "failed" } else { "not_recorded" } }),
        )
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
            // Through `error_response`, so that a deleted backup answers 410 like everywhere.
            return Err(error_response(ops::Error::Unusable {
                id,
                status: record.status,
                why: format!(
                    "only a stored backup (completed, verified or verification_failed) can be {action}"
                ),
            }));
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
            jobs: None,
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

    async fn restore(
        &self,
        id: &str,
        request: &ApiRequest,
        now: DateTime<Utc>,
    ) -> Result<ApiResponse, ApiResponse> {
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
        // Recorded before it is queued, so the answer's location can be polled at once.
        let restore_id = BackupId::generate(now);
        let mut run = RestoreRun::queued(restore_id.clone(), id.clone(), &body.target_db, now);
        run.dry_run = body.dry_run;
        run.overwrite = body.overwrite;
        run.requested_by = Some(request.caller.name());
        self.services
            .catalog
            .put_restore(&run)
            .await
            .map_err(|e| error_response(e.into()))?;
        let trigger = RestoreTrigger {
            backup_id: id.clone(),
            target_db: body.target_db,
            overwrite: body.overwrite,
            confirm: body.confirm,
            dry_run: body.dry_run,
            no_owner: body.no_owner,
            requested_by: Some(request.caller.name()),
            restore_id: Some(restore_id.clone()),
            jobs: None,
        };
        if let Err(e) = self
            .verify_starter
            .start(&VerifyEvent::Restore(trigger.clone()))
            .await
        {
            let reason = format!("could not start the restore: {e}");
            ops::restore::record_failure(&self.services, &restore_id, &reason).await;
            return Err(ApiResponse::json(
                502,
                json!({ "error": reason, "restore_id": restore_id }),
            ));
        }
        let mut response = ApiResponse::json(
            202,
            json!({
                "backup_id": id,
                "restore_id": restore_id,
                "status": "accepted",
                "action": if trigger.dry_run { "restore_dry_run" } else { "restore" },
                "target_db": trigger.target_db,
                "overwrite": trigger.overwrite,
                "dry_run": trigger.dry_run,
            }),
        );
        response
            .headers
            .push(("location".into(), format!("/restores/{restore_id}")));
        Ok(response)
    }

    /// `GET /dashboard`: the backup history page (HTML; see [`crate::history`]).
    async fn dashboard(&self, now: DateTime<Utc>) -> Result<ApiResponse, ApiResponse> {
        let html = crate::history::page(&self.services, now, &self.health, &self.retention)
            .await
            .map_err(error_response)?;
        Ok(ApiResponse::html(html))
    }

    /// `GET /restores/{id}`: one restore's state, as the function running it records it.
    async fn show_restore(&self, id: &str) -> Result<ApiResponse, ApiResponse> {
        let id: BackupId = id.parse().map_err(|_| {
            ApiResponse::error(
                400,
                format!("{id:?} is not a restore id (expected the form 20261124T153512123Z-9f3a1c2b, as POST /backups/{{id}}/restore answered)"),
            )
        })?;
        let run = self
            .services
            .catalog
            .get_restore(&id)
            .await
            .map_err(|e| error_response(e.into()))?;
        Ok(ApiResponse::json(200, json!(run)))
    }

    /// `GET /restores`: the newest restores, newest first (`limit`, default 50).
    async fn list_restores(&self, request: &ApiRequest) -> Result<ApiResponse, ApiResponse> {
        let limit = page_limit(&request.query)?;
        let runs = self
            .services
            .catalog
            .list_restores(limit)
            .await
            .map_err(|e| error_response(e.into()))?;
        Ok(ApiResponse::json(200, json!({ "restores": runs })))
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

    /// A whole-server run: its backups (each an ordinary backup), and which failed.
    async fn run(&self, id: &str) -> Result<ApiResponse, ApiResponse> {
        let records = ops::server::run_members(&self.services, id)
            .await
            .map_err(error_response)?;
        let failed: Vec<&str> = records
            .iter()
            .filter(|r| r.never_held_a_backup())
            .map(|r| r.database.as_str())
            .collect();
        let in_progress = records.iter().any(|r| r.status == BackupStatus::InProgress);
        Ok(ApiResponse::json(
            200,
            json!({
                "run_id": id,
                "complete": failed.is_empty() && !in_progress,
                "in_progress": in_progress,
                "failed": failed,
                "backups": records,
            }),
        ))
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

/// The `limit` of a paginated route: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
fn page_limit(q: &BTreeMap<String, String>) -> Result<usize, ApiResponse> {
    match q.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiResponse::error(
                400,
                format!("limit must be 1 to {MAX_LIMIT}, not {l:?}"),
            )),
        },
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
        // Until `pgkeep repair` rebuilds it: unavailable, not a fault of the request.
        (ops::Error::CatalogLost { .. }, _) => 503,
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
mod tests;
