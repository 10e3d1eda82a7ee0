use super::*;
use crate::store::contract::{pattern, write_uneven};
use crate::testing::{moto, moto_bucket, PartFault};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn options() -> S3Options {
    S3Options {
        part_size: MIN_PART_SIZE,
        ..S3Options::default()
    }
}

async fn open_uploads(client: &Client, bucket: &str) -> Vec<String> {
    let out = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    out.uploads()
        .iter()
        .filter_map(|u| u.key().map(str::to_owned))
        .collect()
}

/// Waits (bounded) until `n` multipart uploads are open: uploads are started and aborted
/// by a background task.
async fn until_open_uploads(client: &Client, bucket: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let open = open_uploads(client, bucket).await;
        if open.len() == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "multipart uploads still open: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn s3_store_meets_the_contract() {
    let Some(config) = moto().await else { return };
    let (client, bucket) = moto_bucket(&config).await;
    let store = S3Store::new(client.clone(), &bucket, "/pgkeep/test/", options());
    assert_eq!(store.location(), format!("s3://{bucket}/pgkeep/test"));
    // 16 MiB in 5 MiB parts: four parts, the last short.
    crate::store::contract::run(&store, 16 << 20).await;
    assert!(open_uploads(&client, &bucket).await.is_empty());
    // Keys live under the prefix.
    let raw = client
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(raw
        .contents()
        .iter()
        .all(|o| o.key().unwrap().starts_with("pgkeep/test/db/")));
    // The large object really went up in parts (a multipart ETag ends in -<parts>).
    let head = client
        .head_object()
        .bucket(&bucket)
        .key("pgkeep/test/db/2026/12/big.pgkeep")
        .send()
        .await
        .unwrap();
    assert!(
        head.e_tag().unwrap().trim_matches('"').ends_with("-4"),
        "{:?}",
        head.e_tag()
    );
}

#[tokio::test]
async fn a_failing_part_aborts_the_multipart_upload() {
    let Some(config) = moto().await else { return };
    let (client, bucket) = moto_bucket(&config).await;
    let store = S3Store::new(
        client.clone(),
        &bucket,
        "p",
        S3Options {
            fault: Some(PartFault {
                part: 2,
                failures: 99,
            }),
            ..options()
        },
    );
    let data = pattern(18 << 20, 2);
    let mut up = store.create("db/2026/11/x.pgkeep").await.unwrap();
    let mut written = 0;
    let mut error = None;
    for chunk in data.chunks(1 << 20) {
        match up.write_all(chunk).await {
            Ok(()) => written += chunk.len(),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let error = match error {
        Some(e) => e,
        None => up.shutdown().await.unwrap_err(),
    };
    assert!(
        error
            .to_string()
            .contains("part 2 failed after 4 attempt(s)"),
        "{error}"
    );
    assert!(written < data.len() || written == data.len());
    // By the time the writer reports the failure the upload is already aborted.
    assert!(open_uploads(&client, &bucket).await.is_empty());
    assert!(up.commit().await.is_err());
    assert!(store.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_part_that_fails_once_is_retried() {
    let Some(config) = moto().await else { return };
    let (client, bucket) = moto_bucket(&config).await;
    let store = S3Store::new(
        client.clone(),
        &bucket,
        "",
        S3Options {
            fault: Some(PartFault {
                part: 2,
                failures: 1,
            }),
            ..options()
        },
    );
    let data = pattern(11 << 20, 3);
    let mut up = store.create("db/r.pgkeep").await.unwrap();
    write_uneven(&mut up, &data).await;
    up.shutdown().await.unwrap();
    up.commit().await.unwrap();
    assert!(store.get("db/r.pgkeep").await.unwrap() == data);
    assert!(open_uploads(&client, &bucket).await.is_empty());
}

#[tokio::test]
async fn a_dropped_upload_is_aborted_and_leftovers_can_be_reaped() {
    let Some(config) = moto().await else { return };
    let (client, bucket) = moto_bucket(&config).await;
    let store = S3Store::new(client.clone(), &bucket, "root", options());
    let mut up = store.create("db/dropped.pgkeep").await.unwrap();
    up.write_all(&pattern(12 << 20, 4)).await.unwrap();
    // Two full parts were handed over, so a multipart upload gets started.
    until_open_uploads(&client, &bucket, 1).await;
    drop(up);
    until_open_uploads(&client, &bucket, 0).await;
    assert!(store.list("").await.unwrap().is_empty());

    // What a crashed process leaves: an upload nobody will finish.
    client
        .create_multipart_upload()
        .bucket(&bucket)
        .key("root/db/crashed.pgkeep")
        .send()
        .await
        .unwrap();
    client
        .create_multipart_upload()
        .bucket(&bucket)
        .key("elsewhere/x")
        .send()
        .await
        .unwrap();
    // (moto reports every upload as started in 2010, so only the prefix filter can be
    // shown here; the age filter is a plain comparison.)
    let store: &dyn ObjectStore = &store;
    let soon = Utc::now() + chrono::Duration::minutes(1);
    assert_eq!(
        store.abort_incomplete_uploads("db/", soon).await.unwrap(),
        1
    );
    assert_eq!(open_uploads(&client, &bucket).await, ["elsewhere/x"]);
}

#[tokio::test]
async fn sse_kms_applies_to_single_and_multipart_objects() {
    let Some(config) = moto().await else { return };
    let (client, bucket) = moto_bucket(&config).await;
    let kms = aws_sdk_kms::Client::new(&config);
    let key = kms.create_key().send().await.unwrap();
    let key_id = key.key_metadata().unwrap().key_id().to_owned();
    let store = S3Store::new(
        client.clone(),
        &bucket,
        "",
        S3Options {
            sse_kms_key_id: Some(key_id.clone()),
            ..options()
        },
    );
    for (name, size) in [("small", 100usize), ("large", 6 << 20)] {
        let key = format!("db/{name}.pgkeep");
        let mut up = store.create(&key).await.unwrap();
        up.write_all(&pattern(size, 5)).await.unwrap();
        up.commit().await.unwrap();
        let head = client
            .head_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.server_side_encryption(),
            Some(&ServerSideEncryption::AwsKms),
            "{name}"
        );
        assert!(head.ssekms_key_id().unwrap().contains(&key_id), "{name}");
        let mut back = Vec::new();
        store
            .open(&key)
            .await
            .unwrap()
            .read_to_end(&mut back)
            .await
            .unwrap();
        assert_eq!(back.len(), size);
    }
}

#[tokio::test]
async fn object_lock_retention_and_legal_holds_are_read_from_the_object() {
    use aws_sdk_s3::types::{ObjectLockLegalHold, ObjectLockRetention, ObjectLockRetentionMode};
    let Some(config) = moto().await else { return };
    let (client, _) = moto_bucket(&config).await;
    let bucket = crate::testing::unique("pgkeep-locked");
    client
        .create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    let store = S3Store::new(client.clone(), &bucket, "p", options());
    for name in ["plain", "retained", "held"] {
        store.put(&format!("db/{name}"), vec![1]).await.unwrap();
    }
    let until = Utc::now() + chrono::Duration::days(3);
    client
        .put_object_retention()
        .bucket(&bucket)
        .key("p/db/retained")
        .retention(
            ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::Governance)
                .retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(
                    until.timestamp(),
                ))
                .build(),
        )
        .send()
        .await
        .unwrap();
    client
        .put_object_legal_hold()
        .bucket(&bucket)
        .key("p/db/held")
        .legal_hold(
            ObjectLockLegalHold::builder()
                .status(ObjectLockLegalHoldStatus::On)
                .build(),
        )
        .send()
        .await
        .unwrap();

    assert_eq!(store.object_lock("db/plain").await.unwrap(), None);
    assert_eq!(store.object_lock("db/missing").await.unwrap(), None);
    let retained = store.object_lock("db/retained").await.unwrap().unwrap();
    assert_eq!(retained.mode.as_deref(), Some("GOVERNANCE"));
    assert_eq!(
        retained.retain_until.map(|t| t.timestamp()),
        Some(until.timestamp())
    );
    assert!(!retained.legal_hold);
    assert!(retained.blocks_deletion_at(Utc::now()));
    assert!(!retained.blocks_deletion_at(until + chrono::Duration::seconds(1)));
    let held = store.object_lock("db/held").await.unwrap().unwrap();
    assert!(held.legal_hold && held.retain_until.is_none());
    assert!(held.blocks_deletion_at(Utc::now() + chrono::Duration::days(3650)));
    // A bucket without Object Lock has no locks.
    let (_, unlocked) = moto_bucket(&config).await;
    let store = S3Store::new(client, &unlocked, "", options());
    store.put("db/x", vec![1]).await.unwrap();
    assert_eq!(store.object_lock("db/x").await.unwrap(), None);
}

/// A client as production builds it (no emulator endpoint, default checksum settings) with
/// fixed credentials: presigning is computed locally, no request is sent.
fn offline_client() -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        ))
        .build();
    Client::from_conf(config)
}

