//! Test doubles with failure injection: decorators over the real backends, so tests exercise
//! our own code paths and only the failure is simulated; recording stand-ins for notifiers,
//! metrics and starters (`testing/recording.rs`); a recording loopback HTTP server for webhook
//! and heartbeat endpoints (`testing/http.rs`); helpers for the AWS emulator.
//!
//! Compiled for this crate's unit tests and, through the `testing` feature, for the tests of
//! the other crates (a `[dev-dependencies]` entry), never into a release binary.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::io::AsyncWrite;

use crate::catalog::{Catalog, CatalogError, ListQuery, Page};
use crate::model::{AuditEntry, BackupId, BackupRecord, BackupStatus, Lease};
use crate::store::{
    ObjectLock, ObjectMeta, ObjectReader, ObjectStore, ObjectUpload, PresignedGet, StoreError,
};

pub mod http;
mod recording;

pub use recording::{
    RecordingMetrics, RecordingNotifier, RecordingStarter, RecordingVerifyStarter,
};

/// Which store operation fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Streaming writes fail once this many bytes were accepted.
    pub write_after: Option<u64>,
    /// `commit` fails (after everything was written).
    pub commit: bool,
    /// `put` (manifests) fails.
    pub put: bool,
    /// `delete` fails.
    pub delete: bool,
}

/// A crash at a chosen step: a budget of writes shared by a [`FaultyStore`] and a
/// [`FaultyCatalog`]. Once it is spent, every further write fails, as if the process had died
/// there; reads keep working. Counting the writes of a clean run and then crashing after 0, 1,
/// 2, ... of them puts a crash between every pair of steps.
#[derive(Debug, Clone)]
pub struct CrashPoint {
    remaining: Arc<AtomicUsize>,
    used: Arc<AtomicUsize>,
    crashed: Arc<AtomicBool>,
}

