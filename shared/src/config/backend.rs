//! Which backends: repository, catalog, master key, and the AWS settings they share.
//!
//! The `pgkeep` command and the functions differ in two ways only, and both are parameters of
//! [`BackendSettings::resolve`]: the command has per-user defaults for the repository and the
//! key file ([`BackendDefaults`]), and on the command line a flag beats the environment when
//! both a key and a key file are set ([`KeyPrecedence`]).

use std::path::PathBuf;

use super::{given, given_owned, ConfigError, Setting};
use crate::backends::{AwsSettings, BackendConfig, CatalogUrl, KeyUrl, RepoUrl};
use crate::store::s3::{S3Options, MIN_PART_SIZE};

const REPO: Setting = Setting {
    env: "PGKEEP_REPO",
    flag: "--repo",
};
const KEY: Setting = Setting {
    env: "PGKEEP_KEY",
    flag: "--key",
};
const KEY_FILE: Setting = Setting {
    env: "PGKEEP_KEY_FILE",
    flag: "--key-file",
};
const OLD_KEY_FILES: Setting = Setting {
    env: "PGKEEP_OLD_KEY_FILES",
    flag: "--old-key-file",
};
const PART_SIZE: Setting = Setting {
    env: "PGKEEP_S3_PART_SIZE_MIB",
    flag: "--s3-part-size-mib",
};

/// Where backups, records and the master key are, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct BackendSettings {
    /// Backup repository: a directory, file:///path, or s3://bucket/prefix.
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "PGKEEP_REPO", global = true, value_name = "URL")
    )]
    pub repo: Option<String>,

    /// Catalog of backup records: sqlite:///path [default: catalog.sqlite3 inside a file
    /// repository] or dynamodb://table (required with an s3:// repository).
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "PGKEEP_CATALOG", global = true, value_name = "URL")
    )]
    pub catalog: Option<String>,

    /// Master key: file:///path (as --key-file) or kms://KEY (a KMS key ARN, key id or alias/NAME).
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "PGKEEP_KEY", global = true, value_name = "URL")
    )]
    pub key: Option<String>,

    /// Master key file (32 random bytes, mode 0600, created by the first backup); keep it outside
    /// the repository and back it up separately.
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "PGKEEP_KEY_FILE", global = true, value_name = "PATH")
    )]
    pub key_file: Option<String>,

    /// A retired key file, only to read backups made with it after a key rotation (repeatable;
    /// PGKEEP_OLD_KEY_FILES: paths or file:/// URLs separated by commas). New backups and a restore's safety backup
    /// always use the current key.
    #[cfg_attr(
        feature = "clap",
        arg(
            long = "old-key-file",
            env = "PGKEEP_OLD_KEY_FILES",
            global = true,
            value_name = "PATH"
        )
    )]
    pub old_key_file: Vec<String>,
}

/// Where AWS calls go and how S3 objects are written, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct AwsOptions {
    /// Send every AWS call to this endpoint (a local emulator such as moto).
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "PGKEEP_AWS_ENDPOINT", global = true, value_name = "URL")
    )]
    pub aws_endpoint: Option<String>,

    /// How S3 uploads are cut and encrypted at rest.
    #[cfg_attr(feature = "clap", command(flatten))]
    pub s3: S3Settings,
}

/// How S3 uploads are cut and encrypted at rest, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct S3Settings {
    /// S3 multipart part size in MiB (at least 5) [default: 16].
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            env = "PGKEEP_S3_PART_SIZE_MIB",
            global = true,
            value_name = "MIB"
        )
    )]
    pub s3_part_size_mib: Option<String>,

    /// Encrypt S3 objects at rest with this KMS key (SSE-KMS), on top of pgkeep's own encryption.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            env = "PGKEEP_S3_SSE_KMS_KEY_ID",
            global = true,
            value_name = "KEY"
        )
    )]
    pub s3_sse_kms_key_id: Option<String>,
}

/// What an unset repository or key means: an error (the functions: a deployment states its
/// backends) or a per-user default (the command: `pgkeep backup` works out of the box).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendDefaults {
    /// The repository directory when none is set.
    pub repo: Option<PathBuf>,
    /// The key file when neither a key nor a key file is set.
    pub key_file: Option<PathBuf>,
}

impl BackendDefaults {
    /// No defaults: the repository and the key must be set.
    pub fn required() -> Self {
        Self::default()
    }
}

/// Which wins when both a key and a key file are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPrecedence {
    /// Neither: two keys are ambiguous (both from the environment, or both from flags).
    Refuse,
    /// The key (`--key` was on the command line, the key file came from the environment).
    Key,
    /// The key file (`--key-file` was on the command line, the key from the environment).
    KeyFile,
}

