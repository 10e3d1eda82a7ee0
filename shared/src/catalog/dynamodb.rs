//! The catalog in one DynamoDB table: the production catalog (see docs/DYNAMODB.md).
//!
//! One item per backup record, audit entry and lease, told apart by the prefix of the
//! partition key `pk`. Three sparse global secondary indexes, all sorted by `start_key`
//! (`<created_at>#<id>`, the listing order everywhere), serve the newest-first listings: `by_time` (everything of one item type),
//! `by_database` and `by_status`. Status changes are conditional writes on the status the
//! writer last saw, so two writers can never both win; the lease is a conditional write on
//! its expiry. Records are stored whole as JSON (`record`), beside the attributes the indexes
//! and conditions use; conversions to and from items live in this file only. A record's
//! labels are also a map attribute (`labels`), which label filters read.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, PointInTimeRecoverySpecification, PointInTimeRecoveryStatus, Projection,
    ProjectionType, ScalarAttributeType, SseSpecification, SseType, TimeToLiveSpecification,
    TimeToLiveStatus,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};

use super::{
    check_update, decode_cursor, encode_cursor, encode_cursor_at, start_key, AuditPage, AuditQuery,
    Catalog, CatalogError, ListQuery, Page,
};
use crate::aws::{describe, error_code};
use crate::labels::LabelSelector;
use crate::model::{
    format_time, AuditEntry, BackupId, BackupKind, BackupRecord, BackupStatus, Lease, RestoreRun,
};

type Item = HashMap<String, AttributeValue>;

/// Partition key of every item.
const PK: &str = "pk";
/// The backup or audit id.
const ID: &str = "id";
/// Sort key of every index: `<start>#<id>` (see [`start_key`]), so listings are in start
/// order, not in the order ids were allocated.
const START_KEY: &str = "start_key";
/// Index of all items of one type, newest first.
const BY_TIME: &str = "by_time";
/// Hash key of `by_time`: `backup` or `audit`.
const ITEM_TYPE: &str = "item_type";
/// Index of one database's items.
const BY_DATABASE: &str = "by_database";
/// Hash key of `by_database`: `backup#<database>` or `audit#<database>`.
const DATABASE_KEY: &str = "database_key";
/// Index of backups in one status.
const BY_STATUS: &str = "by_status";
/// Hash key of `by_status`: `backup#<status>`.
const STATUS_KEY: &str = "status_key";
/// The TTL attribute (epoch seconds): lapsed leases disappear on their own.
const TTL: &str = "ttl";
/// How long after its expiry a lease item is left for DynamoDB's TTL to remove.
const LEASE_TTL_GRACE_SECS: i64 = 24 * 3600;

/// Backup records, audit entries and dump leases in a DynamoDB table.
#[derive(Clone, Debug)]
pub struct DynamoCatalog {
    client: Client,
    table: String,
}

