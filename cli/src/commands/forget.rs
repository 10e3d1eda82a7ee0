//! `pgkeep forget DATABASE`: dismiss a database whose every backup failed.

use chrono::Utc;
use pgkeep::backends::KeyUse;
use pgkeep::ops;
use pgkeep::ops::forget::ForgetRequest;

use super::Failure;
use crate::args::ForgetArgs;
use crate::output;
use crate::resolve::Resolver;

pub async fn run(resolver: &Resolver<'_>, args: &ForgetArgs) -> Result<u8, Failure> {
    let services = resolver.open(KeyUse::None).await?;
    let request = ForgetRequest {
        database: args.database.clone(),
        actor: resolver.actor(&args.actor),
        dry_run: args.dry_run,
        now: Utc::now(),
        abandon_after: resolver.abandon_after,
    };
    let forgotten = ops::forget::forget(&services, &request).await?;
    output::print(args.json, &forgotten, || {
        let name = output::shown(&forgotten.database);
        let n = forgotten.records.len();
        if forgotten.dry_run {
            println!("would forget database {name}: {n} failed record(s)");
            for id in &forgotten.records {
                println!("  {id}");
            }
            println!("dry run: nothing was changed");
        } else {
            println!("forgot database {name}: {n} failed record(s) removed from the catalog");
        }
    });
    Ok(0)
}
