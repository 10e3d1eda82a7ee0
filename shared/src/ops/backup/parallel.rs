//! `backup --jobs N`: one snapshot, a schema stream and N data streams, one object each.
//!
//! A coordinator connection opens a REPEATABLE READ transaction, takes ACCESS SHARE locks on
//! every table the role can read (as `pg_dump -j` does for the tables it dumps, so no DDL that
//! would change a table's contents under the snapshot — TRUNCATE, DROP, ALTER — can slip in),
//! exports its snapshot and holds it until every stream has ended. Every pg_dump runs with
//! `--snapshot`, so all streams see the same database and the row counts read from each
//! stream add up to exactly one consistent dump.
//!
//! The schema stream is `--section=pre-data --section=post-data` with the backup's selection.
//! The tables are dealt largest first to the lightest of N data streams. Data stream 1 is
//! `--section=data` with the selection, minus (`--exclude-table-data`) the tables of the other
//! streams: it carries the sequences' values, the large objects and any table the others do
//! not name, exactly once. Streams 2..N name their tables with `--table` patterns that match
//! exactly one name (both parts double-quoted, quotes doubled, so no character of a hostile
//! name acts as a pattern character) and `--strict-names`.
//!
//! Which tables to deal: for the whole database (no schema or table pattern), the ordinary
//! tables the coordinator listed, so every stream starts at once. pg_dump still judges: a dealt
//! table missing from the schema stream's table of contents sends the data streams round again
//! with that list. A selection by name is interpreted by pg_dump alone, so there the schema
//! stream runs first and its table of contents is the list.
//!
//! Nothing is published until every stream succeeded: each stream ends with its upload still
//! open ([`stream_archive`]); the first failure stops the others (their pg_dump killed, their
//! uploads aborted), and only when all are whole are the uploads committed. A commit that
//! fails removes the objects already committed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use super::{BackupRequest, Error};
use crate::backends::Services;
use crate::keys::DataKey;
use crate::model::{qualified_name, ArchiveInfo, BackupPart, BackupRecord, TableEntry, TableName};
use crate::pipeline::crypt::{Header, HeaderFields};
use crate::pipeline::pg_dump::PgDump;
use crate::pipeline::{stream_archive, PipelineError, Progress, StoredObject, StreamOptions};
use crate::postgres::PgTarget;
use crate::store::ObjectUpload;

/// Most data streams one backup runs.
pub const MAX_JOBS: u32 = 32;

/// Tables the coordinator locks, with their sizes (for dealing them out): every ordinary and
/// partitioned table outside the system schemas that the role may read (pg_dump could not dump
/// any other). The last column says whether a dump of the whole database holds the table's
/// rows for certain: an ordinary table that neither is nor lies in a schema that is part of an
/// extension (pg_dump leaves those to the extension, or dumps their configuration rows only).
const TABLES: &str = "SELECT n.nspname, c.relname, pg_catalog.pg_table_size(c.oid)::int8, \
       c.relkind = 'r' AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d \
         WHERE d.deptype = 'e' \
           AND ((d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid) \
             OR (d.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass \
                 AND d.objid = n.oid))) \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' \
       AND n.nspname NOT LIKE 'pg\\_%' \
       AND pg_catalog.has_table_privilege(c.oid, 'SELECT') \
     ORDER BY 1, 2";

/// `"schema"."table"`: an identifier pair always quoted (quotes doubled), usable in SQL and as
/// a pg_dump pattern that matches exactly that one name.
pub fn exact_name(schema: &str, table: &str) -> String {
    format!(
        "\"{}\".\"{}\"",
        schema.replace('"', "\"\""),
        table.replace('"', "\"\"")
    )
}

/// One data stream's share: its tables and their total size.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Share {
    /// Tables, largest first.
    pub tables: Vec<TableName>,
    /// Their total size in bytes (plus the large objects for the first).
    pub bytes: u64,
}

/// Deals `tables` (with their sizes) to `jobs` shares, largest first to the lightest share (the
/// first share starts with `first_bytes`, the large objects it carries); ties go to the lower
/// share. Shares after the first that got no table are dropped.
pub fn deal(tables: &[(TableName, u64)], jobs: usize, first_bytes: u64) -> Vec<Share> {
    let mut shares = vec![Share::default(); jobs.max(1)];
    shares[0].bytes = first_bytes;
    let mut sorted: Vec<&(TableName, u64)> = tables.iter().collect();
    sorted.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| (&a.0.schema, &a.0.table).cmp(&(&b.0.schema, &b.0.table)))
    });
    for (table, bytes) in sorted {
        let lightest = (0..shares.len())
            .min_by_key(|&i| (shares[i].bytes, i))
            .expect("at least one share");
        shares[lightest].tables.push(table.clone());
        shares[lightest].bytes += bytes;
    }
    let mut out = vec![shares.remove(0)];
    out.extend(shares.into_iter().filter(|s| !s.tables.is_empty()));
    out
}

