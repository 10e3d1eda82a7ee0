//! `pgkeep list`.

use pgkeep::backends::KeyUse;
use pgkeep::catalog::ListQuery;
use pgkeep::ops;

use super::Failure;
use crate::args::ListArgs;
use crate::output;
use crate::resolve::Resolver;

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
    output::print(args.json, &records, || output::print_list(&records));
    Ok(0)
}
