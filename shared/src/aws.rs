//! AWS plumbing shared by the S3 store, the DynamoDB catalog, the KMS key provider and the
//! database secret lookup: loading the SDK configuration once, and turning SDK errors into
//! plain sentences (no SDK type leaves this crate's AWS adapters).

use std::fmt::Debug;

use aws_config::BehaviorVersion;
/// The loaded AWS configuration (credentials, region, endpoint), shared by every client.
pub use aws_config::SdkConfig;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use serde::Deserialize;

use crate::config::ConfigError;
use crate::postgres::PgTarget;

/// Loads the AWS configuration the usual way (environment, profile, container or instance
/// role; region from `AWS_REGION` or the profile). With `endpoint` set (an emulator such as
/// moto), every service is sent there and checksums are only sent where a service requires
/// them, which emulators understand.
pub async fn load_config(endpoint: Option<&str>) -> Result<SdkConfig, ConfigError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(url) = endpoint {
        loader = loader
            .endpoint_url(url)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(ConfigError::Missing(
            "no AWS region configured: set AWS_REGION (or a region in the AWS profile)".into(),
        ));
    }
    Ok(config)
}

/// What an SDK failure means, in one line: the service's error code and message, or why the
/// service could not be reached.
pub(crate) fn describe<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: Debug,
{
    match err {
        SdkError::ServiceError(_) => match (err.code(), err.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_owned(),
            _ => DisplayErrorContext(err).to_string(),
        },
        SdkError::DispatchFailure(_) => format!(
            "cannot reach the service (network, endpoint or credentials): {}",
            DisplayErrorContext(err)
        ),
        SdkError::TimeoutError(_) => "the request timed out".to_owned(),
        _ => DisplayErrorContext(err).to_string(),
    }
}

/// The error code a service returned, if the failure came from the service.
pub(crate) fn error_code<E, R>(err: &SdkError<E, R>) -> Option<&str>
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(_) => err.code(),
        _ => None,
    }
}

/// The standard JSON of an RDS (or RDS-style) database secret in Secrets Manager.
#[derive(Deserialize)]
struct RdsSecret {
    username: String,
    password: String,
    host: Option<String>,
    port: Option<serde_json::Value>,
    dbname: Option<String>,
}

/// The database to back up, from a Secrets Manager secret in the standard RDS form
/// (`username`, `password`, `host`, `port`, `dbname`).
///
/// RDS-managed master secrets hold only `username` and `password`: `base` (from
/// `PGKEEP_DATABASE_URL`, without a password) then supplies the host, port and database, and
/// the secret's fields override it where present. Neither the secret nor the password is
/// ever logged.
pub async fn database_from_secret(
    config: &SdkConfig,
    secret_id: &str,
    base: Option<&PgTarget>,
) -> Result<PgTarget, ConfigError> {
    let client = aws_sdk_secretsmanager::Client::new(config);
    let fail = |message: String| ConfigError::Secret {
        secret: secret_id.to_owned(),
        message,
    };
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| {
            let hint = match error_code(&e) {
                Some("ResourceNotFoundException") => {
                    " (check the ARN or name, and the region)".to_owned()
                }
                Some("AccessDeniedException") => {
                    " (grant secretsmanager:GetSecretValue on it, and kms:Decrypt on its key)"
                        .to_owned()
                }
                _ => String::new(),
            };
            fail(format!("{}{hint}", describe(&e)))
        })?;
    let text = out.secret_string().ok_or_else(|| {
        fail("the secret has no string value; store the RDS JSON (username, password, host, port, dbname)".into())
    })?;
    let secret: RdsSecret = serde_json::from_str(text).map_err(|e| {
        // serde's message names the field, never the value.
        fail(format!(
            "not the RDS secret JSON (username, password, host, port, dbname): {e}"
        ))
    })?;
    let port = match &secret.port {
        None => None,
        Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        Some(_) => None,
    };
    if secret.port.is_some() && port.is_none() {
        return Err(fail("its port is not a port number".into()));
    }
    let host = secret
        .host
        .clone()
        .or_else(|| base.and_then(PgTarget::host))
        .ok_or_else(|| {
            fail("the secret names no host; add `host` to it or give PGKEEP_DATABASE_URL (without a password)".into())
        })?;
    let dbname = secret
        .dbname
        .clone()
        .or_else(|| base.map(|b| b.database().to_owned()))
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            fail("the secret names no database; add `dbname` to it or give PGKEEP_DATABASE_URL (without a password)".into())
        })?;
    let port = port
        .or_else(|| base.and_then(PgTarget::port))
        .unwrap_or(5432);
    Ok(PgTarget::from_parts(
        &host,
        port,
        &secret.username,
        &secret.password,
        &dbname,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{moto, unique};

    async fn secret(config: &SdkConfig, json: &str) -> String {
        let client = aws_sdk_secretsmanager::Client::new(config);
        let out = client
            .create_secret()
            .name(unique("pgkeep/db"))
            .secret_string(json)
            .send()
            .await
            .unwrap();
        out.arn().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_full_rds_secret_names_the_database() {
        let Some(config) = moto().await else { return };
        let arn = secret(
            &config,
            r#"{"engine":"postgres","username":"backup","password":"s3cr:t@/x","host":"db.internal","port":6543,"dbname":"shop"}"#,
        )
        .await;
        let target = database_from_secret(&config, &arn, None).await.unwrap();
        assert_eq!(
            target.redacted(),
            "postgresql://backup@db.internal:6543/shop"
        );
        assert!(target.has_password());
    }

    #[tokio::test]
    async fn a_managed_master_secret_is_completed_by_the_url() {
        let Some(config) = moto().await else { return };
        // RDS-managed master user secrets hold only the credentials.
        let arn = secret(&config, r#"{"username":"admin","password":"pw"}"#).await;
        let base = PgTarget::parse("postgresql://ignored@db.example:5433/crm").unwrap();
        let target = database_from_secret(&config, &arn, Some(&base))
            .await
            .unwrap();
        assert_eq!(target.redacted(), "postgresql://admin@db.example:5433/crm");
        let err = database_from_secret(&config, &arn, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("names no host"), "{err}");
    }

    #[tokio::test]
    async fn bad_secrets_are_explained_without_their_content() {
        let Some(config) = moto().await else { return };
        let arn = secret(&config, r#"{"user":"x","password":"hunter2"}"#).await;
        let err = database_from_secret(&config, &arn, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("username"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = database_from_secret(&config, "pgkeep/no-such-secret", None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("check the ARN"), "{err}");
    }
}