impl BackendSettings {
    /// The settings from `PGKEEP_REPO`, `PGKEEP_CATALOG`, `PGKEEP_KEY`, `PGKEEP_KEY_FILE` and
    /// `PGKEEP_OLD_KEY_FILES`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        BackendSettings {
            repo: get(REPO.env),
            catalog: get("PGKEEP_CATALOG"),
            key: get(KEY.env),
            key_file: get(KEY_FILE.env),
            old_key_file: get(OLD_KEY_FILES.env).into_iter().collect(),
        }
    }

    /// The backends to build, with the AWS settings `aws`: URLs parsed, the defaults applied,
    /// one key chosen, the S3 part size checked.
    pub fn resolve(
        &self,
        aws: &AwsOptions,
        defaults: &BackendDefaults,
        precedence: KeyPrecedence,
    ) -> Result<BackendConfig, ConfigError> {
        let repo = match (given_owned(&self.repo), &defaults.repo) {
            (Some(url), _) => RepoUrl::parse(&url)?,
            (None, Some(dir)) => RepoUrl::File(dir.clone()),
            (None, None) => {
                return Err(ConfigError::Missing(format!(
                    "{REPO} is not set (e.g. s3://bucket/prefix)"
                )))
            }
        };
        let catalog = given(self.catalog.as_deref())
            .map(CatalogUrl::parse)
            .transpose()?;
        let key = match (given_owned(&self.key), given_owned(&self.key_file)) {
            (Some(url), Some(path)) => match precedence {
                KeyPrecedence::Key => KeyUrl::parse(&url)?,
                KeyPrecedence::KeyFile => key_file(&path)?,
                KeyPrecedence::Refuse => {
                    return Err(ConfigError::Unsafe(
                        "both a key (--key, PGKEEP_KEY) and a key file (--key-file, PGKEEP_KEY_FILE) are set; give one".into(),
                    ))
                }
            },
            (Some(url), None) => KeyUrl::parse(&url)?,
            (None, Some(path)) => key_file(&path)?,
            (None, None) => match &defaults.key_file {
                Some(path) => KeyUrl::File(path.clone()),
                None => {
                    return Err(ConfigError::Missing(format!(
                        "{KEY} is not set (e.g. kms://alias/pgkeep)"
                    )))
                }
            },
        };
        let old_key_files = self
            .old_key_file
            .iter()
            .flat_map(|value| value.split(','))
            .filter_map(|path| given(Some(path)))
            .map(|path| match KeyUrl::parse(path)? {
                KeyUrl::File(p) => Ok(p),
                KeyUrl::Kms(_) => Err(OLD_KEY_FILES.invalid(format!(
                    "{path:?} is a KMS key; old KMS keys need no setting (each backup names its key ARN, and KMS decrypts with it)"
                ))),
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(BackendConfig {
            repo,
            catalog,
            key,
            old_key_files,
            aws: aws.resolve()?,
        })
    }
}

/// A key file is a path (or file:///path), never a KMS key.
fn key_file(path: &str) -> Result<KeyUrl, ConfigError> {
    match KeyUrl::parse(path)? {
        KeyUrl::File(p) => Ok(KeyUrl::File(p)),
        KeyUrl::Kms(_) => Err(ConfigError::Invalid(format!(
            "{KEY_FILE} takes a path; give a KMS key with {KEY} kms://..."
        ))),
    }
}

impl AwsOptions {
    /// The settings from `PGKEEP_AWS_ENDPOINT`, `PGKEEP_S3_PART_SIZE_MIB` and
    /// `PGKEEP_S3_SSE_KMS_KEY_ID`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        AwsOptions {
            aws_endpoint: get("PGKEEP_AWS_ENDPOINT"),
            s3: S3Settings {
                s3_part_size_mib: get(PART_SIZE.env),
                s3_sse_kms_key_id: get("PGKEEP_S3_SSE_KMS_KEY_ID"),
            },
        }
    }

    /// The endpoint as given; the part size checked against S3's minimum.
    pub fn resolve(&self) -> Result<AwsSettings, ConfigError> {
        Ok(AwsSettings {
            endpoint: given_owned(&self.aws_endpoint),
            s3: self.s3.resolve()?,
        })
    }
}

