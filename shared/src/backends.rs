//! The one place that turns configuration into backends.
//!
//! Each URL picks one implementation of [`ObjectStore`], [`Catalog`] or [`KeyProvider`]:
//!
//! | setting | embedded default | AWS |
//! |---|---|---|
//! | repository | `file:///path` (or a plain path) | `s3://bucket/prefix` |
//! | catalog | `sqlite:///path` (default: inside a file repository) | `dynamodb://table` |
//! | key | `file:///path` | `kms://key-arn-id-or-alias` |
//!
//! The embedded default is a repository directory with its catalog inside and a key file
//! outside. The AWS configuration (credentials, region) is loaded once, the usual way, and
//! shared by every AWS backend; `PGKEEP_AWS_ENDPOINT` sends all of them to an emulator.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_config::SdkConfig;

use crate::catalog::dynamodb::DynamoCatalog;
use crate::catalog::sqlite::SqliteCatalog;
use crate::catalog::{Catalog, CatalogError};
use crate::keys::file::FileKeyProvider;
use crate::keys::kms::KmsKeyProvider;
use crate::keys::{KeyError, KeyProvider, NoKey};
use crate::postgres::rds_iam::RdsIamAuth;
use crate::postgres::{PgError, PgTarget};
use crate::store::fs::FsStore;
use crate::store::s3::{S3Options, S3Store, MIN_PART_SIZE};
use crate::store::{validate_key, ObjectStore};

/// File name of the embedded catalog inside a repository directory.
pub const CATALOG_FILE: &str = "catalog.sqlite3";

/// Configuration that cannot work, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A URL with a scheme pgkeep does not know.
    #[error("{what} {url:?}: unsupported scheme; use {expected}")]
    Scheme {
        /// Which setting.
        what: &'static str,
        /// The value given.
        url: String,
        /// The accepted forms.
        expected: &'static str,
    },
    /// A URL with a known scheme whose rest is not usable.
    #[error("{what} {url:?}: {why}")]
    BadUrl {
        /// Which setting.
        what: &'static str,
        /// The value given.
        url: String,
        /// What is wrong and the expected form.
        why: String,
    },
    /// A required setting is missing.
    #[error("{0}")]
    Missing(String),
    /// A setting's value cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// Settings that contradict a safety rule.
    #[error("{0}")]
    Unsafe(String),
    /// The catalog could not be opened.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The database settings do not work.
    #[error(transparent)]
    Database(#[from] PgError),
    /// The database secret could not be read or is not in the expected form.
    #[error("database secret {secret}: {message}")]
    Secret {
        /// The secret's ARN or name.
        secret: String,
        /// What went wrong (never the secret's content).
        message: String,
    },
}

/// Where backup objects go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoUrl {
    /// A local directory.
    File(PathBuf),
    /// An S3 bucket and key prefix (possibly empty).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix without leading or trailing slashes.
        prefix: String,
    },
}

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogUrl {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A DynamoDB table (see docs/DYNAMODB.md).
    DynamoDb(String),
}

/// Where the master key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyUrl {
    /// A local key file.
    File(PathBuf),
    /// A KMS key: key ARN, key id, alias ARN or `alias/NAME`.
    Kms(String),
}

fn file_path(what: &'static str, url: &str, scheme: &str) -> Result<PathBuf, ConfigError> {
    let rest = url.strip_prefix(scheme).unwrap_or(url);
    if rest.is_empty() {
        return Err(ConfigError::Missing(format!(
            "{what} {url:?} names no path"
        )));
    }
    if scheme.is_empty() || rest.starts_with('/') {
        Ok(PathBuf::from(rest))
    } else {
        Err(ConfigError::Scheme {
            what,
            url: url.to_owned(),
            expected: "an absolute path after the scheme, e.g. file:///var/backups/pgkeep",
        })
    }
}

fn scheme_of(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once("://")?;
    scheme
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '+')
        .then_some(scheme)
}

fn bad_url(what: &'static str, url: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::BadUrl {
        what,
        url: url.to_owned(),
        why: why.into(),
    }
}

