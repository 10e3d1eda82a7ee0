//! The multipart upload engine behind [`S3Store::create`](super::S3Store): a writer that cuts
//! the stream into parts and a background task that uploads them.
//!
//! Parts are 8 MiB by default, doubling every 1000 parts so S3's 10,000-part limit is never
//! reached; at most a few parts are in flight at once, and a failed part is retried with
//! backoff. The task completes the upload only on commit; any failure, an abort, or a dropped
//! writer aborts it. A stream shorter than one part is sent with a single `PutObject` at commit.
//!
//! Memory: about `part_size × (max_in_flight + 2)` per upload (the part being filled, one
//! waiting in the channel, those in flight): 32 MiB with the defaults (8 MiB, 2 in flight).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::PollSender;

use super::{sse, Inner, S3Options, MAX_PART_SIZE};
use crate::aws::{describe, error_code};
use crate::store::{ObjectUpload, StoreError};

/// The part size doubles after every this many parts (S3 allows 10,000 parts).
const PARTS_PER_SIZE: u32 = 1000;

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
pub(super) struct S3Upload {
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
    /// Starts the upload task for `key`; nothing is sent before the first full part.
    pub(super) fn start(store: Arc<Inner>, key: &str) -> Self {
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
        let result = if injected_failure(&store.options, number, attempt) {
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

/// Whether a test asked for this attempt to fail ([`S3Options::fault`]).
#[cfg(any(test, feature = "testing"))]
fn injected_failure(options: &S3Options, part: i32, attempt: u32) -> bool {
    options.fault.is_some_and(|f| f.fails(part, attempt))
}

/// Without the `testing` feature nothing is injected.
#[cfg(not(any(test, feature = "testing")))]
fn injected_failure(_: &S3Options, _: i32, _: u32) -> bool {
    false
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
