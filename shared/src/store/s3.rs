//! S3 as an object store: where backups live in production.
//!
//! Objects go to `s3://<bucket>/<prefix>/<key>`. A streaming upload of unknown length is a
//! multipart upload fed by a background task: the writer cuts the stream into parts (16 MiB by
//! default, doubling every 1000 parts so S3's 10,000-part limit is never reached), at most a
//! few parts are in flight at once, and a failed part is retried with backoff. The object
//! appears only when [`ObjectUpload::commit`] completes the upload (refusing to overwrite an
//! existing key); any failure, an abort, or dropping the upload aborts the multipart upload so
//! no orphan parts are left to pay for. A stream shorter than one part is sent with a single
//! `PutObject` at commit.
//!
//! Memory: about `part_size × (max_in_flight + 2)` per upload (80 MiB with the defaults).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ObjectLockLegalHoldStatus, ServerSideEncryption,
};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::PollSender;

use super::{
    validate_key, ObjectLock, ObjectMeta, ObjectReader, ObjectStore, ObjectUpload, PresignedGet,
    StoreError,
};
use crate::aws::{describe, error_code};

/// S3's smallest part (except the last): 5 MiB.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// Default part size: large enough for throughput, small enough for Lambda memory.
pub const DEFAULT_PART_SIZE: usize = 16 * 1024 * 1024;
/// S3's largest part.
const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;
/// The part size doubles after every this many parts (S3 allows 10,000 parts).
const PARTS_PER_SIZE: u32 = 1000;

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
    pub fault: Option<PartFault>,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            part_size: DEFAULT_PART_SIZE,
            max_in_flight: 3,
            part_attempts: 4,
            sse_kms_key_id: None,
            fault: None,
        }
    }
}