impl RepoUrl {
    /// `file:///path`, a plain path, or `s3://bucket/prefix`.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        match scheme_of(url) {
            None => Ok(RepoUrl::File(file_path("repository", url, "")?)),
            Some("file") => Ok(RepoUrl::File(file_path("repository", url, "file://")?)),
            Some("s3") => {
                let rest = &url["s3://".len()..];
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let bucket_ok = (3..=63).contains(&bucket.len())
                    && bucket.bytes().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-'
                    });
                if !bucket_ok {
                    return Err(bad_url(
                        "repository",
                        url,
                        "not a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens); expected s3://bucket/prefix",
                    ));
                }
                let prefix = prefix.trim_matches('/');
                if !prefix.is_empty() {
                    validate_key(prefix).map_err(|e| bad_url("repository", url, e.to_string()))?;
                }
                Ok(RepoUrl::S3 {
                    bucket: bucket.to_owned(),
                    prefix: prefix.to_owned(),
                })
            }
            Some(_) => Err(ConfigError::Scheme {
                what: "repository",
                url: url.into(),
                expected: "file:///path or s3://bucket/prefix",
            }),
        }
    }
}

impl CatalogUrl {
    /// `sqlite:///path/catalog.sqlite3`, a plain path, or `dynamodb://table`.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        match scheme_of(url) {
            None => Ok(CatalogUrl::Sqlite(file_path("catalog", url, "")?)),
            Some("sqlite") => Ok(CatalogUrl::Sqlite(file_path("catalog", url, "sqlite://")?)),
            Some("dynamodb") => {
                let table = &url["dynamodb://".len()..];
                let ok = (3..=255).contains(&table.len())
                    && table
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'));
                if !ok {
                    return Err(bad_url(
                        "catalog",
                        url,
                        "not a valid DynamoDB table name (3-255 letters, digits, _ - .); expected dynamodb://table",
                    ));
                }
                Ok(CatalogUrl::DynamoDb(table.to_owned()))
            }
            Some(_) => Err(ConfigError::Scheme {
                what: "catalog",
                url: url.into(),
                expected: "sqlite:///path or dynamodb://table",
            }),
        }
    }
}

impl KeyUrl {
    /// `file:///path/pgkeep.key`, a plain path, or `kms://key-arn-id-or-alias`.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        match scheme_of(url) {
            None => Ok(KeyUrl::File(file_path("key", url, "")?)),
            Some("file") => Ok(KeyUrl::File(file_path("key", url, "file://")?)),
            Some("kms") => {
                let key = &url["kms://".len()..];
                if key.is_empty() || key.len() > 2048 || key.chars().any(char::is_whitespace) {
                    return Err(bad_url(
                        "key",
                        url,
                        "expected kms://alias/NAME, kms://KEY-ID or kms://arn:aws:kms:REGION:ACCOUNT:key/KEY-ID",
                    ));
                }
                Ok(KeyUrl::Kms(key.to_owned()))
            }
            Some(_) => Err(ConfigError::Scheme {
                what: "key",
                url: url.into(),
                expected: "file:///path or kms://key-id-or-alias",
            }),
        }
    }
}

/// The backends an operation works with, built once and shared.
#[derive(Clone)]
pub struct Services {
    /// Backup objects and manifests.
    pub store: Arc<dyn ObjectStore>,
    /// Backup records.
    pub catalog: Arc<dyn Catalog>,
    /// The master key.
    pub keys: Arc<dyn KeyProvider>,
}

/// Settings of the AWS backends.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// Send every AWS call here (an emulator such as moto), with path-style S3 addressing.
    pub endpoint: Option<String>,
    /// How S3 uploads are cut and encrypted at rest.
    pub s3: S3Options,
}

/// Which backends to build.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Object store.
    pub repo: RepoUrl,
    /// Catalog; `None` means the embedded catalog inside a file repository.
    pub catalog: Option<CatalogUrl>,
    /// Master key.
    pub key: KeyUrl,
    /// Settings of the AWS backends (unused by the embedded default).
    pub aws: AwsSettings,
}

/// Whether a missing key file may be created (only a backup makes a new key; reading with a
/// fresh key could never succeed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// New backups will be written.
    Write,
    /// Only existing backups will be read.
    Read,
    /// Only records are read (listing, status): no key is loaded, so those work without one.
    None,
}

