//! CloudWatch metrics as log lines in Embedded Metric Format (EMF): one JSON object per line
//! on stdout in Lambda, which CloudWatch Logs turns into metrics with no API call, no SDK and
//! no extra permission.
//!
//! Namespace `pgkeep`, one dimension `Database`. Metrics: `BackupDuration` (ms), `BackupSize`
//! (bytes stored, i.e. compressed and encrypted), `BackupThroughput` (stored bytes per second),
//! `VerifyDuration` (ms), `NewestGoodBackupAge` (s). The format is specified at
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>.

use std::collections::BTreeMap;
use std::io;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::model::{BackupId, BackupRecord};
use crate::ops::health::DatabaseHealth;

/// The CloudWatch namespace of every pgkeep metric.
pub const NAMESPACE: &str = "pgkeep";

/// The one dimension: metrics are per database.
pub const DIMENSION: &str = "Database";

/// The metrics pgkeep emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// Wall time of a dump.
    BackupDuration,
    /// Stored (compressed, encrypted) size of a backup.
    BackupSize,
    /// Stored bytes per second of a dump.
    BackupThroughput,
    /// Wall time of a verification (test restore and comparison).
    VerifyDuration,
    /// Age of the newest good backup of a database.
    NewestGoodBackupAge,
}

impl Metric {
    /// Every metric.
    pub const ALL: [Metric; 5] = [
        Metric::BackupDuration,
        Metric::BackupSize,
        Metric::BackupThroughput,
        Metric::VerifyDuration,
        Metric::NewestGoodBackupAge,
    ];

    /// The metric's name in CloudWatch.
    pub fn name(self) -> &'static str {
        match self {
            Metric::BackupDuration => "BackupDuration",
            Metric::BackupSize => "BackupSize",
            Metric::BackupThroughput => "BackupThroughput",
            Metric::VerifyDuration => "VerifyDuration",
            Metric::NewestGoodBackupAge => "NewestGoodBackupAge",
        }
    }

    /// Its CloudWatch unit (one of the names the EMF specification allows).
    pub fn unit(self) -> &'static str {
        match self {
            Metric::BackupDuration | Metric::VerifyDuration => "Milliseconds",
            Metric::BackupSize => "Bytes",
            Metric::BackupThroughput => "Bytes/Second",
            Metric::NewestGoodBackupAge => "Seconds",
        }
    }
}

/// Values of one database at one time, with extra searchable properties (a backup id); one EMF
/// document.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRecord {
    /// The `Database` dimension's value.
    pub database: String,
    /// The metrics' timestamp.
    pub at: DateTime<Utc>,
    /// The values; non-finite values are never stored.
    pub values: BTreeMap<Metric, f64>,
    /// Log-only properties (not metrics, not dimensions), such as `BackupId`.
    pub properties: BTreeMap<String, Value>,
}

impl MetricRecord {
    /// No values yet.
    pub fn new(database: &str, at: DateTime<Utc>) -> Self {
        MetricRecord {
            database: database.to_owned(),
            at,
            values: BTreeMap::new(),
            properties: BTreeMap::new(),
        }
    }

    /// Sets a value (ignored unless finite: JSON has no NaN or infinity).
    pub fn with(mut self, metric: Metric, value: f64) -> Self {
        if value.is_finite() {
            self.values.insert(metric, value);
        }
        self
    }

    /// Adds a log-only property; names of metrics, the dimension and `_aws` are reserved and
    /// ignored, so a property can never overwrite them.
    pub fn property(mut self, name: &str, value: impl Into<Value>) -> Self {
        let reserved =
            name == "_aws" || name == DIMENSION || Metric::ALL.iter().any(|m| m.name() == name);
        if !reserved {
            self.properties.insert(name.to_owned(), value.into());
        }
        self
    }

    /// Whether there is nothing to emit.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The EMF document: `_aws` metadata (timestamp in epoch milliseconds, one metric
    /// directive), the dimension value and each metric's value at the top level.
    pub fn to_emf(&self) -> Value {
        let definitions: Vec<Value> = self
            .values
            .keys()
            .map(|m| json!({ "Name": m.name(), "Unit": m.unit() }))
            .collect();
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": self.at.timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [[DIMENSION]],
                    "Metrics": definitions,
                }],
            }),
        );
        root.insert(DIMENSION.into(), Value::String(self.database.clone()));
        for (m, v) in &self.values {
            root.insert(m.name().into(), number(*v));
        }
        for (k, v) in &self.properties {
            root.insert(k.clone(), v.clone());
        }
        Value::Object(root)
    }

    /// Writes the document as one line (nothing when there are no values).
    pub fn write_to(&self, out: &mut impl io::Write) -> io::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        serde_json::to_writer(&mut *out, &self.to_emf()).map_err(io::Error::other)?;
        out.write_all(b"\n")?;
        out.flush()
    }
}

