//! A master key in a local file: the embedded default, no AWS account needed.
//!
//! The file holds 32 random bytes. It is created on first backup with mode 0600 and refused
//! when group or others can read it; it must live outside the repository so that a copy of the
//! repository alone never holds the means to read it.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use rustix::fs::OFlags;
use sha2::{Digest, Sha256};

use super::{DataKey, KeyContext, KeyError, KeyProvider, NewDataKey};

const NONCE_LEN: usize = 12;

/// A master key loaded from (or created in) a file.
pub struct FileKeyProvider {
    path: PathBuf,
    key: DataKey,
    key_id: String,
}

impl std::fmt::Debug for FileKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKeyProvider")
            .field("path", &self.path)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl FileKeyProvider {
    /// Loads the key, refusing a missing, malformed or group/world-readable file, and a
    /// symlink (opened with `O_NOFOLLOW`, checked on the open handle: what is checked is
    /// what is read).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        use std::io::Read;
        let path = path.as_ref().to_owned();
        let fail = |message: String| KeyError::KeyFile {
            path: path.display().to_string(),
            message,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(crate::outfile::flags(OFlags::NOFOLLOW | OFlags::NONBLOCK))
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => fail(
                    "not found; it is created by the first backup, or restore it from your key backup"
                        .into(),
                ),
                _ if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => fail(
                    "is a symbolic link; pgkeep does not follow links to key files: give the path of the file itself".into(),
                ),
                _ => fail(e.to_string()),
            })?;
        let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
        if !meta.is_file() {
            return Err(fail("is not a regular file".into()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(fail(format!(
                "is readable by group or others (mode {mode:04o}); run `chmod 600 {}`",
                path.display()
            )));
        }
        let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(33));
        (&mut file)
            .take(33)
            .read_to_end(&mut bytes)
            .map_err(|e| fail(e.to_string()))?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            fail(format!(
                "holds {} bytes; a pgkeep key file holds exactly 32 random bytes",
                meta.len()
            ))
        })?;
        let key = DataKey::new(key);
        let key_id = fingerprint(&key);
        Ok(FileKeyProvider { path, key, key_id })
    }

    /// Loads the key, first creating it (32 random bytes, mode 0600) when the file is missing.
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        if !path.exists() {
            create(path)?;
        }
        Self::load(path)
    }

    /// Where the key file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `file:` plus the first 16 hex digits of SHA-256 over a label and the key: names the key in
/// records and error messages without revealing anything about it.
fn fingerprint(key: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"pgkeep/key-id/v1\0");
    h.update(key);
    format!("file:{}", &hex::encode(h.finalize())[..16])
}

fn create(path: &Path) -> Result<(), KeyError> {
    let fail = |message: String| KeyError::KeyFile {
        path: path.display().to_string(),
        message,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| fail(format!("cannot create directory {}: {e}", dir.display())))?;
        }
    }
    let mut key = DataKey::new([0u8; 32]);
    getrandom::fill(key.as_mut()).map_err(|e| fail(format!("no randomness: {e}")))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| fail(format!("cannot create: {e}")))?;
    file.write_all(key.as_ref())
        .and_then(|_| file.sync_all())
        .map_err(|e| fail(format!("cannot write: {e}")))?;
    tracing::info!(path = %path.display(), "created a new key file; back it up: without it no backup can be read");
    Ok(())
}

#[async_trait]
impl KeyProvider for FileKeyProvider {
    fn key_id(&self) -> String {
        self.key_id.clone()
    }

