//! S3 as an object store: where backups live in production.
//!
//! Objects go to `s3://<bucket>/<prefix>/<key>`. A streaming upload of unknown length is a
//! multipart upload fed by a background task (`s3/multipart.rs`); the object appears only when
//! [`ObjectUpload::commit`] completes the upload (refusing to overwrite an existing key), and
//! any failure, an abort, or dropping the upload aborts the multipart upload so no orphan
//! parts are left to pay for.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ObjectLockLegalHoldStatus, ServerSideEncryption};
use aws_sdk_s3::Client;
use chrono::{DateTime, Utc};

use super::{
    validate_key, ObjectLock, ObjectMeta, ObjectReader, ObjectStore, ObjectUpload, PartialUpload,
    PresignedGet, StoreError,
};
use crate::aws::{describe, error_code};

mod multipart;

/// S3's smallest part (except the last): 5 MiB.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// Default part size: large enough for throughput, small enough that an upload's buffers
/// stay at `part size × (in flight + 2)` = 32 MiB (80 MiB with the former 16 MiB × 3).
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// Default parts uploading at once per upload.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2;
/// S3's largest part.
const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;

/// How uploads are cut and sent.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Bytes per part (at least [`MIN_PART_SIZE`]); also the threshold below which an object is
    /// sent with a single `PutObject`.
    pub part_size: usize,
    /// Parts uploading at the same time.
    pub max_in_flight: usize,
    /// Attempts per part before the upload fails (the SDK retries within each attempt too).
    pub part_attempts: u32,
    /// Encrypt objects at rest with this KMS key (SSE-KMS); `None` leaves the bucket's default.
    pub sse_kms_key_id: Option<String>,
    /// Failure injection for tests: this part fails this many attempts.
    #[cfg(any(test, feature = "testing"))]
    pub fault: Option<crate::testing::PartFault>,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            part_size: DEFAULT_PART_SIZE,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            part_attempts: 4,
            sse_kms_key_id: None,
            #[cfg(any(test, feature = "testing"))]
            fault: None,
        }
    }
}

/// Objects in an S3 bucket under a key prefix.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    bucket: String,
    prefix: String,
    options: S3Options,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.inner.bucket)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// A store in `bucket` under `prefix` (leading and trailing slashes are ignored; empty means
    /// the bucket's root). A part size below S3's minimum is raised to it.
    pub fn new(client: Client, bucket: &str, prefix: &str, mut options: S3Options) -> Self {
        options.part_size = options.part_size.clamp(MIN_PART_SIZE, MAX_PART_SIZE);
        options.max_in_flight = options.max_in_flight.max(1);
        options.part_attempts = options.part_attempts.max(1);
        S3Store {
            inner: Arc::new(Inner {
                client,
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
                options,
            }),
        }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// Checks that the bucket exists and may be used, with one harmless request (`HeadBucket`,
    /// allowed by `s3:ListBucket`); writes nothing.
    pub async fn check_bucket(&self) -> Result<(), StoreError> {
        let bucket = &self.inner.bucket;
        let fail = |message: String| StoreError::Io {
            op: "check",
            store: format!("s3://{bucket}"),
            key: String::new(),
            source: io::Error::other(message),
        };
        match self.inner.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Err(fail(format!(
                "bucket {bucket} does not exist (or not in this region); create it first (pgkeep init creates only the catalog table)"
            ))),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 403) => {
                Err(fail(format!(
                    "not allowed to use bucket {bucket}: allow s3:ListBucket (and the object actions pgkeep needs) in the IAM or bucket policy"
                )))
            }
            Err(e) => Err(fail(describe(&e))),
        }
    }

    /// The S3 key of a store key.
    pub fn s3_key(&self, key: &str) -> String {
        self.inner.s3_key(key)
    }

    /// Aborts the multipart uploads under `prefix` (a store key prefix) started before
    /// `older_than`: what a crashed upload left behind. Returns how many were aborted.
    pub async fn abort_incomplete_uploads(
        &self,
        prefix: &str,
        older_than: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let mut aborted = 0;
        for (s3_key, id, started) in self.inner.open_uploads(prefix).await? {
            if started.is_some_and(|t| t >= older_than) {
                continue;
            }
            self.inner.abort_multipart(&s3_key, &id).await?;
            aborted += 1;
        }
        Ok(aborted)
    }
}

impl S3Store {
    /// The open multipart uploads under `prefix` (a store key prefix), with the bytes of their
    /// uploaded parts (what they cost until aborted).
    pub async fn partial_uploads(&self, prefix: &str) -> Result<Vec<PartialUpload>, StoreError> {
        let inner = &self.inner;
        let own_prefix = inner.s3_prefix("");
        let mut out = Vec::new();
        for (s3_key, id, started) in inner.open_uploads(prefix).await? {
            let Some(key) = s3_key.strip_prefix(&own_prefix) else {
                continue;
            };
            out.push(PartialUpload {
                key: key.to_owned(),
                size: inner.uploaded_bytes(&s3_key, &id).await,
                handle: id,
                started,
            });
        }
        Ok(out)
    }
}

