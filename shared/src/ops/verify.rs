//! Proving a backup: restore it into a scratch database and compare what came back with what
//! the backup declares.
//!
//! The object is streamed once: checked (SHA-256, every chunk's tag, the final chunk),
//! decrypted, decompressed, and fed to `pg_restore` into a fresh scratch database while the
//! archive's table of contents is read on the way. Then every table's exact row count is
//! compared with the manifest, and the tables, sequences, indexes (and the constraints that own
//! them), views, materialized views, functions, procedures and extensions of the restored
//! database with those the archive declares: the archive, not the live source, which may have
//! changed since. The scratch database is always dropped, and scratch databases left by a
//! crashed run are dropped first.
//!
//! The record keeps the verdict: `verified`, or `verification_failed` when the backup is at
//! fault (unreadable, does not restore, differs). When the attempt cannot decide for a reason
//! outside the backup (scratch server unreachable or lacking CREATEDB, key unavailable), the
//! status is left alone, the attempt is noted in the record, and the error is returned.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;
use tokio_postgres::Client;

mod globals;
mod manifest;

use super::parts;
use super::replay::{self, ReadFailure, Sink};
use super::scratch::{AdminConnection, OwnedDatabase, ServerRole, STALE_AFTER, VERIFY_PREFIX};
use super::{Error, ErrorKind};
use crate::backends::Services;
use crate::catalog::{CatalogError, ListQuery};
use crate::model::{
    qualified_name, quote_ident, sql_ident, AuditEntry, BackupId, BackupRecord, BackupStatus,
    CountCheck, Manifest, TableCheck, Verification, VerificationResult,
};
use crate::pipeline::archive_scan::{ArchiveObject, ArchiveSummary};
use crate::pipeline::pg_restore::{tolerates_transaction_timeout, PgRestore, RestoreOptions};
use crate::pipeline::Progress;
use crate::postgres::{locate_tool_with_major, PgTarget};

/// What to verify, and where.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    /// The backup; `None` picks the newest `completed` backup not yet verified (the schedule).
    pub id: Option<BackupId>,
    /// A connection to the scratch server (any existing database on it); its role needs
    /// CREATEDB. Scratch databases are created beside that database and dropped again.
    pub scratch: PgTarget,
    /// Directory of the PostgreSQL client binaries; searched when `None`.
    pub pg_bin: Option<PathBuf>,
    /// Who asked, for the audit trail (a user name, `schedule`, an IAM principal).
    pub actor: String,
    /// Archive bytes restored so far, for progress displays.
    pub progress: Arc<Progress>,
    /// pg_restore workers for the indexes and constraints of a parallel backup (whose data
    /// parts are always restored all at once); a single-stream backup streams with one.
    pub jobs: u32,
}

impl VerifyRequest {
    /// A request with defaults: client binaries searched, actor `pgkeep`.
    pub fn new(scratch: PgTarget, id: Option<BackupId>) -> Self {
        VerifyRequest {
            id,
            scratch,
            pg_bin: None,
            actor: "pgkeep".into(),
            progress: Arc::default(),
            jobs: 1,
        }
    }
}

/// The outcome of a verification that reached a verdict.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The backup as recorded afterwards (its `verification` holds the details); `None` when
    /// no id was given and no completed backup awaited verification.
    pub record: Option<BackupRecord>,
    /// The class of the failure when the backup was not verified (its exit code / HTTP
    /// status); `None` when verified or when there was nothing to verify.
    #[serde(skip)]
    pub failure: Option<ErrorKind>,
}

impl VerifyReport {
    /// The verification's details.
    pub fn verification(&self) -> Option<&Verification> {
        self.record.as_ref()?.verification.as_ref()
    }

    /// Whether the backup was proven (false also when there was nothing to verify).
    pub fn verified(&self) -> bool {
        self.verification().is_some_and(|v| v.ok)
    }
}

