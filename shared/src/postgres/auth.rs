//! How pgkeep authenticates to a database: a password (URL, `PGPASSWORD`, passfile or a
//! Secrets Manager secret), or RDS IAM authentication. The rules (a secret and IAM
//! authentication exclude each other, what an IAM URL must hold, that there is a database at
//! all) are written here once, for the `pgkeep` command and the functions alike.

use std::path::PathBuf;

use aws_config::SdkConfig;

use super::rds_iam::RdsIamAuth;
use super::PgTarget;
use crate::config::ConfigError;

/// How pgkeep authenticates to the database (`PGKEEP_DATABASE_IAM_AUTH`,
/// `PGKEEP_DATABASE_SSL_ROOT_CERT`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseAuth {
    /// RDS IAM authentication: a token per connection instead of a password, TLS required.
    /// Host, port, user and database come from the database URL, which holds no password.
    pub iam: bool,
    /// CA bundle (PEM) the server is verified against (`verify-full`); without one, IAM
    /// connections are encrypted but the certificate is not checked (`require`).
    pub ssl_root_cert: Option<PathBuf>,
}

/// Neither a URL nor a secret names a database.
fn no_database() -> ConfigError {
    ConfigError::Missing(
        "no database to back up: set PGKEEP_DATABASE_URL (or --database-url), or PGKEEP_DATABASE_SECRET_ARN".into(),
    )
}

impl DatabaseAuth {
    /// Checks that the settings go together.
    pub fn new(iam: bool, ssl_root_cert: Option<PathBuf>) -> Result<Self, ConfigError> {
        if ssl_root_cert.is_some() && !iam {
            return Err(ConfigError::Invalid(
                "PGKEEP_DATABASE_SSL_ROOT_CERT is used with PGKEEP_DATABASE_IAM_AUTH=true only; for a password connection put sslmode in the URL or PGSSLROOTCERT in the environment".into(),
            ));
        }
        Ok(DatabaseAuth { iam, ssl_root_cert })
    }

    /// Checks a database given by `url`, a `secret`, or a secret completed by a URL, without
    /// contacting anything: there is one, and with IAM authentication it is a complete URL
    /// and no secret. `what` names the setting in messages.
    pub fn check(
        &self,
        what: &str,
        url: Option<&str>,
        secret: Option<&str>,
    ) -> Result<(), ConfigError> {
        match (url, secret, self.iam) {
            (None, None, _) => Err(no_database()),
            (_, Some(_), true) => Err(ConfigError::Invalid(format!(
                "{what}: PGKEEP_DATABASE_IAM_AUTH=true (--database-iam-auth) and a database secret (secret_arn, PGKEEP_DATABASE_SECRET_ARN) exclude each other: the IAM token replaces the password; give the database as a URL, postgresql://USER@HOST:PORT/DATABASE"
            ))),
            (Some(url), None, true) => Self::check_iam_url(what, url).map(drop),
            (_, _, false) => Ok(()),
        }
    }

    /// A server's URL parsed, and with IAM authentication checked as
    /// [`DatabaseAuth::check_iam_url`] does.
    pub fn parse(&self, what: &str, url: &str) -> Result<PgTarget, ConfigError> {
        if self.iam {
            Self::check_iam_url(what, url)
        } else {
            Ok(PgTarget::parse(url)?)
        }
    }

    /// Checks a database URL for IAM authentication without contacting anything: one TCP
    /// host, explicit port and user, a database, no password. `what` names the setting.
    pub fn check_iam_url(what: &str, url: &str) -> Result<PgTarget, ConfigError> {
        let target =
            PgTarget::parse(url).map_err(|e| ConfigError::Invalid(format!("{what}: {e}")))?;
        target.iam_endpoint().map_err(|needs| {
            ConfigError::Invalid(format!(
                "{what}: PGKEEP_DATABASE_IAM_AUTH=true needs {needs}; expected postgresql://USER@HOST:PORT/DATABASE"
            ))
        })?;
        Ok(target)
    }

    /// The database at `url` (checked as [`DatabaseAuth::check_iam_url`]), reached with RDS IAM
    /// tokens signed with the AWS identity in `aws`, over TLS.
    pub async fn iam_target(
        &self,
        what: &str,
        url: &str,
        aws: &SdkConfig,
    ) -> Result<PgTarget, ConfigError> {
        let target = Self::check_iam_url(what, url)?;
        let (host, port, user) = target
            .iam_endpoint()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let auth = RdsIamAuth::from_aws(aws, &host, port, &user).await?;
        Ok(target.with_rds_iam(auth, self.ssl_root_cert.clone()))
    }

    /// The database (checked as [`DatabaseAuth::check`]): with IAM authentication at `url`
    /// with tokens, otherwise as [`database_target`] finds it.
    pub async fn target(
        &self,
        what: &str,
        url: Option<&str>,
        secret: Option<&str>,
        aws: Option<&SdkConfig>,
    ) -> Result<PgTarget, ConfigError> {
        self.check(what, url, secret)?;
        match (self.iam, url) {
            (true, Some(url)) => {
                let aws = aws.ok_or_else(|| {
                    ConfigError::Missing(
                        "RDS IAM authentication needs the AWS configuration".into(),
                    )
                })?;
                self.iam_target(what, url, aws).await
            }
            _ => database_target(url, secret, aws).await,
        }
    }
}