/// Whole numbers print as integers (`1234`, not `1234.0`).
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

/// Duration, size and throughput of a completed dump (empty for a record without them).
pub fn backup_metrics(record: &BackupRecord) -> MetricRecord {
    let at = record.completed_at.unwrap_or(record.created_at);
    let mut m = MetricRecord::new(&record.database, at)
        .property("BackupId", record.id.as_str())
        .property("Kind", record.kind.as_str());
    if !record.status.has_object() {
        return m;
    }
    if let Some(ms) = record.duration_ms {
        m = m.with(Metric::BackupDuration, ms as f64);
    }
    if let Some(bytes) = record.size_bytes {
        m = m.with(Metric::BackupSize, bytes as f64);
        if let Some(ms) = record.duration_ms.filter(|ms| *ms > 0) {
            m = m.with(Metric::BackupThroughput, bytes as f64 * 1000.0 / ms as f64);
        }
    }
    m
}

/// The duration of one verification.
pub fn verify_metrics(
    database: &str,
    backup_id: &BackupId,
    duration_ms: u64,
    at: DateTime<Utc>,
) -> MetricRecord {
    MetricRecord::new(database, at)
        .with(Metric::VerifyDuration, duration_ms as f64)
        .property("BackupId", backup_id.as_str())
}

/// The age of each database's newest good backup (databases without one emit nothing: alarm
/// on missing data for them).
pub fn health_metrics(health: &[DatabaseHealth], at: DateTime<Utc>) -> Vec<MetricRecord> {
    health
        .iter()
        .filter_map(|h| {
            let good = h.status.latest_good.as_ref()?;
            Some(
                MetricRecord::new(&h.status.database, at)
                    .with(Metric::NewestGoodBackupAge, good.age_seconds as f64)
                    .property("BackupId", good.id.as_str()),
            )
        })
        .collect()
}

/// Where metric documents go: stdout in Lambda ([`StdoutMetrics`]), memory in tests
/// (`testing::RecordingMetrics`).
pub trait MetricSink: Send + Sync {
    /// Emits one document (nothing when it has no values).
    fn emit(&self, record: &MetricRecord);
}

/// Writes each document as one line on stdout, where CloudWatch Logs picks it up. A failed
/// write is logged, not raised: losing a metric must not fail a backup.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdoutMetrics;