impl CrashPoint {
    /// Crashes at the write after the first `writes` ones.
    pub fn after(writes: usize) -> Self {
        CrashPoint {
            remaining: Arc::new(AtomicUsize::new(writes)),
            used: Arc::new(AtomicUsize::new(0)),
            crashed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Never crashes; counts writes.
    pub fn never() -> Self {
        CrashPoint::after(usize::MAX)
    }

    /// Writes done so far.
    pub fn writes(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// Whether a write was refused.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Takes one write from the budget; `false` once crashed.
    fn write(&self) -> bool {
        if self.crashed() {
            return false;
        }
        let ok = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if ok {
            self.used.fetch_add(1, Ordering::SeqCst);
        } else {
            self.crashed.store(true, Ordering::SeqCst);
        }
        ok
    }
}

/// Wraps a real store and injects [`Faults`] and, optionally, a [`CrashPoint`].
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Faults,
    crash: Option<CrashPoint>,
    lock: Option<ObjectLock>,
}

impl FaultyStore {
    /// Decorates `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Faults) -> Self {
        FaultyStore {
            inner,
            faults,
            crash: None,
            lock: None,
        }
    }

    /// Reports every object as under this Object Lock (as an S3 bucket with Object Lock would).
    pub fn with_lock(mut self, lock: ObjectLock) -> Self {
        self.lock = Some(lock);
        self
    }

    /// Also crashes at `crash` (puts and deletes count as writes).
    pub fn with_crash(mut self, crash: CrashPoint) -> Self {
        self.crash = Some(crash);
        self
    }

    fn crashed(&self, key: &str) -> Result<(), StoreError> {
        match &self.crash {
            Some(c) if !c.write() => Err(injected(key)),
            _ => Ok(()),
        }
    }
}

fn injected(key: &str) -> StoreError {
    StoreError::Io {
        op: "write",
        store: "faulty://".into(),
        key: key.into(),
        source: io::Error::other("injected failure"),
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn create(&self, key: &str) -> Result<Box<dyn ObjectUpload>, StoreError> {
        let inner = self.inner.create(key).await?;
        Ok(Box::new(FaultyUpload {
            inner,
            key: key.into(),
            written: 0,
            faults: self.faults,
        }))
    }
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        if self.faults.put {
            return Err(injected(key));
        }
        self.crashed(key)?;
        self.inner.put(key, bytes).await
    }
    async fn open(&self, key: &str) -> Result<ObjectReader, StoreError> {
        self.inner.open(key).await
    }
    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.inner.get(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.inner.head(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        if self.faults.delete {
            return Err(injected(key));
        }
        self.crashed(key)?;
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn abort_incomplete_uploads(
        &self,
        prefix: &str,
        older_than: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, StoreError> {
        self.inner
            .abort_incomplete_uploads(prefix, older_than)
            .await
    }
    async fn object_lock(&self, key: &str) -> Result<Option<ObjectLock>, StoreError> {
        match &self.lock {
            Some(lock) => Ok(Some(lock.clone())),
            None => self.inner.object_lock(key).await,
        }
    }
    async fn presign_get(
        &self,
        key: &str,
        ttl: std::time::Duration,
        signed_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<PresignedGet, StoreError> {
        self.inner.presign_get(key, ttl, signed_at).await
    }
}

struct FaultyUpload {
    inner: Box<dyn ObjectUpload>,
    key: String,
    written: u64,
    faults: Faults,
}

impl AsyncWrite for FaultyUpload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(limit) = self.faults.write_after {
            if self.written + buf.len() as u64 > limit {
                return Poll::Ready(Err(io::Error::other("injected write failure")));
            }
        }
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.written += n as u64;
        }
        polled
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl ObjectUpload for FaultyUpload {
    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        if self.faults.commit {
            let key = self.key.clone();
            self.inner.abort().await?;
            return Err(injected(&key));
        }
        self.inner.commit().await
    }
    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        self.inner.abort().await
    }
}

/// Which catalog operation fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatalogFaults {
    /// `update` fails.
    pub update: bool,
    /// `append_audit` fails.
    pub append_audit: bool,
}

/// Wraps a real catalog and injects [`CatalogFaults`] and, optionally, a [`CrashPoint`]
/// (inserts, updates, audit entries and leases count as writes).
pub struct FaultyCatalog {
    inner: Arc<dyn Catalog>,
    faults: CatalogFaults,
    crash: Option<CrashPoint>,
}

impl FaultyCatalog {
    /// Decorates `inner`.
    pub fn new(inner: Arc<dyn Catalog>, faults: CatalogFaults) -> Self {
        FaultyCatalog {
            inner,
            faults,
            crash: None,
        }
    }

    /// Also crashes at `crash`.
    pub fn with_crash(mut self, crash: CrashPoint) -> Self {
        self.crash = Some(crash);
        self
    }