/// Verifies one backup (or the next one awaiting verification) and records the verdict.
///
/// `Ok` whenever a verdict was reached, including `verification_failed` (see
/// [`VerifyReport::failure`]); `Err` when no verdict could be reached (the record notes the
/// attempt as `inconclusive` where it can).
pub async fn verify(services: &Services, request: &VerifyRequest) -> Result<VerifyReport, Error> {
    let record = match &request.id {
        Some(id) => services.catalog.get(id).await?,
        None => match next_to_verify(services).await? {
            Some(record) => record,
            None => {
                return Ok(VerifyReport {
                    record: None,
                    failure: None,
                })
            }
        },
    };
    if !record.status.has_object() {
        return Err(Error::Unusable {
            id: record.id.clone(),
            status: record.status,
            why:
                "only a stored backup (completed, verified or verification_failed) can be verified"
                    .into(),
        });
    }
    tracing::info!(backup = %record.id, scratch = %request.scratch.redacted(), "verification started");
    let started = Instant::now();
    let mut findings = Findings {
        scratch_server: Some(request.scratch.redacted()),
        ..Findings::default()
    };
    let outcome = attempt(services, request, &record, &mut findings).await;
    let verification = findings.into_verification(&outcome, started.elapsed().as_millis() as u64);
    let (recorded, result) = record_outcome(services, record, verification, outcome).await?;
    if let Err(e) = audit(services, request, &recorded).await {
        tracing::error!(backup = %recorded.id, error = %e, "could not append the verification to the audit trail");
    }
    result.map(|failure| VerifyReport {
        record: Some(recorded),
        failure,
    })
}

/// The newest `completed` backup: completed backups have not been verified yet.
pub async fn next_to_verify(services: &Services) -> Result<Option<BackupRecord>, Error> {
    let page = services
        .catalog
        .list(&ListQuery {
            status: Some(BackupStatus::Completed),
            limit: Some(1),
            ..ListQuery::default()
        })
        .await?;
    Ok(page.records.into_iter().next())
}