impl MetricSink for StdoutMetrics {
    fn emit(&self, record: &MetricRecord) {
        if let Err(e) = record.write_to(&mut io::stdout().lock()) {
            tracing::warn!(error = %e, database = %record.database, "could not write a metric line");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackupKind, BackupStatus, Compression};
    use crate::ops::health::{assess, HealthPolicy};
    use chrono::{TimeDelta, TimeZone};

    fn completed() -> BackupRecord {
        let t = Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap();
        let mut r = BackupRecord::start(
            "20261124T030000000Z-9f3a1c2b".parse().unwrap(),
            "shop",
            BackupKind::Scheduled,
            Compression::Zstd,
        );
        r.created_at = t;
        r.completed_at = Some(t + TimeDelta::seconds(4));
        r.status = BackupStatus::Completed;
        r.duration_ms = Some(4000);
        r.size_bytes = Some(10_000_000);
        r
    }

    #[test]
    fn backup_metrics_have_the_exact_emf_shape() {
        let mut out = Vec::new();
        backup_metrics(&completed()).write_to(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n'));
        assert_eq!(text.matches('\n').count(), 1, "one line: {text}");
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            doc,
            json!({
                "_aws": {
                    "Timestamp": 1_795_489_204_000i64,
                    "CloudWatchMetrics": [{
                        "Namespace": "pgkeep",
                        "Dimensions": [["Database"]],
                        "Metrics": [
                            {"Name": "BackupDuration", "Unit": "Milliseconds"},
                            {"Name": "BackupSize", "Unit": "Bytes"},
                            {"Name": "BackupThroughput", "Unit": "Bytes/Second"},
                        ],
                    }],
                },
                "Database": "shop",
                "BackupDuration": 4000,
                "BackupSize": 10_000_000,
                "BackupThroughput": 2_500_000,
                "BackupId": "20261124T030000000Z-9f3a1c2b",
                "Kind": "scheduled",
            })
        );
        assert_eq!(
            Utc.timestamp_millis_opt(1_795_489_204_000).unwrap(),
            completed().completed_at.unwrap()
        );
    }

    /// The rules of the specification every document must follow: `_aws` with an integer
    /// `Timestamp` and a `CloudWatchMetrics` array; each directive's `Namespace` a non-empty
    /// string, `Dimensions` an array of arrays of at most 30 strings that are root members
    /// with string values, `Metrics` at most 100 definitions with a `Name` whose root member is
    /// a number, and a `Unit` from the allowed list.
    fn assert_valid_emf(doc: &Value) {
        const UNITS: &[&str] = &[
            "Seconds",
            "Microseconds",
            "Milliseconds",
            "Bytes",
            "Kilobytes",
            "Megabytes",
            "Gigabytes",
            "Terabytes",
            "Bits",
            "Kilobits",
            "Megabits",
            "Gigabits",
            "Terabits",
            "Percent",
            "Count",
            "Bytes/Second",
            "Kilobytes/Second",
            "Megabytes/Second",
            "Gigabytes/Second",
            "Terabytes/Second",
            "Bits/Second",
            "Kilobits/Second",
            "Megabits/Second",
            "Gigabits/Second",
            "Terabits/Second",
            "Count/Second",
            "None",
        ];
        let aws = &doc["_aws"];
        assert!(aws["Timestamp"].is_i64(), "{doc}");
        let directives = aws["CloudWatchMetrics"].as_array().unwrap();
        assert!(!directives.is_empty());
        for d in directives {
            assert!(!d["Namespace"].as_str().unwrap().is_empty());
            for set in d["Dimensions"].as_array().unwrap() {
                let set = set.as_array().unwrap();
                assert!(!set.is_empty() && set.len() <= 30);
                for name in set {
                    assert!(doc[name.as_str().unwrap()].is_string(), "{name} in {doc}");
                }
            }
            let metrics = d["Metrics"].as_array().unwrap();
            assert!(!metrics.is_empty() && metrics.len() <= 100);
            for m in metrics {
                let name = m["Name"].as_str().unwrap();
                assert!(!name.is_empty() && name.len() <= 1024);
                assert!(doc[name].is_number(), "{name} in {doc}");
                assert!(UNITS.contains(&m["Unit"].as_str().unwrap()));
            }
        }
    }

    #[test]
    fn every_document_follows_the_specification() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap();
        let health = assess(&[completed()], now, &HealthPolicy::default());
        let docs = [
            backup_metrics(&completed()),
            verify_metrics("shop", &completed().id, 1234, now),
            health_metrics(&health, now).remove(0),
        ];
        for d in &docs {
            assert_valid_emf(&d.to_emf());
        }
        assert_eq!(docs[1].to_emf()["VerifyDuration"], 1234);
        assert_eq!(docs[2].to_emf()["NewestGoodBackupAge"], 86_400);
    }

    #[test]
    fn failures_and_bad_values_emit_nothing_misleading() {
        let mut failed = completed();
        failed.status = BackupStatus::Failed;
        let m = backup_metrics(&failed);
        assert!(m.is_empty());
        let mut out = Vec::new();
        m.write_to(&mut out).unwrap();
        assert!(out.is_empty());

        let mut instant = completed();
        instant.duration_ms = Some(0);
        assert!(!backup_metrics(&instant)
            .values
            .contains_key(&Metric::BackupThroughput));

        let m = MetricRecord::new("shop", Utc::now())
            .with(Metric::BackupSize, f64::NAN)
            .with(Metric::BackupDuration, 1.5)
            .property("BackupDuration", "overwritten?")
            .property("Database", "other")
            .property("_aws", 1);
        let doc = m.to_emf();
        assert!(doc.get("BackupSize").is_none());
        assert_eq!(doc["BackupDuration"], 1.5);
        assert_eq!(doc["Database"], "shop");
        assert!(doc["_aws"].is_object());
    }
}
