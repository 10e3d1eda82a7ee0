//! Built once per container: settings from the environment, backends, and the starters that
//! invoke the dump and verify functions asynchronously.

use std::sync::Arc;

use pgkeep::api::Api;
use pgkeep::backends::KeyUse;
use pgkeep::config::LambdaSettings;
use pgkeep::invoke::{DumpStarter, LambdaInvoker, Unconfigured, VerifyStarter};

/// The API with everything it needs; fails fast on bad configuration.
pub async fn api() -> Result<Api, lambda_http::Error> {
    let settings = LambdaSettings::from_env()?;
    let aws = if settings.uses_aws() {
        Some(settings.backends.load_aws().await?)
    } else {
        None
    };
    let services = settings.backends.open_with(KeyUse::None, aws.as_ref())?;
    let starter: Arc<dyn DumpStarter> = match (&settings.dump_function, &aws) {
        (Some(name), Some(aws)) => Arc::new(LambdaInvoker::new(aws, name)),
        _ => Arc::new(Unconfigured("PGKEEP_DUMP_FUNCTION")),
    };
    let verify_starter: Arc<dyn VerifyStarter> = match (&settings.verify_function, &aws) {
        (Some(name), Some(aws)) => Arc::new(LambdaInvoker::new(aws, name)),
        _ => Arc::new(Unconfigured("PGKEEP_VERIFY_FUNCTION")),
    };
    Ok(Api {
        services,
        starter,
        verify_starter,
        health: settings.health,
        admin_group: settings.admin_group.clone(),
        databases: settings.database_names(),
        download_ttl: settings.download_ttl,
    })
}