impl DynamoCatalog {
    /// The catalog in `table` (which must exist, see [`create_table`]).
    pub fn new(client: Client, table: &str) -> Self {
        DynamoCatalog {
            client,
            table: table.to_owned(),
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn backend<E, R>(&self, action: &str, err: &SdkError<E, R>) -> CatalogError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let hint = match error_code(err) {
            Some("ResourceNotFoundException") => format!(
                " (table {:?} or one of its indexes does not exist in this region: if it was lost, create it with `pgkeep init`, then rebuild its records from the repository with `pgkeep repair`)",
                self.table
            ),
            Some("AccessDeniedException") => format!(
                " (allow dynamodb:{action} on the table {:?} and its indexes in the IAM policy)",
                self.table
            ),
            _ => String::new(),
        };
        CatalogError::Backend {
            location: self.location(),
            message: format!("{}{hint}", describe(err)),
        }
    }

    fn corrupt(&self, what: &str, why: impl std::fmt::Display) -> CatalogError {
        CatalogError::Backend {
            location: self.location(),
            message: format!("unreadable {what}: {why}"),
        }
    }

    async fn get_item(&self, pk: String) -> Result<Option<Item>, CatalogError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.backend("GetItem", &e))?;
        Ok(out.item)
    }

    /// Items of one index partition, newest first, after the start key `before` (exclusive), keeping those
    /// `keep` accepts, until `want` are collected or the partition ends.
    async fn query_newest(
        &self,
        index: &str,
        hash_attr: &str,
        hash: String,
        before: Option<&str>,
        want: Option<usize>,
        keep: impl Fn(&Item) -> bool,
    ) -> Result<Vec<Item>, CatalogError> {
        self.query_newest_since(index, hash_attr, hash, before, None, want, keep)
            .await
    }

    /// [`Self::query_newest`], also stopping at start keys below `since` (a time as
    /// [`format_time`] writes it: every key of an item at or after it sorts above it).
    #[allow(clippy::too_many_arguments)]
    async fn query_newest_since(
        &self,
        index: &str,
        hash_attr: &str,
        hash: String,
        before: Option<&str>,
        since: Option<&str>,
        want: Option<usize>,
        keep: impl Fn(&Item) -> bool,
    ) -> Result<Vec<Item>, CatalogError> {
        let mut condition = String::from("#h = :h");
        let mut names = HashMap::from([("#h".to_owned(), hash_attr.to_owned())]);
        let mut values = HashMap::from([(":h".to_owned(), s(hash))]);
        // A key condition allows one test of the sort key: both bounds are a BETWEEN (which
        // includes `before`, dropped below).
        match (before, since) {
            // Nothing is both below the cursor and at or above `since`.
            (Some(before), Some(since)) if before < since => return Ok(Vec::new()),
            (Some(before), Some(since)) => {
                condition.push_str(" AND #k BETWEEN :since AND :before");
                values.insert(":since".into(), s(since));
                values.insert(":before".into(), s(before));
            }
            (Some(before), None) => {
                condition.push_str(" AND #k < :before");
                values.insert(":before".into(), s(before));
            }
            (None, Some(since)) => {
                condition.push_str(" AND #k >= :since");
                values.insert(":since".into(), s(since));
            }
            (None, None) => {}
        }
        if before.is_some() || since.is_some() {
            names.insert("#k".into(), START_KEY.into());
        }
        let keep =
            |item: &Item| before.is_none_or(|b| text(item, START_KEY) != Some(b)) && keep(item);
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page_size = want.map(|w| (w.saturating_sub(out.len())).clamp(1, 1000) as i32);
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression(&condition)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(false)
                .set_limit(page_size)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.backend("Query", &e))?;
            out.extend(page.items.unwrap_or_default().into_iter().filter(&keep));
            if want.is_some_and(|w| out.len() >= w) {
                out.truncate(want.unwrap_or(usize::MAX));
                return Ok(out);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(out),
            }
        }
    }

    /// Gives every backup record and audit entry written by a pgkeep older than the
    /// `start_key` sort key its key, so the indexes list it again; returns how many it
    /// updated. Run by `pgkeep init` on an existing table (a no-op once done).
    pub async fn backfill_start_keys(&self) -> Result<u64, CatalogError> {
        let names = HashMap::from([
            ("#pk".to_owned(), PK.to_owned()),
            ("#k".to_owned(), START_KEY.to_owned()),
            ("#id".to_owned(), ID.to_owned()),
            ("#c".to_owned(), "created_at".to_owned()),
            ("#at".to_owned(), "at".to_owned()),
        ]);
        let values = HashMap::from([
            (":b".to_owned(), s("backup#")),
            (":a".to_owned(), s("audit#")),
        ]);
        let mut updated = 0;
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(
                    "attribute_not_exists(#k) AND (begins_with(#pk, :b) OR begins_with(#pk, :a))",
                )
                .projection_expression("#pk, #id, #c, #at")
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.backend("Scan", &e))?;
            for item in page.items.unwrap_or_default() {
                let (Some(pk), Some(id)) = (text(&item, PK), text(&item, ID)) else {
                    return Err(self.corrupt("item", "no pk or id attribute"));
                };
                let time = text(&item, "created_at")
                    .or_else(|| text(&item, "at"))
                    .ok_or_else(|| self.corrupt(pk, "no created_at or at attribute"))?;
                let result = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .key(PK, s(pk))
                    .update_expression("SET #k = :k")
                    .condition_expression("attribute_exists(#pk)")
                    .expression_attribute_names("#k", START_KEY)
                    .expression_attribute_names("#pk", PK)
                    .expression_attribute_values(":k", s(start_key(time, id)))
                    .send()
                    .await;
                match result {
                    Ok(_) => updated += 1,
                    // Deleted since the scan read it: nothing to list.
                    Err(e) if error_code(&e) == Some("ConditionalCheckFailedException") => {}
                    Err(e) => return Err(self.backend("UpdateItem", &e)),
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(updated),
            }
        }
    }

    fn record_from(&self, item: &Item) -> Result<BackupRecord, CatalogError> {
        let json =
            text(item, "record").ok_or_else(|| self.corrupt("record", "no record attribute"))?;
        serde_json::from_str(json).map_err(|e| self.corrupt("record", e))
    }

    fn restore_from(&self, item: &Item) -> Result<RestoreRun, CatalogError> {
        let json = text(item, "entry")
            .ok_or_else(|| self.corrupt("restore record", "no entry attribute"))?;
        serde_json::from_str(json).map_err(|e| self.corrupt("restore record", e))
    }

    fn lease_from(&self, item: &Item) -> Result<Lease, CatalogError> {
        let field = |name| {
            text(item, name).ok_or_else(|| self.corrupt("lease", format!("no {name} attribute")))
        };
        let expires = field("expires_at")?;
        let process = text(item, "process")
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| self.corrupt("lease", e))?;
        Ok(Lease {
            database: field("database")?.to_owned(),
            holder: field("holder")?.to_owned(),
            expires_at: DateTime::parse_from_rfc3339(expires)
                .map_err(|e| self.corrupt("lease", e))?
                .with_timezone(&Utc),
            process,
        })
    }
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Whether an item's `labels` map carries the selector's label.
fn has_label(item: &Item, selector: &LabelSelector) -> bool {
    let Some(AttributeValue::M(labels)) = item.get("labels") else {
        return false;
    };
    match (labels.get(&selector.key), &selector.value) {
        (Some(AttributeValue::S(_)), None) => true,
        (Some(AttributeValue::S(found)), Some(wanted)) => found == wanted,
        _ => false,
    }
}

/// An item's backup kind: its `kind` attribute, or (items written before it existed) the
/// record's.
fn item_kind(item: &Item) -> Option<BackupKind> {
    if let Some(kind) = text(item, "kind") {
        return kind.parse().ok();
    }
    let record: serde_json::Value = serde_json::from_str(text(item, "record")?).ok()?;
    record.get("kind")?.as_str()?.parse().ok()
}

fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v),
        _ => None,
    }
}

fn backup_pk(id: &BackupId) -> String {
    format!("backup#{id}")
}

fn audit_pk(id: &BackupId) -> String {
    format!("audit#{id}")
}

fn restore_pk(id: &BackupId) -> String {
    format!("restore#{id}")
}