/// The coordinator: a transaction whose exported snapshot every pg_dump of the backup uses.
struct Coordinator {
    client: tokio_postgres::Client,
    snapshot: String,
    sizes: BTreeMap<TableName, u64>,
    /// The tables whose rows a dump of the whole database holds for certain (see [`TABLES`]).
    ordinary: Vec<TableName>,
    large_object_bytes: u64,
}

impl Coordinator {
    async fn open(target: &PgTarget) -> Result<Coordinator, Error> {
        let client = target.connect().await?;
        let q = |e: tokio_postgres::Error| Error::from(target.query_error(&e));
        client
            .batch_execute(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET LOCAL lock_timeout = '600s'",
            )
            .await
            .map_err(q)?;
        let rows = client.query(TABLES, &[]).await.map_err(q)?;
        let mut sizes = BTreeMap::new();
        let mut ordinary = Vec::new();
        let mut names = Vec::with_capacity(rows.len());
        for row in rows {
            let schema: String = row.get(0);
            let table: String = row.get(1);
            let bytes: i64 = row.get(2);
            names.push(exact_name(&schema, &table));
            let name = TableName { schema, table };
            if row.get::<_, bool>(3) {
                ordinary.push(name.clone());
            }
            sizes.insert(name, bytes.max(0) as u64);
        }
        for batch in names.chunks(1000) {
            let lock = format!("LOCK TABLE {} IN ACCESS SHARE MODE", batch.join(", "));
            client.batch_execute(&lock).await.map_err(q)?;
        }
        let row = client
            .query_one(
                "SELECT pg_catalog.pg_export_snapshot(), \
                 pg_catalog.pg_table_size('pg_catalog.pg_largeobject')::int8",
                &[],
            )
            .await
            .map_err(q)?;
        let snapshot: String = row.get(0);
        let large_object_bytes: i64 = row.get(1);
        Ok(Coordinator {
            client,
            snapshot,
            sizes,
            ordinary,
            large_object_bytes: large_object_bytes.max(0) as u64,
        })
    }

    /// A table's size when the coordinator locked it (0 for one it did not list).
    fn size_of(&self, t: &TableName) -> u64 {
        self.sizes.get(t).copied().unwrap_or(0)
    }

    /// The tables whose rows a dump of the whole database holds for certain, with their sizes.
    fn ordinary_tables(&self) -> Vec<(TableName, u64)> {
        self.ordinary
            .iter()
            .map(|t| (t.clone(), self.size_of(t)))
            .collect()
    }

    async fn close(self) {
        if let Err(e) = self.client.batch_execute("COMMIT").await {
            tracing::debug!(error = %e, "could not end the coordinator's transaction");
        }
    }
}

/// What one stream needs besides its arguments and key.
#[derive(Clone)]
struct StreamEnv {
    services: Services,
    pg_dump: std::path::PathBuf,
    target: PgTarget,
    key: DataKey,
    fields: HeaderFields,
    chunk_size: u32,
    options: StreamOptions,
    progress: Arc<Progress>,
}

