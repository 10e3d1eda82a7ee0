//! `pgkeep prune`: plan with the retention policy, print the plan, then (unless a dry run)
//! execute it.

use chrono::Utc;
use pgkeep::alert::{send_logged, Alert, Notifier};
use pgkeep::backends::{KeyUse, Services};
use pgkeep::ops;
use pgkeep::ops::prune::PruneRequest;

use super::{failed, Failure};
use crate::args::PruneArgs;
use crate::output;
use crate::resolve::{env, Resolver};

pub async fn run(resolver: &Resolver<'_>, args: &PruneArgs) -> Result<u8, Failure> {
    let policy = args.retention.resolve(env).map_err(ops::Error::from)?;
    policy.validate().map_err(ops::Error::from)?;
    let services = resolver.open(KeyUse::None).await?;
    let request = PruneRequest {
        policy,
        database: args.database.clone(),
        now: args.now.unwrap_or_else(Utc::now),
        abandon_after: resolver.abandon_after,
        staging_dir: Some(
            args.staging_dir
                .clone()
                .unwrap_or_else(ops::restore::default_staging_dir),
        ),
    };
    let actor = resolver.actor(&args.actor);
    let notifier = resolver.notifier()?;
    prune(&services, &request, args, &actor, notifier.as_ref()).await
}

async fn prune(
    services: &Services,
    request: &PruneRequest,
    args: &PruneArgs,
    actor: &str,
    notifier: &dyn Notifier,
) -> Result<u8, Failure> {
    let plan = ops::prune::plan(services, request).await?;
    for m in &plan.missing {
        eprintln!(
            "pgkeep: warning: backup {} of {:?} is {} but {} is missing from the repository",
            m.id, m.database, m.status, m.key
        );
    }
    if args.dry_run {
        output::print(
            args.json,
            &serde_json::json!({ "dry_run": true, "plan": plan }),
            || {
                output::print_prune_plan(&plan);
                println!("dry run: nothing was changed");
            },
        );
        return Ok(0);
    }
    if !args.json {
        output::print_prune_plan(&plan);
    }
    let report = ops::prune::execute(services, &plan, actor)
        .await
        .map_err(|e| {
            failed(
                &e,
                format!(
                    "prune stopped: {e}; run it again to finish (half-done deletions are repaired)"
                ),
            )
        })?;
    // Runs that died (killed, crashed) are failed here: nobody else would alert them or send
    // their heartbeat's `/fail`.
    for id in &report.reaped {
        if let Ok(record) = services.catalog.get(id).await {
            send_logged(notifier, &Alert::backup_failed(&record, Utc::now())).await;
        }
    }
    for s in &report.skipped {
        eprintln!("pgkeep: skipped {}: {}", s.id, s.why);
    }
    output::print(
        args.json,
        &serde_json::json!({ "dry_run": false, "plan": plan, "report": report }),
        || output::print_prune_report(&report),
    );
    Ok(0)
}
