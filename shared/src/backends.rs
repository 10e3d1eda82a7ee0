//! The one place that turns configuration into backends: the backends' URLs and the chooser
//! ([`BackendConfig::open_with`]). The settings these come from are read in
//! [`crate::config`] ([`crate::config::BackendSettings`]).
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
use crate::catalog::Catalog;
use crate::config::ConfigError;
use crate::keys::file::FileKeyProvider;
use crate::keys::kms::KmsKeyProvider;
use crate::keys::{KeyProvider, KeyRing, NoKey};
use crate::store::fs::FsStore;
use crate::store::s3::{S3Options, S3Store};
use crate::store::{validate_key, ObjectStore};

/// File name of the embedded catalog inside a repository directory.
pub const CATALOG_FILE: &str = "catalog.sqlite3";

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
    /// Retired key files, only for unwrapping the data keys of older backups.
    pub old_key_files: Vec<PathBuf>,
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

    /// The master key (and the key ring of old key files, for reading) alone: what reading a
    /// backup straight from its manifest needs, with no catalog.
    pub fn open_keys(
        &self,
        key_use: KeyUse,
        aws: Option<&SdkConfig>,
    ) -> Result<Arc<dyn KeyProvider>, ConfigError> {
        let keys: Arc<dyn KeyProvider> = match (&self.key, key_use) {
            (_, KeyUse::None) => return Ok(Arc::new(NoKey)),
            (KeyUrl::File(path), KeyUse::Write) => Arc::new(FileKeyProvider::load_or_create(path)?),
            (KeyUrl::File(path), KeyUse::Read) => Arc::new(FileKeyProvider::load(path)?),
            (KeyUrl::Kms(key_id), _) => Arc::new(KmsKeyProvider::new(
                aws_sdk_kms::Client::new(aws.ok_or_else(|| {
                    ConfigError::Missing(
                        "an AWS backend was chosen but no AWS configuration was loaded".into(),
                    )
                })?),
                key_id,
            )),
        };
        if self.old_key_files.is_empty() {
            return Ok(keys);
        }
        let old = self
            .old_key_files
            .iter()
            .map(FileKeyProvider::load)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(KeyRing::new(keys, old)))
    }

    /// The S3 store of `bucket`/`prefix`, path-style when an endpoint (an emulator) is set.
    pub fn s3_store(&self, aws: &SdkConfig, bucket: &str, prefix: &str) -> S3Store {
        let mut s3 = aws_sdk_s3::config::Builder::from(aws);
        if self.aws.endpoint.is_some() {
            s3 = s3.force_path_style(true);
        }
        let client = aws_sdk_s3::Client::from_conf(s3.build());
        S3Store::new(client, bucket, prefix, self.aws.s3.clone())
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
        let key_files = match &self.key {
            KeyUrl::File(path) => Some(path),
            KeyUrl::Kms(_) => None,
        };
        if let RepoUrl::File(repo) = &self.repo {
            for key_path in key_files.into_iter().chain(&self.old_key_files) {
                if is_inside(key_path, repo) {
                    return Err(ConfigError::Unsafe(format!(
                        "the key file {} is inside the repository {}; keep it elsewhere (a copy of the repository must not carry its key)",
                        key_path.display(),
                        repo.display()
                    )));
                }
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
            RepoUrl::S3 { bucket, prefix } => Arc::new(self.s3_store(needs_aws()?, bucket, prefix)),
        };
        let catalog: Arc<dyn Catalog> = match catalog_url {
            CatalogUrl::Sqlite(path) => Arc::new(SqliteCatalog::open(path)?),
            CatalogUrl::DynamoDb(table) => Arc::new(DynamoCatalog::new(
                aws_sdk_dynamodb::Client::new(needs_aws()?),
                &table,
            )),
        };
        let keys = self.open_keys(key_use, aws)?;
        Ok(Services {
            store,
            catalog,
            keys,
        })
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
    fn an_s3_repository_needs_a_catalog() {
        let config = BackendConfig {
            repo: RepoUrl::parse("s3://bucket/p").unwrap(),
            catalog: None,
            key: KeyUrl::Kms("alias/k".into()),
            old_key_files: Vec::new(),
            aws: AwsSettings::default(),
        };
        assert!(config.uses_aws());
        assert!(matches!(config.catalog_url(), Err(ConfigError::Missing(_))));
    }

    #[tokio::test]
    async fn a_key_inside_the_repository_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let config = BackendConfig {
            repo: RepoUrl::File(repo.clone()),
            catalog: None,
            key: KeyUrl::File(repo.join("keys/pgkeep.key")),
            old_key_files: Vec::new(),
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