#[tokio::test]
async fn presigned_downloads_are_standard_sigv4_urls_signing_only_the_host() {
    let store = S3Store::new(offline_client(), "pgkeep-backups", "pgkeep", options());
    let signed_at = DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let key = "shop/2026/11/20261124T020000000Z-0a1b2c3d.pgkeep";
    let got = store
        .presign_get(key, Duration::from_secs(900), signed_at)
        .await
        .unwrap();
    assert_eq!(got.signed_at, signed_at);
    assert_eq!(got.expires_at, signed_at + chrono::Duration::seconds(900));
    // Derived independently with botocore 1.44.8 (the AWS SDK for Python) from the same
    // inputs. The Rust SDK adds `x-id=GetObject` (from S3's model) to the query, which
    // botocore's high-level presigner does not, so the reference signs that exact URL:
    //   url = "https://pgkeep-backups.s3.eu-west-1.amazonaws.com/pgkeep/shop/2026/11/"
    //         "20261124T020000000Z-0a1b2c3d.pgkeep?x-id=GetObject"
    //   with mock.patch("botocore.auth.get_current_datetime",
    //                   return_value=datetime.datetime(2026, 11, 24, 12, 0, 0)):
    //       req = AWSRequest(method="GET", url=url)
    //       S3SigV4QueryAuth(Credentials("AKIDEXAMPLE",
    //                                    "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
    //                        "s3", "eu-west-1", expires=900).add_auth(req)
    //       print(req.url)
    // Only `host` is signed: a plain GET, with no extra header, is all it takes.
    let expected = "https://pgkeep-backups.s3.eu-west-1.amazonaws.com/pgkeep/shop/2026/11/20261124T020000000Z-0a1b2c3d.pgkeep?x-id=GetObject&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261124%2Feu-west-1%2Fs3%2Faws4_request&X-Amz-Date=20261124T120000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=ae111731344a77bfaae9138e822465eaf3d76df95d75cb3107f975c333aef1b9";
    assert_eq!(got.url, expected);
}

#[tokio::test]
async fn a_missing_bucket_is_named_in_the_error() {
    let Some(config) = moto().await else { return };
    let (client, _) = moto_bucket(&config).await;
    let store = S3Store::new(client, "pgkeep-no-such-bucket-here", "", options());
    let err = store.put("db/x", vec![1]).await.unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
}
