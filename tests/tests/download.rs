//! `GET /backups/{id}/download` end to end on the emulator: a real backup in S3 (taken by the
//! real `pgkeep` binary), the status API's own handler over the S3, DynamoDB and KMS backends,
//! and the presigned URL fetched with a plain HTTP client.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use pgkeep::api::{Api, ApiRequest, Caller};
use pgkeep::invoke::Unconfigured;
use pgkeep::model::{format_time, BackupId, BackupKind, BackupRecord, BackupStatus, Compression};
use pgkeep::ops::download::{download, DEFAULT_DOWNLOAD_TTL};
use pgkeep::ops::health::HealthPolicy;
use pgkeep::retention::Span;
use pgkeep::store::s3::S3Options;
use pgkeep_tests::aws::Moto;
use pgkeep_tests::cli::{counts_by_name, record_counts, Pgkeep};
use pgkeep_tests::{unique_name, PgCluster};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn get(path: String) -> ApiRequest {
    ApiRequest {
        method: "GET".into(),
        path,
        query: BTreeMap::new(),
        body: None,
        caller: Caller::Iam {
            principal: "arn:aws:sts::123456789012:assumed-role/ops/alice".into(),
        },
    }
}

/// The query parameters of a URL (values left encoded).
fn query(url: &str) -> BTreeMap<String, String> {
    let (_, query) = url.split_once('?').expect("a query string");
    query
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// GETs `url` with a plain HTTP client: status and body.
fn fetch(moto: &Moto, url: &str) -> (u16, Vec<u8>) {
    moto.runtime.block_on(async {
        let response = reqwest::get(url).await.expect("GET the presigned URL");
        let status = response.status().as_u16();
        (status, response.bytes().await.expect("body").to_vec())
    })
}

#[test]
fn a_presigned_download_returns_exactly_the_stored_object_with_what_decrypting_needs() {
    let Some(moto) = Moto::start() else { return };
    let cluster = PgCluster::start().unwrap();
    let db = unique_name("dl");
    cluster.create_database(&db).unwrap();
    cluster
        .psql(
            &db,
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 3000) g;",
        )
        .unwrap();
    let pgkeep = Pgkeep::new()
        .database_url(cluster.url(&db))
        .with_urls(&moto.repo_url(), &moto.catalog_url(), &moto.key_url())
        .env("PGKEEP_AWS_ENDPOINT", &moto.endpoint);
    let record = pgkeep.backup_ok(&[]);
    let id = record["id"].as_str().unwrap();
    let object_key = record["object_key"].as_str().unwrap();
    let (stored, _) = moto.get(&moto.s3_key(object_key));
    let manifest: Value = serde_json::from_slice(
        &moto
            .get(&moto.s3_key(&object_key.replace(".pgkeep", ".manifest.json")))
            .0,
    )
    .unwrap();

    let services = moto.services(S3Options::default());
    let api = Api {
        services: services.clone(),
        starter: Arc::new(Unconfigured("PGKEEP_DUMP_FUNCTION")),
        verify_starter: Arc::new(Unconfigured("PGKEEP_VERIFY_FUNCTION")),
        health: HealthPolicy::default(),
        admin_group: "admin".into(),
        databases: vec![db.clone()],
        download_ttl: DEFAULT_DOWNLOAD_TTL,
        notifier: Arc::new(pgkeep::alert::LogNotifier),
        retention: Default::default(),
    };
    let now = Utc::now();
    let res = moto
        .runtime
        .block_on(api.handle(&get(format!("/backups/{id}/download")), now));
    assert_eq!(res.status, 200, "{}", res.body);
    assert!(res
        .headers
        .contains(&("cache-control".into(), "no-store".into())));
    let body = &res.body;
    let url = body["url"].as_str().unwrap();
    assert_eq!(body["id"], id);
    assert_eq!(body["method"], "GET");
    assert_eq!(body["object_key"], object_key);
    assert_eq!(body["size_bytes"], record["size_bytes"]);
    assert_eq!(body["sha256"], record["sha256"]);
    assert_eq!(body["compression"], record["compression"]);
    assert_eq!(body["format_version"], 1);
    assert_eq!(body["key_id"], moto.key_arn.as_str());
    assert_eq!(body["key_id"], manifest["encryption"]["key_id"]);
    assert_eq!(body["wrapped_key"], manifest["encryption"]["wrapped_key"]);
    assert_eq!(body["chunk_size"], manifest["encryption"]["chunk_size"]);
    assert_eq!(body["encryption_context"]["pgkeep:backup_id"], id);
    assert_eq!(body["encryption_context"]["pgkeep:database"], db.as_str());
    // 15 minutes from the request, by default, and the URL itself says so.
    assert_eq!(body["expires_in_seconds"], 900);
    let expires_at: DateTime<Utc> = body["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires_at, now + chrono::Duration::seconds(900));
    let params = query(url);
    assert_eq!(params["X-Amz-Expires"], "900");
    assert_eq!(params["X-Amz-SignedHeaders"], "host");

    // A plain GET of the URL returns the stored object, byte for byte.
    let (status, bytes) = fetch(&moto, url);
    assert_eq!(status, 200);
    assert!(bytes == stored, "downloaded {} bytes", bytes.len());
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        record["sha256"].as_str().unwrap()
    );

    // From the download to a running database, as docs/OPERATIONS.md does it: unwrap the data
    // key with KMS and the returned context, decrypt with docs/pgkeep_decrypt.py, pg_restore.
    restore_download(&moto, &cluster, &pgkeep, body, &bytes);

    // Unknown ids are 404; a backup without an object is 409.
    let unknown = BackupId::generate(now);
    let res = moto
        .runtime
        .block_on(api.handle(&get(format!("/backups/{unknown}/download")), now));
    assert_eq!(res.status, 404, "{}", res.body);
    let mut failed = BackupRecord::start(
        BackupId::generate(now),
        &db,
        BackupKind::Manual,
        Compression::Zstd,
    );
    moto.runtime
        .block_on(services.catalog.insert(&failed))
        .unwrap();
    failed.transition(BackupStatus::Failed).unwrap();
    moto.runtime
        .block_on(services.catalog.update(&failed, BackupStatus::InProgress))
        .unwrap();
    let res = moto
        .runtime
        .block_on(api.handle(&get(format!("/backups/{}/download", failed.id)), now));
    assert_eq!(res.status, 409, "{}", res.body);

    // A URL is signed at the time it is asked for, for as long as asked: one signed long ago
    // with a life of a second carries its own expiry. (moto 5.2.5 serves presigned URLs without
    // checking signature or expiry, so the emulator cannot show S3's 403 for it; the signing
    // itself is checked against botocore's in pgkeep's store tests.)
    let long_ago = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    let id: BackupId = id.parse().unwrap();
    let old = moto
        .runtime
        .block_on(download(
            &services,
            &id,
            Span::from_seconds(1).unwrap(),
            long_ago,
        ))
        .unwrap();
    let params = query(&old.url);
    assert_eq!(params["X-Amz-Date"], "20260102T030405Z");
    assert_eq!(params["X-Amz-Expires"], "1");
    assert_eq!(
        format_time(old.expires_at),
        format_time(long_ago + chrono::Duration::seconds(1))
    );
    assert!(old.expires_at < Utc::now());
}

