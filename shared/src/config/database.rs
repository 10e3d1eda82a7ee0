//! Which database, and how pgkeep authenticates to it. The rules themselves (a secret and IAM
//! authentication exclude each other, what an IAM URL must hold) are
//! [`DatabaseAuth`](crate::postgres::auth::DatabaseAuth)'s; this is the settings' front door.

use std::path::PathBuf;

use super::{given, given_owned, ConfigError, Setting};
use crate::postgres::auth::DatabaseAuth;
use crate::postgres::PgTarget;

const IAM_AUTH: Setting = Setting {
    env: "PGKEEP_DATABASE_IAM_AUTH",
    flag: "--database-iam-auth",
};

/// The one database of the `pgkeep` command, as given (the functions name theirs in
/// `PGKEEP_DATABASES` and share only [`DatabaseAuthSettings`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct DatabaseSettings {
    /// Database to back up: postgresql://user@host:port/dbname; for restore, the server to
    /// restore on; for verify, the default scratch server. Prefer the environment variable or a
    /// ~/.pgpass file for the password: command lines are visible to other users.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            env = "PGKEEP_DATABASE_URL",
            global = true,
            value_name = "URL",
            hide_env_values = true
        )
    )]
    pub database_url: Option<String>,

    /// Take the database's credentials from this Secrets Manager secret (RDS JSON: username,
    /// password, host, port, dbname); --database-url supplies what the secret lacks.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            env = "PGKEEP_DATABASE_SECRET_ARN",
            global = true,
            value_name = "ARN"
        )
    )]
    pub database_secret_arn: Option<String>,

    /// How to authenticate.
    #[cfg_attr(feature = "clap", command(flatten))]
    pub auth: DatabaseAuthSettings,
}

/// How pgkeep authenticates to its databases, as given; shared by the command and the functions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct DatabaseAuthSettings {
    /// Authenticate to the --database-url server with RDS IAM: a fresh auth token per
    /// connection, signed with your AWS identity, instead of a password, over TLS. The URL
    /// gives user, host, port and database, and no password.
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "PGKEEP_DATABASE_IAM_AUTH", global = true, value_parser = parse_flag)
    )]
    pub database_iam_auth: bool,

    /// With --database-iam-auth: CA bundle (PEM, e.g. the RDS global bundle) the server is
    /// verified against (sslmode verify-full) [default: encrypted, not verified (require)].
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            env = "PGKEEP_DATABASE_SSL_ROOT_CERT",
            global = true,
            value_name = "PEM"
        )
    )]
    pub database_ssl_root_cert: Option<String>,
}

/// `true` or `false` (empty: `false`); anything else is refused rather than guessed.
pub fn parse_flag(text: &str) -> Result<bool, String> {
    match text.trim() {
        "" | "false" => Ok(false),
        "true" => Ok(true),
        other => Err(format!("{other:?}: write true or false")),
    }
}

impl DatabaseAuthSettings {
    /// From `PGKEEP_DATABASE_IAM_AUTH` (`true` or `false`, default false) and
    /// `PGKEEP_DATABASE_SSL_ROOT_CERT` (only with IAM authentication).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(DatabaseAuthSettings {
            database_iam_auth: get(IAM_AUTH.env)
                .map(|v| parse_flag(&v).map_err(|e| IAM_AUTH.invalid(e)))
                .transpose()?
                .unwrap_or(false),
            database_ssl_root_cert: get("PGKEEP_DATABASE_SSL_ROOT_CERT"),
        })
    }

    /// The authentication, checked: a CA bundle only with IAM authentication.
    pub fn resolve(&self) -> Result<DatabaseAuth, ConfigError> {
        DatabaseAuth::new(
            self.database_iam_auth,
            given(self.database_ssl_root_cert.as_deref()).map(PathBuf::from),
        )
    }
}

/// The command's database after [`DatabaseSettings::resolve`].
#[derive(Debug, Clone)]
pub struct DatabaseChoice {
    /// How to authenticate.
    pub auth: DatabaseAuth,
    /// `--database-url`, if set.
    pub url: Option<String>,
    /// `--database-secret-arn`, if set.
    pub secret_arn: Option<String>,
}

impl DatabaseSettings {
    /// The settings with empty values dropped and the authentication checked.
    pub fn resolve(&self) -> Result<DatabaseChoice, ConfigError> {
        Ok(DatabaseChoice {
            auth: self.auth.resolve()?,
            url: given_owned(&self.database_url),
            secret_arn: given_owned(&self.database_secret_arn),
        })
    }
}

/// How the URL setting is named in messages.
const URL: &str = "--database-url (PGKEEP_DATABASE_URL)";

impl DatabaseChoice {
    /// The database to back up, checked without contacting anything (a URL or a secret, and
    /// what IAM authentication asks of them); the parsed URL, if one is given.
    pub fn check_source(&self) -> Result<Option<PgTarget>, ConfigError> {
        let (url, secret) = (self.url.as_deref(), self.secret_arn.as_deref());
        self.auth.check(URL, url, secret)?;
        url.map(|url| self.auth.parse(URL, url)).transpose()
    }

    /// Whether reaching the database to back up needs the AWS configuration.
    pub fn needs_aws(&self) -> bool {
        self.auth.iam || self.secret_arn.is_some()
    }

    /// The database to back up (its secret read, its IAM token made).
    pub async fn source_target(
        &self,
        aws: Option<&aws_config::SdkConfig>,
    ) -> Result<PgTarget, ConfigError> {
        self.auth
            .target(URL, self.url.as_deref(), self.secret_arn.as_deref(), aws)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_is_true_or_false() {
        assert_eq!(parse_flag(" true "), Ok(true));
        assert_eq!(parse_flag(""), Ok(false));
        assert!(parse_flag("yes")
            .unwrap_err()
            .contains("write true or false"));
    }

    #[test]
    fn the_command_checks_its_database_once() {
        let settings = |url: Option<&str>, secret: Option<&str>, iam: bool| DatabaseSettings {
            database_url: url.map(Into::into),
            database_secret_arn: secret.map(Into::into),
            auth: DatabaseAuthSettings {
                database_iam_auth: iam,
                database_ssl_root_cert: None,
            },
        };
        for (s, needle) in [
            (settings(None, None, false), "no database to back up"),
            (settings(Some(""), None, true), "no database to back up"),
            (
                settings(Some("postgresql://u@h:5432/d"), Some("arn:x"), true),
                "exclude each other",
            ),
            (
                settings(Some("postgresql://u:pw@h:5432/d"), None, true),
                "no password",
            ),
        ] {
            let err = s.resolve().unwrap().check_source().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        let ok = settings(Some("postgresql://u@h/d"), None, false)
            .resolve()
            .unwrap();
        assert!(ok.check_source().unwrap().is_some());
        assert!(!ok.needs_aws());
    }
}