/// An open multipart upload as S3 lists it: its S3 key, upload id and start.
type OpenUpload = (String, String, Option<DateTime<Utc>>);

impl Inner {
    /// Every open multipart upload under `prefix` (a store key prefix), all pages.
    async fn open_uploads(&self, prefix: &str) -> Result<Vec<OpenUpload>, StoreError> {
        let full_prefix = self.s3_prefix(prefix);
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut upload_marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_marker.take())
                .send()
                .await
                .map_err(|e| {
                    self.sdk_error(
                        "list multipart uploads under",
                        prefix,
                        "s3:ListBucketMultipartUploads",
                        &e,
                    )
                })?;
            for upload in page.uploads() {
                if let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) {
                    let started = upload.initiated().and_then(to_chrono);
                    out.push((key.to_owned(), id.to_owned(), started));
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            upload_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && upload_marker.is_none() {
                return Ok(out);
            }
        }
    }
}

fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

impl Inner {
    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn s3_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn s3_prefix(&self, prefix: &str) -> String {
        if self.prefix.is_empty() {
            prefix.to_owned()
        } else {
            format!("{}/{prefix}", self.prefix)
        }
    }

    fn io_error(&self, op: &'static str, key: &str, message: String) -> StoreError {
        StoreError::Io {
            op,
            store: self.location(),
            key: key.to_owned(),
            source: io::Error::other(message),
        }
    }