/// A database by password: `url` (`PGKEEP_DATABASE_URL`), or the Secrets Manager secret
/// `secret` (`PGKEEP_DATABASE_SECRET_ARN`, standard RDS JSON) completed by `url` where the
/// secret lacks the host or database. `aws` is needed only with a secret.
pub async fn database_target(
    url: Option<&str>,
    secret: Option<&str>,
    aws: Option<&SdkConfig>,
) -> Result<PgTarget, ConfigError> {
    let base = url.map(PgTarget::parse).transpose()?;
    match (secret, base) {
        (Some(secret), base) => {
            let aws = aws.ok_or_else(|| {
                ConfigError::Missing("a database secret needs the AWS configuration".into())
            })?;
            crate::aws::database_from_secret(aws, secret, base.as_ref()).await
        }
        (None, Some(target)) => Ok(target),
        (None, None) => Err(no_database()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::DatabaseAuthSettings;

    /// An AWS configuration with fixed credentials: nothing is fetched, tokens are signed
    /// locally.
    fn offline_aws() -> SdkConfig {
        use aws_credential_types::provider::SharedCredentialsProvider;
        SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-west-1"))
            .credentials_provider(SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new(
                    "AKIDEXAMPLE",
                    "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                    None,
                    None,
                    "test",
                ),
            ))
            .build()
    }

    fn client_env(target: &PgTarget) -> (BTreeMap<String, String>, usize) {
        let mut cmd = tokio::process::Command::new("pg_dump");
        target.apply_env(&mut cmd).unwrap();
        let std = cmd.as_std();
        let env = std
            .get_envs()
            .filter_map(|(k, v)| {
                Some((
                    k.to_string_lossy().into_owned(),
                    v?.to_string_lossy().into_owned(),
                ))
            })
            .collect();
        (env, std.get_args().count())
    }

    #[tokio::test]
    async fn an_iam_target_from_the_settings_uses_a_fresh_token_and_requires_tls() {
        use crate::postgres::Credential;
        let aws = offline_aws();
        let what = "PGKEEP_DATABASE_URL";
        let url =
            "postgresql://pgkeep_backup@shop.abcdefghijkl.eu-west-1.rds.amazonaws.com:5432/shop";
        let auth = DatabaseAuthSettings::from_lookup(|name| {
            (name == "PGKEEP_DATABASE_IAM_AUTH").then(|| "true".to_owned())
        })
        .unwrap()
        .resolve()
        .unwrap();
        let target = auth
            .target(what, Some(url), None, Some(&aws))
            .await
            .unwrap();
        assert_eq!(target.credential(), Credential::RdsIamToken);
        assert!(target.requires_tls());
        let (env, args) = client_env(&target);
        assert_eq!(args, 0, "nothing secret (or otherwise) on the command line");
        assert_eq!(env["PGSSLMODE"], "require");
        assert!(!env.contains_key("PGSSLROOTCERT"));
        assert_eq!(env["PGUSER"], "pgkeep_backup");
        let token = &env["PGPASSWORD"];
        assert!(
            token.starts_with("shop.abcdefghijkl.eu-west-1.rds.amazonaws.com:5432/?Action=connect&DBUser=pgkeep_backup&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F"),
            "{token}"
        );
        assert!(
            token.contains("%2Feu-west-1%2Frds-db%2Faws4_request&"),
            "{token}"
        );
        assert!(token.contains("&X-Amz-Expires=900&"), "{token}");
        assert!(!format!("{target:?}").contains("X-Amz"), "never shown");
        // Another database on the same server keeps the token and TLS.
        let other = target.with_database("postgres");
        assert_eq!(other.credential(), Credential::RdsIamToken);
        assert_eq!(client_env(&other).0["PGSSLMODE"], "require");

        // With a CA bundle: verify-full against it.
        let auth = DatabaseAuth::new(true, Some("/opt/rds/global-bundle.pem".into())).unwrap();
        let target = auth
            .target(what, Some(url), None, Some(&aws))
            .await
            .unwrap();
        let (env, _) = client_env(&target);
        assert_eq!(env["PGSSLMODE"], "verify-full");
        assert_eq!(env["PGSSLROOTCERT"], "/opt/rds/global-bundle.pem");

        // Without IAM: the password as before, TLS as the URL says.
        let plain = DatabaseAuth::default()
            .target(what, Some(url), None, None)
            .await
            .unwrap();
        assert_eq!(plain.credential(), Credential::Password);
        assert!(!plain.requires_tls());
        assert!(!client_env(&plain).0.contains_key("PGSSLMODE"));

        // Refusals, each with what to change.
        let iam = DatabaseAuth::new(true, None).unwrap();
        for (url, secret, needle) in [
            (
                Some(url),
                Some("arn:aws:secretsmanager:eu-west-1:1:secret:db"),
                "exclude each other",
            ),
            (None, None, "no database to back up"),
            (Some("postgresql://u:pw@h:5432/shop"), None, "no password"),
            (Some("postgresql://h:5432/shop"), None, "the database user"),
        ] {
            let err = iam
                .target(what, url, secret, Some(&aws))
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
        assert!(DatabaseAuth::new(false, Some("/ca.pem".into())).is_err());
    }
}