/// A simulated part-upload failure (tests only): part `part` fails its first `failures`
/// attempts.
#[derive(Debug, Clone, Copy)]
pub struct PartFault {
    /// Part number (from 1).
    pub part: i32,
    /// Attempts that fail; at least `part_attempts` makes the whole upload fail.
    pub failures: u32,
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
        let inner = &self.inner;
        let full_prefix = inner.s3_prefix(prefix);
        let mut aborted = 0;
        let mut key_marker: Option<String> = None;
        let mut upload_marker: Option<String> = None;
        loop {
            let page = inner
                .client
                .list_multipart_uploads()
                .bucket(&inner.bucket)
                .prefix(&full_prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_marker.take())
                .send()
                .await
                .map_err(|e| {
                    inner.sdk_error(
                        "list multipart uploads under",
                        prefix,
                        "s3:ListBucketMultipartUploads",
                        &e,
                    )
                })?;
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                let started = upload.initiated().and_then(to_chrono);
                if started.is_some_and(|t| t >= older_than) {
                    continue;
                }
                inner.abort_multipart(key, id).await?;
                aborted += 1;
            }
            if page.is_truncated() != Some(true) {
                return Ok(aborted);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            upload_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && upload_marker.is_none() {
                return Ok(aborted);
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
        Ok(Box::new(S3Upload::start(self.inner.clone(), key)))
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

/// What the writer hands the upload task.
enum Message {
    /// A full part.
    Part(Bytes),
    /// The rest of the stream (possibly empty): no more parts follow.
    Finish(Bytes),
}

/// How an upload task ended badly.
enum Failure {
    /// The upload failed and nothing was left behind.
    Clean(StoreError),
    /// The multipart upload could not be aborted either: parts remain until the reaper (or a
    /// bucket lifecycle rule) removes them.
    Dirty(StoreError),
}

impl Failure {
    fn error(self) -> StoreError {
        match self {
            Failure::Clean(e) | Failure::Dirty(e) => e,
        }
    }
}

/// One upload's fixed facts, shared with its task and part tasks.
struct UploadCtx {
    store: Arc<Inner>,
    key: String,
    s3_key: String,
}

/// A multipart upload that has been started.
struct Multipart {
    upload_id: String,
    next_part: i32,
    in_flight: JoinSet<Result<CompletedPart, StoreError>>,
    done: Vec<CompletedPart>,
}

/// The streaming writer side of an S3 upload.
struct S3Upload {
    ctx: Arc<UploadCtx>,
    buffer: BytesMut,
    parts_sent: u32,
    /// `None` once the stream was finished (or the upload failed).
    sender: Option<PollSender<Message>>,
    /// Says when every part is stored; `None` once it answered.
    flushed: Option<oneshot::Receiver<()>>,
    /// Every part is stored (shutdown succeeded).
    flushed_ok: bool,
    /// Dropping it without sending tells the task to abort.
    commit: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Failure>>>,
    /// Set when the upload failed: the message for every later call.
    failed: Option<String>,
}

impl S3Upload {
    fn start(store: Arc<Inner>, key: &str) -> Self {
        let ctx = Arc::new(UploadCtx {
            s3_key: store.s3_key(key),
            key: key.to_owned(),
            store,
        });
        // One part waiting in the channel: the writer fills the next while it waits.
        let (tx, rx) = mpsc::channel(1);
        let (flushed_tx, flushed_rx) = oneshot::channel();
        let (commit_tx, commit_rx) = oneshot::channel();
        let task = tokio::spawn(drive(ctx.clone(), rx, flushed_tx, commit_rx));
        S3Upload {
            buffer: BytesMut::with_capacity(ctx.store.options.part_size),
            ctx,
            parts_sent: 0,
            sender: Some(PollSender::new(tx)),
            flushed: Some(flushed_rx),
            flushed_ok: false,
            commit: Some(commit_tx),
            task: Some(task),
            failed: None,
        }
    }

    fn part_size(&self) -> usize {
        let doublings = (self.parts_sent / PARTS_PER_SIZE).min(20);
        (self.ctx.store.options.part_size << doublings).min(MAX_PART_SIZE)
    }

    fn failed_error(&self) -> Option<io::Error> {
        self.failed.as_ref().map(|m| io::Error::other(m.clone()))
    }

    /// The task stopped early: wait for it and turn its failure into the writer's error.
    fn poll_task_failure(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if let Some(e) = self.failed_error() {
            return Poll::Ready(e);
        }
        let message = match &mut self.task {
            None => "the upload was already finished".to_owned(),
            Some(task) => match ready!(Pin::new(task).poll(cx)) {
                Ok(Err(failure)) => failure.error().to_string(),
                Ok(Ok(())) => "the upload was cancelled".to_owned(),
                Err(e) => format!("the upload task failed: {e}"),
            },
        };
        self.task = None;
        self.sender = None;
        self.failed = Some(message.clone());
        Poll::Ready(io::Error::other(message))
    }

    /// Hands `message` to the task once it has room.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        message: impl FnOnce(&mut Self) -> Message,
    ) -> Poll<io::Result<()>> {
        let Some(sender) = self.sender.as_mut() else {
            return Poll::Ready(Err(io::Error::other("write after the upload was finished")));
        };
        match ready!(sender.poll_reserve(cx)) {
            Ok(()) => {
                let message = message(self);
                let sender = self.sender.as_mut().expect("checked above");
                if sender.send_item(message).is_err() {
                    return self.poll_task_failure(cx).map(Err);
                }
                Poll::Ready(Ok(()))
            }
            Err(_) => self.poll_task_failure(cx).map(Err),
        }
    }

    async fn wait_for_task(&mut self) -> Result<(), Failure> {
        let Some(task) = self.task.take() else {
            return Err(Failure::Clean(
                self.ctx.store.io_error(
                    "upload",
                    &self.ctx.key,
                    self.failed
                        .clone()
                        .unwrap_or_else(|| "the upload was already finished".into()),
                ),
            ));
        };
        match task.await {
            Ok(result) => result,
            Err(e) => Err(Failure::Dirty(self.ctx.store.io_error(
                "upload",
                &self.ctx.key,
                format!("the upload task failed: {e}"),
            ))),
        }
    }
}

impl AsyncWrite for S3Upload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(e) = this.failed_error() {
            return Poll::Ready(Err(e));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let part_size = this.part_size();
        if this.buffer.len() >= part_size {
            ready!(this.poll_send(cx, |this| {
                let part = this.buffer.split().freeze();
                this.parts_sent += 1;
                let next = this.part_size();
                this.buffer.reserve(next);
                Message::Part(part)
            }))?;
        }
        let room = this.part_size() - this.buffer.len();
        let n = room.min(buf.len());
        this.buffer.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Bytes short of a part can only be sent as the last part, at shutdown.
        match self.failed_error() {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Sends the rest and waits until every part is stored (not yet visible: see `commit`).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(e) = this.failed_error() {
            return Poll::Ready(Err(e));
        }
        if this.flushed_ok {
            return Poll::Ready(Ok(()));
        }
        if this.sender.is_some() {
            ready!(this.poll_send(cx, |this| Message::Finish(this.buffer.split().freeze())))?;
            this.sender = None;
        }
        if let Some(flushed) = this.flushed.as_mut() {
            let answer = ready!(Pin::new(flushed).poll(cx));
            this.flushed = None;
            if answer.is_ok() {
                this.flushed_ok = true;
                return Poll::Ready(Ok(()));
            }
        }
        // The task ended without storing every part: it failed.
        this.poll_task_failure(cx).map(Err)
    }
}

#[async_trait]
impl ObjectUpload for S3Upload {
    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        if !self.flushed_ok {
            if let Err(e) = self.shutdown().await {
                // The task has already aborted the upload, or will on the dropped channels.
                let _ = self.wait_for_task().await;
                return Err(self
                    .ctx
                    .store
                    .io_error("upload", &self.ctx.key, e.to_string()));
            }
        }
        if let Some(commit) = self.commit.take() {
            // If the task is gone, waiting for it below reports why.
            let _ = commit.send(());
        }
        self.wait_for_task().await.map_err(Failure::error)
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StoreError> {
        self.sender = None;
        self.commit = None;
        if self.task.is_none() {
            return Ok(());
        }
        match self.wait_for_task().await {
            Ok(()) | Err(Failure::Clean(_)) => Ok(()),
            Err(Failure::Dirty(e)) => Err(e),
        }
    }
}

// Dropping an `S3Upload` drops its channels: the task sees them closed and aborts the
// multipart upload on its own, so no `Drop` impl is needed.

/// The upload task: creates the multipart upload when the first full part arrives, keeps at
/// most `max_in_flight` parts uploading, and after the last part waits for the verdict:
/// commit completes the upload, anything else (or any failure) aborts it.
async fn drive(
    ctx: Arc<UploadCtx>,
    mut rx: mpsc::Receiver<Message>,
    flushed: oneshot::Sender<()>,
    commit: oneshot::Receiver<()>,
) -> Result<(), Failure> {
    let mut multipart: Option<Multipart> = None;
    let received = receive(&ctx, &mut rx, &mut multipart).await;
    drop(rx);
    let single = match received {
        Ok(Some(single)) => Some(single),
        Ok(None) => None,
        Err(e) => return Err(cleanup(&ctx, multipart, Some(e)).await),
    };
    let _ = flushed.send(());
    if commit.await.is_err() {
        // Aborted or dropped before commit.
        return match cleanup(&ctx, multipart, None).await {
            Failure::Clean(_) => Ok(()),
            dirty => Err(dirty),
        };
    }
    let store = &ctx.store;
    let completed = match (single, &mut multipart) {
        (Some(body), _) => store
            .client
            .put_object()
            .bucket(&store.bucket)
            .key(&ctx.s3_key)
            .if_none_match("*")
            .body(ByteStream::from(body))
            .set_server_side_encryption(sse(&store.options))
            .set_ssekms_key_id(store.options.sse_kms_key_id.clone())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| commit_error(&ctx, "s3:PutObject", &e)),
        (None, Some(mp)) => {
            let mut parts = std::mem::take(&mut mp.done);
            parts.sort_by_key(|p| p.part_number());
            store
                .client
                .complete_multipart_upload()
                .bucket(&store.bucket)
                .key(&ctx.s3_key)
                .upload_id(&mp.upload_id)
                .if_none_match("*")
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| commit_error(&ctx, "s3:PutObject", &e))
        }
        (None, None) => unreachable!("receive returns a body or a started multipart upload"),
    };
    match completed {
        Ok(()) => Ok(()),
        Err(e) => Err(cleanup(&ctx, multipart, Some(e)).await),
    }
}

