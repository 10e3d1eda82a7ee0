//! The master key in AWS KMS: the production key provider.
//!
//! Each backup gets its own data key from `GenerateDataKey` (AES_256); only the ciphertext
//! KMS returns is stored. Both calls carry the encryption context
//! `{"pgkeep:backup_id": <id>, "pgkeep:database": <database>}`, which KMS binds into the
//! ciphertext: a wrapped key copied onto another backup or database does not decrypt, and
//! CloudTrail shows which backup every `Decrypt` was for.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeySpec, KeyState, KeyUsageType};
use aws_sdk_kms::Client;
use zeroize::Zeroizing;

use super::{DataKey, KeyContext, KeyError, KeyProvider, NewDataKey};
use crate::aws::{describe, error_code};

/// Encryption-context key naming the backup.
pub const CONTEXT_BACKUP_ID: &str = "pgkeep:backup_id";
/// Encryption-context key naming the database.
pub const CONTEXT_DATABASE: &str = "pgkeep:database";

/// Data keys generated and decrypted by one KMS key.
#[derive(Clone, Debug)]
pub struct KmsKeyProvider {
    client: Client,
    key_id: String,
}

impl KmsKeyProvider {
    /// New backups are wrapped by `key_id`: a key ARN, key id, alias ARN or `alias/NAME`.
    /// Backups record the key's ARN, so an alias can later point elsewhere and old backups
    /// still name the key that can read them.
    pub fn new(client: Client, key_id: &str) -> Self {
        KmsKeyProvider {
            client,
            key_id: key_id.to_owned(),
        }
    }

    /// Checks that the key exists, is enabled and makes data keys, with one harmless request
    /// (`DescribeKey`); returns its ARN, the id backups record.
    pub async fn check(&self) -> Result<String, KeyError> {
        let out = self
            .client
            .describe_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(|e| self.error("DescribeKey", &self.key_id, &e))?;
        let meta = out
            .key_metadata
            .ok_or_else(|| KeyError::Backend("KMS DescribeKey returned no key".into()))?;
        let key = &self.key_id;
        if meta.key_state() != Some(&KeyState::Enabled) {
            return Err(KeyError::Backend(format!(
                "KMS key {key} is {}, not enabled; enable it (or cancel its deletion)",
                meta.key_state()
                    .map_or("in an unknown state", |s| s.as_str())
            )));
        }
        // Checked when KMS says (an emulator may leave either out).
        if meta
            .key_usage()
            .is_some_and(|u| u != &KeyUsageType::EncryptDecrypt)
            || meta
                .key_spec()
                .is_some_and(|s| s != &KeySpec::SymmetricDefault)
        {
            return Err(KeyError::Backend(format!(
                "KMS key {key} is not a symmetric encryption key (usage {}, spec {}); pgkeep needs one (the default of `aws kms create-key`)",
                meta.key_usage().map_or("unknown", |u| u.as_str()),
                meta.key_spec().map_or("unknown", |s| s.as_str())
            )));
        }
        meta.arn
            .ok_or_else(|| KeyError::Backend("KMS DescribeKey returned no key ARN".into()))
    }

    fn error<E, R>(&self, action: &str, key_id: &str, err: &SdkError<E, R>) -> KeyError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let why = match error_code(err) {
            Some("NotFoundException") => format!(
                "KMS key {key_id} does not exist in this region; check the kms:// key (a key ARN, key id or alias/NAME) and AWS_REGION"
            ),
            Some("DisabledException") => {
                format!("KMS key {key_id} is disabled; enable it to make or read backups")
            }
            Some("KMSInvalidStateException") => format!(
                "KMS key {key_id} cannot be used in its current state (pending deletion or import?): cancel the deletion to read backups made with it"
            ),
            Some("AccessDeniedException") => format!(
                "not allowed to call kms:{action} with key {key_id}; allow it in the key policy or the IAM policy ({})",
                describe(err)
            ),
            _ => format!("kms:{action} with key {key_id}: {}", describe(err)),
        };
        KeyError::Backend(why)
    }
}

fn context(ctx: KeyContext<'_>) -> HashMap<String, String> {
    HashMap::from([
        (CONTEXT_BACKUP_ID.to_owned(), ctx.backup_id.to_string()),
        (CONTEXT_DATABASE.to_owned(), ctx.database.to_owned()),
    ])
}

fn data_key(plaintext: Blob) -> Option<DataKey> {
    let bytes = Zeroizing::new(plaintext.into_inner());
    let key: [u8; 32] = bytes.as_slice().try_into().ok()?;
    Some(DataKey::new(key))
}

#[async_trait]
impl KeyProvider for KmsKeyProvider {
    fn key_id(&self) -> String {
        self.key_id.clone()
    }