/// The major version of the server a backup was taken from (pg_restore must be at least as
/// new as the pg_dump that wrote the archive, which was at least the server's version).
pub(crate) fn source_major(record: &BackupRecord) -> u32 {
    record
        .server_version
        .as_deref()
        .map(|v| {
            v.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

/// How an attempt ended.
enum Outcome {
    /// Restored and matched.
    Verified,
    /// The backup is at fault.
    Failed {
        result: VerificationResult,
        reason: String,
        kind: ErrorKind,
    },
    /// No verdict: something outside the backup failed.
    Inconclusive(Error),
}

impl Outcome {
    fn failed(result: VerificationResult, error: &Error) -> Self {
        Outcome::Failed {
            result,
            reason: error.to_string(),
            kind: error.kind(),
        }
    }

    /// The manifest disagrees with the record, the object or the archive.
    fn manifest_differs(differences: &[String]) -> Self {
        Outcome::Failed {
            result: VerificationResult::Differences,
            reason: format!(
                "the manifest disagrees with the backup: {}",
                summarise(differences, 5)
            ),
            kind: ErrorKind::Verification,
        }
    }

    fn from_read(failure: ReadFailure) -> Self {
        match failure {
            ReadFailure::Backup(e) => Outcome::failed(VerificationResult::Unreadable, &e),
            ReadFailure::Environment(e) => Outcome::Inconclusive(e),
        }
    }
}

/// What an attempt found, whatever the outcome.
#[derive(Default)]
struct Findings {
    restore_duration_ms: Option<u64>,
    scratch_server: Option<String>,
    scratch_database: Option<String>,
    tables: Vec<TableCheck>,
    large_objects: Option<CountCheck>,
    objects_checked: u64,
    missing_objects: Vec<String>,
    extra_objects: Vec<String>,
}

impl Findings {
    fn into_verification(self, outcome: &Outcome, duration_ms: u64) -> Verification {
        let (result, reason) = match outcome {
            Outcome::Verified => (VerificationResult::Verified, None),
            Outcome::Failed { result, reason, .. } => (*result, Some(reason.clone())),
            Outcome::Inconclusive(e) => (VerificationResult::Inconclusive, Some(e.to_string())),
        };
        Verification {
            verified_at: Utc::now(),
            ok: result == VerificationResult::Verified,
            result,
            reason,
            restore_duration_ms: self.restore_duration_ms,
            duration_ms,
            scratch_server: self.scratch_server,
            scratch_database: self.scratch_database,
            tables: self.tables,
            large_objects: self.large_objects,
            objects_checked: self.objects_checked,
            missing_objects: self.missing_objects,
            extra_objects: self.extra_objects,
        }
    }
}

async fn attempt(
    services: &Services,
    request: &VerifyRequest,
    record: &BackupRecord,
    findings: &mut Findings,
) -> Outcome {
    // The scratch server first: without it there is no verdict, and nothing was read.
    let server = match AdminConnection::connect(&request.scratch, ServerRole::Scratch).await {
        Ok(server) => server,
        Err(e) => return Outcome::Inconclusive(e),
    };
    if let Err(e) = server.require_createdb().await {
        return Outcome::Inconclusive(e);
    }
    if let Err(e) = server
        .drop_stale(VERIFY_PREFIX, Utc::now(), STALE_AFTER)
        .await
    {
        tracing::warn!(error = %e, "could not look for scratch databases left by earlier runs");
    }
    if let Some(info) = &record.globals {
        // A script, not an archive: read, compared with the manifest, rehearsed.
        return globals::attempt(services, &server, record, info, findings).await;
    }
    let major = server.version.major.max(source_major(record));
    let (pg_restore, tool_major) =
        match locate_tool_with_major("pg_restore", request.pg_bin.as_deref(), major).await {
            Ok(found) => found,
            Err(e) => return Outcome::Inconclusive(e.into()),
        };
    let options = RestoreOptions {
        jobs: 1,
        no_owner: true,
        tolerate_transaction_timeout: tolerates_transaction_timeout(
            tool_major,
            server.version.major,
        ),
        section: None,
    };
    let manifest = match replay::read_manifest(services, record).await {
        Ok(m) => m,
        Err(failure) => return Outcome::from_read(failure),
    };
    let stream = match replay::open_with_header(services, record).await {
        Ok((header, stream)) => {
            let differences = manifest::against_record(&manifest, record, &header);
            if !differences.is_empty() {
                return Outcome::manifest_differs(&differences);
            }
            stream
        }
        Err(failure) => return Outcome::from_read(failure),
    };
    let scratch = match server.create(VERIFY_PREFIX, Some(&record.id)).await {
        Ok(db) => db,
        Err(e) => return Outcome::Inconclusive(e),
    };
    findings.scratch_database = Some(scratch.name().to_owned());
    let outcome = restore_and_compare(
        services,
        request,
        record,
        &manifest,
        stream,
        &scratch,
        (&pg_restore, options),
        findings,
    )
    .await;
    // Always dropped; a failure to drop is logged and left to the next run's cleanup.
    let _ = scratch.drop_now().await;
    outcome
}

/// A parallel backup into the scratch database ([`parts`]): the schema object staged (small),
/// the data parts streamed at once; the archive's summary, or the verdict when it failed.
async fn restore_in_parts(
    services: &Services,
    request: &VerifyRequest,
    record: &BackupRecord,
    manifest: &Manifest,
    pg_restore: &std::path::Path,
    options: RestoreOptions,
    target: &PgTarget,
) -> Result<ArchiveSummary, Outcome> {
    let dir = super::restore::default_staging_dir();
    let (staged, schema) = parts::stage_schema(services, record, &dir)
        .await
        .map_err(Outcome::from_read)?;
    let options = RestoreOptions {
        jobs: request.jobs.max(1),
        ..options
    };
    let data = parts::restore_parts(
        services,
        record,
        pg_restore,
        target,
        options,
        &staged.path,
        &schema.toc,
        request.progress.clone(),
    )
    .await
    .map_err(|f| match f {
        parts::PartsFailure::Read(r) => Outcome::from_read(r),
        parts::PartsFailure::Restore(e) => Outcome::Failed {
            result: VerificationResult::RestoreFailed,
            reason: format!("the archive does not restore: {e}"),
            kind: ErrorKind::Verification,
        },
    })?;
    drop(staged);
    let summary = parts::combine(schema, data);
    let differences = manifest::against_archive(manifest, &summary);
    if !differences.is_empty() {
        return Err(Outcome::manifest_differs(&differences));
    }
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
async fn restore_and_compare(
    services: &Services,
    request: &VerifyRequest,
    record: &BackupRecord,
    manifest: &Manifest,
    stream: super::read::ArchiveStream,
    scratch: &OwnedDatabase,
    (pg_restore, options): (&std::path::Path, RestoreOptions),
    findings: &mut Findings,
) -> Outcome {
    let target = scratch.target();
    let started = Instant::now();
    let summary = if record.parts.is_empty() {
        let (mut child, stdin) = match PgRestore::restore(pg_restore, &target, options, None) {
            Ok(started) => started,
            Err(e) => return Outcome::Inconclusive(e.into()),
        };
        let sinks = vec![Sink::Child(stdin.expect("stdin is piped"))];
        let summary =
            match replay::replay(services, record, stream, sinks, request.progress.clone()).await {
                Ok(summary) => summary,
                Err(failure) => {
                    child.kill();
                    let _ = child.finish().await;
                    return Outcome::from_read(failure);
                }
            };
        let differences = manifest::against_archive(manifest, &summary);
        if !differences.is_empty() {
            let _ = child.finish().await;
            return Outcome::manifest_differs(&differences);
        }
        if let Err(e) = child.finish().await {
            return Outcome::Failed {
                result: VerificationResult::RestoreFailed,
                reason: format!("the archive does not restore: {e}"),
                kind: ErrorKind::Verification,
            };
        }
        summary
    } else {
        drop(stream);
        match restore_in_parts(
            services, request, record, manifest, pg_restore, options, &target,
        )
        .await
        {
            Ok(summary) => summary,
            Err(outcome) => return outcome,
        }
    };
    findings.restore_duration_ms = Some(started.elapsed().as_millis() as u64);

    let client = match target.connect().await {
        Ok(client) => client,
        Err(e) => return Outcome::Inconclusive(Error::Scratch(e)),
    };
    match compare(
        &client,
        &target,
        record,
        manifest,
        &summary,
        findings,
        request.jobs,
    )
    .await
    {
        Ok(()) => {}
        Err(e) => return Outcome::Inconclusive(Error::Scratch(e)),
    }
    drop(client);
    let differences = findings.differences();
    if differences.is_empty() {
        Outcome::Verified
    } else {
        Outcome::Failed {
            result: VerificationResult::Differences,
            reason: format!(
                "the restored database differs from the backup: {}",
                differences.join("; ")
            ),
            kind: ErrorKind::Verification,
        }
    }
}

impl Findings {
    /// Every difference found, for the reason line (long lists are cut).
    fn differences(&self) -> Vec<String> {
        const SHOWN: usize = 5;
        let mut out = Vec::new();
        let tables: Vec<String> = self
            .tables
            .iter()
            .filter(|t| !t.matches())
            .map(|t| match (t.expected, t.actual) {
                (None, None) if t.schema_only => {
                    format!("{} (schema only) was not restored", t.table)
                }
                (None, Some(a)) if t.schema_only => {
                    format!(
                        "{} has {a} rows, the backup holds none (schema only)",
                        t.table
                    )
                }
                (Some(e), None) => {
                    format!("{} was not restored (the manifest says {e} rows)", t.table)
                }
                (None, Some(a)) => format!("{} ({a} rows) is not in the manifest", t.table),
                (e, a) => format!(
                    "{} has {} rows, the manifest says {}",
                    t.table,
                    a.unwrap_or(0),
                    e.unwrap_or(0)
                ),
            })
            .collect();
        if !tables.is_empty() {
            out.push(summarise(&tables, SHOWN));
        }
        if let Some(lo) = &self.large_objects {
            if lo.expected != lo.actual {
                out.push(format!(
                    "{} large objects restored, the manifest says {}",
                    lo.actual.unwrap_or(0),
                    lo.expected.unwrap_or(0)
                ));
            }
        }
        if !self.missing_objects.is_empty() {
            out.push(format!(
                "missing: {}",
                summarise(&self.missing_objects, SHOWN)
            ));
        }
        if !self.extra_objects.is_empty() {
            out.push(format!(
                "not in the archive: {}",
                summarise(&self.extra_objects, SHOWN)
            ));
        }
        out
    }
}

fn summarise(items: &[String], shown: usize) -> String {
    let mut text = items
        .iter()
        .take(shown)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > shown {
        text.push_str(&format!(" and {} more", items.len() - shown));
    }
    text
}

/// Objects of the restored database, named as pg_dump names them in its TOC (kind, schema,
/// tag): relations by name, constraints that own an index as `table constraint`, functions as
/// `name(argtype, ...)` with types formatted under an empty search_path, as pg_dump does.
/// Objects belonging to an extension, the constraints and indexes of an extension's tables
/// (which CREATE EXTENSION makes, like a configuration table's primary key, without making
/// them members), and everything initdb created, are left out: pg_dump declares none of them.
const RESTORED_OBJECTS_SQL: &str = r"
SELECT o.kind, coalesce(n.nspname::text, ''), o.name
FROM (
    SELECT CASE c.relkind
             WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'TABLE' WHEN 'S' THEN 'SEQUENCE'
             WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
             WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'INDEX' END AS kind,
           c.relnamespace AS nsp, c.relname::text AS name,
           'pg_catalog.pg_class'::pg_catalog.regclass AS classid, c.oid AS objid,
           coalesce((SELECT i.indrelid FROM pg_catalog.pg_index i WHERE i.indexrelid = c.oid),
                    0) AS tableid
    FROM pg_catalog.pg_class c
    WHERE c.relkind IN ('r', 'p', 'S', 'v', 'm', 'f', 'i', 'I')
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                      WHERE k.conindid = c.oid AND k.contype IN ('p', 'u', 'x'))
    UNION ALL
    SELECT 'CONSTRAINT', t.relnamespace, t.relname::text || ' ' || k.conname::text,
           'pg_catalog.pg_constraint'::pg_catalog.regclass, k.oid, k.conrelid
    FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class t ON t.oid = k.conrelid
    WHERE k.contype IN ('p', 'u', 'x')
    UNION ALL
    SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, p.pronamespace,
           p.proname::text || '(' || coalesce((
               SELECT pg_catalog.string_agg(pg_catalog.format_type(a.t, NULL), ', ' ORDER BY a.i)
               FROM pg_catalog.unnest(p.proargtypes) WITH ORDINALITY AS a(t, i)), '') || ')',
           'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid, 0
    FROM pg_catalog.pg_proc p
    WHERE p.prokind <> 'a'
    UNION ALL
    SELECT 'EXTENSION', NULL, e.extname::text,
           'pg_catalog.pg_extension'::pg_catalog.regclass, e.oid, 0
    FROM pg_catalog.pg_extension e
) o
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = o.nsp
WHERE o.objid >= 16384
  AND coalesce(n.nspname::text, '') NOT LIKE 'pg\_%'
  AND coalesce(n.nspname::text, '') <> 'information_schema'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.deptype = 'e'
                    AND ((d.classid = o.classid AND d.objid = o.objid)
                      OR (d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                          AND d.objid = o.tableid)))
";

/// Ordinary tables of the restored database (extension members included: pg_dump dumps the
/// data of extension configuration tables), with whether they belong to an extension.
const RESTORED_TABLES_SQL: &str = r"
SELECT n.nspname::text, c.relname::text,
       EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
               WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                 AND d.objid = c.oid AND d.deptype = 'e')
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.oid >= 16384
  AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
ORDER BY pg_catalog.pg_relation_size(c.oid) DESC
";

/// Counts the rows of each `(name, count query)`, largest table first, on `jobs` connections at
/// once (`client` and `jobs - 1` more): counting scans every table, which after a parallel
/// restore is the longest step left.
async fn count_rows(
    client: &Client,
    target: &PgTarget,
    tables: Vec<(String, String)>,
    jobs: u32,
) -> Result<BTreeMap<String, u64>, crate::postgres::PgError> {
    type Queue = Arc<std::sync::Mutex<std::collections::VecDeque<(String, String)>>>;
    async fn work(
        client: &Client,
        target: &PgTarget,
        queue: &Queue,
    ) -> Result<Vec<(String, u64)>, crate::postgres::PgError> {
        let mut counted = Vec::new();
        loop {
            let next = queue.lock().expect("queue lock").pop_front();
            let Some((name, sql)) = next else {
                return Ok(counted);
            };
            let n: i64 = client
                .query_one(&sql, &[])
                .await
                .map_err(|e| target.query_error(&e))?
                .get(0);
            counted.push((name, n as u64));
        }
    }
    let extra = (jobs.max(1) as usize - 1).min(tables.len().saturating_sub(1));
    let queue: Queue = Arc::new(std::sync::Mutex::new(tables.into()));
    let mut helpers = tokio::task::JoinSet::new();
    for _ in 0..extra {
        let (target, queue) = (target.clone(), queue.clone());
        helpers.spawn(async move {
            let client = target.connect().await?;
            work(&client, &target, &queue).await
        });
    }
    let mine = work(client, target, &queue).await;
    let mut actual: BTreeMap<String, u64> = BTreeMap::new();
    // Every helper is awaited (and so its connection closed) before any error is returned.
    let mut failed = None;
    match mine {
        Ok(counted) => actual.extend(counted),
        Err(e) => failed = Some(e),
    }
    while let Some(joined) = helpers.join_next().await {
        match joined {
            Ok(Ok(counted)) => actual.extend(counted),
            Ok(Err(e)) => failed = failed.or(Some(e)),
            Err(e) => {
                failed = failed.or(Some(crate::postgres::PgError::Query {
                    target: target.redacted(),
                    message: format!("a counting task failed: {e}"),
                }))
            }
        }
    }
    match failed {
        None => Ok(actual),
        Some(e) => Err(e),
    }
}

/// Fills `findings` with the comparison of the restored database against the manifest (row
/// counts, large objects) and the archive's TOC (objects).
async fn compare(
    client: &Client,
    target: &PgTarget,
    record: &BackupRecord,
    manifest: &Manifest,
    archive: &ArchiveSummary,
    findings: &mut Findings,
    jobs: u32,
) -> Result<(), crate::postgres::PgError> {
    let q = |e: tokio_postgres::Error| target.query_error(&e);
    // pg_dump formats type names under an empty search_path; so must we.
    client
        .batch_execute("SET search_path = ''")
        .await
        .map_err(q)?;

    // Row counts: every table the manifest lists (with rows, or schema only: restored empty),
    // and every restored table it does not. Tables the backup's selection left out are in
    // neither, so their absence is no difference.
    let schema_only: BTreeSet<&String> = record.schema_only_tables.iter().collect();
    let mut to_count = Vec::new();
    let mut own_tables = BTreeSet::new();
    for row in client.query(RESTORED_TABLES_SQL, &[]).await.map_err(q)? {
        let (schema, table, in_extension): (String, String, bool) =
            (row.get(0), row.get(1), row.get(2));
        let name = qualified_name(&schema, &table);
        let wanted = record.row_counts.contains_key(&name) || schema_only.contains(&name);
        if !in_extension || wanted {
            let sql = format!(
                "SELECT count(*) FROM ONLY {}.{}",
                sql_ident(&schema),
                sql_ident(&table)
            );
            to_count.push((name.clone(), sql));
            if !in_extension {
                own_tables.insert(name);
            }
        }
    }
    let actual = count_rows(client, target, to_count, jobs).await?;
    let names: BTreeSet<&String> = record
        .row_counts
        .keys()
        .chain(schema_only.iter().copied())
        .chain(own_tables.iter())
        .collect();
    findings.tables = names
        .into_iter()
        .map(|name| TableCheck {
            table: name.clone(),
            expected: record.row_counts.get(name).copied(),
            actual: actual.get(name).copied(),
            schema_only: schema_only.contains(name) && !record.row_counts.contains_key(name),
        })
        .collect();

    let large_objects: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_largeobject_metadata",
            &[],
        )
        .await
        .map_err(q)?
        .get(0);
    findings.large_objects = Some(CountCheck {
        expected: Some(manifest.archive.large_objects),
        actual: Some(large_objects as u64),
    });

    // Objects: what the archive declares against what the restore created.
    let declared: BTreeSet<ArchiveObject> = archive.objects.iter().map(normalise).collect();
    let restored: BTreeSet<ArchiveObject> = client
        .query(RESTORED_OBJECTS_SQL, &[])
        .await
        .map_err(q)?
        .into_iter()
        .map(|row| {
            normalise(&ArchiveObject {
                kind: row.get(0),
                schema: row.get(1),
                name: row.get(2),
            })
        })
        .collect();
    findings.objects_checked = declared.len() as u64;
    findings.missing_objects = declared.difference(&restored).map(describe).collect();
    findings.extra_objects = restored.difference(&declared).map(describe).collect();
    Ok(())
}

