//! `pgkeep audit`.

use pgkeep::backends::KeyUse;
use pgkeep::catalog::AuditQuery;
use pgkeep::ops;

use super::{usage, Failure};
use crate::args::AuditArgs;
use crate::output;
use crate::resolve::Resolver;

pub async fn run(resolver: &Resolver<'_>, args: &AuditArgs) -> Result<u8, Failure> {
    let since = args
        .since
        .as_deref()
        .map(|s| ops::audit::parse_since(s, chrono::Utc::now()))
        .transpose()
        .map_err(|e| usage(format!("--{e}")))?;
    let services = resolver.open(KeyUse::None).await?;
    let query = AuditQuery {
        database: args.database.clone(),
        since,
        limit: args.limit,
        cursor: None,
    };
    let entries = match args.limit {
        Some(_) => ops::audit::page(&services, &query).await?.entries,
        None => ops::audit::all(&services, &query).await?,
    };
    output::print(args.json, &entries, || output::print_audit(&entries));
    Ok(0)
}