/// A restore's item: in `by_time` under item type `restore`, so restores list newest first.
fn restore_item(run: &RestoreRun) -> Item {
    HashMap::from([
        (PK.to_owned(), s(restore_pk(&run.id))),
        (ITEM_TYPE.to_owned(), s("restore")),
        (ID.to_owned(), s(run.id.as_str())),
        (
            START_KEY.to_owned(),
            s(start_key(&format_time(run.requested_at), run.id.as_str())),
        ),
        ("state".to_owned(), s(run.state.as_str())),
        (
            "entry".to_owned(),
            s(serde_json::to_string(run).expect("restore records serialize")),
        ),
    ])
}

fn lease_pk(database: &str) -> String {
    format!("lease#{database}")
}

fn record_item(record: &BackupRecord) -> Item {
    let mut item = HashMap::from([
        (PK.to_owned(), s(backup_pk(&record.id))),
        (ITEM_TYPE.to_owned(), s("backup")),
        (ID.to_owned(), s(record.id.as_str())),
        ("database".to_owned(), s(&record.database)),
        ("status".to_owned(), s(record.status.as_str())),
        ("kind".to_owned(), s(record.kind.as_str())),
        ("created_at".to_owned(), s(format_time(record.created_at))),
        (
            START_KEY.to_owned(),
            s(start_key(
                &format_time(record.created_at),
                record.id.as_str(),
            )),
        ),
        (
            DATABASE_KEY.to_owned(),
            s(format!("backup#{}", record.database)),
        ),
        (
            STATUS_KEY.to_owned(),
            s(format!("backup#{}", record.status)),
        ),
        (
            "record".to_owned(),
            s(serde_json::to_string(record).expect("records always serialize")),
        ),
    ]);
    if let Some(by) = &record.requested_by {
        item.insert("requested_by".to_owned(), s(by));
    }
    if let Some(run_id) = &record.run_id {
        item.insert("run_id".to_owned(), s(run_id));
    }
    if !record.labels.is_empty() {
        let labels = record
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), s(v)))
            .collect();
        item.insert("labels".to_owned(), AttributeValue::M(labels));
    }
    item
}

fn audit_item(entry: &AuditEntry) -> Item {
    HashMap::from([
        (PK.to_owned(), s(audit_pk(&entry.id))),
        (ITEM_TYPE.to_owned(), s("audit")),
        (ID.to_owned(), s(entry.id.as_str())),
        ("database".to_owned(), s(&entry.database)),
        ("at".to_owned(), s(format_time(entry.at))),
        (
            START_KEY.to_owned(),
            s(start_key(&format_time(entry.at), entry.id.as_str())),
        ),
        (
            DATABASE_KEY.to_owned(),
            s(format!("audit#{}", entry.database)),
        ),
        (
            "entry".to_owned(),
            s(serde_json::to_string(entry).expect("audit entries serialize")),
        ),
    ])
}

fn lease_item(lease: &Lease) -> Item {
    let mut item = HashMap::from([
        (PK.to_owned(), s(lease_pk(&lease.database))),
        ("database".to_owned(), s(&lease.database)),
        ("holder".to_owned(), s(&lease.holder)),
        ("expires_at".to_owned(), s(format_time(lease.expires_at))),
        (
            "expires_at_ms".to_owned(),
            n(lease.expires_at.timestamp_millis()),
        ),
        (
            TTL.to_owned(),
            n(lease.expires_at.timestamp() + LEASE_TTL_GRACE_SECS),
        ),
    ]);
    if let Some(process) = &lease.process {
        item.insert(
            "process".to_owned(),
            s(serde_json::to_string(process).expect("process identities serialize")),
        );
    }
    item
}

#[async_trait]
impl Catalog for DynamoCatalog {
    fn location(&self) -> String {
        format!("dynamodb://{}", self.table)
    }