/// Extensions are named without a schema on both sides.
fn normalise(o: &ArchiveObject) -> ArchiveObject {
    let mut o = o.clone();
    if o.kind == "EXTENSION" {
        o.schema.clear();
    }
    o
}

/// `table "Sales"."Order Lines"`, `function public.f(integer)`, `extension pg_trgm`.
fn describe(o: &ArchiveObject) -> String {
    let kind = o.kind.to_lowercase();
    match o.kind.as_str() {
        "EXTENSION" => format!("{kind} {}", quote_ident(&o.name)),
        "FUNCTION" | "PROCEDURE" | "CONSTRAINT" => {
            format!("{kind} {}.{}", quote_ident(&o.schema), o.name)
        }
        _ => format!("{kind} {}", qualified_name(&o.schema, &o.name)),
    }
}

/// Stores the verdict (compare-and-set on the status read at the start) and turns the outcome
/// into the operation's result.
async fn record_outcome(
    services: &Services,
    mut record: BackupRecord,
    verification: Verification,
    outcome: Outcome,
) -> Result<(BackupRecord, Result<Option<ErrorKind>, Error>), Error> {
    let seen = record.status;
    let (status, result) = match outcome {
        Outcome::Verified => (BackupStatus::Verified, Ok(None)),
        Outcome::Failed { kind, .. } => (BackupStatus::VerificationFailed, Ok(Some(kind))),
        Outcome::Inconclusive(e) => (seen, Err(e)),
    };
    match &result {
        Ok(None) => {
            tracing::info!(backup = %record.id, restore_ms = verification.restore_duration_ms, "verified")
        }
        _ => {
            tracing::info!(backup = %record.id, result = %verification.result, reason = verification.reason.as_deref().unwrap_or(""), "not verified")
        }
    }
    if status != seen {
        record.transition(status).map_err(CatalogError::from)?;
    }
    record.verification = Some(verification);
    super::state::update(services, &record, seen).await?;
    Ok((record, result))
}

