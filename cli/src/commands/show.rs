//! `pgkeep show`.

use chrono::Utc;
use pgkeep::backends::KeyUse;
use pgkeep::config::RetentionSettings;
use pgkeep::ops;
use pgkeep::retention::with_expiries;

use super::{parse_id, Failure};
use crate::args::ShowArgs;
use crate::output;
use crate::resolve::{env, Resolver};

pub async fn run(resolver: &Resolver<'_>, args: &ShowArgs) -> Result<u8, Failure> {
    let id = parse_id(&args.id)?;
    // The policy prune would apply (PGKEEP_KEEP_*), for the date it expires this backup.
    let policy = RetentionSettings::from_lookup(env)
        .resolve(env)
        .map_err(ops::Error::from)?;
    let services = resolver.open(KeyUse::None).await?;
    let record = services.catalog.get(&id).await.map_err(ops::Error::from)?;
    let expiries = ops::list::expiries(
        &services,
        &policy,
        Some(&[record.database.as_str()]),
        Utc::now(),
    )
    .await?;
    let shown = with_expiries(std::slice::from_ref(&record), &expiries);
    output::print(args.json, &shown[0], || {
        output::print_record(&record, shown[0].expiry)
    });
    Ok(0)
}
