//! `pgkeep init`: check the KMS key and the bucket, create (or check) the catalog table.

use pgkeep::ops;
use pgkeep::ops::init::{InitReport, Step};

use super::Failure;
use crate::args::InitArgs;
use crate::output;
use crate::resolve::Resolver;

pub async fn run(resolver: &Resolver<'_>, args: &InitArgs) -> Result<u8, Failure> {
    let config = resolver.backend_config()?;
    let aws = if config.uses_aws() {
        Some(config.load_aws().await.map_err(ops::Error::from)?)
    } else {
        None
    };
    let report = ops::init::init(&config, aws.as_ref()).await?;
    output::print(args.json, &report, || print(&report));
    Ok(0)
}

fn print(report: &InitReport) {
    let step = |s: &Step| match s {
        Step::Created => "created",
        Step::Ok => "ok",
        Step::Embedded => "embedded (made by the first backup; nothing to prepare)",
    };
    let key = match &report.key_arn {
        Some(arn) => format!("{} ({arn})", report.key),
        None => report.key.clone(),
    };
    println!("key:        {key}: {}", step(&report.key_step));
    println!(
        "repository: {}: {}",
        report.repository,
        step(&report.repository_step)
    );
    println!(
        "catalog:    {}: {}",
        report.catalog,
        step(&report.catalog_step)
    );
    if report.backfilled > 0 {
        println!(
            "            {} records and audit entries given the listing sort key (start_key) they lacked",
            report.backfilled
        );
    }
}
