//! `pgkeep cat`: the original archive to stdout, or to a file that appears only when complete
//! (written through `pgkeep::outfile`: private, exclusive, never through a symlink).

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context as _;
use pgkeep::backends::KeyUse;
use pgkeep::model::BackupId;
use pgkeep::ops;
use pgkeep::outfile::{OutputError, OutputFile};
use tokio::io::AsyncWriteExt;

use super::{parse_id, usage, Failure};
use crate::args::CatArgs;
use crate::resolve::Resolver;

pub async fn run(resolver: &Resolver<'_>, args: &CatArgs) -> Result<u8, Failure> {
    let id = parse_id(&args.id)?;
    if args.output.is_none() && std::io::stdout().is_terminal() {
        return Err(usage(
            "refusing to write a binary archive to a terminal: pipe it (pgkeep cat ID | pg_restore ...) or use -o FILE",
        ));
    }
    let services = resolver.open(KeyUse::Read).await?;
    cat(&services, &id, args.output.as_deref()).await
}

async fn cat(
    services: &pgkeep::backends::Services,
    id: &BackupId,
    output: Option<&Path>,
) -> Result<u8, Failure> {
    let (_record, mut archive) = ops::read::open_archive(services, id).await?;
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

fn output_failure(e: OutputError) -> Failure {
    Failure {
        code: e.kind().exit_code() as u8,
        message: e.to_string(),
    }
}
