//! `pgkeep init`: prepares an S3/DynamoDB/KMS setup without Terraform. Checks the KMS key and
//! the bucket with one harmless call each (nothing is written to either), then creates the
//! catalog table exactly as Terraform declares it ([`crate::catalog::dynamodb::TABLE`]:
//! indexes, on-demand billing, TTL, point-in-time recovery, deletion protection, encrypted
//! with the KMS key), or checks that an existing one matches and gives records written by an older pgkeep the
//! listing sort key they lack. Running it again changes nothing.

use serde::Serialize;

use super::Error;
use crate::aws::SdkConfig;
use crate::backends::{BackendConfig, CatalogUrl, KeyUrl, RepoUrl};
use crate::catalog::dynamodb::{ensure_table, DynamoCatalog, TableOutcome, TableSetup};
use crate::config::ConfigError;
use crate::keys::kms::KmsKeyProvider;

/// What `init` found or did for one backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The table did not exist and was created.
    Created,
    /// It exists and is as pgkeep needs it.
    Ok,
    /// An embedded backend (a directory, a SQLite file, a key file): made by the first
    /// backup, nothing to prepare.
    Embedded,
}

/// What `init` checked and created.
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    /// The master key (`kms://…` is checked with `DescribeKey`).
    pub key: String,
    /// The key's ARN, as backups record it (KMS only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_arn: Option<String>,
    /// What was found for the key.
    pub key_step: Step,
    /// The repository (`s3://…` is checked with `HeadBucket`).
    pub repository: String,
    /// What was found for the repository.
    pub repository_step: Step,
    /// The catalog (`dynamodb://…` is created or compared).
    pub catalog: String,
    /// What was found or done for the catalog.
    pub catalog_step: Step,
    /// Records and audit entries of an existing table given the listing sort key they lacked
    /// (written by a pgkeep before `start_key`; see docs/DYNAMODB.md "Upgrading").
    pub backfilled: u64,
}

/// A KMS key's id as manifests show it (its ARN), from a key ARN, key id or alias: one
/// `DescribeKey`, which also checks the key is usable.
pub async fn kms_key_id(aws: &SdkConfig, key: &str) -> Result<String, Error> {
    Ok(KmsKeyProvider::new(aws_sdk_kms::Client::new(aws), key)
        .check()
        .await?)
}

/// Checks the key and the bucket, then creates or checks the catalog table. `aws` is required
/// when [`BackendConfig::uses_aws`].
pub async fn init(config: &BackendConfig, aws: Option<&SdkConfig>) -> Result<InitReport, Error> {
    let need_aws = || {
        aws.ok_or_else(|| {
            Error::from(ConfigError::Missing(
                "an AWS backend was chosen but no AWS configuration was loaded".into(),
            ))
        })
    };
    let (key, key_arn, key_step) = match &config.key {
        KeyUrl::Kms(key) => {
            let kms = KmsKeyProvider::new(aws_sdk_kms::Client::new(need_aws()?), key);
            let arn = kms.check().await?;
            (format!("kms://{key}"), Some(arn), Step::Ok)
        }
        KeyUrl::File(path) => (path.display().to_string(), None, Step::Embedded),
    };
    let (repository, repository_step) = match &config.repo {
        RepoUrl::S3 { bucket, prefix } => {
            config
                .s3_store(need_aws()?, bucket, prefix)
                .check_bucket()
                .await?;
            let shown = match prefix.as_str() {
                "" => format!("s3://{bucket}"),
                p => format!("s3://{bucket}/{p}"),
            };
            (shown, Step::Ok)
        }
        RepoUrl::File(dir) => (dir.display().to_string(), Step::Embedded),
    };
    let mut backfilled = 0;
    let (catalog, catalog_step) = match config.catalog_url()? {
        CatalogUrl::DynamoDb(table) => {
            let client = aws_sdk_dynamodb::Client::new(need_aws()?);
            let setup = TableSetup {
                deletion_protection: true,
                sse_kms_key_arn: key_arn.clone(),
            };
            let step = match ensure_table(&client, &table, &setup).await? {
                TableOutcome::Created => Step::Created,
                TableOutcome::Matches => {
                    backfilled = DynamoCatalog::new(client, &table)
                        .backfill_start_keys()
                        .await?;
                    Step::Ok
                }
            };
            (format!("dynamodb://{table}"), step)
        }
        CatalogUrl::Sqlite(path) => (path.display().to_string(), Step::Embedded),
    };
    Ok(InitReport {
        key,
        key_arn,
        key_step,
        repository,
        repository_step,
        catalog,
        catalog_step,
        backfilled,
    })
}