async fn audit(
    services: &Services,
    request: &VerifyRequest,
    record: &BackupRecord,
) -> Result<(), Error> {
    let Some(v) = &record.verification else {
        return Ok(());
    };
    let now = Utc::now();
    let outcome = match &v.reason {
        None => "ok".to_owned(),
        Some(reason) => format!("{}: {reason}", v.result),
    };
    services
        .catalog
        .append_audit(&AuditEntry {
            id: BackupId::generate(now),
            at: now,
            actor: request.actor.clone(),
            action: "verify".into(),
            backup_id: Some(record.id.clone()),
            database: record.database.clone(),
            outcome,
            details: serde_json::json!({
                "result": v.result,
                "status": record.status,
                "scratch_server": v.scratch_server,
                "restore_duration_ms": v.restore_duration_ms,
                "duration_ms": v.duration_ms,
            }),
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_major_version_comes_from_the_record() {
        let mut r = BackupRecord::start(
            BackupId::generate(Utc::now()),
            "db",
            crate::model::BackupKind::Manual,
            crate::model::Compression::Zstd,
        );
        assert_eq!(source_major(&r), 0);
        r.server_version = Some("15.18 (Debian 15.18-0+deb12u1)".into());
        assert_eq!(source_major(&r), 15);
        r.server_version = Some("17devel".into());
        assert_eq!(source_major(&r), 17);
    }

    #[test]
    fn objects_are_described_unambiguously() {
        let o = |kind: &str, schema: &str, name: &str| ArchiveObject {
            kind: kind.into(),
            schema: schema.into(),
            name: name.into(),
        };
        assert_eq!(
            describe(&o("TABLE", "Sales", "Order Lines; x\"y")),
            "table \"Sales\".\"Order Lines; x\"\"y\""
        );
        assert_eq!(
            describe(&o("MATERIALIZED VIEW", "public", "totals")),
            "materialized view public.totals"
        );
        assert_eq!(
            describe(&o("FUNCTION", "public", "f(integer, public.hstore)")),
            "function public.f(integer, public.hstore)"
        );
        assert_eq!(
            describe(&o("EXTENSION", "whatever", "pg_trgm")),
            "extension pg_trgm"
        );
        assert_eq!(normalise(&o("EXTENSION", "x", "hstore")).schema, "");
    }

    #[test]
    fn schema_only_tables_must_be_restored_empty() {
        let check = |actual| TableCheck {
            table: "public.sessions".into(),
            expected: None,
            actual,
            schema_only: true,
        };
        assert!(check(Some(0)).matches());
        for (actual, needle) in [
            (None, "public.sessions (schema only) was not restored"),
            (Some(3), "public.sessions has 3 rows, the backup holds none"),
        ] {
            assert!(!check(actual).matches());
            let f = Findings {
                tables: vec![check(actual)],
                ..Findings::default()
            };
            let d = f.differences();
            assert!(d.len() == 1 && d[0].contains(needle), "{d:?}");
        }
        // The same table without the flag is a table the manifest does not know.
        let unknown = TableCheck {
            schema_only: false,
            ..check(Some(0))
        };
        assert!(!unknown.matches());
    }

    #[test]
    fn differences_name_tables_and_objects_and_cut_long_lists() {
        let mut f = Findings {
            tables: (0..7)
                .map(|i| TableCheck {
                    table: format!("public.t{i}"),
                    expected: Some(1),
                    actual: if i == 0 { Some(1) } else { None },
                    schema_only: false,
                })
                .collect(),
            large_objects: Some(CountCheck {
                expected: Some(2),
                actual: Some(1),
            }),
            missing_objects: vec!["index public.i".into()],
            ..Findings::default()
        };
        let d = f.differences();
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(
            d[0].contains("public.t1 was not restored (the manifest says 1 rows)"),
            "{d:?}"
        );
        assert!(d[0].ends_with("and 1 more"), "{d:?}");
        assert!(d[1].contains("1 large objects restored, the manifest says 2"));
        assert_eq!(d[2], "missing: index public.i");
        f.tables.truncate(1);
        f.large_objects = None;
        f.missing_objects.clear();
        assert!(f.differences().is_empty());
    }
}