fn commit_error<E, R>(ctx: &UploadCtx, action: &str, err: &SdkError<E, R>) -> StoreError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if error_code(err) == Some("PreconditionFailed") {
        return StoreError::AlreadyExists {
            store: ctx.store.location(),
            key: ctx.key.clone(),
        };
    }
    ctx.store.sdk_error("commit", &ctx.key, action, err)
}

/// Receives the stream. Returns the whole body when it fit in less than one part (no
/// multipart upload was started), or `None` once every part of the multipart upload is stored.
async fn receive(
    ctx: &Arc<UploadCtx>,
    rx: &mut mpsc::Receiver<Message>,
    multipart: &mut Option<Multipart>,
) -> Result<Option<Bytes>, StoreError> {
    let max_in_flight = ctx.store.options.max_in_flight;
    loop {
        let in_flight = multipart.as_ref().map_or(0, |m| m.in_flight.len());
        tokio::select! {
            // Finished parts first, so a failure stops the upload as soon as it is known.
            biased;
            Some(joined) = next_finished(multipart) => {
                let m = multipart.as_mut().expect("only polled with an upload");
                m.done.push(joined_part(ctx, joined)?);
            }
            message = rx.recv(), if in_flight < max_in_flight => match message {
                None => {
                    return Err(ctx.store.io_error(
                        "upload",
                        &ctx.key,
                        "the upload was abandoned before its end".into(),
                    ))
                }
                Some(Message::Part(part)) => {
                    if multipart.is_none() {
                        *multipart = Some(create_multipart(ctx).await?);
                    }
                    start_part(ctx, multipart.as_mut().expect("just created"), part)?;
                }
                Some(Message::Finish(rest)) => {
                    let Some(m) = multipart.as_mut() else {
                        return Ok(Some(rest));
                    };
                    if !rest.is_empty() {
                        start_part(ctx, m, rest)?;
                    }
                    while let Some(joined) = m.in_flight.join_next().await {
                        m.done.push(joined_part(ctx, joined)?);
                    }
                    return Ok(None);
                }
            },
        }
    }
}