    async fn insert(&self, record: &BackupRecord) -> Result<(), CatalogError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(record_item(record)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(CatalogError::AlreadyExists(record.id.clone()))
            }
            Err(e) => Err(self.backend("PutItem", &e)),
        }
    }

    async fn replace(&self, record: &BackupRecord) -> Result<(), CatalogError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(record_item(record)))
            .send()
            .await
            .map_err(|e| self.backend("PutItem", &e))?;
        Ok(())
    }

    async fn get(&self, id: &BackupId) -> Result<BackupRecord, CatalogError> {
        match self.get_item(backup_pk(id)).await? {
            Some(item) => self.record_from(&item),
            None => Err(CatalogError::NotFound(id.clone())),
        }
    }

    async fn update(
        &self,
        record: &BackupRecord,
        expected: BackupStatus,
    ) -> Result<(), CatalogError> {
        check_update(record, expected)?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(record_item(record)))
            .condition_expression("attribute_exists(#pk) AND #status = :expected")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":expected", s(expected.as_str()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                // Say why: gone, or changed by someone else.
                match self.get_item(backup_pk(&record.id)).await? {
                    None => Err(CatalogError::NotFound(record.id.clone())),
                    Some(item) => Err(CatalogError::Conflict {
                        id: record.id.clone(),
                        expected,
                        found: self.record_from(&item)?.status,
                    }),
                }
            }
            Err(e) => Err(self.backend("PutItem", &e)),
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, CatalogError> {
        let before = query
            .cursor
            .as_deref()
            .map(decode_cursor)
            .transpose()?
            .map(|c| c.key());
        let want = query.limit.map(|l| l + 1);
        let status = query.status;
        // Labels are filtered after the query: a page is filled from as many index pages as
        // it takes, and the cursor is the last record returned, so none is skipped or repeated.
        // So is the run id (attribute `run_id`): a run is read rarely, by `restore --run` and
        // `GET /runs/{id}`, and needs no index of its own.
        let label = query.label.as_ref();
        let kind = query.kind;
        let run_id = query.run_id.as_deref();
        let labelled = |item: &Item| {
            label.is_none_or(|l| has_label(item, l))
                && kind.is_none_or(|k| item_kind(item) == Some(k))
                && run_id.is_none_or(|run| text(item, "run_id") == Some(run))
        };
        let items = match (&query.database, status) {
            (Some(database), _) => {
                self.query_newest(
                    BY_DATABASE,
                    DATABASE_KEY,
                    format!("backup#{database}"),
                    before.as_deref(),
                    want,
                    |item| {
                        status.is_none_or(|st| text(item, "status") == Some(st.as_str()))
                            && labelled(item)
                    },
                )
                .await?
            }
            (None, Some(st)) => {
                self.query_newest(
                    BY_STATUS,
                    STATUS_KEY,
                    format!("backup#{st}"),
                    before.as_deref(),
                    want,
                    labelled,
                )
                .await?
            }
            (None, None) => {
                self.query_newest(
                    BY_TIME,
                    ITEM_TYPE,
                    "backup".into(),
                    before.as_deref(),
                    want,
                    labelled,
                )
                .await?
            }
        };
        let mut records = items
            .iter()
            .map(|item| self.record_from(item))
            .collect::<Result<Vec<_>, _>>()?;
        let mut next_cursor = None;
        if let Some(limit) = query.limit {
            if records.len() > limit {
                records.truncate(limit);
                next_cursor = records.last().map(encode_cursor);
            }
        }
        Ok(Page {
            records,
            next_cursor,
        })
    }

    async fn acquire_lease(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, CatalogError> {
        // A holder that releases between our failed write and our read makes us try again.
        for _ in 0..5 {
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(lease_item(lease)))
                .condition_expression("attribute_not_exists(#pk) OR #expires <= :now")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#expires", "expires_at_ms")
                .expression_attribute_values(":now", n(now.timestamp_millis()))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(None),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(self.backend("PutItem", &e)),
            }
            if let Some(item) = self.get_item(lease_pk(&lease.database)).await? {
                let current = self.lease_from(&item)?;
                if current.expires_at > now {
                    return Ok(Some(current));
                }
            }
        }
        Err(CatalogError::Backend {
            location: self.location(),
            message: format!(
                "the lease of database {:?} kept changing hands; try again",
                lease.database
            ),
        })
    }

    async fn release_lease(&self, database: &str, holder: &str) -> Result<(), CatalogError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(lease_pk(database)))
            .condition_expression("#holder = :holder")
            .expression_attribute_names("#holder", "holder")
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Not ours (any more), or already gone: nothing to give back.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(self.backend("DeleteItem", &e)),
        }
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<bool, CatalogError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(lease_item(lease)))
            .condition_expression("#holder = :holder")
            .expression_attribute_names("#holder", "holder")
            .expression_attribute_values(":holder", s(&lease.holder))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.backend("PutItem", &e)),
        }
    }

    async fn get_lease(&self, database: &str) -> Result<Option<Lease>, CatalogError> {
        match self.get_item(lease_pk(database)).await? {
            Some(item) => Ok(Some(self.lease_from(&item)?)),
            None => Ok(None),
        }
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), CatalogError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(audit_item(entry)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await
            .map_err(|e| self.backend("PutItem", &e))?;
        Ok(())
    }

    async fn list_audit(
        &self,
        database: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, CatalogError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let items = match database {
            Some(db) => {
                self.query_newest(
                    BY_DATABASE,
                    DATABASE_KEY,
                    format!("audit#{db}"),
                    None,
                    Some(limit),
                    |_| true,
                )
                .await?
            }
            None => {
                self.query_newest(
                    BY_TIME,
                    ITEM_TYPE,
                    "audit".into(),
                    None,
                    Some(limit),
                    |_| true,
                )
                .await?
            }
        };
        items
            .iter()
            .map(|item| {
                let json = text(item, "entry")
                    .ok_or_else(|| self.corrupt("audit entry", "no entry attribute"))?;
                serde_json::from_str(json).map_err(|e| self.corrupt("audit entry", e))
            })
            .collect()
    }

    async fn put_restore(&self, run: &RestoreRun) -> Result<(), CatalogError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(restore_item(run)))
            .send()
            .await
            .map_err(|e| self.backend("PutItem", &e))?;
        Ok(())
    }

    async fn get_restore(&self, id: &BackupId) -> Result<RestoreRun, CatalogError> {
        let item = self
            .get_item(restore_pk(id))
            .await?
            .ok_or_else(|| CatalogError::RestoreNotFound(id.clone()))?;
        self.restore_from(&item)
    }

    async fn list_restores(&self, limit: usize) -> Result<Vec<RestoreRun>, CatalogError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let items = self
            .query_newest(
                BY_TIME,
                ITEM_TYPE,
                "restore".into(),
                None,
                Some(limit),
                |_| true,
            )
            .await?;
        items.iter().map(|item| self.restore_from(item)).collect()
    }

    async fn audit_page(&self, query: &AuditQuery) -> Result<AuditPage, CatalogError> {
        let before = query
            .cursor
            .as_deref()
            .map(decode_cursor)
            .transpose()?
            .map(|c| c.key());
        let since = query.since.map(format_time);
        let want = query.limit.map(|l| l + 1);
        let (index, attr, hash) = match &query.database {
            Some(db) => (BY_DATABASE, DATABASE_KEY, format!("audit#{db}")),
            None => (BY_TIME, ITEM_TYPE, "audit".to_owned()),
        };
        let items = self
            .query_newest_since(
                index,
                attr,
                hash,
                before.as_deref(),
                since.as_deref(),
                want,
                |_| true,
            )
            .await?;
        let mut entries = items
            .iter()
            .map(|item| {
                let json = text(item, "entry")
                    .ok_or_else(|| self.corrupt("audit entry", "no entry attribute"))?;
                serde_json::from_str::<AuditEntry>(json).map_err(|e| self.corrupt("audit entry", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut next_cursor = None;
        if let Some(limit) = query.limit {
            if entries.len() > limit {
                entries.truncate(limit);
                next_cursor = entries.last().map(|e| encode_cursor_at(e.at, &e.id));
            }
        }
        Ok(AuditPage {
            entries,
            next_cursor,
        })
    }

    async fn remove_record(
        &self,
        id: &BackupId,
        expected: BackupStatus,
    ) -> Result<(), CatalogError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(backup_pk(id)))
            .condition_expression("attribute_exists(#pk) AND #status = :expected")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":expected", s(expected.as_str()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                match self.get_item(backup_pk(id)).await? {
                    None => Err(CatalogError::NotFound(id.clone())),
                    Some(item) => Err(CatalogError::Conflict {
                        id: id.clone(),
                        expected,
                        found: self.record_from(&item)?.status,
                    }),
                }
            }
            Err(e) => Err(self.backend("DeleteItem", &e)),
        }
    }
}