    async fn generate(&self, ctx: KeyContext<'_>) -> Result<NewDataKey, KeyError> {
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(context(ctx)))
            .send()
            .await
            .map_err(|e| self.error("GenerateDataKey", &self.key_id, &e))?;
        let bad = |what: &str| KeyError::Backend(format!("KMS GenerateDataKey returned {what}"));
        let wrapped = out
            .ciphertext_blob
            .ok_or_else(|| bad("no ciphertext"))?
            .into_inner();
        let key = out
            .plaintext
            .and_then(data_key)
            .ok_or_else(|| bad("no 32-byte plaintext key"))?;
        Ok(NewDataKey {
            key,
            wrapped,
            key_id: out.key_id.unwrap_or_else(|| self.key_id.clone()),
        })
    }

    async fn unwrap(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: KeyContext<'_>,
    ) -> Result<DataKey, KeyError> {
        if key_id.starts_with("file:") {
            return Err(KeyError::WrongKey {
                expected: key_id.to_owned(),
                actual: format!("kms:{}", self.key_id),
            });
        }
        // KeyId pins the key: KMS refuses a ciphertext made under any other key.
        let out = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .set_encryption_context(Some(context(ctx)))
            .send()
            .await
            .map_err(|e| {
                let mismatch = e.as_service_error().is_some_and(|s| {
                    s.is_invalid_ciphertext_exception() || s.is_incorrect_key_exception()
                });
                if mismatch {
                    KeyError::UnwrapFailed {
                        backup_id: ctx.backup_id.to_string(),
                    }
                } else {
                    self.error("Decrypt", key_id, &e)
                }
            })?;
        out.plaintext.and_then(data_key).ok_or_else(|| {
            KeyError::Backend("KMS Decrypt returned no 32-byte plaintext key".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BackupId;
    use crate::testing::{moto, unique};

    async fn provider(config: &crate::aws::SdkConfig) -> (KmsKeyProvider, String) {
        let client = Client::new(config);
        let key = client.create_key().send().await.unwrap();
        let meta = key.key_metadata().unwrap();
        let alias = format!("alias/{}", unique("pgkeep"));
        client
            .create_alias()
            .alias_name(&alias)
            .target_key_id(meta.key_id())
            .send()
            .await
            .unwrap();
        let arn = meta.arn().unwrap().to_owned();
        (KmsKeyProvider::new(client, &alias), arn)
    }

    #[tokio::test]
    async fn data_keys_round_trip_and_record_the_key_arn() {
        let Some(config) = moto().await else { return };
        let (kms, arn) = provider(&config).await;
        let id = BackupId::generate(chrono::Utc::now());
        let ctx = KeyContext {
            backup_id: &id,
            database: "shop",
        };
        let new = kms.generate(ctx).await.unwrap();
        assert_eq!(
            new.key_id, arn,
            "backups name the key itself, not the alias"
        );
        let again = kms.generate(ctx).await.unwrap();
        assert_ne!(*again.key, *new.key, "a fresh data key per backup");
        let key = kms.unwrap(&new.key_id, &new.wrapped, ctx).await.unwrap();
        assert_eq!(*key, *new.key);
    }

    #[tokio::test]
    async fn a_wrapped_key_is_bound_to_its_backup_and_database() {
        let Some(config) = moto().await else { return };
        let (kms, _) = provider(&config).await;
        let id = BackupId::generate(chrono::Utc::now());
        let other = BackupId::generate(chrono::Utc::now());
        let new = kms
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
            let err = kms
                .unwrap(&new.key_id, &new.wrapped, ctx)
                .await
                .unwrap_err();
            assert!(matches!(err, KeyError::UnwrapFailed { .. }), "{err}");
        }
    }

    #[tokio::test]
    async fn backups_of_a_retired_kms_key_are_read_with_the_key_they_name() {
        let Some(config) = moto().await else { return };
        let (old, _) = provider(&config).await;
        let (current, _) = provider(&config).await;
        let id = BackupId::generate(chrono::Utc::now());
        let ctx = KeyContext {
            backup_id: &id,
            database: "shop",
        };
        let new = old.generate(ctx).await.unwrap();
        // The record names the old key's ARN; Decrypt with that id needs no other setting.
        let key = current
            .unwrap(&new.key_id, &new.wrapped, ctx)
            .await
            .unwrap();
        assert_eq!(*key, *new.key);
    }

    #[tokio::test]
    async fn other_keys_and_missing_keys_are_named() {
        let Some(config) = moto().await else { return };
        let (kms, _) = provider(&config).await;
        let id = BackupId::generate(chrono::Utc::now());
        let ctx = KeyContext {
            backup_id: &id,
            database: "shop",
        };
        let err = kms
            .unwrap("file:0123456789abcdef", &[0; 60], ctx)
            .await
            .unwrap_err();
        assert!(matches!(err, KeyError::WrongKey { .. }), "{err}");
        let missing = KmsKeyProvider::new(Client::new(&config), "alias/pgkeep-no-such-key");
        let err = missing.generate(ctx).await.err().unwrap().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
