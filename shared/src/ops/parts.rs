//! Reading and restoring a parallel backup (`backup --jobs N`): a schema object and data parts.
//!
//! A restore runs in pg_restore's own three steps, so that nothing but the small schema object
//! is ever staged: `--section=pre-data` from the staged schema object (tables, types,
//! functions, large objects' metadata), then every data part at once, each `pg_restore` fed
//! from its decrypting stream, then `--section=post-data --jobs N` (indexes, constraints,
//! triggers) from the staged schema object again. Every part is read to its end, so each
//! part's final chunk and SHA-256 are checked as a single object's are.

use std::path::Path;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::replay::{self, ReadFailure, Sink};
use super::restore::StagedArchive;
use super::Error;
use crate::backends::Services;
use crate::model::{BackupRecord, TableName};
use crate::pipeline::archive_scan::ArchiveSummary;
use crate::pipeline::pg_restore::{PgRestore, RestoreOptions};
use crate::pipeline::Progress;
use crate::postgres::PgTarget;

/// Why restoring the parts failed: the backup could not be read, or pg_restore failed.
#[derive(Debug)]
pub(crate) enum PartsFailure {
    /// Reading a part failed (whose fault: see [`ReadFailure`]).
    Read(ReadFailure),
    /// pg_restore failed (the archive does not restore), or could not start.
    Restore(Error),
}

impl PartsFailure {
    /// The error, whatever failed.
    pub fn into_error(self) -> Error {
        match self {
            PartsFailure::Read(r) => r.into_error(),
            PartsFailure::Restore(e) => e,
        }
    }
}

/// Reads the schema object whole (checked) into a private staged file in `dir`, and returns it
/// with what it declares (its schema objects, collected).
pub(crate) async fn stage_schema(
    services: &Services,
    record: &BackupRecord,
    dir: &Path,
) -> Result<(StagedArchive, ArchiveSummary), ReadFailure> {
    let (staged, file) = StagedArchive::create(dir, &record.id)
        .await
        .map_err(ReadFailure::Environment)?;
    let stream = replay::open(services, record).await?;
    let summary = replay::replay(
        services,
        record,
        stream,
        vec![Sink::File(file)],
        Arc::default(),
    )
    .await?;
    Ok((staged, summary))
}

/// Reads every data part to its end, all at once, feeding nothing (a check that every part is
/// whole before a database is touched); their summaries in part order.
pub(crate) async fn check_parts(
    services: &Services,
    record: &BackupRecord,
    progress: Arc<Progress>,
) -> Result<Vec<ArchiveSummary>, ReadFailure> {
    let mut set = JoinSet::new();
    for (i, part) in record.parts.iter().enumerate() {
        let services = services.clone();
        let part = record.for_part(part);
        let progress = progress.clone();
        set.spawn(async move {
            let stream = replay::open_part(&services, &part)
                .await
                .map_err(PartsFailure::Read)?;
            let summary = replay::replay(&services, &part, stream, Vec::new(), progress)
                .await
                .map_err(PartsFailure::Read)?;
            Ok((i, summary))
        });
    }
    collect(set, record.parts.len()).await.map_err(|f| match f {
        PartsFailure::Read(r) => r,
        PartsFailure::Restore(e) => ReadFailure::Environment(e),
    })
}