impl BackendConfig {
    /// The configuration from the environment, for the Lambda functions (the CLI reads the
    /// same variables through its flags): `PGKEEP_REPO`, `PGKEEP_CATALOG`, `PGKEEP_KEY` (or
    /// `PGKEEP_KEY_FILE`), `PGKEEP_AWS_ENDPOINT`, `PGKEEP_S3_PART_SIZE_MIB`,
    /// `PGKEEP_S3_SSE_KMS_KEY_ID`. There are no defaults: a missing repository or key fails.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`BackendConfig::from_env`] over any source of variables (empty values count as unset).
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let repo = env("PGKEEP_REPO").ok_or_else(|| {
            ConfigError::Missing("PGKEEP_REPO is not set (e.g. s3://bucket/prefix)".into())
        })?;
        let key = match (env("PGKEEP_KEY"), env("PGKEEP_KEY_FILE")) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Unsafe(
                    "both PGKEEP_KEY and PGKEEP_KEY_FILE are set; set only one".into(),
                ))
            }
            (Some(url), None) => KeyUrl::parse(&url)?,
            (None, Some(path)) => KeyUrl::File(file_path("key", &path, "")?),
            (None, None) => {
                return Err(ConfigError::Missing(
                    "PGKEEP_KEY is not set (e.g. kms://alias/pgkeep)".into(),
                ))
            }
        };
        let part_size_mib = env("PGKEEP_S3_PART_SIZE_MIB")
            .map(|v| {
                v.parse::<usize>().map_err(|_| {
                    ConfigError::Invalid(format!(
                        "PGKEEP_S3_PART_SIZE_MIB={v:?} is not a whole number of MiB"
                    ))
                })
            })
            .transpose()?;
        Ok(BackendConfig {
            repo: RepoUrl::parse(&repo)?,
            catalog: env("PGKEEP_CATALOG")
                .map(|c| CatalogUrl::parse(&c))
                .transpose()?,
            key,
            aws: AwsSettings::new(
                env("PGKEEP_AWS_ENDPOINT"),
                part_size_mib,
                env("PGKEEP_S3_SSE_KMS_KEY_ID"),
            )?,
        })
    }

    /// The catalog actually used.
    pub fn catalog_url(&self) -> Result<CatalogUrl, ConfigError> {
        match (&self.catalog, &self.repo) {
            (Some(c), _) => Ok(c.clone()),
            (None, RepoUrl::File(dir)) => Ok(CatalogUrl::Sqlite(dir.join(CATALOG_FILE))),
            (None, RepoUrl::S3 { .. }) => Err(ConfigError::Missing(
                "an s3:// repository needs a catalog: set PGKEEP_CATALOG or --catalog to dynamodb://TABLE".into(),
            )),
        }
    }

    /// Whether any chosen backend lives in AWS.
    pub fn uses_aws(&self) -> bool {
        matches!(self.repo, RepoUrl::S3 { .. })
            || matches!(self.catalog, Some(CatalogUrl::DynamoDb(_)))
            || matches!(self.key, KeyUrl::Kms(_))
    }

    /// Loads the AWS configuration (once per process: pass it to [`BackendConfig::open_with`]
    /// and to anything else that calls AWS).
    pub async fn load_aws(&self) -> Result<SdkConfig, ConfigError> {
        crate::aws::load_config(self.aws.endpoint.as_deref()).await
    }

    /// Builds the backends, loading the AWS configuration first when a backend needs it.
    pub async fn open(&self, key_use: KeyUse) -> Result<Services, ConfigError> {
        let aws = if self.uses_aws() {
            Some(self.load_aws().await?)
        } else {
            None
        };
        self.open_with(key_use, aws.as_ref())
    }

    /// Builds the backends with an AWS configuration loaded once by the caller (required when
    /// [`BackendConfig::uses_aws`]). Refuses a key file inside a file repository: whoever has
    /// a copy of the repository must not also have the key.
    pub fn open_with(
        &self,
        key_use: KeyUse,
        aws: Option<&SdkConfig>,
    ) -> Result<Services, ConfigError> {
        if let (RepoUrl::File(repo), KeyUrl::File(key_path)) = (&self.repo, &self.key) {
            if is_inside(key_path, repo) {
                return Err(ConfigError::Unsafe(format!(
                    "the key file {} is inside the repository {}; keep it elsewhere (a copy of the repository must not carry its key)",
                    key_path.display(),
                    repo.display()
                )));
            }
        }
        let catalog_url = self.catalog_url()?;
        let needs_aws = || {
            aws.ok_or_else(|| {
                ConfigError::Missing(
                    "an AWS backend was chosen but no AWS configuration was loaded".into(),
                )
            })
        };
        let store: Arc<dyn ObjectStore> = match &self.repo {
            RepoUrl::File(dir) => Arc::new(FsStore::new(dir.clone())),
            RepoUrl::S3 { bucket, prefix } => {
                let mut s3 = aws_sdk_s3::config::Builder::from(needs_aws()?);
                if self.aws.endpoint.is_some() {
                    s3 = s3.force_path_style(true);
                }
                let client = aws_sdk_s3::Client::from_conf(s3.build());
                Arc::new(S3Store::new(client, bucket, prefix, self.aws.s3.clone()))
            }
        };
        let catalog: Arc<dyn Catalog> = match catalog_url {
            CatalogUrl::Sqlite(path) => Arc::new(SqliteCatalog::open(path)?),
            CatalogUrl::DynamoDb(table) => Arc::new(DynamoCatalog::new(
                aws_sdk_dynamodb::Client::new(needs_aws()?),
                &table,
            )),
        };
        let keys: Arc<dyn KeyProvider> = match (&self.key, key_use) {
            (_, KeyUse::None) => Arc::new(NoKey),
            (KeyUrl::File(path), KeyUse::Write) => Arc::new(FileKeyProvider::load_or_create(path)?),
            (KeyUrl::File(path), KeyUse::Read) => Arc::new(FileKeyProvider::load(path)?),
            (KeyUrl::Kms(key_id), _) => Arc::new(KmsKeyProvider::new(
                aws_sdk_kms::Client::new(needs_aws()?),
                key_id,
            )),
        };
        Ok(Services {
            store,
            catalog,
            keys,
        })
    }
}