    fn write(&self, fault: bool) -> Result<(), CatalogError> {
        let crashed = self.crash.as_ref().is_some_and(|c| !c.write());
        if fault || crashed {
            return Err(CatalogError::Backend {
                location: "faulty://catalog".into(),
                message: "injected failure".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Catalog for FaultyCatalog {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn insert(&self, record: &BackupRecord) -> Result<(), CatalogError> {
        self.write(false)?;
        self.inner.insert(record).await
    }
    async fn get(&self, id: &BackupId) -> Result<BackupRecord, CatalogError> {
        self.inner.get(id).await
    }
    async fn update(
        &self,
        record: &BackupRecord,
        expected: BackupStatus,
    ) -> Result<(), CatalogError> {
        self.write(self.faults.update)?;
        self.inner.update(record, expected).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Page, CatalogError> {
        self.inner.list(query).await
    }
    async fn replace(&self, record: &BackupRecord) -> Result<(), CatalogError> {
        self.write(self.faults.update)?;
        self.inner.replace(record).await
    }
    async fn acquire_lease(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, CatalogError> {
        self.write(false)?;
        self.inner.acquire_lease(lease, now).await
    }
    async fn release_lease(&self, database: &str, holder: &str) -> Result<(), CatalogError> {
        self.write(false)?;
        self.inner.release_lease(database, holder).await
    }
    async fn renew_lease(&self, lease: &Lease) -> Result<bool, CatalogError> {
        // A heartbeat is not a step of the run: it does not count, but fails once crashed.
        if self.crash.as_ref().is_some_and(CrashPoint::crashed) {
            return Err(CatalogError::Backend {
                location: "faulty://catalog".into(),
                message: "injected failure".into(),
            });
        }
        self.inner.renew_lease(lease).await
    }
    async fn get_lease(&self, database: &str) -> Result<Option<Lease>, CatalogError> {
        self.inner.get_lease(database).await
    }
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), CatalogError> {
        self.write(self.faults.append_audit)?;
        self.inner.append_audit(entry).await
    }
    async fn put_restore(&self, run: &crate::model::RestoreRun) -> Result<(), CatalogError> {
        self.write(false)?;
        self.inner.put_restore(run).await
    }
    async fn get_restore(&self, id: &BackupId) -> Result<crate::model::RestoreRun, CatalogError> {
        self.inner.get_restore(id).await
    }
    async fn list_restores(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::model::RestoreRun>, CatalogError> {
        self.inner.list_restores(limit).await
    }
    async fn audit_page(
        &self,
        query: &crate::catalog::AuditQuery,
    ) -> Result<crate::catalog::AuditPage, CatalogError> {
        self.inner.audit_page(query).await
    }
    async fn list_audit(
        &self,
        database: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, CatalogError> {
        self.inner.list_audit(database, limit).await
    }
    async fn remove_record(
        &self,
        id: &BackupId,
        expected: BackupStatus,
    ) -> Result<(), CatalogError> {
        self.write(false)?;
        self.inner.remove_record(id, expected).await
    }
}

/// A simulated S3 part-upload failure ([`S3Options::fault`](crate::store::s3::S3Options)):
/// part `part` fails its first `failures` attempts.
#[derive(Debug, Clone, Copy)]
pub struct PartFault {
    /// Part number (from 1).
    pub part: i32,
    /// Attempts that fail; at least `part_attempts` makes the whole upload fail.
    pub failures: u32,
}

impl PartFault {
    /// Whether attempt `attempt` (from 1) of part `part` fails.
    pub fn fails(&self, part: i32, attempt: u32) -> bool {
        part == self.part && attempt <= self.failures
    }
}

/// The AWS configuration for the emulator the test command starts (moto), or `None` (with a
/// message) when it is not running; under CI a missing emulator fails the test instead.
pub async fn moto() -> Option<crate::aws::SdkConfig> {
    match std::env::var("PGKEEP_TEST_AWS_ENDPOINT") {
        Ok(endpoint) => Some(
            crate::aws::load_config(Some(&endpoint))
                .await
                .expect("AWS configuration for the emulator"),
        ),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("PGKEEP_TEST_AWS_ENDPOINT is not set: run the tests through scripts/test")
        }
        Err(_) => {
            eprintln!("skipped: PGKEEP_TEST_AWS_ENDPOINT is not set (scripts/test starts moto)");
            None
        }
    }
}

/// A name no other test uses: `{prefix}-{pid}-{counter}-{random}` in lowercase.
pub fn unique(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut r = [0u8; 3];
    getrandom::fill(&mut r).expect("randomness");
    format!("{prefix}-{}-{n}-{}", std::process::id(), hex::encode(r))
}

/// An S3 client for the emulator (path-style addressing) and a fresh bucket.
pub async fn moto_bucket(config: &crate::aws::SdkConfig) -> (aws_sdk_s3::Client, String) {
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build(),
    );
    let bucket = unique("pgkeep-test");
    let region = config.region().map(|r| r.to_string()).unwrap_or_default();
    let mut create = client.create_bucket().bucket(&bucket);
    if region != "us-east-1" {
        create = create.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                    region.as_str(),
                ))
                .build(),
        );
    }
    create.send().await.expect("create bucket");
    (client, bucket)
}
