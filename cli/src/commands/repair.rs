//! `pgkeep repair`: rebuild or complete the catalog from the repository.

use std::sync::Arc;

use pgkeep::backends::KeyUse;
use pgkeep::ops;
use pgkeep::ops::repair::{RepairProgress, RepairRequest};

use super::Failure;
use crate::args::RepairArgs;
use crate::output;
use crate::resolve::Resolver;

pub async fn run(resolver: &Resolver<'_>, args: &RepairArgs) -> Result<u8, Failure> {
    let services = resolver.open(KeyUse::None).await?;
    let request = RepairRequest {
        dry_run: args.dry_run,
        remove_strays: args.remove_strays,
    };
    let progress = Arc::new(RepairProgress::default());
    let bar = output::CountBar::start(progress.clone());
    let report = ops::repair::repair(&services, &request, &progress).await;
    bar.finish();
    let report = report?;
    output::print(args.json, &report, || output::print_repair_report(&report));
    Ok(0)
}