    /// An SDK failure as a store error, with a hint for the usual misconfigurations.
    fn sdk_error<E, R>(
        &self,
        op: &'static str,
        key: &str,
        action: &str,
        err: &SdkError<E, R>,
    ) -> StoreError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let hint = match error_code(err) {
            Some("AccessDenied") => format!(
                " (allow {action} on arn:aws:s3:::{}/{}* in the IAM policy, and kms:GenerateDataKey/kms:Decrypt on the bucket's KMS key if it has one)",
                self.bucket,
                self.s3_prefix("")
            ),
            Some("NoSuchBucket") => format!(
                " (bucket {:?} does not exist: check the repository URL and the region)",
                self.bucket
            ),
            _ => String::new(),
        };
        self.io_error(op, key, format!("{}{hint}", describe(err)))
    }

    /// The bytes of the parts uploaded so far to one multipart upload (an upload gone meanwhile
    /// has none), or `None` when S3 would not say: the size is for the report only, so a
    /// failure here must not stop the sweep.
    async fn uploaded_bytes(&self, s3_key: &str, upload_id: &str) -> Option<u64> {
        let mut total = 0u64;
        let mut marker: Option<String> = None;
        loop {
            let page = match self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(s3_key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.take())
                .send()
                .await
            {
                Ok(page) => page,
                Err(e) if error_code(&e) == Some("NoSuchUpload") => return Some(total),
                Err(e) => {
                    let e = self.sdk_error(
                        "list the parts of the multipart upload of",
                        s3_key,
                        "s3:ListMultipartUploadParts",
                        &e,
                    );
                    tracing::warn!(error = %e, "the size of an open multipart upload is unknown");
                    return None;
                }
            };
            total += page
                .parts()
                .iter()
                .map(|p| p.size().unwrap_or(0).max(0) as u64)
                .sum::<u64>();
            match (page.is_truncated(), page.next_part_number_marker()) {
                (Some(true), Some(next)) => marker = Some(next.to_owned()),
                _ => return Some(total),
            }
        }
    }

    async fn abort_multipart(&self, s3_key: &str, upload_id: &str) -> Result<(), StoreError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(s3_key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_upload()) => Ok(()),
            Err(e) => Err(self.sdk_error(
                "abort the multipart upload of",
                s3_key,
                "s3:AbortMultipartUpload",
                &e,
            )),
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectUpload>, StoreError> {
        validate_key(key)?;
        if self.head(key).await?.is_some() {
            return Err(StoreError::AlreadyExists {
                store: self.location(),
                key: key.to_owned(),
            });
        }
        Ok(Box::new(multipart::S3Upload::start(
            self.inner.clone(),
            key,
        )))
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        validate_key(key)?;
        let inner = &self.inner;
        inner
            .client
            .put_object()
            .bucket(&inner.bucket)
            .key(inner.s3_key(key))
            .body(ByteStream::from(bytes))
            .set_server_side_encryption(sse(&inner.options))
            .set_ssekms_key_id(inner.options.sse_kms_key_id.clone())
            .send()
            .await
            .map_err(|e| inner.sdk_error("write", key, "s3:PutObject", &e))?;
        Ok(())
    }

    async fn open(&self, key: &str) -> Result<ObjectReader, StoreError> {
        validate_key(key)?;
        let inner = &self.inner;
        let out = inner
            .client
            .get_object()
            .bucket(&inner.bucket)
            .key(inner.s3_key(key))
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    StoreError::NotFound {
                        store: inner.location(),
                        key: key.to_owned(),
                    }
                } else {
                    inner.sdk_error("open", key, "s3:GetObject", &e)
                }
            })?;
        Ok(Box::new(out.body.into_async_read()))
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let mut reader = self.open(key).await?;
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut out)
            .await
            .map_err(|e| self.inner.io_error("read", key, e.to_string()))?;
        Ok(out)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        validate_key(key)?;
        let inner = &self.inner;
        match inner
            .client
            .head_object()
            .bucket(&inner.bucket)
            .key(inner.s3_key(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                modified: out.last_modified().and_then(to_chrono),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(inner.sdk_error("inspect", key, "s3:GetObject", &e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        let inner = &self.inner;
        inner
            .client
            .delete_object()
            .bucket(&inner.bucket)
            .key(inner.s3_key(key))
            .send()
            .await
            .map_err(|e| inner.sdk_error("delete", key, "s3:DeleteObject", &e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let inner = &self.inner;
        let full_prefix = inner.s3_prefix(prefix);
        let strip = inner.s3_prefix("");
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = inner
                .client
                .list_objects_v2()
                .bucket(&inner.bucket)
                .prefix(&full_prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| inner.sdk_error("list", prefix, "s3:ListBucket", &e))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&strip)) else {
                    continue;
                };
                out.push(ObjectMeta {
                    key: key.to_owned(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    modified: object.last_modified().and_then(to_chrono),
                });
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn abort_incomplete_uploads(
        &self,
        prefix: &str,
        older_than: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        S3Store::abort_incomplete_uploads(self, prefix, older_than).await
    }

    async fn partial_uploads(&self, prefix: &str) -> Result<Vec<PartialUpload>, StoreError> {
        S3Store::partial_uploads(self, prefix).await
    }

    async fn discard_partial_upload(&self, upload: &PartialUpload) -> Result<(), StoreError> {
        validate_key(&upload.key)?;
        self.inner
            .abort_multipart(&self.inner.s3_key(&upload.key), &upload.handle)
            .await
    }

    /// From HeadObject's `x-amz-object-lock-*` headers. S3 sends them only to a caller allowed
    /// `s3:GetObjectRetention` and `s3:GetObjectLegalHold`; without those permissions a locked
    /// object looks unlocked here (S3 still refuses to destroy the locked version).
    async fn object_lock(&self, key: &str) -> Result<Option<ObjectLock>, StoreError> {
        validate_key(key)?;
        let inner = &self.inner;
        let out = match inner
            .client
            .head_object()
            .bucket(&inner.bucket)
            .key(inner.s3_key(key))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => return Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                return Ok(None)
            }
            Err(e) => {
                return Err(inner.sdk_error(
                    "read the Object Lock of",
                    key,
                    "s3:GetObject, s3:GetObjectRetention and s3:GetObjectLegalHold",
                    &e,
                ))
            }
        };
        let lock = ObjectLock {
            mode: out.object_lock_mode().map(|m| m.as_str().to_owned()),
            retain_until: out.object_lock_retain_until_date().and_then(to_chrono),
            legal_hold: out.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On),
        };
        Ok((lock.mode.is_some() || lock.retain_until.is_some() || lock.legal_hold).then_some(lock))
    }

    /// A SigV4 query-signed GetObject URL. Only the `host` header is signed, so any HTTP
    /// client can use it as is; with temporary credentials (a Lambda role) it also stops
    /// working when they expire.
    async fn presign_get(
        &self,
        key: &str,
        ttl: Duration,
        signed_at: DateTime<Utc>,
    ) -> Result<PresignedGet, StoreError> {
        validate_key(key)?;
        let inner = &self.inner;
        let config = PresigningConfig::builder()
            .start_time(signed_at.into())
            .expires_in(ttl)
            .build()
            .map_err(|e| inner.io_error("presign a download of", key, e.to_string()))?;
        let request = inner
            .client
            .get_object()
            .bucket(&inner.bucket)
            .key(inner.s3_key(key))
            .presigned(config)
            .await
            .map_err(|e| inner.sdk_error("presign a download of", key, "s3:GetObject", &e))?;
        let expires_at = signed_at
            + chrono::Duration::from_std(ttl)
                .map_err(|e| inner.io_error("presign a download of", key, e.to_string()))?;
        Ok(PresignedGet {
            url: request.uri().to_owned(),
            signed_at,
            expires_at,
        })
    }
}

fn sse(options: &S3Options) -> Option<ServerSideEncryption> {
    options
        .sse_kms_key_id
        .as_ref()
        .map(|_| ServerSideEncryption::AwsKms)
}

#[cfg(test)]
mod tests;
