//! The `status` Lambda function: API Gateway (HTTP API, payload 2.0) in front of
//! [`pgkeep::api::Api`]. The translation of requests and responses is
//! [`pgkeep::lambda::http`]; routing, authorization and every rule live in the library.

use pgkeep::config::LambdaSettings;
use pgkeep::lambda::{self, http, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda::init_tracing();
    // Built once per container: the backends and the starters of the dump and verify
    // functions.
    let api = lambda::init(async {
        let settings = LambdaSettings::from_env()?;
        Ok(pgkeep::wiring::api(&settings).await?)
    })
    .await?;
    http::serve(api).await
}

#[cfg(test)]
mod tests;