/// Restores the backup into `target`: pre-data from `schema` (the staged schema object), the
/// data parts concurrently from their streams, then post-data with `jobs` workers. Returns
/// the data parts' summaries in part order.
pub(crate) async fn restore_parts(
    services: &Services,
    record: &BackupRecord,
    pg_restore: &Path,
    target: &PgTarget,
    options: RestoreOptions,
    schema: &Path,
    progress: Arc<Progress>,
) -> Result<Vec<ArchiveSummary>, PartsFailure> {
    let step = |section: &'static str, jobs: u32| RestoreOptions {
        jobs,
        section: Some(section),
        ..options
    };
    run_file(pg_restore, target, step("pre-data", 1), schema).await?;

    let mut set = JoinSet::new();
    for (i, part) in record.parts.iter().enumerate() {
        let services = services.clone();
        let part = record.for_part(part);
        let progress = progress.clone();
        let pg_restore = pg_restore.to_owned();
        let target = target.clone();
        let data = step("data", 1);
        set.spawn(async move {
            let stream = replay::open_part(&services, &part)
                .await
                .map_err(PartsFailure::Read)?;
            let (mut child, stdin) = PgRestore::restore(&pg_restore, &target, data, None)
                .map_err(|e| PartsFailure::Restore(e.into()))?;
            let sinks = vec![Sink::Child(stdin.expect("stdin is piped"))];
            match replay::replay(&services, &part, stream, sinks, progress).await {
                Ok(summary) => {
                    child
                        .finish()
                        .await
                        .map_err(|e| PartsFailure::Restore(e.into()))?;
                    Ok((i, summary))
                }
                Err(failure) => {
                    child.kill();
                    let _ = child.finish().await;
                    Err(PartsFailure::Read(failure))
                }
            }
        });
    }
    let summaries = collect(set, record.parts.len()).await?;

    run_file(
        pg_restore,
        target,
        step("post-data", options.jobs.max(1)),
        schema,
    )
    .await?;
    Ok(summaries)
}

/// One pg_restore step from a file.
async fn run_file(
    pg_restore: &Path,
    target: &PgTarget,
    options: RestoreOptions,
    file: &Path,
) -> Result<(), PartsFailure> {
    let (child, _) = PgRestore::restore(pg_restore, target, options, Some(file))
        .map_err(|e| PartsFailure::Restore(e.into()))?;
    child
        .finish()
        .await
        .map_err(|e| PartsFailure::Restore(e.into()))?;
    Ok(())
}

/// Waits for every task; the first failure (a read failure before a restore failure: a bad
/// part makes its pg_restore fail too) wins, and the remaining tasks are stopped.
async fn collect(
    mut set: JoinSet<Result<(usize, ArchiveSummary), PartsFailure>>,
    n: usize,
) -> Result<Vec<ArchiveSummary>, PartsFailure> {
    let mut out: Vec<Option<ArchiveSummary>> = vec![None; n];
    let mut failure: Option<PartsFailure> = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok((i, summary))) => out[i] = Some(summary),
            Ok(Err(f)) => {
                let replace = matches!(
                    (&failure, &f),
                    (None, _) | (Some(PartsFailure::Restore(_)), PartsFailure::Read(_))
                );
                if replace {
                    failure = Some(f);
                }
                set.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                set.abort_all();
                failure.get_or_insert(PartsFailure::Restore(Error::Io {
                    context: "restoring the parts",
                    source: std::io::Error::other(format!("a part's task panicked: {e}")),
                }));
            }
        }
    }
    match failure {
        Some(f) => Err(f),
        None => Ok(out
            .into_iter()
            .map(|s| s.expect("every part ended"))
            .collect()),
    }
}

/// One summary of the whole backup: the schema object's objects and definitions, the parts'
/// tables and large objects.
pub(crate) fn combine(schema: ArchiveSummary, parts: Vec<ArchiveSummary>) -> ArchiveSummary {
    let mut combined = schema;
    combined.tables.clear();
    combined.large_objects = 0;
    for part in parts {
        combined.tables.extend(part.tables);
        combined.large_objects += part.large_objects;
    }
    let with_data: std::collections::BTreeSet<(&str, &str)> = combined
        .tables
        .iter()
        .map(|t| (t.schema.as_str(), t.table.as_str()))
        .collect();
    let schema_only: Vec<TableName> = combined
        .schema_only_tables
        .iter()
        .filter(|t| !with_data.contains(&(t.schema.as_str(), t.table.as_str())))
        .cloned()
        .collect();
    combined.schema_only_tables = schema_only;
    combined
}