/// One global secondary index of the catalog table (projection `ALL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexDefinition {
    /// Index name.
    pub name: &'static str,
    /// Partition key (type S).
    pub hash_key: &'static str,
    /// Sort key (type S).
    pub range_key: &'static str,
}

/// The catalog table, once: [`create_table`] and `pgkeep init` create it from this, `pgkeep
/// init` compares an existing table with it, and a test compares it with the table Terraform
/// declares (infra/storage.tf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableDefinition {
    /// Partition key (type S); no sort key.
    pub hash_key: &'static str,
    /// Every key attribute of the table and its indexes, all of type S.
    pub attributes: &'static [&'static str],
    /// The global secondary indexes.
    pub indexes: &'static [IndexDefinition],
    /// `PAY_PER_REQUEST`: a few writes per backup.
    pub billing_mode: &'static str,
    /// The TTL attribute (epoch seconds), enabled.
    pub ttl_attribute: &'static str,
    /// Point-in-time recovery on: a table deleted or damaged by mistake can be restored.
    pub point_in_time_recovery: bool,
}

/// The catalog table pgkeep needs.
pub const TABLE: TableDefinition = TableDefinition {
    hash_key: PK,
    attributes: &[PK, START_KEY, ITEM_TYPE, DATABASE_KEY, STATUS_KEY],
    indexes: &[
        IndexDefinition {
            name: BY_TIME,
            hash_key: ITEM_TYPE,
            range_key: START_KEY,
        },
        IndexDefinition {
            name: BY_DATABASE,
            hash_key: DATABASE_KEY,
            range_key: START_KEY,
        },
        IndexDefinition {
            name: BY_STATUS,
            hash_key: STATUS_KEY,
            range_key: START_KEY,
        },
    ],
    billing_mode: "PAY_PER_REQUEST",
    ttl_attribute: TTL,
    point_in_time_recovery: true,
};

/// How one deployment's table differs from another's, beyond [`TABLE`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSetup {
    /// Refuse `DeleteTable` (Terraform's default; tests that drop tables leave it off).
    pub deletion_protection: bool,
    /// Encrypt the table with this KMS key (ARN) instead of an AWS owned key.
    pub sse_kms_key_arn: Option<String>,
}

/// What [`ensure_table`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableOutcome {
    /// The table did not exist and was created.
    Created,
    /// The table exists and matches [`TABLE`].
    Matches,
}

/// Creates the catalog table as [`TABLE`] says (without deletion protection, encrypted with
/// an AWS owned key) and waits until it is usable. For tests; `pgkeep init` uses
/// [`ensure_table`].
pub async fn create_table(client: &Client, table: &str) -> Result<(), CatalogError> {
    create_table_with(client, table, &TableSetup::default()).await
}

fn table_error(table: &str, message: String) -> CatalogError {
    CatalogError::Backend {
        location: format!("dynamodb://{table}"),
        message,
    }
}

/// Creates the table from [`TABLE`] and `setup`, waits until it is active, then turns on TTL
/// and point-in-time recovery.
pub async fn create_table_with(
    client: &Client,
    table: &str,
    setup: &TableSetup,
) -> Result<(), CatalogError> {
    let fail = |message: String| table_error(table, message);
    let build = |e: aws_sdk_dynamodb::error::BuildError| fail(e.to_string());
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(build)
    };
    let mut request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::from(TABLE.billing_mode))
        .key_schema(key(TABLE.hash_key, KeyType::Hash)?)
        .deletion_protection_enabled(setup.deletion_protection);
    for name in TABLE.attributes {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(*name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build)?,
        );
    }
    for index in TABLE.indexes {
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(index.name)
                .key_schema(key(index.hash_key, KeyType::Hash)?)
                .key_schema(key(index.range_key, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .map_err(build)?,
        );
    }
    if let Some(arn) = &setup.sse_kms_key_arn {
        request = request.sse_specification(
            SseSpecification::builder()
                .enabled(true)
                .sse_type(SseType::Kms)
                .kms_master_key_id(arn)
                .build(),
        );
    }
    request.send().await.map_err(|e| fail(describe(&e)))?;
    client
        .wait_until_table_exists()
        .table_name(table)
        .wait(Duration::from_secs(120))
        .await
        .map_err(|e| fail(format!("table did not become active: {e}")))?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TABLE.ttl_attribute)
                .build()
                .map_err(build)?,
        )
        .send()
        .await
        .map_err(|e| fail(describe(&e)))?;
    if TABLE.point_in_time_recovery {
        client
            .update_continuous_backups()
            .table_name(table)
            .point_in_time_recovery_specification(
                PointInTimeRecoverySpecification::builder()
                    .point_in_time_recovery_enabled(true)
                    .build()
                    .map_err(build)?,
            )
            .send()
            .await
            .map_err(|e| fail(describe(&e)))?;
    }
    Ok(())
}

