//! `pgkeep status`: health of every database; exit 11 when one is unhealthy.

use chrono::Utc;
use pgkeep::backends::KeyUse;
use pgkeep::ops;

use super::{Failure, EXIT_UNHEALTHY};
use crate::args::StatusArgs;
use crate::output;
use crate::resolve::Resolver;

pub async fn run(resolver: &Resolver<'_>, args: &StatusArgs) -> Result<u8, Failure> {
    let policy = args.health.resolve().map_err(ops::Error::from)?;
    let services = resolver.open(KeyUse::None).await?;
    let now = args.now.unwrap_or_else(Utc::now);
    let health = ops::health::health(&services, now, &policy).await?;
    output::print(args.json, &health, || output::print_status(&health));
    match ops::health::overall_problem(&health) {
        None => Ok(0),
        Some(problem) => {
            eprintln!("pgkeep: {problem}");
            Ok(EXIT_UNHEALTHY)
        }
    }
}