impl StreamEnv {
    /// Runs one pg_dump with `args` into `object_key`, the upload left open.
    async fn stream(
        &self,
        object_key: &str,
        args: &[String],
        cancel: watch::Receiver<bool>,
    ) -> Result<(Box<dyn ObjectUpload>, StoredObject), StreamFailure> {
        let header = Header::new(self.fields.clone(), self.chunk_size)
            .map_err(|e| StreamFailure::own(Error::Integrity(e.into())))?;
        let upload = self
            .services
            .store
            .create(object_key)
            .await
            .map_err(|e| StreamFailure::own(e.into()))?;
        let (dump, stdout) = match PgDump::spawn(&self.pg_dump, &self.target, args) {
            Ok(started) => started,
            Err(e) => {
                let _ = upload.abort().await;
                return Err(StreamFailure::own(e.into()));
            }
        };
        let cancelled = async move {
            let mut cancel = cancel;
            if cancel.wait_for(|c| *c).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let streamed = stream_archive(
            dump,
            stdout,
            upload,
            header,
            &self.key,
            self.options,
            self.progress.clone(),
            cancelled,
        )
        .await;
        streamed.map_err(|e| match e {
            PipelineError::Cancelled => StreamFailure {
                error: Error::Io {
                    context: "writing the backup",
                    source: std::io::Error::other(format!(
                        "{object_key}: stopped because another stream of the backup failed"
                    )),
                },
                stopped: true,
            },
            other => StreamFailure::own(other.into()),
        })
    }
}

/// Why a stream ended without its object: a failure of its own, or stopped by another's
/// (whose error, not this one, is the backup's).
struct StreamFailure {
    error: Error,
    stopped: bool,
}

impl StreamFailure {
    fn own(error: Error) -> Self {
        StreamFailure {
            error,
            stopped: false,
        }
    }
}

/// Takes the dump of a `--jobs N` backup into the schema object and its data parts, fills the
/// record (size and checksum of the schema object, row counts, parts) and returns what the
/// archives hold, for the manifest. On failure nothing is left in the store.
pub(super) async fn dump(
    services: &Services,
    request: &BackupRequest,
    record: &mut BackupRecord,
    pg_dump: &Path,
    key: &DataKey,
    fields: HeaderFields,
    progress: Arc<Progress>,
) -> Result<ArchiveInfo, Error> {
    let jobs = request.jobs.clamp(1, MAX_JOBS) as usize;
    let coordinator = Coordinator::open(&request.target).await?;
    let env = StreamEnv {
        services: services.clone(),
        pg_dump: pg_dump.to_owned(),
        target: request.target.clone(),
        key: key.clone(),
        fields,
        chunk_size: request.chunk_size,
        // The streams are the parallelism: each compresses with the request's workers (one by
        // default, see `DEFAULT_ZSTD_WORKERS`), so memory grows by one compressor per stream
        // (docs/OPERATIONS.md, "Memory").
        options: StreamOptions {
            compression: request.compression,
            zstd_workers: request.zstd_workers,
        },
        progress,
    };
    let result = dump_streams(&env, request, record, &coordinator, jobs).await;
    coordinator.close().await;
    result
}

async fn dump_streams(
    env: &StreamEnv,
    request: &BackupRequest,
    record: &mut BackupRecord,
    coordinator: &Coordinator,
    jobs: usize,
) -> Result<ArchiveInfo, Error> {
    let snapshot = format!("--snapshot={}", coordinator.snapshot);
    let selection = &request.selection;
    let mut schema_args = vec![
        snapshot.clone(),
        "--section=pre-data".to_owned(),
        "--section=post-data".to_owned(),
    ];
    schema_args.extend(selection.pg_dump_args());
    let schema_job = (record.object_key.clone(), schema_args);
    // pg_dump includes large objects unless the selection names schemas or tables.
    let first_bytes = if selection.include_schemas.is_empty() && selection.include_tables.is_empty()
    {
        coordinator.large_object_bytes
    } else {
        0
    };
    let plan = |tables: &[(TableName, u64)]| {
        let shares = deal(tables, jobs, first_bytes);
        let jobs = data_jobs(&snapshot, request, record, &shares);
        (shares, jobs)
    };

    let (schema, early) = if selects_by_name(request) {
        // The tables are known only from the schema stream's table of contents: it first.
        let schema = run_streams(env, vec![schema_job]).await?.remove(0);
        (schema, None)
    } else {
        // The whole database: the catalog says which tables hold data, so the data streams
        // start with the schema stream instead of after it (its pg_dump start-up and catalog
        // reads were on the critical path).
        let (shares, data) = plan(&coordinator.ordinary_tables());
        tracing::info!(backup = %record.id, streams = shares.len(), "dumping the schema and the data in parallel");
        let mut streamed =
            run_streams(env, std::iter::once(schema_job).chain(data).collect()).await?;
        let schema = streamed.remove(0);
        (schema, Some((shares, streamed)))
    };
    let in_schema: BTreeSet<&TableName> = schema.2.archive.schema_only_tables.iter().collect();
    if let Some((shares, parts)) = early {
        // pg_dump stays the judge of what the dump holds: a table the catalog query dealt to
        // a named stream must have its definition in the schema. If one does not (a rule of
        // pg_dump's the query missed), the data is dumped again from the schema's own list.
        match shares[1..]
            .iter()
            .flat_map(|s| &s.tables)
            .find(|t| !in_schema.contains(t))
        {
            None => return publish(env, record, schema, parts).await,
            Some(t) => {
                tracing::warn!(backup = %record.id, table = %qualified_name(&t.schema, &t.table), "a table the catalog listed is not in pg_dump's schema; dumping the data again from the schema's table list");
                discard(parts).await;
            }
        }
    }

    let tables: Vec<(TableName, u64)> = in_schema
        .into_iter()
        .map(|t| (t.clone(), coordinator.size_of(t)))
        .collect();
    let (shares, data) = plan(&tables);
    tracing::info!(backup = %record.id, streams = shares.len(), tables = tables.len(), "dumping the data in parallel");
    match run_streams(env, data).await {
        Ok(parts) => publish(env, record, schema, parts).await,
        Err(e) => {
            discard(vec![schema]).await;
            Err(e)
        }
    }
}

/// Whether the selection names schemas or tables, whose patterns only pg_dump interprets.
fn selects_by_name(request: &BackupRequest) -> bool {
    let s = &request.selection;
    !(s.include_schemas.is_empty()
        && s.exclude_schemas.is_empty()
        && s.include_tables.is_empty()
        && s.exclude_tables.is_empty())
}

/// The data streams' `(object key, pg_dump arguments)`, one per share. The first is
/// `--section=data` with the selection minus the other shares' tables; the others name their
/// tables exactly.
fn data_jobs(
    snapshot: &str,
    request: &BackupRequest,
    record: &BackupRecord,
    shares: &[Share],
) -> Vec<(String, Vec<String>)> {
    shares
        .iter()
        .enumerate()
        .map(|(i, share)| {
            let mut args = vec![snapshot.to_owned(), "--section=data".to_owned()];
            if i == 0 {
                args.extend(request.selection.pg_dump_args());
                for other in &shares[1..] {
                    args.extend(other.tables.iter().map(|t| {
                        format!("--exclude-table-data={}", exact_name(&t.schema, &t.table))
                    }));
                }
            } else {
                args.push("--strict-names".to_owned());
                args.extend(
                    share
                        .tables
                        .iter()
                        .map(|t| format!("--table={}", exact_name(&t.schema, &t.table))),
                );
                args.extend(
                    request
                        .selection
                        .exclude_table_data
                        .iter()
                        .map(|p| format!("--exclude-table-data={p}")),
                );
            }
            (crate::model::part_key(&record.object_key, i + 1), args)
        })
        .collect()
}

/// A stream that ended whole: its object key, its upload still open, what it stored.
type Streamed = (String, Box<dyn ObjectUpload>, StoredObject);

/// Runs every `(object key, pg_dump arguments)` stream concurrently and returns them whole,
/// in order, with their uploads open. The first failure stops the others; then every upload
/// is aborted and the error of the stream that failed first (not of one it stopped) returned.
async fn run_streams(
    env: &StreamEnv,
    jobs: Vec<(String, Vec<String>)>,
) -> Result<Vec<Streamed>, Error> {
    let (stop, cancel) = watch::channel(false);
    let stop = Arc::new(stop);
    let mut tasks = Vec::new();
    for (key, args) in jobs {
        let env = env.clone();
        let cancel = cancel.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let result = env.stream(&key, &args, cancel).await;
            if result.is_err() {
                let _ = stop.send(true);
            }
            (key, result)
        }));
    }
    let mut done = Vec::new();
    let mut failure: Option<StreamFailure> = None;
    for task in tasks {
        match task.await {
            Ok((key, Ok((upload, stored)))) => done.push((key, upload, stored)),
            Ok((_, Err(e))) => {
                if failure.as_ref().is_none_or(|f| f.stopped && !e.stopped) {
                    failure = Some(e);
                }
            }
            Err(join) => {
                let _ = stop.send(true);
                if failure.as_ref().is_none_or(|f| f.stopped) {
                    failure = Some(StreamFailure::own(Error::Io {
                        context: "writing the backup",
                        source: std::io::Error::other(format!("a dump stream panicked: {join}")),
                    }));
                }
            }
        }
    }
    match failure {
        None => Ok(done),
        Some(f) => {
            discard(done).await;
            Err(f.error)
        }
    }
}

