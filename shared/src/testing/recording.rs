//! Recording stand-ins for the edges of the jobs and the API: alerts, metric lines and
//! asynchronous starts are kept in memory, so a test can assert on what would have been sent.

use std::sync::Mutex;

use async_trait::async_trait;

use crate::alert::{Alert, Notifier, NotifyError};
use crate::invoke::{DumpStarter, VerifyStarter};
use crate::metrics::{MetricRecord, MetricSink};
use crate::trigger::{DumpTrigger, VerifyEvent};

/// Keeps every alert in memory, for tests.
#[derive(Debug, Default)]
pub struct RecordingNotifier {
    alerts: Mutex<Vec<Alert>>,
    starts: Mutex<Vec<(crate::alert::RunKind, String)>>,
}

impl RecordingNotifier {
    /// An empty recorder.
    pub fn new() -> Self {
        RecordingNotifier::default()
    }

    /// The alerts (problems) received so far, in order; good news is in [`Self::notices`].
    pub fn alerts(&self) -> Vec<Alert> {
        self.notices()
            .into_iter()
            .filter(|a| !a.kind.is_ok())
            .collect()
    }

    /// Everything received so far, in order: alerts and good news (`backup_ok`, ...).
    pub fn notices(&self) -> Vec<Alert> {
        self.alerts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The runs announced as starting (`started`), in order.
    pub fn starts(&self) -> Vec<(crate::alert::RunKind, String)> {
        self.starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl Notifier for RecordingNotifier {
    async fn notify(&self, alert: &Alert) -> Result<(), NotifyError> {
        self.alerts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(alert.clone());
        Ok(())
    }

    async fn started(&self, run: crate::alert::RunKind, database: &str) -> Result<(), NotifyError> {
        self.starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((run, database.to_owned()));
        Ok(())
    }
}

/// Keeps the lines that would have been written, for tests.
#[derive(Debug, Default)]
pub struct RecordingMetrics {
    lines: Mutex<Vec<String>>,
}

impl RecordingMetrics {
    /// The lines emitted so far, each one EMF document without its newline.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl MetricSink for RecordingMetrics {
    fn emit(&self, record: &MetricRecord) {
        let mut out = Vec::new();
        record.write_to(&mut out).expect("writing to memory");
        if !out.is_empty() {
            let line = String::from_utf8(out).expect("JSON is UTF-8");
            self.lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(line.trim_end().to_owned());
        }
    }
}

/// Remembers the dumps it was asked to start instead of invoking anything: the stand-in for
/// [`LambdaInvoker`](crate::invoke::LambdaInvoker) in tests of the API and the functions.
#[derive(Debug, Default)]
pub struct RecordingStarter(pub Mutex<Vec<DumpTrigger>>);

#[async_trait]
impl DumpStarter for RecordingStarter {
    async fn start(&self, trigger: &DumpTrigger) -> Result<(), String> {
        self.0.lock().expect("not poisoned").push(trigger.clone());
        Ok(())
    }
}

/// Remembers the verifications (and restores) it was asked to start instead of invoking
/// anything.
#[derive(Debug, Default)]
pub struct RecordingVerifyStarter(pub Mutex<Vec<VerifyEvent>>);

#[async_trait]
impl VerifyStarter for RecordingVerifyStarter {
    async fn start(&self, event: &VerifyEvent) -> Result<(), String> {
        self.0.lock().expect("not poisoned").push(event.clone());
        Ok(())
    }
}
