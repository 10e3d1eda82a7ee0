//! The AWS emulator (moto) that `scripts/test` starts: a fresh bucket, catalog table and KMS
//! key per test, and the URLs that select them.
//!
//! Tests call [`Moto::start`]; without `PGKEEP_TEST_AWS_ENDPOINT` it returns `None` and the
//! test skips with a message, except under CI, where it fails.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use pgkeep::aws::SdkConfig;
use pgkeep::backends::Services;
use pgkeep::catalog::dynamodb::DynamoCatalog;
use pgkeep::keys::kms::KmsKeyProvider;
use pgkeep::store::s3::{S3Options, S3Store};
use std::sync::Arc;

/// One test's resources in the emulator.
pub struct Moto {
    /// Runs the SDK calls of the helpers (the tests themselves are synchronous).
    pub runtime: tokio::runtime::Runtime,
    /// The emulator's endpoint (for `PGKEEP_AWS_ENDPOINT`).
    pub endpoint: String,
    /// The AWS configuration pointing at it.
    pub config: SdkConfig,
    /// A fresh bucket.
    pub bucket: String,
    /// Key prefix of the repository in the bucket.
    pub prefix: String,
    /// A fresh catalog table, created as docs/DYNAMODB.md describes.
    pub table: String,
    /// A fresh KMS key's ARN.
    pub key_arn: String,
    /// An alias of that key (`alias/…`), as an operator would configure it.
    pub key_alias: String,
}

fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

impl Moto {
    /// A bucket, table and key of their own, or `None` when no emulator is running (skip).
    pub fn start() -> Option<Moto> {
        let endpoint = match std::env::var("PGKEEP_TEST_AWS_ENDPOINT") {
            Ok(e) => e,
            Err(_) if std::env::var_os("CI").is_some() => {
                panic!("PGKEEP_TEST_AWS_ENDPOINT is not set: run the tests through scripts/test")
            }
            Err(_) => {
                eprintln!(
                    "skipped: PGKEEP_TEST_AWS_ENDPOINT is not set (scripts/test starts moto)"
                );
                return None;
            }
        };
        Some(Self::create(endpoint).expect("setting up the emulator"))
    }