impl S3Settings {
    /// The options of S3 uploads, the part size checked against S3's minimum.
    pub fn resolve(&self) -> Result<S3Options, ConfigError> {
        let mut s3 = S3Options {
            sse_kms_key_id: given_owned(&self.s3_sse_kms_key_id),
            ..S3Options::default()
        };
        if let Some(text) = given(self.s3_part_size_mib.as_deref()) {
            let mib: usize = text
                .parse()
                .map_err(|_| PART_SIZE.invalid(format!("{text:?} is not a whole number of MiB")))?;
            let bytes = mib.saturating_mul(1024 * 1024);
            if bytes < MIN_PART_SIZE {
                return Err(PART_SIZE.invalid(format!(
                    "an S3 part size of {mib} MiB is below S3's minimum of {} MiB",
                    MIN_PART_SIZE >> 20
                )));
            }
            s3.part_size = bytes;
        }
        Ok(s3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn lambda(
        pairs: &'static [(&'static str, &'static str)],
    ) -> Result<BackendConfig, ConfigError> {
        BackendSettings::from_lookup(vars(pairs)).resolve(
            &AwsOptions::from_lookup(vars(pairs)),
            &BackendDefaults::required(),
            KeyPrecedence::Refuse,
        )
    }

    #[test]
    fn backends_come_from_the_environment() {
        let config = lambda(&[
            ("PGKEEP_REPO", "s3://bucket/pgkeep"),
            ("PGKEEP_CATALOG", "dynamodb://pgkeep"),
            ("PGKEEP_KEY", "kms://alias/pgkeep"),
            ("PGKEEP_KEY_FILE", ""),
            ("PGKEEP_AWS_ENDPOINT", "http://127.0.0.1:5000"),
            ("PGKEEP_S3_PART_SIZE_MIB", "8"),
            ("PGKEEP_S3_SSE_KMS_KEY_ID", "alias/s3"),
        ])
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

        let file = lambda(&[("PGKEEP_REPO", "/var/b"), ("PGKEEP_KEY_FILE", "/etc/k")]).unwrap();
        assert_eq!(file.key, KeyUrl::File("/etc/k".into()));
        assert!(!file.uses_aws());

        for (bad, needle) in [
            (&[("PGKEEP_KEY", "kms://k")][..], "PGKEEP_REPO"),
            (&[("PGKEEP_REPO", "s3://bucket/p")][..], "PGKEEP_KEY"),
            (
                &[
                    ("PGKEEP_REPO", "s3://bucket/p"),
                    ("PGKEEP_KEY", "kms://k"),
                    ("PGKEEP_KEY_FILE", "/k"),
                ][..],
                "give one",
            ),
            (
                &[
                    ("PGKEEP_REPO", "s3://bucket/p"),
                    ("PGKEEP_KEY", "kms://k"),
                    ("PGKEEP_S3_PART_SIZE_MIB", "lots"),
                ][..],
                "PGKEEP_S3_PART_SIZE_MIB",
            ),
            (
                &[("PGKEEP_REPO", "/r"), ("PGKEEP_KEY_FILE", "kms://k")][..],
                "takes a path",
            ),
        ] {
            let err = lambda(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }

    #[test]
    fn defaults_and_precedence_are_parameters() {
        let settings = BackendSettings {
            key: Some("kms://alias/k".into()),
            key_file: Some("/k".into()),
            ..BackendSettings::default()
        };
        let defaults = BackendDefaults {
            repo: Some("/home/u/repo".into()),
            key_file: Some("/home/u/key".into()),
        };
        let aws = AwsOptions::default();
        let key = |p| settings.resolve(&aws, &defaults, p).map(|c| c.key);
        assert_eq!(
            key(KeyPrecedence::Key).unwrap(),
            KeyUrl::Kms("alias/k".into())
        );
        assert_eq!(
            key(KeyPrecedence::KeyFile).unwrap(),
            KeyUrl::File("/k".into())
        );
        assert!(key(KeyPrecedence::Refuse).is_err());
        let empty = BackendSettings::default()
            .resolve(&aws, &defaults, KeyPrecedence::Refuse)
            .unwrap();
        assert_eq!(empty.repo, RepoUrl::File("/home/u/repo".into()));
        assert_eq!(empty.key, KeyUrl::File("/home/u/key".into()));
    }

    #[test]
    fn old_key_files_are_comma_separated_paths() {
        let config = lambda(&[
            ("PGKEEP_REPO", "/r"),
            ("PGKEEP_KEY_FILE", "/k"),
            (
                "PGKEEP_OLD_KEY_FILES",
                " /old/2024.key,,file:///old/2025.key ",
            ),
        ])
        .unwrap();
        assert_eq!(
            config.old_key_files,
            vec![
                PathBuf::from("/old/2024.key"),
                PathBuf::from("/old/2025.key")
            ]
        );
        let err = lambda(&[
            ("PGKEEP_REPO", "/r"),
            ("PGKEEP_KEY_FILE", "/k"),
            (
                "PGKEEP_OLD_KEY_FILES",
                "kms://arn:aws:kms:eu-west-1:1:key/x",
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("PGKEEP_OLD_KEY_FILES"), "{err}");
    }

    #[test]
    fn small_parts_are_refused() {
        let s3 = |mib: &str| {
            S3Settings {
                s3_part_size_mib: Some(mib.into()),
                s3_sse_kms_key_id: None,
            }
            .resolve()
        };
        assert!(s3("4").is_err());
        assert_eq!(s3("5").unwrap().part_size, 5 << 20);
    }
}