impl AwsSettings {
    /// Settings from their textual forms, checking the part size against S3's minimum.
    pub fn new(
        endpoint: Option<String>,
        part_size_mib: Option<usize>,
        sse_kms_key_id: Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut s3 = S3Options {
            sse_kms_key_id,
            ..S3Options::default()
        };
        if let Some(mib) = part_size_mib {
            let bytes = mib.saturating_mul(1024 * 1024);
            if bytes < MIN_PART_SIZE {
                return Err(ConfigError::Invalid(format!(
                    "an S3 part size of {mib} MiB is below S3's minimum of {} MiB",
                    MIN_PART_SIZE >> 20
                )));
            }
            s3.part_size = bytes;
        }
        Ok(AwsSettings { endpoint, s3 })
    }
}

/// The database to back up: `url` (`PGKEEP_DATABASE_URL`), or the Secrets Manager secret
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
        (None, None) => Err(ConfigError::Missing(
            "no database to back up: set PGKEEP_DATABASE_URL (or --database-url), or PGKEEP_DATABASE_SECRET_ARN".into(),
        )),
    }
}

/// How pgkeep authenticates to the database (`PGKEEP_DATABASE_IAM_AUTH`,
/// `PGKEEP_DATABASE_SSL_ROOT_CERT`): a password (URL, `PGPASSWORD`, passfile or secret), or
/// RDS IAM authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseAuth {
    /// RDS IAM authentication: a token per connection instead of a password, TLS required.
    /// Host, port, user and database come from the database URL, which holds no password.
    pub iam: bool,
    /// CA bundle (PEM) the server is verified against (`verify-full`); without one, IAM
    /// connections are encrypted but the certificate is not checked (`require`).
    pub ssl_root_cert: Option<PathBuf>,
}

impl DatabaseAuth {
    /// From `PGKEEP_DATABASE_IAM_AUTH` (`true` or `false`, default false) and
    /// `PGKEEP_DATABASE_SSL_ROOT_CERT` (only with IAM authentication).
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let iam = match env("PGKEEP_DATABASE_IAM_AUTH").as_deref().map(str::trim) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ConfigError::Invalid(format!(
                    "PGKEEP_DATABASE_IAM_AUTH={other:?}: write true or false"
                )))
            }
        };
        let ssl_root_cert = env("PGKEEP_DATABASE_SSL_ROOT_CERT").map(PathBuf::from);
        Self::new(iam, ssl_root_cert)
    }

    /// Checks that the settings go together.
    pub fn new(iam: bool, ssl_root_cert: Option<PathBuf>) -> Result<Self, ConfigError> {
        if ssl_root_cert.is_some() && !iam {
            return Err(ConfigError::Invalid(
                "PGKEEP_DATABASE_SSL_ROOT_CERT is used with PGKEEP_DATABASE_IAM_AUTH=true only; for a password connection put sslmode in the URL or PGSSLROOTCERT in the environment".into(),
            ));
        }
        Ok(DatabaseAuth { iam, ssl_root_cert })
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

    /// The database to back up, as [`database_target`] finds it, or, with IAM authentication,
    /// at `url` with tokens (a secret is refused then: the token replaces its password).
    pub async fn target(
        &self,
        url: Option<&str>,
        secret: Option<&str>,
        aws: Option<&SdkConfig>,
    ) -> Result<PgTarget, ConfigError> {
        if !self.iam {
            return database_target(url, secret, aws).await;
        }
        if secret.is_some() {
            return Err(ConfigError::Invalid(
                "PGKEEP_DATABASE_IAM_AUTH=true and a database secret (PGKEEP_DATABASE_SECRET_ARN) exclude each other: the IAM token replaces the password; give the database as PGKEEP_DATABASE_URL=postgresql://USER@HOST:PORT/DATABASE".into(),
            ));
        }
        let url = url.ok_or_else(|| {
            ConfigError::Missing(
                "PGKEEP_DATABASE_IAM_AUTH=true needs PGKEEP_DATABASE_URL=postgresql://USER@HOST:PORT/DATABASE".into(),
            )
        })?;
        let aws = aws.ok_or_else(|| {
            ConfigError::Missing("RDS IAM authentication needs the AWS configuration".into())
        })?;
        self.iam_target("PGKEEP_DATABASE_URL", url, aws).await
    }
}

