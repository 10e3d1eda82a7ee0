//! Key providers: where the master key lives that wraps each backup's data key.
//!
//! Envelope encryption: every backup gets a fresh random data key; only its wrapped form is
//! stored (in the object header and the manifest). Wrapping binds the key to the backup id and
//! database, so a wrapped key copied onto another backup does not unwrap.

use std::sync::Arc;

use async_trait::async_trait;

use crate::model::BackupId;

pub mod file;
pub mod kms;

pub use crate::pipeline::crypt::DataKey;

/// Why a key could not be made or unwrapped.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The local key file is missing, unreadable, malformed or too widely readable.
    #[error("key file {path}: {message}")]
    KeyFile {
        /// The file concerned.
        path: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The backup names a master key other than the configured one.
    #[error("backup was encrypted with key {expected}, but the configured key is {actual}; to read it, give the key file whose id is {expected} with --old-key-file PATH (or PGKEEP_OLD_KEY_FILES; `pgkeep key id FILE` prints a file's id), or use the KMS key the backup was made with")]
    WrongKey {
        /// Key id recorded with the backup.
        expected: String,
        /// Key id of the configured provider.
        actual: String,
    },
    /// The wrapped key did not authenticate for this backup and database.
    #[error("the data key of backup {backup_id} does not unwrap: it belongs to another backup or database, or was altered")]
    UnwrapFailed {
        /// The backup whose key failed.
        backup_id: String,
    },
    /// The key service failed.
    #[error("key service: {0}")]
    Backend(String),
}

/// What a wrapped key is bound to.
#[derive(Debug, Clone, Copy)]
pub struct KeyContext<'a> {
    /// The backup the data key encrypts.
    pub backup_id: &'a BackupId,
    /// The database it belongs to.
    pub database: &'a str,
}

impl KeyContext<'_> {
    /// The bytes a local wrap authenticates: a label, the id and the database.
    pub fn associated_data(&self) -> Vec<u8> {
        let mut aad = b"pgkeep/wrap/v1\0".to_vec();
        aad.extend_from_slice(self.backup_id.as_str().as_bytes());
        aad.push(0);
        aad.extend_from_slice(self.database.as_bytes());
        aad
    }
}

/// A fresh data key and the wrapped form to store.
pub struct NewDataKey {
    /// The plaintext key; never stored.
    pub key: DataKey,
    /// The key wrapped by the master key.
    pub wrapped: Vec<u8>,
    /// Which master key wrapped it.
    pub key_id: String,
}

/// Holds the master key and wraps/unwraps data keys with it.
#[async_trait]
pub trait KeyProvider: Send + Sync {
    /// Identifies the master key new backups are wrapped with.
    fn key_id(&self) -> String;
    /// A new random data key for one backup, plus its wrapped form.
    async fn generate(&self, ctx: KeyContext<'_>) -> Result<NewDataKey, KeyError>;
    /// Recovers a data key written by [`KeyProvider::generate`].
    async fn unwrap(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: KeyContext<'_>,
    ) -> Result<DataKey, KeyError>;
}

/// The current master key plus retired key files kept for reading: after a key rotation,
/// backups made with an old key stay readable, while everything written (new backups, a
/// restore's safety backup) uses the current key only.
pub struct KeyRing {
    current: Arc<dyn KeyProvider>,
    old: Vec<file::FileKeyProvider>,
}

impl KeyRing {
    /// `current` writes and reads; `old` only unwraps data keys that name their key id.
    pub fn new(current: Arc<dyn KeyProvider>, old: Vec<file::FileKeyProvider>) -> Self {
        KeyRing { current, old }
    }

    /// The ids of the retired keys, in the order given.
    pub fn old_key_ids(&self) -> Vec<String> {
        self.old.iter().map(KeyProvider::key_id).collect()
    }
}

#[async_trait]
impl KeyProvider for KeyRing {
    fn key_id(&self) -> String {
        self.current.key_id()
    }
    async fn generate(&self, ctx: KeyContext<'_>) -> Result<NewDataKey, KeyError> {
        self.current.generate(ctx).await
    }
    async fn unwrap(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: KeyContext<'_>,
    ) -> Result<DataKey, KeyError> {
        // The current key first (a KMS key also decrypts backups of other KMS keys: the
        // wrapped key names its key ARN), then a retired key file with exactly that id.
        if key_id != self.current.key_id() {
            if let Some(old) = self.old.iter().find(|k| k.key_id() == key_id) {
                return old.unwrap(key_id, wrapped, ctx).await;
            }
        }
        self.current.unwrap(key_id, wrapped, ctx).await
    }
}

/// Stands in for a key provider where an operation was opened without a key; any use is a
/// bug in the caller and says so.
pub struct NoKey;

#[async_trait]
impl KeyProvider for NoKey {
    fn key_id(&self) -> String {
        "none".into()
    }
    async fn generate(&self, _: KeyContext<'_>) -> Result<NewDataKey, KeyError> {
        Err(KeyError::Backend(
            "this operation was opened without a key".into(),
        ))
    }
    async fn unwrap(&self, _: &str, _: &[u8], _: KeyContext<'_>) -> Result<DataKey, KeyError> {
        Err(KeyError::Backend(
            "this operation was opened without a key".into(),
        ))
    }
}