/// Creates the table when it does not exist; otherwise checks that it matches [`TABLE`] (and
/// the encryption key of `setup`), failing with every difference named. Writes nothing to an
/// existing table.
pub async fn ensure_table(
    client: &Client,
    table: &str,
    setup: &TableSetup,
) -> Result<TableOutcome, CatalogError> {
    match table_differences(client, table, setup).await? {
        None => {
            create_table_with(client, table, setup).await?;
            Ok(TableOutcome::Created)
        }
        Some(differences) if differences.is_empty() => Ok(TableOutcome::Matches),
        Some(differences) => Err(table_error(
            table,
            format!(
                "the table exists but differs from what pgkeep needs (docs/DYNAMODB.md): {}; fix it (or create a new table) and run `pgkeep init` again",
                differences.join("; ")
            ),
        )),
    }
}

/// How an existing table differs from [`TABLE`] and `setup`; `None` when there is no table.
pub async fn table_differences(
    client: &Client,
    table: &str,
    setup: &TableSetup,
) -> Result<Option<Vec<String>>, CatalogError> {
    let fail = |action: &str, e: String| table_error(table, format!("{action}: {e}"));
    let described = match client.describe_table().table_name(table).send().await {
        Ok(out) => out
            .table
            .ok_or_else(|| fail("DescribeTable", "no table description".into()))?,
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => return Ok(None),
        Err(e) => return Err(fail("DescribeTable", describe(&e))),
    };
    let mut diffs = Vec::new();
    let keys = |schema: &[KeySchemaElement]| -> Vec<(String, String)> {
        schema
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_owned(),
                    k.key_type().as_str().to_owned(),
                )
            })
            .collect()
    };
    let want_keys = vec![(TABLE.hash_key.to_owned(), "HASH".to_owned())];
    if keys(described.key_schema()) != want_keys {
        diffs.push(format!(
            "key schema is {:?}, expected partition key {:?} (S) and no sort key",
            keys(described.key_schema()),
            TABLE.hash_key
        ));
    }
    for attribute in described.attribute_definitions() {
        if TABLE.attributes.contains(&attribute.attribute_name())
            && attribute.attribute_type() != &ScalarAttributeType::S
        {
            diffs.push(format!(
                "attribute {:?} has type {}, expected S",
                attribute.attribute_name(),
                attribute.attribute_type().as_str()
            ));
        }
    }
    let billing = described
        .billing_mode_summary()
        .and_then(|b| b.billing_mode())
        .map(|b| b.as_str().to_owned())
        // DescribeTable leaves out the summary for tables that were always provisioned.
        .unwrap_or_else(|| "PROVISIONED".to_owned());
    if billing != TABLE.billing_mode {
        diffs.push(format!(
            "billing mode is {billing}, expected {}",
            TABLE.billing_mode
        ));
    }
    let found: HashMap<&str, _> = described
        .global_secondary_indexes()
        .iter()
        .filter_map(|i| Some((i.index_name()?, i)))
        .collect();
    for index in TABLE.indexes {
        let Some(got) = found.get(index.name) else {
            diffs.push(format!(
                "global secondary index {:?} is missing",
                index.name
            ));
            continue;
        };
        let want = vec![
            (index.hash_key.to_owned(), "HASH".to_owned()),
            (index.range_key.to_owned(), "RANGE".to_owned()),
        ];
        if keys(got.key_schema()) != want {
            let legacy = keys(got.key_schema()).contains(&(ID.to_owned(), "RANGE".to_owned()));
            diffs.push(format!(
                "index {:?} has keys {:?}, expected {:?} (HASH) and {:?} (RANGE){}",
                index.name,
                keys(got.key_schema()),
                index.hash_key,
                index.range_key,
                if legacy {
                    " (made by a pgkeep that listed in id order: apply the Terraform module, which recreates the index, then run `pgkeep init` to fill start_key; docs/DYNAMODB.md \"Upgrading\")"
                } else {
                    ""
                }
            ));
        }
        let projection = got.projection().and_then(|p| p.projection_type());
        if projection != Some(&ProjectionType::All) {
            diffs.push(format!(
                "index {:?} projects {}, expected ALL",
                index.name,
                projection.map_or("nothing", |p| p.as_str())
            ));
        }
    }
    for name in found.keys() {
        if !TABLE.indexes.iter().any(|i| i.name == *name) {
            diffs.push(format!("unexpected global secondary index {name:?}"));
        }
    }
    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| fail("DescribeTimeToLive", describe(&e)))?;
    let ttl = ttl.time_to_live_description();
    let ttl_on = ttl
        .and_then(|t| t.time_to_live_status())
        .is_some_and(|s| matches!(s, TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling));
    let ttl_attribute = ttl.and_then(|t| t.attribute_name());
    if !ttl_on || ttl_attribute != Some(TABLE.ttl_attribute) {
        diffs.push(format!(
            "time to live is {} on {:?}, expected enabled on {:?}",
            if ttl_on { "enabled" } else { "disabled" },
            ttl_attribute.unwrap_or("no attribute"),
            TABLE.ttl_attribute
        ));
    }
    if TABLE.point_in_time_recovery {
        let backups = client
            .describe_continuous_backups()
            .table_name(table)
            .send()
            .await
            .map_err(|e| fail("DescribeContinuousBackups", describe(&e)))?;
        let pitr = backups
            .continuous_backups_description()
            .and_then(|d| d.point_in_time_recovery_description())
            .and_then(|p| p.point_in_time_recovery_status());
        if pitr != Some(&PointInTimeRecoveryStatus::Enabled) {
            diffs.push("point-in-time recovery is off, expected on (`aws dynamodb update-continuous-backups --point-in-time-recovery-specification PointInTimeRecoveryEnabled=true`)".to_owned());
        }
    }
    if let Some(want) = &setup.sse_kms_key_arn {
        let got = described
            .sse_description()
            .and_then(|d| d.kms_master_key_arn());
        if got != Some(want.as_str()) {
            diffs.push(format!(
                "encrypted with {}, expected the KMS key {want}",
                got.unwrap_or("an AWS owned key")
            ));
        }
    }
    Ok(Some(diffs))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{BackupKind, Compression};
    use crate::testing::{moto, unique};

    async fn fresh(config: &crate::aws::SdkConfig) -> DynamoCatalog {
        let client = Client::new(config);
        let table = unique("pgkeep-catalog");
        create_table(&client, &table).await.unwrap();
        DynamoCatalog::new(client, &table)
    }

    /// The blocks of Terraform's `aws_dynamodb_table.catalog`: (block name, its `key = value`
    /// settings), the resource's own settings first under "".
    fn terraform_table() -> Vec<(String, BTreeMap<String, String>)> {
        let tf = include_str!("../../../infra/storage.tf");
        let start = tf
            .find(r#"resource "aws_dynamodb_table" "catalog" {"#)
            .expect("infra/storage.tf declares the catalog table");
        let mut blocks = vec![(String::new(), BTreeMap::new())];
        let mut depth = 0;
        for line in tf[start..].lines() {
            let line = line.trim();
            if line.ends_with('{') {
                depth += 1;
                if depth == 2 {
                    blocks.push((
                        line.trim_end_matches('{').trim().to_owned(),
                        BTreeMap::new(),
                    ));
                }
                continue;
            }
            if line == "}" {
                depth -= 1;
                if depth == 0 {
                    break;
                }
                if depth == 1 {
                    let top = std::mem::take(&mut blocks.last_mut().unwrap().0);
                    let settings = blocks.pop().unwrap().1;
                    blocks.push((top, settings));
                    // Later settings belong to the resource again.
                    blocks.push((String::new(), BTreeMap::new()));
                }
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim().trim_matches('"').to_owned();
                blocks.last_mut().unwrap().1.insert(k.trim().to_owned(), v);
            }
        }
        blocks.retain(|(name, settings)| !name.is_empty() || !settings.is_empty());
        blocks
    }

    #[test]
    fn the_table_is_the_one_terraform_declares() {
        let blocks = terraform_table();
        let all = |name: &str| -> Vec<&BTreeMap<String, String>> {
            blocks
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, s)| s)
                .collect()
        };
        let top: BTreeMap<String, String> = all("").into_iter().flat_map(|s| s.clone()).collect();
        assert_eq!(top["hash_key"], TABLE.hash_key);
        assert!(!top.contains_key("range_key"));
        assert_eq!(top["billing_mode"], TABLE.billing_mode);
        let attributes: Vec<(&str, &str)> = all("attribute")
            .iter()
            .map(|a| (a["name"].as_str(), a["type"].as_str()))
            .collect();
        assert_eq!(
            attributes,
            TABLE
                .attributes
                .iter()
                .map(|a| (*a, "S"))
                .collect::<Vec<_>>()
        );
        let indexes: Vec<(&str, &str, &str, &str)> = all("global_secondary_index")
            .iter()
            .map(|i| {
                (
                    i["name"].as_str(),
                    i["hash_key"].as_str(),
                    i["range_key"].as_str(),
                    i["projection_type"].as_str(),
                )
            })
            .collect();
        assert_eq!(
            indexes,
            TABLE
                .indexes
                .iter()
                .map(|i| (i.name, i.hash_key, i.range_key, "ALL"))
                .collect::<Vec<_>>()
        );
        let ttl = all("ttl");
        assert_eq!(ttl.len(), 1);
        assert_eq!(ttl[0]["attribute_name"], TABLE.ttl_attribute);
        assert_eq!(ttl[0]["enabled"], "true");
        let pitr = all("point_in_time_recovery");
        assert_eq!(pitr.len(), 1);
        assert_eq!(pitr[0]["enabled"] == "true", TABLE.point_in_time_recovery);
        // Encrypted with the deployment's key: `pgkeep init` does the same with a kms:// key.
        assert_eq!(all("server_side_encryption")[0]["enabled"], "true");
    }

    #[tokio::test]
    async fn ensure_table_creates_accepts_a_match_and_names_differences() {
        let Some(config) = moto().await else { return };
        let client = Client::new(&config);
        let table = unique("pgkeep-init");
        let kms = aws_sdk_kms::Client::new(&config);
        let key = kms.create_key().send().await.unwrap();
        let arn = key.key_metadata().unwrap().arn().unwrap().to_owned();
        let setup = TableSetup {
            deletion_protection: true,
            sse_kms_key_arn: Some(arn.clone()),
        };
        assert_eq!(
            ensure_table(&client, &table, &setup).await.unwrap(),
            TableOutcome::Created
        );
        assert_eq!(
            table_differences(&client, &table, &setup).await.unwrap(),
            Some(vec![])
        );
        let described = client
            .describe_table()
            .table_name(&table)
            .send()
            .await
            .unwrap()
            .table
            .unwrap();
        assert_eq!(described.deletion_protection_enabled(), Some(true));
        assert_eq!(
            ensure_table(&client, &table, &setup).await.unwrap(),
            TableOutcome::Matches
        );
        // The catalog works in it.
        crate::catalog::contract::run(&DynamoCatalog::new(client.clone(), &table)).await;

        // Another key, and point-in-time recovery turned off: both named.
        client
            .update_continuous_backups()
            .table_name(&table)
            .point_in_time_recovery_specification(
                PointInTimeRecoverySpecification::builder()
                    .point_in_time_recovery_enabled(false)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let other = TableSetup {
            sse_kms_key_arn: Some("arn:aws:kms:us-east-1:123456789012:key/other".into()),
            ..setup.clone()
        };
        let err = ensure_table(&client, &table, &other)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("point-in-time recovery is off"), "{err}");
        assert!(
            err.contains("expected the KMS key arn:aws:kms:us-east-1:123456789012:key/other"),
            "{err}"
        );

        // A bare table: the missing indexes, TTL and billing are named, nothing is changed.
        let bare = unique("pgkeep-bare");
        client
            .create_table()
            .table_name(&bare)
            .billing_mode(BillingMode::Provisioned)
            .provisioned_throughput(
                aws_sdk_dynamodb::types::ProvisionedThroughput::builder()
                    .read_capacity_units(1)
                    .write_capacity_units(1)
                    .build()
                    .unwrap(),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(PK)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(PK)
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let err = ensure_table(&client, &bare, &TableSetup::default())
            .await
            .unwrap_err()
            .to_string();
        for needle in [
            "index \"by_time\" is missing",
            "index \"by_status\" is missing",
            "billing mode is PROVISIONED",
            "time to live is disabled",
            "point-in-time recovery is off",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        assert_eq!(
            table_differences(&client, &bare, &TableSetup::default())
                .await
                .unwrap()
                .unwrap()
                .len(),
            6,
            "nothing was changed: three indexes, billing, TTL, point-in-time recovery"
        );
    }

    #[tokio::test]
    async fn dynamodb_catalog_meets_the_contract() {
        let Some(config) = moto().await else { return };
        let catalog = fresh(&config).await;
        assert!(catalog.location().starts_with("dynamodb://pgkeep-catalog-"));
        crate::catalog::contract::run(&catalog).await;
    }

    #[tokio::test]
    async fn init_gives_records_of_an_older_pgkeep_their_sort_key() {
        let Some(config) = moto().await else { return };
        let catalog = fresh(&config).await;
        let t = Utc::now() - chrono::Duration::hours(1);
        let mut old = BackupRecord::start(
            BackupId::generate(t),
            "shop",
            BackupKind::Manual,
            Compression::Zstd,
        );
        old.created_at = t;
        let entry = AuditEntry {
            id: BackupId::generate(t),
            at: t,
            actor: "cli".into(),
            action: "backup".into(),
            backup_id: Some(old.id.clone()),
            database: "shop".into(),
            outcome: "ok".into(),
            details: serde_json::Value::Null,
        };
        // Written as a pgkeep before `start_key` did: invisible to every listing.
        for mut item in [record_item(&old), audit_item(&entry)] {
            item.remove(START_KEY);
            catalog
                .client
                .put_item()
                .table_name(&catalog.table)
                .set_item(Some(item))
                .send()
                .await
                .unwrap();
        }
        let newer = BackupRecord::start(
            BackupId::generate(Utc::now()),
            "shop",
            BackupKind::Manual,
            Compression::Zstd,
        );
        catalog.insert(&newer).await.unwrap();
        let ids = |page: Page| page.records.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(catalog.list(&ListQuery::default()).await.unwrap()),
            vec![newer.id.clone()]
        );
        assert!(catalog.list_audit(None, 10).await.unwrap().is_empty());

        assert_eq!(catalog.backfill_start_keys().await.unwrap(), 2);
        assert_eq!(
            ids(catalog.list(&ListQuery::default()).await.unwrap()),
            [newer.id.clone(), old.id.clone()]
        );
        let shop = ListQuery {
            database: Some("shop".into()),
            ..Default::default()
        };
        assert_eq!(ids(catalog.list(&shop).await.unwrap()).len(), 2);
        assert_eq!(catalog.list_audit(Some("shop"), 10).await.unwrap().len(), 1);
        assert_eq!(catalog.backfill_start_keys().await.unwrap(), 0, "once only");
    }

    #[tokio::test]
    async fn racing_writers_cannot_both_win() {
        let Some(config) = moto().await else { return };
        let catalog = fresh(&config).await;
        let record = BackupRecord::start(
            BackupId::generate(Utc::now()),
            "shop",
            BackupKind::Manual,
            Compression::Zstd,
        );
        catalog.insert(&record).await.unwrap();
        let mut completed = record.clone();
        completed.status = BackupStatus::Completed;
        let mut failed = record.clone();
        failed.status = BackupStatus::Failed;
        let (a, b) = tokio::join!(
            catalog.update(&completed, BackupStatus::InProgress),
            catalog.update(&failed, BackupStatus::InProgress)
        );
        assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
        let stored = catalog.get(&record.id).await.unwrap().status;
        assert_eq!(
            stored,
            if a.is_ok() {
                completed.status
            } else {
                failed.status
            }
        );

        let now = Utc::now();
        let lease = |holder: &str| Lease {
            database: "shop".into(),
            holder: holder.into(),
            expires_at: now + chrono::Duration::minutes(5),
            process: None,
        };
        let (lx, ly) = (lease("x"), lease("y"));
        let (x, y) = tokio::join!(
            catalog.acquire_lease(&lx, now),
            catalog.acquire_lease(&ly, now)
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert!(x.is_none() != y.is_none(), "{x:?} {y:?}");
        let winner = if x.is_none() { "x" } else { "y" };
        assert_eq!(x.or(y).unwrap().holder, winner);
    }

    #[tokio::test]
    async fn a_missing_table_says_how_to_create_and_refill_it() {
        let Some(config) = moto().await else { return };
        let catalog = DynamoCatalog::new(Client::new(&config), "pgkeep-no-such-table");
        let err = catalog
            .get(&BackupId::generate(Utc::now()))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pgkeep init") && err.contains("pgkeep repair"),
            "{err}"
        );
    }
}