    async fn generate(&self, ctx: KeyContext<'_>) -> Result<NewDataKey, KeyError> {
        let mut key = DataKey::new([0u8; 32]);
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(key.as_mut())
            .and_then(|_| getrandom::fill(&mut nonce))
            .map_err(|e| KeyError::Backend(format!("no randomness: {e}")))?;
        let cipher = Aes256Gcm::new_from_slice(self.key.as_ref()).expect("32-byte key");
        let aad = ctx.associated_data();
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: key.as_ref(),
                    aad: &aad,
                },
            )
            .map_err(|_| KeyError::Backend("wrapping the data key failed".into()))?;
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&sealed);
        Ok(NewDataKey {
            key,
            wrapped,
            key_id: self.key_id.clone(),
        })
    }

    async fn unwrap(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: KeyContext<'_>,
    ) -> Result<DataKey, KeyError> {
        if key_id != self.key_id {
            return Err(KeyError::WrongKey {
                expected: key_id.to_owned(),
                actual: self.key_id.clone(),
            });
        }
        let failed = || KeyError::UnwrapFailed {
            backup_id: ctx.backup_id.to_string(),
        };
        if wrapped.len() != NONCE_LEN + 32 + 16 {
            return Err(failed());
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        let cipher = Aes256Gcm::new_from_slice(self.key.as_ref()).expect("32-byte key");
        let aad = ctx.associated_data();
        let plain = zeroize::Zeroizing::new(
            cipher
                .decrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: sealed,
                        aad: &aad,
                    },
                )
                .map_err(|_| failed())?,
        );
        let key: [u8; 32] = plain.as_slice().try_into().map_err(|_| failed())?;
        Ok(DataKey::new(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BackupId;

    #[tokio::test]
    async fn created_with_0600_and_wraps_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/pgkeep.key");
        let p = FileKeyProvider::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&path).unwrap().len(), 32);
        let id = BackupId::generate(chrono::Utc::now());
        let ctx = KeyContext {
            backup_id: &id,
            database: "shop",
        };
        let new = p.generate(ctx).await.unwrap();
        let again = FileKeyProvider::load(&path).unwrap();
        assert_eq!(again.key_id(), p.key_id());
        let key = again.unwrap(&new.key_id, &new.wrapped, ctx).await.unwrap();
        assert_eq!(*key, *new.key);
    }

    #[tokio::test]
    async fn a_wrapped_key_is_bound_to_its_backup_and_database() {
        let dir = tempfile::tempdir().unwrap();
        let p = FileKeyProvider::load_or_create(dir.path().join("k")).unwrap();
        let id = BackupId::generate(chrono::Utc::now());
        let other = BackupId::generate(chrono::Utc::now());
        let new = p
            .generate(KeyContext {
                backup_id: &id,
                database: "shop",
            })
            .await
            .unwrap();
        for ctx in [
            KeyContext {
                backup_id: &other,
                database: "shop",
            },
            KeyContext {
                backup_id: &id,
                database: "crm",
            },
        ] {
            assert!(matches!(
                p.unwrap(&new.key_id, &new.wrapped, ctx).await,
                Err(KeyError::UnwrapFailed { .. })
            ));
        }
        let mut tampered = new.wrapped.clone();
        tampered[20] ^= 1;
        assert!(p
            .unwrap(
                &new.key_id,
                &tampered,
                KeyContext {
                    backup_id: &id,
                    database: "shop"
                }
            )
            .await
            .is_err());
    }

    #[tokio::test]
    async fn another_key_file_is_named_as_the_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileKeyProvider::load_or_create(dir.path().join("a")).unwrap();
        let b = FileKeyProvider::load_or_create(dir.path().join("b")).unwrap();
        assert_ne!(a.key_id(), b.key_id());
        let id = BackupId::generate(chrono::Utc::now());
        let ctx = KeyContext {
            backup_id: &id,
            database: "shop",
        };
        let new = a.generate(ctx).await.unwrap();
        let err = b.unwrap(&new.key_id, &new.wrapped, ctx).await.unwrap_err();
        assert!(matches!(err, KeyError::WrongKey { .. }), "{err}");
    }

    #[test]
    fn loose_permissions_wrong_size_and_missing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        FileKeyProvider::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = FileKeyProvider::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        let short = dir.path().join("short");
        std::fs::write(&short, b"abc").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(FileKeyProvider::load(&short)
            .unwrap_err()
            .to_string()
            .contains("exactly 32"));
        assert!(FileKeyProvider::load(dir.path().join("none"))
            .unwrap_err()
            .to_string()
            .contains("not found"));
    }
}
