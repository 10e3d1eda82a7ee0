//! `pgkeep list`.

use chrono::Utc;
use pgkeep::backends::KeyUse;
use pgkeep::catalog::ListQuery;
use pgkeep::config::RetentionSettings;
use pgkeep::ops;
use pgkeep::retention::with_expiries;

use super::Failure;
use crate::args::ListArgs;
use crate::output;
use crate::resolve::{env, Resolver};

pub async fn run(resolver: &Resolver<'_>, args: &ListArgs) -> Result<u8, Failure> {
    let services = resolver.open(KeyUse::None).await?;
    let query = ListQuery {
        database: args.database.clone(),
        status: args.status,
        limit: args.limit,
        cursor: None,
        label: args.label.clone(),
        kind: args.kind,
        run_id: args.run.clone(),
    };
    let records = match args.limit {
        Some(_) => ops::list::list(&services, &query).await?.records,
        None => ops::list::list_all(&services, &query).await?,
    };
    if args.json {
        // Each record with the date the retention policy prune would apply expires it.
        let policy = RetentionSettings::from_lookup(env)
            .resolve(env)
            .map_err(ops::Error::from)?;
        let databases: Vec<&str> = records.iter().map(|r| r.database.as_str()).collect();
        let expiries =
            ops::list::expiries(&services, &policy, Some(&databases), Utc::now()).await?;
        output::print_json(&with_expiries(&records, &expiries));
    } else {
        output::print_list(&records);
    }
    Ok(0)
}