/// Commits the schema object and the parts together (a commit that fails removes those
/// already committed) and fills the record.
async fn publish(
    env: &StreamEnv,
    record: &mut BackupRecord,
    schema: Streamed,
    parts: Vec<Streamed>,
) -> Result<ArchiveInfo, Error> {
    let (schema_key, schema_upload, schema) = schema;
    let mut committed: Vec<String> = Vec::new();
    let mut stored = Vec::new();
    let mut pending = vec![(schema_key, schema_upload)];
    for (key, upload, part) in parts {
        pending.push((key.clone(), upload));
        stored.push((key, part));
    }
    let mut pending = pending.into_iter();
    while let Some((key, upload)) = pending.next() {
        if let Err(e) = upload.commit().await {
            for (_, rest) in pending {
                let _ = rest.abort().await;
            }
            for key in &committed {
                if let Err(d) = env.services.store.delete(key).await {
                    tracing::error!(error = %d, key = %key, "could not remove a part after another failed to commit; the next prune will");
                }
            }
            return Err(e.into());
        }
        committed.push(key);
    }
    Ok(fill_record(record, &schema, &stored))
}

/// Aborts the uploads of streams that ended whole, after a failure elsewhere.
async fn discard(streamed: Vec<Streamed>) {
    for (_, upload, _) in streamed {
        if let Err(e) = upload.abort().await {
            tracing::error!(error = %e, "could not discard a part of the failed backup");
        }
    }
}