/// The Python with `cryptography` and `zstandard` that scripts/test prepares.
fn python() -> Option<String> {
    match std::env::var("PGKEEP_TEST_PYTHON") {
        Ok(p) => Some(p),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("PGKEEP_TEST_PYTHON is not set: run the tests through scripts/test")
        }
        Err(_) => {
            eprintln!(
                "skipped the decryption: PGKEEP_TEST_PYTHON is not set (scripts/test sets it)"
            );
            None
        }
    }
}

/// Decrypts a downloaded object with only what the download response says (and KMS), restores
/// it into a new database and compares its tables with the backup's row counts.
fn restore_download(
    moto: &Moto,
    cluster: &PgCluster,
    pgkeep: &Pgkeep,
    body: &Value,
    object: &[u8],
) {
    use base64::Engine;
    let Some(python) = python() else { return };
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(body["wrapped_key"].as_str().unwrap())
        .unwrap();
    let context: std::collections::HashMap<String, String> =
        serde_json::from_value(body["encryption_context"].clone()).unwrap();
    let data_key = moto.runtime.block_on(async {
        aws_sdk_kms::Client::new(&moto.config)
            .decrypt()
            .key_id(body["key_id"].as_str().unwrap())
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(wrapped))
            .set_encryption_context(Some(context))
            .send()
            .await
            .expect("kms decrypt with the returned context")
            .plaintext
            .expect("plaintext")
            .into_inner()
    });
    let dir = pgkeep.dir.path();
    let object_file = dir.join("downloaded.pgkeep");
    let key_file = dir.join("data.key");
    std::fs::write(&object_file, object).unwrap();
    std::fs::write(&key_file, data_key).unwrap();
    let reader = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/pgkeep_decrypt.py");
    let archive = std::process::Command::new(python)
        .arg(reader)
        .arg("--data-key-file")
        .arg(&key_file)
        .arg(&object_file)
        .output()
        .unwrap();
    assert!(
        archive.status.success(),
        "{}",
        String::from_utf8_lossy(&archive.stderr)
    );
    let id = body["id"].as_str().unwrap();
    let by_pgkeep = pgkeep.command().args(["cat", id]).output().unwrap();
    assert!(by_pgkeep.status.success());
    assert!(
        archive.stdout == by_pgkeep.stdout,
        "the download decrypts to what pgkeep cat gives"
    );

    let archive_file = dir.join("downloaded.dump");
    std::fs::write(&archive_file, &archive.stdout).unwrap();
    let target = unique_name("from_download");
    cluster.create_database(&target).unwrap();
    let restored = cluster
        .command("pg_restore")
        .args(["--no-owner", "--exit-on-error", "--dbname", &target])
        .arg(&archive_file)
        .output()
        .unwrap();
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let record = pgkeep.show(id);
    assert_eq!(
        counts_by_name(cluster, &target).unwrap(),
        record_counts(&record)
    );
}