/// The next finished part upload, or never when none is running.
async fn next_finished(
    multipart: &mut Option<Multipart>,
) -> Option<Result<Result<CompletedPart, StoreError>, tokio::task::JoinError>> {
    match multipart {
        Some(m) if !m.in_flight.is_empty() => m.in_flight.join_next().await,
        _ => std::future::pending().await,
    }
}

fn joined_part(
    ctx: &UploadCtx,
    joined: Result<Result<CompletedPart, StoreError>, tokio::task::JoinError>,
) -> Result<CompletedPart, StoreError> {
    match joined {
        Ok(result) => result,
        Err(e) => Err(ctx.store.io_error(
            "upload a part of",
            &ctx.key,
            format!("the part task failed: {e}"),
        )),
    }
}

async fn create_multipart(ctx: &UploadCtx) -> Result<Multipart, StoreError> {
    let store = &ctx.store;
    let out = store
        .client
        .create_multipart_upload()
        .bucket(&store.bucket)
        .key(&ctx.s3_key)
        .set_server_side_encryption(sse(&store.options))
        .set_ssekms_key_id(store.options.sse_kms_key_id.clone())
        .send()
        .await
        .map_err(|e| store.sdk_error("start the upload of", &ctx.key, "s3:PutObject", &e))?;
    let upload_id = out.upload_id().ok_or_else(|| {
        store.io_error(
            "start the upload of",
            &ctx.key,
            "S3 returned no upload id".into(),
        )
    })?;
    Ok(Multipart {
        upload_id: upload_id.to_owned(),
        next_part: 1,
        in_flight: JoinSet::new(),
        done: Vec::new(),
    })
}

