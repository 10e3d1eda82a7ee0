//! `pgkeep report --html FILE`: the history page the status API serves, written to a file.

use chrono::Utc;
use pgkeep::backends::KeyUse;
use pgkeep::config::RetentionSettings;
use pgkeep::history;
use pgkeep::ops;
use pgkeep::outfile::{OutputError, OutputFile};
use tokio::io::AsyncWriteExt;

use super::Failure;
use crate::args::ReportArgs;
use crate::resolve::{env, Resolver};

pub async fn run(resolver: &Resolver<'_>, args: &ReportArgs) -> Result<u8, Failure> {
    let policy = args.health.resolve().map_err(ops::Error::from)?;
    // The policy prune would apply (PGKEEP_KEEP_*), for the expiry column.
    let retention = RetentionSettings::from_lookup(env)
        .resolve(env)
        .map_err(ops::Error::from)?;
    let services = resolver.open(KeyUse::None).await?;
    let now = args.now.unwrap_or_else(Utc::now);
    let page = history::page(&services, now, &policy, &retention).await?;
    let mut out = OutputFile::create(&args.html)
        .await
        .map_err(output_failure)?;
    out.writer()
        .write_all(page.as_bytes())
        .await
        .map_err(|source| {
            output_failure(OutputError::Io {
                context: "writing",
                path: args.html.clone(),
                source,
            })
        })?;
    out.commit().await.map_err(output_failure)?;
    eprintln!("pgkeep: wrote the history page to {}", args.html.display());
    Ok(0)
}

fn output_failure(e: OutputError) -> Failure {
    Failure {
        code: e.kind().exit_code() as u8,
        message: e.to_string(),
    }
}