    fn create(endpoint: String) -> Result<Moto> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (config, bucket, table, key_arn, key_alias) = runtime.block_on(async {
            let config = pgkeep::aws::load_config(Some(&endpoint)).await?;
            let bucket = unique("pgkeep-e2e");
            s3(&config)
                .create_bucket()
                .bucket(&bucket)
                .send()
                .await
                .context("create bucket")?;
            let table = unique("pgkeep-catalog");
            pgkeep::catalog::dynamodb::create_table(
                &aws_sdk_dynamodb::Client::new(&config),
                &table,
            )
            .await?;
            let kms = aws_sdk_kms::Client::new(&config);
            let key = kms.create_key().send().await.context("create key")?;
            let meta = key.key_metadata().context("key metadata")?;
            let key_alias = format!("alias/{}", unique("pgkeep"));
            kms.create_alias()
                .alias_name(&key_alias)
                .target_key_id(meta.key_id())
                .send()
                .await
                .context("create alias")?;
            let arn = meta.arn().context("key arn")?.to_owned();
            anyhow::Ok((config, bucket, table, arn, key_alias))
        })?;
        Ok(Moto {
            runtime,
            endpoint,
            config,
            bucket,
            prefix: "backups/prod".into(),
            table,
            key_arn,
            key_alias,
        })
    }

    /// Moves the repository to a fresh bucket created with S3 Object Lock enabled (and so
    /// versioning), without a default retention: objects are locked only when a test says so.
    pub fn with_object_lock(mut self) -> Moto {
        let bucket = unique("pgkeep-locked");
        self.runtime.block_on(async {
            self.s3()
                .create_bucket()
                .bucket(&bucket)
                .object_lock_enabled_for_bucket(true)
                .send()
                .await
                .expect("create a bucket with Object Lock")
        });
        self.bucket = bucket;
        self
    }

    /// Puts an Object Lock retention on an object (S3 key) until `until`.
    pub fn retain_until(&self, s3_key: &str, mode: &str, until: chrono::DateTime<chrono::Utc>) {
        use aws_sdk_s3::primitives::DateTime;
        use aws_sdk_s3::types::{ObjectLockRetention, ObjectLockRetentionMode};
        self.runtime.block_on(async {
            self.s3()
                .put_object_retention()
                .bucket(&self.bucket)
                .key(s3_key)
                .retention(
                    ObjectLockRetention::builder()
                        .mode(ObjectLockRetentionMode::from(mode))
                        .retain_until_date(DateTime::from_secs(until.timestamp()))
                        .build(),
                )
                .send()
                .await
                .unwrap_or_else(|e| panic!("retain {s3_key}: {e:?}"));
        })
    }

    /// An S3 client for the emulator.
    pub fn s3(&self) -> aws_sdk_s3::Client {
        s3(&self.config)
    }

    /// `s3://bucket/prefix`.
    pub fn repo_url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// `dynamodb://table`.
    pub fn catalog_url(&self) -> String {
        format!("dynamodb://{}", self.table)
    }

    /// `kms://alias/…`.
    pub fn key_url(&self) -> String {
        format!("kms://{}", self.key_alias)
    }

    /// The S3 key of a repository object key.
    pub fn s3_key(&self, key: &str) -> String {
        format!("{}/{key}", self.prefix)
    }

    /// The three AWS backends, built directly (for tests that inject failures into the store).
    pub fn services(&self, s3_options: S3Options) -> Services {
        Services {
            store: Arc::new(S3Store::new(
                self.s3(),
                &self.bucket,
                &self.prefix,
                s3_options,
            )),
            catalog: Arc::new(DynamoCatalog::new(
                aws_sdk_dynamodb::Client::new(&self.config),
                &self.table,
            )),
            keys: Arc::new(KmsKeyProvider::new(
                aws_sdk_kms::Client::new(&self.config),
                &self.key_alias,
            )),
        }
    }

    /// A Secrets Manager secret holding `json`; returns its ARN.
    pub fn secret(&self, json: &str) -> String {
        self.runtime.block_on(async {
            aws_sdk_secretsmanager::Client::new(&self.config)
                .create_secret()
                .name(unique("pgkeep/db"))
                .secret_string(json)
                .send()
                .await
                .expect("create secret")
                .arn()
                .expect("secret arn")
                .to_owned()
        })
    }

    /// Keys of the multipart uploads open in the bucket.
    pub fn open_uploads(&self) -> Vec<String> {
        self.runtime.block_on(async {
            let out = self
                .s3()
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .send()
                .await
                .expect("list multipart uploads");
            out.uploads()
                .iter()
                .filter_map(|u| u.key().map(str::to_owned))
                .collect()
        })
    }

    /// Keys of every object in the bucket.
    pub fn objects(&self) -> Vec<String> {
        self.runtime.block_on(async {
            let out = self
                .s3()
                .list_objects_v2()
                .bucket(&self.bucket)
                .send()
                .await
                .expect("list objects");
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned))
                .collect()
        })
    }

    /// An object's bytes and ETag.
    pub fn get(&self, s3_key: &str) -> (Vec<u8>, String) {
        self.runtime.block_on(async {
            let out = self
                .s3()
                .get_object()
                .bucket(&self.bucket)
                .key(s3_key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("get {s3_key}: {e}"));
            let etag = out.e_tag().unwrap_or_default().trim_matches('"').to_owned();
            let bytes = out.body.collect().await.expect("object body").into_bytes();
            (bytes.to_vec(), etag)
        })
    }

    /// Replaces an object's bytes (to simulate tampering).
    pub fn put(&self, s3_key: &str, bytes: Vec<u8>) {
        self.runtime.block_on(async {
            self.s3()
                .put_object()
                .bucket(&self.bucket)
                .key(s3_key)
                .body(bytes.into())
                .send()
                .await
                .unwrap_or_else(|e| panic!("put {s3_key}: {e}"));
        })
    }
}

fn s3(config: &SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build(),
    )
}