fn start_part(ctx: &Arc<UploadCtx>, m: &mut Multipart, body: Bytes) -> Result<(), StoreError> {
    let number = m.next_part;
    if number > 10_000 {
        return Err(ctx.store.io_error(
            "upload",
            &ctx.key,
            "more than 10,000 parts; raise the part size".into(),
        ));
    }
    m.next_part += 1;
    m.in_flight
        .spawn(upload_part(ctx.clone(), m.upload_id.clone(), number, body));
    Ok(())
}

/// Uploads one part, retrying transient failures with exponential backoff.
async fn upload_part(
    ctx: Arc<UploadCtx>,
    upload_id: String,
    number: i32,
    body: Bytes,
) -> Result<CompletedPart, StoreError> {
    let store = &ctx.store;
    let attempts = store.options.part_attempts;
    let mut delay = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        let injected = store
            .options
            .fault
            .is_some_and(|f| f.part == number && attempt <= f.failures);
        let result = if injected {
            Err(("injected failure".to_owned(), true))
        } else {
            store
                .client
                .upload_part()
                .bucket(&store.bucket)
                .key(&ctx.s3_key)
                .upload_id(&upload_id)
                .part_number(number)
                .body(ByteStream::from(body.clone()))
                .send()
                .await
                .map_err(|e| (describe(&e), is_transient(&e)))
        };
        match result {
            Ok(out) => {
                return Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build())
            }
            Err((message, transient)) if transient && attempt < attempts => {
                tracing::warn!(key = %ctx.key, part = number, attempt, error = %message, "part upload failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err((message, _)) => {
                return Err(store.io_error(
                    "upload a part of",
                    &ctx.key,
                    format!("part {number} failed after {attempt} attempt(s): {message}"),
                ))
            }
        }
    }
}

/// Worth another attempt: no answer, a timeout, throttling or a server-side error.
fn is_transient<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool {
    match err {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
            match err.raw_response().map(|r| r.status().as_u16()) {
                Some(s) => s == 408 || s == 429 || s >= 500,
                None => true,
            }
        }
        SdkError::ConstructionFailure(_) => false,
        _ => true,
    }
}

/// Stops part uploads, aborts the multipart upload (if one was started) and says whether
/// anything was left behind. `error` is why (or `None` when simply aborted).
async fn cleanup(
    ctx: &UploadCtx,
    multipart: Option<Multipart>,
    error: Option<StoreError>,
) -> Failure {
    let error = error.unwrap_or_else(|| {
        ctx.store
            .io_error("upload", &ctx.key, "the upload was aborted".into())
    });
    let Some(mut m) = multipart else {
        return Failure::Clean(error);
    };
    m.in_flight.shutdown().await;
    match ctx.store.abort_multipart(&ctx.s3_key, &m.upload_id).await {
        Ok(()) => Failure::Clean(error),
        Err(abort) => {
            tracing::error!(key = %ctx.key, upload_id = %m.upload_id, error = %abort, "could not abort the multipart upload; its parts remain until the reaper or a lifecycle rule removes them");
            Failure::Dirty(ctx.store.io_error(
                "upload",
                &ctx.key,
                format!(
                    "{error}; and aborting multipart upload {} failed: {abort}",
                    m.upload_id
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract::{pattern, write_uneven};
    use crate::testing::{moto, moto_bucket};
    use tokio::io::AsyncReadExt;

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
        use aws_sdk_s3::types::{
            ObjectLockLegalHold, ObjectLockRetention, ObjectLockRetentionMode,
        };
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
}
