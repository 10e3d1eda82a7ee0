//! `pgkeep cat`: the original archive to stdout, or to a file that appears only when complete.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context as _;
use pgkeep::backends::KeyUse;
use pgkeep::model::BackupId;
use pgkeep::ops;
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
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = path
                .file_name()
                .ok_or_else(|| usage(format!("{} is not a file name", path.display())))?;
            let temp = dir.join(format!(
                ".{}.pgkeep-partial-{}",
                name.to_string_lossy(),
                std::process::id()
            ));
            let result = async {
                let mut file =
                    tokio::fs::File::create(&temp)
                        .await
                        .map_err(|e| ops::Error::Io {
                            context: "creating the output file",
                            source: e,
                        })?;
                tokio::io::copy(&mut archive, &mut file)
                    .await
                    .map_err(|e| ops::Error::from_read("writing the archive", e))?;
                file.sync_all().await.map_err(|e| ops::Error::Io {
                    context: "syncing the output file",
                    source: e,
                })?;
                tokio::fs::rename(&temp, path)
                    .await
                    .map_err(|e| ops::Error::Io {
                        context: "renaming the output file into place",
                        source: e,
                    })
            }
            .await;
            if result.is_err() {
                let _ = tokio::fs::remove_file(&temp).await;
            }
            result?;
        }
    }
    Ok(0)
}