/// The record's size, checksum, counts and parts, and the manifest's archive summary, from
/// the schema object and the data parts.
fn fill_record(
    record: &mut BackupRecord,
    schema: &StoredObject,
    parts: &[(String, StoredObject)],
) -> ArchiveInfo {
    record.size_bytes = Some(schema.size);
    record.sha256 = Some(schema.sha256.clone());
    let mut tables = Vec::new();
    let mut with_data = BTreeSet::new();
    let mut large_objects = 0;
    let mut archive_bytes = schema.archive_bytes;
    record.row_counts.clear();
    record.parts.clear();
    for (key, stored) in parts {
        let mut names = Vec::new();
        for t in &stored.archive.tables {
            let name = qualified_name(&t.schema, &t.table);
            record.row_counts.insert(name.clone(), t.rows);
            if with_data.insert((t.schema.clone(), t.table.clone())) {
                tables.push(TableEntry {
                    schema: t.schema.clone(),
                    table: t.table.clone(),
                    rows: t.rows,
                });
            }
            names.push(name);
        }
        large_objects += stored.archive.large_objects;
        archive_bytes += stored.archive_bytes;
        record.parts.push(BackupPart {
            object_key: key.clone(),
            size_bytes: Some(stored.size),
            sha256: Some(stored.sha256.clone()),
            tables: names,
            large_objects: stored.archive.large_objects,
            archive_bytes: stored.archive_bytes,
        });
    }
    let schema_only: Vec<TableName> = schema
        .archive
        .schema_only_tables
        .iter()
        .filter(|t| !with_data.contains(&(t.schema.clone(), t.table.clone())))
        .cloned()
        .collect();
    record.schema_only_tables = schema_only
        .iter()
        .map(|t| qualified_name(&t.schema, &t.table))
        .collect();
    ArchiveInfo {
        format: "pg_dump custom".into(),
        archive_version: schema.archive.archive_version.clone(),
        dump_version: schema.archive.dump_version.clone(),
        archive_bytes,
        tables,
        schema_only_tables: schema_only,
        large_objects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TableName {
        TableName {
            schema: "public".into(),
            table: name.into(),
        }
    }

    #[test]
    fn names_are_always_quoted_exactly() {
        assert_eq!(exact_name("public", "t"), "\"public\".\"t\"");
        assert_eq!(
            exact_name("We\"ird", "a.b*?$ \"x\""),
            "\"We\"\"ird\".\"a.b*?$ \"\"x\"\"\""
        );
    }

    #[test]
    fn tables_are_dealt_largest_first_to_the_lightest_share() {
        let tables = vec![
            (t("a"), 10),
            (t("b"), 100),
            (t("c"), 60),
            (t("d"), 50),
            (t("e"), 0),
        ];
        let shares = deal(&tables, 3, 5);
        assert_eq!(shares.len(), 3);
        assert_eq!(shares[0].tables, vec![t("d"), t("a")]);
        assert_eq!(shares[1].tables, vec![t("b")]);
        assert_eq!(shares[2].tables, vec![t("c"), t("e")]);
        assert_eq!(shares.iter().map(|s| s.bytes).sum::<u64>(), 225);
        // More streams than tables: only the first share may be empty.
        let shares = deal(&[(t("a"), 1)], 4, 0);
        assert_eq!(shares.len(), 1);
        assert!(deal(&[], 3, 0)[0].tables.is_empty());
    }
}
