//! Built once per container: settings from the environment, backends, the dump starter.

use std::sync::Arc;

use async_trait::async_trait;
use pgkeep::api::{Api, DumpStarter};
use pgkeep::backends::KeyUse;
use pgkeep::config::LambdaSettings;
use pgkeep::trigger::DumpTrigger;

/// The API with everything it needs; fails fast on bad configuration.
pub async fn api() -> Result<Api, lambda_http::Error> {
    let settings = LambdaSettings::from_env()?;
    let services = settings.backends.open(KeyUse::None).await?;
    Ok(Api {
        services,
        starter: Arc::new(NotWired),
        health: settings.health,
        admin_group: settings.admin_group.clone(),
        databases: settings.database_names(),
    })
}

/// Until the AWS Lambda client is wired, starting a dump from the API is refused clearly.
struct NotWired;

#[async_trait]
impl DumpStarter for NotWired {
    async fn start(&self, _: &DumpTrigger) -> Result<(), String> {
        Err("starting dumps from the API is not wired in this build".into())
    }
}
