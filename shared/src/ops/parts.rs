//! Reading and restoring a parallel backup (`backup --jobs N`): a schema object and data parts.
//!
//! A restore runs in pg_restore's own three steps, so that nothing but the small schema object
//! is ever staged: `--section=pre-data` from the staged schema object (tables, types,
//! functions, large objects' metadata), then every data part at once, each `pg_restore` fed
//! from its decrypting stream, then `--section=post-data --jobs N` (indexes, constraints,
//! triggers) from the staged schema object again. The indexes and keys of a part's tables do
//! not wait for the last step: they are built as soon as the part is in, beside the parts
//! still loading (`parts/post_data.rs`), as `pg_restore -j` does with a directory archive. Every part is read to its end, so each
//! part's final chunk and SHA-256 are checked as a single object's are.

use std::path::Path;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

use post_data::PostDataPlan;

use super::replay::{self, ReadFailure, Sink};
use super::restore::StagedArchive;
use super::Error;
use crate::backends::Services;
use crate::model::{BackupId, BackupRecord, TableName};
use crate::pipeline::archive_scan::{ArchiveSummary, TocEntry};
use crate::pipeline::pg_restore::{PgRestore, RestoreOptions};
use crate::pipeline::Progress;
use crate::postgres::PgTarget;

mod post_data;

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

/// Restores the backup into `target`: pre-data from `schema` (the staged schema object, whose
/// TOC is `toc`), the data parts concurrently from their streams, each part's indexes and keys
/// as soon as its tables are in (beside the parts still loading; see [`post_data`]), then the
/// rest of post-data with `jobs` workers. Returns the
/// data parts' summaries in part order.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn restore_parts(
    services: &Services,
    record: &BackupRecord,
    pg_restore: &Path,
    target: &PgTarget,
    options: RestoreOptions,
    schema: &Path,
    toc: &[TocEntry],
    progress: Arc<Progress>,
) -> Result<Vec<ArchiveSummary>, PartsFailure> {
    let step = |section: &'static str, jobs: u32| RestoreOptions {
        jobs,
        section: Some(section),
        ..options
    };
    run_file(pg_restore, target, step("pre-data", 1), schema, None).await?;

    let mut parts = JoinSet::new();
    for (i, part) in record.parts.iter().enumerate() {
        let services = services.clone();
        let part = record.for_part(part);
        let progress = progress.clone();
        let pg_restore = pg_restore.to_owned();
        let target = target.clone();
        let data = step("data", 1);
        parts.spawn(async move {
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

    let tables: Vec<&[String]> = record.parts.iter().map(|p| p.tables.as_slice()).collect();
    let mut plan = PostDataPlan::new(toc, &tables);
    let lists = schema.parent().unwrap_or(Path::new("."));
    let mut early = JoinSet::new();
    let mut queued: Vec<i64> = Vec::new();
    let mut out: Vec<Option<ArchiveSummary>> = vec![None; record.parts.len()];
    let mut failure: Option<PartsFailure> = None;
    let slots = options.jobs.max(1) as usize;
    loop {
        // One such step runs beside the loading parts, more once parts have finished, up to
        // `jobs` pg_restores in all; with nothing left loading, a last batch waits for the
        // final step (which runs it with `jobs` workers).
        let start = if parts.is_empty() {
            !early.is_empty() && early.len() < slots
        } else {
            early.is_empty() || parts.len() + early.len() < slots
        };
        if failure.is_none() && start && !queued.is_empty() {
            let ids = std::mem::take(&mut queued);
            tracing::debug!(
                entries = ids.len(),
                "restoring indexes and keys of loaded parts"
            );
            let (pg_restore, target, schema) =
                (pg_restore.to_owned(), target.clone(), schema.to_owned());
            let (list, record_id) = (lists.to_owned(), record.id.clone());
            let options = step("post-data", 1);
            early.spawn(async move {
                let list = write_list(&list, &record_id, &ids).await?;
                run_file(&pg_restore, &target, options, &schema, Some(&list.path)).await
            });
        }
        if parts.is_empty() && early.is_empty() {
            break;
        }
        let joined = tokio::select! {
            Some(joined) = parts.join_next(), if !parts.is_empty() => joined.map(|r| r.map(Some)),
            Some(joined) = early.join_next(), if !early.is_empty() => joined.map(|r| r.map(|()| None)),
        };
        match joined {
            Ok(Ok(Some((i, summary)))) => {
                out[i] = Some(summary);
                queued.extend(plan.part_loaded(i));
            }
            Ok(Ok(None)) => {}
            Ok(Err(f)) => {
                note(&mut failure, f);
                parts.abort_all();
                early.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                parts.abort_all();
                early.abort_all();
                note(&mut failure, panicked(e));
            }
        }
    }
    if let Some(f) = failure {
        return Err(f);
    }
    plan.unclaim(&queued);

    let rest = write_list(lists, &record.id, &plan.rest()).await?;
    run_file(
        pg_restore,
        target,
        step("post-data", options.jobs.max(1)),
        schema,
        Some(&rest.path),
    )
    .await?;
    Ok(out
        .into_iter()
        .map(|s| s.expect("every part ended"))
        .collect())
}

/// A private `--use-list` file naming `ids` in `dir`, removed when dropped.
async fn write_list(dir: &Path, id: &BackupId, ids: &[i64]) -> Result<StagedArchive, PartsFailure> {
    let failed = |source| {
        PartsFailure::Restore(Error::Io {
            context: "writing a pg_restore list file",
            source,
        })
    };
    let (list, mut file) = StagedArchive::create(dir, id)
        .await
        .map_err(PartsFailure::Restore)?;
    file.write_all(post_data::use_list(ids).as_bytes())
        .await
        .map_err(failed)?;
    file.flush().await.map_err(failed)?;
    Ok(list)
}

/// One pg_restore step from a file, of the entries `list` names (else of all).
async fn run_file(
    pg_restore: &Path,
    target: &PgTarget,
    options: RestoreOptions,
    file: &Path,
    list: Option<&Path>,
) -> Result<(), PartsFailure> {
    let (child, _) = PgRestore::restore_entries(pg_restore, target, options, Some(file), list)
        .map_err(|e| PartsFailure::Restore(e.into()))?;
    child
        .finish()
        .await
        .map_err(|e| PartsFailure::Restore(e.into()))?;
    Ok(())
}

/// Keeps the failure that explains most: a read failure before a restore failure (a bad part
/// makes its pg_restore fail too), else the first.
fn note(failure: &mut Option<PartsFailure>, f: PartsFailure) {
    let replace = matches!(
        (&*failure, &f),
        (None, _) | (Some(PartsFailure::Restore(_)), PartsFailure::Read(_))
    );
    if replace {
        *failure = Some(f);
    }
}

/// A task that panicked, as a failure.
fn panicked(e: tokio::task::JoinError) -> PartsFailure {
    PartsFailure::Restore(Error::Io {
        context: "restoring the parts",
        source: std::io::Error::other(format!("a part's task panicked: {e}")),
    })
}

/// Waits for every task; the first failure (see [`note`]) wins, and the remaining tasks are
/// stopped.
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
                note(&mut failure, f);
                set.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                set.abort_all();
                note(&mut failure, panicked(e));
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
