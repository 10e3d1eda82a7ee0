//! The one place that turns configuration into backends.
//!
//! `--repo file:///path` (or a plain path), `--catalog sqlite:///path`, `--key file:///path`:
//! each URL picks one implementation of [`ObjectStore`], [`Catalog`] or [`KeyProvider`]. The
//! embedded default is a repository directory with its catalog inside and a key file outside.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::catalog::sqlite::SqliteCatalog;
use crate::catalog::{Catalog, CatalogError};
use crate::keys::file::FileKeyProvider;
use crate::keys::{KeyError, KeyProvider, NoKey};
use crate::store::fs::FsStore;
use crate::store::ObjectStore;

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
    /// A scheme that is known but not available in this build.
    #[error("{what} {url:?}: {scheme} backends are not available in this build yet")]
    NotAvailable {
        /// Which setting.
        what: &'static str,
        /// The value given.
        url: String,
        /// The scheme.
        scheme: &'static str,
    },
    /// A required setting is missing.
    #[error("{0}")]
    Missing(String),
    /// Settings that contradict a safety rule.
    #[error("{0}")]
    Unsafe(String),
    /// The catalog could not be opened.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Where backup objects go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoUrl {
    /// A local directory.
    File(PathBuf),
}

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogUrl {
    /// A SQLite file.
    Sqlite(PathBuf),
}

/// Where the master key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyUrl {
    /// A local key file.
    File(PathBuf),
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

impl RepoUrl {
    /// `file:///path`, or a plain path; `s3://bucket/prefix` is recognised for later builds.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        match scheme_of(url) {
            None => Ok(RepoUrl::File(file_path("repository", url, "")?)),
            Some("file") => Ok(RepoUrl::File(file_path("repository", url, "file://")?)),
            Some("s3") => Err(ConfigError::NotAvailable {
                what: "repository",
                url: url.into(),
                scheme: "S3",
            }),
            Some(_) => Err(ConfigError::Scheme {
                what: "repository",
                url: url.into(),
                expected: "file:///path or s3://bucket/prefix",
            }),
        }
    }
}

impl CatalogUrl {
    /// `sqlite:///path/catalog.sqlite3`, or a plain path.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        match scheme_of(url) {
            None => Ok(CatalogUrl::Sqlite(file_path("catalog", url, "")?)),
            Some("sqlite") => Ok(CatalogUrl::Sqlite(file_path("catalog", url, "sqlite://")?)),
            Some("dynamodb") => Err(ConfigError::NotAvailable {
                what: "catalog",
                url: url.into(),
                scheme: "DynamoDB",
            }),
            Some(_) => Err(ConfigError::Scheme {
                what: "catalog",
                url: url.into(),
                expected: "sqlite:///path or dynamodb://table",
            }),
        }
    }
}

impl KeyUrl {
    /// `file:///path/pgkeep.key`, or a plain path.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        match scheme_of(url) {
            None => Ok(KeyUrl::File(file_path("key", url, "")?)),
            Some("file") => Ok(KeyUrl::File(file_path("key", url, "file://")?)),
            Some("kms") => Err(ConfigError::NotAvailable {
                what: "key",
                url: url.into(),
                scheme: "KMS",
            }),
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

/// Which backends to build.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Object store.
    pub repo: RepoUrl,
    /// Catalog; `None` means the embedded catalog inside a file repository.
    pub catalog: Option<CatalogUrl>,
    /// Master key.
    pub key: KeyUrl,
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
    pub fn catalog_url(&self) -> CatalogUrl {
        match (&self.catalog, &self.repo) {
            (Some(c), _) => c.clone(),
            (None, RepoUrl::File(dir)) => CatalogUrl::Sqlite(dir.join(CATALOG_FILE)),
        }
    }

    /// Builds the backends. Refuses a key file inside a file repository: whoever has a copy of
    /// the repository must not also have the key.
    pub fn open(&self, key_use: KeyUse) -> Result<Services, ConfigError> {
        let RepoUrl::File(repo) = &self.repo;
        let KeyUrl::File(key_path) = &self.key;
        if is_inside(key_path, repo) {
            return Err(ConfigError::Unsafe(format!(
                "the key file {} is inside the repository {}; keep it elsewhere (a copy of the repository must not carry its key)",
                key_path.display(),
                repo.display()
            )));
        }
        let store: Arc<dyn ObjectStore> = Arc::new(FsStore::new(repo.clone()));
        let CatalogUrl::Sqlite(catalog_path) = self.catalog_url();
        let catalog: Arc<dyn Catalog> = Arc::new(SqliteCatalog::open(catalog_path)?);
        let keys: Arc<dyn KeyProvider> = match key_use {
            KeyUse::Write => Arc::new(FileKeyProvider::load_or_create(key_path)?),
            KeyUse::Read => Arc::new(FileKeyProvider::load(key_path)?),
            KeyUse::None => Arc::new(NoKey),
        };
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
        assert!(matches!(
            RepoUrl::parse("s3://bucket/p"),
            Err(ConfigError::NotAvailable { .. })
        ));
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
    fn a_key_inside_the_repository_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let config = BackendConfig {
            repo: RepoUrl::File(repo.clone()),
            catalog: None,
            key: KeyUrl::File(repo.join("keys/pgkeep.key")),
        };
        let err = config.open(KeyUse::Write).err().unwrap();
        assert!(matches!(err, ConfigError::Unsafe(_)), "{err}");
        assert!(!repo.join("keys/pgkeep.key").exists());

        let ok = BackendConfig {
            key: KeyUrl::File(dir.path().join("pgkeep.key")),
            ..config
        };
        ok.open(KeyUse::Write).unwrap();
        assert!(repo.join(CATALOG_FILE).exists());
    }
}