/// Whether `path` is `dir` or below it, comparing absolute, symlink-resolved forms where they
/// exist.
fn is_inside(path: &Path, dir: &Path) -> bool {
    fn resolve(p: &Path) -> PathBuf {
        let abs = if p.is_absolute() {
            p.to_owned()
        } else {
            std::env::current_dir().unwrap_or_default().join(p)
        };
        // Resolve the longest existing ancestor, keep the rest as written.
        let mut existing = abs.clone();
        let mut rest = Vec::new();
        while !existing.exists() {
            match (existing.file_name(), existing.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name.to_owned());
                    existing = parent.to_owned();
                }
                _ => break,
            }
        }
        let mut out = existing.canonicalize().unwrap_or(existing);
        for part in rest.into_iter().rev() {
            out.push(part);
        }
        out
    }
    resolve(path).starts_with(resolve(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn urls_choose_backends() {
        assert_eq!(
            RepoUrl::parse("file:///var/b").unwrap(),
            RepoUrl::File("/var/b".into())
        );
        assert_eq!(
            RepoUrl::parse("rel/dir").unwrap(),
            RepoUrl::File("rel/dir".into())
        );
        assert_eq!(
            RepoUrl::parse("s3://my-bucket/pgkeep/prod/").unwrap(),
            RepoUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: "pgkeep/prod".into()
            }
        );
        assert_eq!(
            RepoUrl::parse("s3://my-bucket").unwrap(),
            RepoUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: String::new()
            }
        );
        for bad in [
            "s3://",
            "s3://B/x",
            "s3://b/x",
            "s3://bucket/../x",
            "s3://bucket/a//b",
        ] {
            assert!(
                matches!(RepoUrl::parse(bad), Err(ConfigError::BadUrl { .. })),
                "{bad} accepted"
            );
        }
        assert_eq!(
            CatalogUrl::parse("dynamodb://pgkeep-catalog").unwrap(),
            CatalogUrl::DynamoDb("pgkeep-catalog".into())
        );
        assert!(CatalogUrl::parse("dynamodb://a b").is_err());
        assert_eq!(
            KeyUrl::parse("kms://alias/pgkeep").unwrap(),
            KeyUrl::Kms("alias/pgkeep".into())
        );
        assert_eq!(
            KeyUrl::parse("kms://arn:aws:kms:eu-west-1:111122223333:key/1234abcd").unwrap(),
            KeyUrl::Kms("arn:aws:kms:eu-west-1:111122223333:key/1234abcd".into())
        );
        assert!(KeyUrl::parse("kms://").is_err());
        assert!(matches!(
            RepoUrl::parse("ftp://x"),
            Err(ConfigError::Scheme { .. })
        ));
        assert!(RepoUrl::parse("file://relative").is_err());
        assert_eq!(
            CatalogUrl::parse("sqlite:///c.db").unwrap(),
            CatalogUrl::Sqlite("/c.db".into())
        );
        assert_eq!(
            KeyUrl::parse("/etc/pgkeep.key").unwrap(),
            KeyUrl::File("/etc/pgkeep.key".into())
        );
    }

    #[test]
    fn an_s3_repository_needs_a_catalog_and_small_parts_are_refused() {
        let config = BackendConfig {
            repo: RepoUrl::parse("s3://bucket/p").unwrap(),
            catalog: None,
            key: KeyUrl::Kms("alias/k".into()),
            aws: AwsSettings::default(),
        };
        assert!(config.uses_aws());
        assert!(matches!(config.catalog_url(), Err(ConfigError::Missing(_))));
        assert!(AwsSettings::new(None, Some(4), None).is_err());
        assert_eq!(
            AwsSettings::new(None, Some(5), None).unwrap().s3.part_size,
            5 << 20
        );
    }

    #[test]
    fn lambda_settings_come_from_the_environment() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let config = BackendConfig::from_vars(vars(&[
            ("PGKEEP_REPO", "s3://bucket/pgkeep"),
            ("PGKEEP_CATALOG", "dynamodb://pgkeep"),
            ("PGKEEP_KEY", "kms://alias/pgkeep"),
            ("PGKEEP_KEY_FILE", ""),
            ("PGKEEP_AWS_ENDPOINT", "http://127.0.0.1:5000"),
            ("PGKEEP_S3_PART_SIZE_MIB", "8"),
            ("PGKEEP_S3_SSE_KMS_KEY_ID", "alias/s3"),
        ]))
        .unwrap();
        assert_eq!(
            config.catalog_url().unwrap(),
            CatalogUrl::DynamoDb("pgkeep".into())
        );
        assert_eq!(config.key, KeyUrl::Kms("alias/pgkeep".into()));
        assert_eq!(
            config.aws.endpoint.as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(config.aws.s3.part_size, 8 << 20);
        assert_eq!(config.aws.s3.sse_kms_key_id.as_deref(), Some("alias/s3"));

        let file = BackendConfig::from_vars(vars(&[
            ("PGKEEP_REPO", "/var/b"),
            ("PGKEEP_KEY_FILE", "/etc/k"),
        ]))
        .unwrap();
        assert_eq!(file.key, KeyUrl::File("/etc/k".into()));
        assert!(!file.uses_aws());

        for bad in [
            &[("PGKEEP_KEY", "kms://k")][..],
            &[("PGKEEP_REPO", "s3://bucket/p")][..],
            &[
                ("PGKEEP_REPO", "s3://bucket/p"),
                ("PGKEEP_KEY", "kms://k"),
                ("PGKEEP_KEY_FILE", "/k"),
            ][..],
            &[
                ("PGKEEP_REPO", "s3://bucket/p"),
                ("PGKEEP_KEY", "kms://k"),
                ("PGKEEP_S3_PART_SIZE_MIB", "lots"),
            ][..],
        ] {
            assert!(BackendConfig::from_vars(vars(bad)).is_err(), "{bad:?}");
        }
    }

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
        let url =
            "postgresql://pgkeep_backup@shop.abcdefghijkl.eu-west-1.rds.amazonaws.com:5432/shop";
        let auth = DatabaseAuth::from_vars(|name| {
            (name == "PGKEEP_DATABASE_IAM_AUTH").then(|| "true".to_owned())
        })
        .unwrap();
        let target = auth.target(Some(url), None, Some(&aws)).await.unwrap();
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
        let target = auth.target(Some(url), None, Some(&aws)).await.unwrap();
        let (env, _) = client_env(&target);
        assert_eq!(env["PGSSLMODE"], "verify-full");
        assert_eq!(env["PGSSLROOTCERT"], "/opt/rds/global-bundle.pem");

        // Without IAM: the password as before, TLS as the URL says.
        let plain = DatabaseAuth::default()
            .target(Some(url), None, None)
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
            (None, None, "needs PGKEEP_DATABASE_URL"),
            (Some("postgresql://u:pw@h:5432/shop"), None, "no password"),
            (Some("postgresql://h:5432/shop"), None, "the database user"),
        ] {
            let err = iam
                .target(url, secret, Some(&aws))
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
        assert!(DatabaseAuth::new(false, Some("/ca.pem".into())).is_err());
    }

    #[tokio::test]
    async fn a_key_inside_the_repository_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let config = BackendConfig {
            repo: RepoUrl::File(repo.clone()),
            catalog: None,
            key: KeyUrl::File(repo.join("keys/pgkeep.key")),
            aws: AwsSettings::default(),
        };
        assert!(!config.uses_aws());
        let err = config.open(KeyUse::Write).await.err().unwrap();
        assert!(matches!(err, ConfigError::Unsafe(_)), "{err}");
        assert!(!repo.join("keys/pgkeep.key").exists());

        let ok = BackendConfig {
            key: KeyUrl::File(dir.path().join("pgkeep.key")),
            ..config
        };
        ok.open(KeyUse::Write).await.unwrap();
        assert!(repo.join(CATALOG_FILE).exists());
    }
}
