//! `pgkeep cat`: the original archive to stdout, or to a file that appears only when complete
//! (written through `pgkeep::outfile`: private, exclusive, never through a symlink). From the
//! catalog by id, or (`--manifest`) straight from a manifest and the object beside it.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use pgkeep::backends::{KeyUse, RepoUrl};
use pgkeep::keys::KeyProvider;
use pgkeep::model::BackupRecord;
use pgkeep::ops;
use pgkeep::ops::read::ArchiveStream;
use pgkeep::outfile::{OutputError, OutputFile};
use pgkeep::store::fs::FsStore;
use pgkeep::store::ObjectStore;
use tokio::io::AsyncWriteExt;

use super::{parse_id, usage, Failure};
use crate::args::CatArgs;
use crate::resolve::Resolver;

pub async fn run(resolver: &Resolver<'_>, args: &CatArgs) -> Result<u8, Failure> {
    if args.output.is_none() && std::io::stdout().is_terminal() {
        return Err(usage(
            "refusing to write a binary archive to a terminal: pipe it (pgkeep cat ID | pg_restore ...) or use -o FILE",
        ));
    }
    let output = args.output.as_deref();
    let archive = match (&args.manifest, &args.id) {
        (Some(manifest), _) => {
            let (store, keys, name) = beside_manifest(resolver, manifest).await?;
            let manifest = ops::read::read_manifest(store.as_ref(), name).await?;
            if !manifest.backup.parts.is_empty() {
                let (store, keys) = (store.as_ref(), keys.as_ref());
                return cat_parts(store, keys, &manifest.backup, output).await;
            }
            ops::read::open_from_manifest(store.as_ref(), keys.as_ref(), &manifest).await?
        }
        (None, Some(id)) => {
            let id = parse_id(id)?;
            let services = resolver.open(KeyUse::Read).await?;
            if let Some(record) = ops::read::parallel_record(&services, &id).await? {
                let (store, keys) = (services.store.as_ref(), services.keys.as_ref());
                return cat_parts(store, keys, &record, output).await;
            }
            ops::read::open_archive(&services, &id).await?.1
        }
        (None, None) => return Err(usage("give a backup ID or --manifest")),
    };
    cat(archive, output).await
}

/// The store holding the manifest at `location` (a path or s3://bucket/key), rooted at the
/// manifest's folder, the configured key alone (no repository setting, no catalog), and the
/// manifest's name in that store.
async fn beside_manifest<'a>(
    resolver: &Resolver<'_>,
    location: &'a str,
) -> Result<(Box<dyn ObjectStore>, Arc<dyn KeyProvider>, &'a str), Failure> {
    let config = resolver.backend_config()?;
    let s3 = location.starts_with("s3://");
    let aws = if s3 || config.uses_aws() {
        Some(config.load_aws().await.map_err(ops::Error::from)?)
    } else {
        None
    };
    let keys = config
        .open_keys(KeyUse::Read, aws.as_ref())
        .map_err(ops::Error::from)?;
    let (dir, name) = location.rsplit_once('/').unwrap_or((".", location));
    let store: Box<dyn ObjectStore> = match (s3, aws.as_ref()) {
        (true, Some(aws)) => match RepoUrl::parse(dir).map_err(ops::Error::from)? {
            RepoUrl::S3 { bucket, prefix } => Box::new(config.s3_store(aws, &bucket, &prefix)),
            RepoUrl::File(_) => unreachable!("an s3:// URL parses as S3"),
        },
        _ => Box::new(FsStore::new(if dir.is_empty() { "/" } else { dir })),
    };
    Ok((store, keys, name))
}

async fn cat(mut archive: ArchiveStream, output: Option<&Path>) -> Result<u8, Failure> {
    match output {
        None => {
            let mut stdout = tokio::io::stdout();
            tokio::io::copy(&mut archive, &mut stdout)
                .await
                .map_err(|e| ops::Error::from_read("writing the archive to stdout", e))?;
            stdout.flush().await.context("flushing stdout")?;
        }
        Some(path) => {
            let mut out = OutputFile::create(path).await.map_err(output_failure)?;
            let copied = tokio::select! {
                r = tokio::io::copy(&mut archive, out.writer()) => Ok(r),
                signal = pgkeep::signals::received() => Err(signal.exit_code()),
            };
            match copied {
                // Dropping `out` removes the unfinished temporary file.
                Err(code) => {
                    drop(out);
                    eprintln!("pgkeep: interrupted; {} was not written", path.display());
                    return Ok(code);
                }
                Ok(r) => {
                    r.map_err(|e| ops::Error::from_read("writing the archive", e))?;
                }
            }
            out.commit().await.map_err(output_failure)?;
        }
    }
    Ok(0)
}

/// A parallel backup's parts as one archive (`ops::read::cat_parts`); into a regular file with
/// the data offsets written afterwards, so `pg_restore -j` works on it.
async fn cat_parts(
    store: &dyn ObjectStore,
    keys: &dyn KeyProvider,
    record: &BackupRecord,
    output: Option<&Path>,
) -> Result<u8, Failure> {
    let Some(path) = output else {
        let mut stdout = tokio::io::stdout();
        ops::read::cat_parts(store, keys, record, &mut stdout).await?;
        stdout.flush().await.context("flushing stdout")?;
        return Ok(0);
    };
    let mut out = OutputFile::create(path).await.map_err(output_failure)?;
    let written = tokio::select! {
        r = ops::read::cat_parts(store, keys, record, out.writer()) => Ok(r),
        signal = pgkeep::signals::received() => Err(signal.exit_code()),
    };
    let merger = match written {
        // Dropping `out` removes the unfinished temporary file.
        Err(code) => {
            drop(out);
            eprintln!("pgkeep: interrupted; {} was not written", path.display());
            return Ok(code);
        }
        Ok(r) => r?,
    };
    if out.is_regular_file() {
        ops::read::write_offsets(&merger, out.writer()).await?;
    }
    out.commit().await.map_err(output_failure)?;
    Ok(0)
}

fn output_failure(e: OutputError) -> Failure {
    Failure {
        code: e.kind().exit_code() as u8,
        message: e.to_string(),
    }
}
