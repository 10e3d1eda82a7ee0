//! `pgkeep restores`.

use pgkeep::backends::KeyUse;
use pgkeep::model::BackupId;
use pgkeep::ops;

use super::{usage, Failure};
use crate::args::RestoresArgs;
use crate::output;
use crate::resolve::Resolver;

pub async fn run(resolver: &Resolver<'_>, args: &RestoresArgs) -> Result<u8, Failure> {
    let id = args
        .id
        .as_deref()
        .map(|id| {
            id.parse::<BackupId>().map_err(|_| {
                usage(format!(
                    "--id {id:?} is not a restore id (the form 20261124T153512123Z-9f3a1c2b, as `pgkeep restores` lists them)"
                ))
            })
        })
        .transpose()?;
    let services = resolver.open(KeyUse::None).await?;
    if let Some(id) = id {
        let run = services
            .catalog
            .get_restore(&id)
            .await
            .map_err(ops::Error::from)?;
        output::print(args.json, &run, || output::print_restore_run(&run));
        return Ok(0);
    }
    let runs = services
        .catalog
        .list_restores(args.limit)
        .await
        .map_err(ops::Error::from)?;
    output::print(args.json, &runs, || output::print_restores(&runs));
    Ok(0)
}
