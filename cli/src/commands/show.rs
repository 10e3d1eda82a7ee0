//! `pgkeep show`.

use pgkeep::backends::KeyUse;
use pgkeep::ops;

use super::{parse_id, Failure};
use crate::args::ShowArgs;
use crate::output;
use crate::resolve::Resolver;

pub async fn run(resolver: &Resolver<'_>, args: &ShowArgs) -> Result<u8, Failure> {
    let id = parse_id(&args.id)?;
    let services = resolver.open(KeyUse::None).await?;
    let record = services.catalog.get(&id).await.map_err(ops::Error::from)?;
    output::print(args.json, &record, || output::print_record(&record));
    Ok(0)
}
