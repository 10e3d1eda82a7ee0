//! The backup history page: one self-contained HTML document, served by the status function
//! (`GET /dashboard`) and written by `pgkeep report --html FILE` from this same code.
//!
//! Self-contained on purpose: no script, font, stylesheet or image is fetched (the page's own
//! Content-Security-Policy forbids it), so it works offline, from a file, behind a strict proxy,
//! and cannot leak who looks at it. Charts are inline SVG of at most one point per day (so
//! 10,000 backups draw as fast as 100), each with a table of the same numbers for screen
//! readers and for reading without SVG. Nothing needs JavaScript.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};

use crate::backends::Services;
use crate::catalog::{AuditQuery, ListQuery};
use crate::model::{format_time, AuditEntry, BackupRecord, BackupStatus, RestoreRun};
use crate::ops::health::{assess, BackupRef, DatabaseHealth, HealthPolicy};
use crate::ops::Error;

/// How far back the timeline and the charts reach.
pub const DAYS: i64 = 90;
/// Newest audit entries shown.
pub const AUDIT_SHOWN: usize = 200;
/// Newest restores shown.
pub const RESTORES_SHOWN: usize = 50;
/// Newest failures shown per database.
pub const FAILURES_SHOWN: usize = 20;

/// Everything the page shows, read from the catalog.
#[derive(Debug, Clone, Default)]
pub struct HistoryData {
    /// Every backup record.
    pub records: Vec<BackupRecord>,
    /// The newest audit entries, newest first.
    pub audit: Vec<AuditEntry>,
    /// The newest restores, newest first.
    pub restores: Vec<RestoreRun>,
}

/// When each backup expires under the current retention policy, by id (empty: no policy
/// configured, the table is left out); see [`crate::retention::expiries`].
pub type Expiries = BTreeMap<crate::model::BackupId, crate::retention::Expiry>;

/// Reads what the page shows.
pub async fn collect(services: &Services) -> Result<HistoryData, Error> {
    let records = crate::ops::list::list_all(services, &ListQuery::default()).await?;
    let audit = services
        .catalog
        .audit_page(&AuditQuery {
            limit: Some(AUDIT_SHOWN),
            ..Default::default()
        })
        .await?
        .entries;
    let restores = services.catalog.list_restores(RESTORES_SHOWN).await?;
    Ok(HistoryData {
        records,
        audit,
        restores,
    })
}

/// The page for the catalog behind `services` at `now`, with each stored backup's expiry
/// under `retention` (left out when no retention is configured).
pub async fn page(
    services: &Services,
    now: DateTime<Utc>,
    policy: &HealthPolicy,
    retention: &crate::retention::RetentionPolicy,
) -> Result<String, Error> {
    let data = collect(services).await?;
    let expiries = crate::retention::expiries(retention, &data.records, now);
    Ok(render(&data, now, policy, &expiries))
}

/// The page (pure: the same data and time give the same document).
pub fn render(
    data: &HistoryData,
    now: DateTime<Utc>,
    policy: &HealthPolicy,
    expiries: &Expiries,
) -> String {
    let health = assess(&data.records, now, policy);
    let mut by_db: BTreeMap<&str, Vec<&BackupRecord>> = BTreeMap::new();
    for r in &data.records {
        by_db.entry(r.database.as_str()).or_default().push(r);
    }
    let mut out = String::with_capacity(64 * 1024 + data.records.len() * 200);
    let healthy = health.iter().all(|h| h.healthy) && !health.is_empty();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"icon\" href=\"data:,\">\
         <title>pgkeep: backup history</title><style>{CSS}</style></head><body>\
         <header><h1>Backup history</h1><p>As of {} · {} · <span class=\"{}\">{}</span></p></header>",
        format_time(now),
        plural(health.len(), "database"),
        if healthy { "ok" } else { "bad" },
        if healthy { "all healthy" } else { "needs attention" }
    );
    if health.is_empty() {
        out.push_str("<p>No backups yet.</p>");
    }
    out.push_str("<nav><ul>");
    for h in &health {
        let db = &h.status.database;
        let _ = write!(
            out,
            "<li><a href=\"#db-{}\">{}</a> <span class=\"{}\">{}</span></li>",
            anchor(db),
            esc(db),
            if h.healthy { "ok" } else { "bad" },
            if h.healthy { "healthy" } else { "unhealthy" }
        );
    }
    out.push_str("</ul></nav><main>");
    for h in &health {
        let records = by_db
            .get(h.status.database.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        database_section(&mut out, h, records, now, expiries);
    }
    restores_section(&mut out, &data.restores);
    audit_section(&mut out, &data.audit);
    out.push_str("</main></body></html>\n");
    out
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1em;color:#222}\
h1{margin:.2em 0}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}\
.ok{color:#176f2c;font-weight:600}.bad{color:#b00020;font-weight:600}\
nav ul{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:1em}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}\
figure{margin:.5em 0}figcaption{font-weight:600}svg{background:#fafafa;border:1px solid #ddd}\
.s-completed{fill:#4a90d9}.s-verified{fill:#2e9e44}.s-failed{fill:#d0021b}.s-verification_failed{fill:#f5a623}\
.s-in_progress{fill:#9b9b9b}.s-deleted{fill:#cfcfcf}\
.legend span{display:inline-block;margin-right:1em}.legend i{display:inline-block;width:.8em;height:.8em;margin-right:.3em}\
.charts{display:flex;flex-wrap:wrap;gap:1em}pre{white-space:pre-wrap}";

const STATUS_COLOURS: [(BackupStatus, &str); 6] = [
    (BackupStatus::Verified, "#2e9e44"),
    (BackupStatus::Completed, "#4a90d9"),
    (BackupStatus::VerificationFailed, "#f5a623"),
    (BackupStatus::Failed, "#d0021b"),
    (BackupStatus::InProgress, "#9b9b9b"),
    (BackupStatus::Deleted, "#cfcfcf"),
];

fn database_section(
    out: &mut String,
    h: &DatabaseHealth,
    records: &[&BackupRecord],
    now: DateTime<Utc>,
    expiries: &Expiries,
) {
    let db = &h.status.database;
    let _ = write!(
        out,
        "<section class=\"database\" id=\"db-{}\" data-database=\"{}\"><h2>{} <span class=\"{}\">{}</span></h2>",
        anchor(db),
        esc(db),
        esc(db),
        if h.healthy { "ok" } else { "bad" },
        if h.healthy { "healthy" } else { "unhealthy" }
    );
    if !h.problems.is_empty() || !h.warnings.is_empty() {
        out.push_str("<ul class=\"problems\">");
        for p in &h.problems {
            let _ = write!(out, "<li class=\"bad\">{}</li>", esc(p));
        }
        for w in &h.warnings {
            let _ = write!(out, "<li>{}</li>", esc(w));
        }
        out.push_str("</ul>");
    }
    out.push_str("<table class=\"summary\">");
    let newest = |label: &str, r: &Option<BackupRef>, out: &mut String| {
        let cell = match r {
            Some(r) => format!(
                "{} ({} ago) <code>{}</code>",
                format_time(r.created_at),
                human_age(r.age_seconds),
                esc(r.id.as_str())
            ),
            None => "none".into(),
        };
        let _ = write!(out, "<tr><th>{label}</th><td>{cell}</td></tr>");
    };
    newest("Newest good backup", &h.status.latest_good, out);
    newest("Newest verified backup", &h.status.latest_verified, out);
    newest("Newest backup", &h.status.latest, out);
    let _ = write!(
        out,
        "<tr><th>Backups</th><td>{}</td></tr></table>",
        records.len()
    );

    let since = now - Duration::days(DAYS);
    let recent: Vec<&BackupRecord> = records
        .iter()
        .copied()
        .filter(|r| r.created_at >= since)
        .collect();
    timeline(out, &recent, since, now);

    out.push_str("<div class=\"charts\">");
    let day = |t: DateTime<Utc>| (t - since).num_days();
    let mut size = BTreeMap::new();
    let mut took = BTreeMap::new();
    let mut restore = BTreeMap::new();
    for r in &recent {
        if let Some(b) = r.size_bytes {
            let v = size.entry(day(r.created_at)).or_insert(0);
            *v = (*v).max(b);
        }
        if let Some(ms) = r.duration_ms.filter(|_| r.status != BackupStatus::Failed) {
            let v = took.entry(day(r.created_at)).or_insert(0);
            *v = (*v).max(ms);
        }
    }
    for r in records {
        if let Some(v) = &r.verification {
            if v.verified_at >= since {
                let ms = v.restore_duration_ms.unwrap_or(v.duration_ms);
                let e = restore.entry(day(v.verified_at)).or_insert(0);
                *e = (*e).max(ms);
            }
        }
    }
    chart(out, db, "size", "Backup size", &size, since, human_bytes);
    chart(
        out,
        db,
        "duration",
        "Backup duration",
        &took,
        since,
        human_ms,
    );
    chart(
        out,
        db,
        "restore",
        "Restore time (verification drills)",
        &restore,
        since,
        human_ms,
    );
    out.push_str("</div>");

    let mut failures: Vec<&&BackupRecord> = records
        .iter()
        .filter(|r| {
            matches!(
                r.status,
                BackupStatus::Failed | BackupStatus::VerificationFailed
            )
        })
        .collect();
    failures.sort_by(|a, b| b.start_order().cmp(&a.start_order()));
    out.push_str("<h3>Recent failures</h3>");
    if failures.is_empty() {
        out.push_str("<p>None.</p>");
    } else {
        out.push_str("<table class=\"failures\"><tr><th>Started</th><th>Backup</th><th>Status</th><th>Reason</th></tr>");
        for r in failures.iter().take(FAILURES_SHOWN) {
            let reason = r
                .error
                .as_deref()
                .or_else(|| r.verification.as_ref().and_then(|v| v.reason.as_deref()))
                .unwrap_or("-");
            let _ = write!(
                out,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td class=\"reason\">{}</td></tr>",
                format_time(r.created_at),
                esc(r.id.as_str()),
                r.status,
                esc(reason)
            );
        }
        out.push_str("</table>");
    }

    if !expiries.is_empty() {
        let mut kept: Vec<&&BackupRecord> =
            records.iter().filter(|r| r.status.has_object()).collect();
        kept.sort_by(|a, b| b.start_order().cmp(&a.start_order()));
        out.push_str("<h3>Stored backups and when they expire</h3><table class=\"expiry\"><tr><th>Backup</th><th>Kind</th><th>Status</th><th>Expires</th><th>Why</th></tr>");
        for r in kept.iter().take(50) {
            let e = expiries.get(&r.id);
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(r.id.as_str()),
                r.kind,
                r.status,
                e.and_then(|e| e.expires_at)
                    .map_or_else(|| "-".into(), format_time),
                esc(e.map_or("-", |e| e.expiry.as_str()))
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</section>");
}

/// Every backup of the last [`DAYS`] days as a bar at its start, coloured by status.
fn timeline(out: &mut String, records: &[&BackupRecord], since: DateTime<Utc>, now: DateTime<Utc>) {
    const W: f64 = 1000.0;
    let span = (now - since).num_seconds().max(1) as f64;
    let _ = write!(
        out,
        "<figure class=\"timeline\"><figcaption>Backups over the last {DAYS} days</figcaption>\
         <svg role=\"img\" aria-label=\"Timeline of {} backups coloured by status\" viewBox=\"0 0 {W} 40\" width=\"100%\" height=\"40\" preserveAspectRatio=\"none\">",
        records.len()
    );
    for r in records {
        let x = (r.created_at - since).num_seconds() as f64 / span * W;
        let _ = write!(
            out,
            "<rect class=\"s-{}\" x=\"{x:.1}\" y=\"4\" width=\"2\" height=\"32\"><title>{} {}</title></rect>",
            r.status,
            esc(r.id.as_str()),
            r.status
        );
    }
    out.push_str("</svg><p class=\"legend\">");
    for (status, colour) in STATUS_COLOURS {
        let n = records.iter().filter(|r| r.status == status).count();
        let _ = write!(
            out,
            "<span><i style=\"background:{colour}\"></i>{status}: {n}</span>"
        );
    }
    out.push_str("</p></figure>");
}

/// A line of one value per day, with the same numbers as a table.
fn chart(
    out: &mut String,
    db: &str,
    series: &str,
    title: &str,
    points: &BTreeMap<i64, u64>,
    since: DateTime<Utc>,
    show: impl Fn(u64) -> String,
) {
    const W: f64 = 320.0;
    const H: f64 = 120.0;
    let max = points.values().copied().max().unwrap_or(0).max(1) as f64;
    let _ = write!(
        out,
        "<figure class=\"chart\" data-series=\"{series}\" data-database=\"{}\"><figcaption>{title}</figcaption>\
         <svg role=\"img\" aria-label=\"{title} per day over the last {DAYS} days\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\">",
        esc(db)
    );
    if points.is_empty() {
        let _ = write!(
            out,
            "<text x=\"10\" y=\"{}\">no data in the last {DAYS} days</text>",
            H / 2.0
        );
    } else {
        let xy = |d: i64, v: u64| {
            (
                d as f64 / DAYS as f64 * (W - 20.0) + 10.0,
                H - 15.0 - v as f64 / max * (H - 30.0),
            )
        };
        out.push_str("<polyline fill=\"none\" stroke=\"#4a90d9\" stroke-width=\"2\" points=\"");
        for (d, v) in points {
            let (x, y) = xy(*d, *v);
            let _ = write!(out, "{x:.1},{y:.1} ");
        }
        out.push_str("\"/>");
        for (d, v) in points {
            let (x, y) = xy(*d, *v);
            let _ = write!(
                out,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2\" fill=\"#4a90d9\"/>"
            );
        }
        let _ = write!(
            out,
            "<text x=\"4\" y=\"12\" font-size=\"10\">max {}</text>",
            esc(&show(max as u64))
        );
    }
    let _ = write!(
        out,
        "</svg><details><summary>{title} as a table</summary><table><tr><th>Day</th><th>{title}</th></tr>"
    );
    for (d, v) in points {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td></tr>",
            (since + Duration::days(*d)).format("%Y-%m-%d"),
            esc(&show(*v))
        );
    }
    out.push_str("</table></details></figure>");
}

fn restores_section(out: &mut String, runs: &[RestoreRun]) {
    out.push_str("<section id=\"restores\"><h2>Recent restores</h2>");
    if runs.is_empty() {
        out.push_str("<p>None.</p></section>");
        return;
    }
    out.push_str("<table><tr><th>Asked</th><th>By</th><th>Backup</th><th>Target</th><th>State</th><th>Took</th><th>Safety backup</th><th>Error</th></tr>");
    for r in runs {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            format_time(r.requested_at),
            esc(r.requested_by.as_deref().unwrap_or("-")),
            esc(r.backup_id.as_str()),
            esc(&r.target_db),
            if r.dry_run { " (dry run)" } else { "" },
            r.state,
            r.duration_ms.map_or_else(|| "-".into(), human_ms),
            r.safety_backup_id
                .as_ref()
                .map_or_else(|| "-".into(), |id| esc(id.as_str())),
            esc(r.error.as_deref().unwrap_or("-"))
        );
    }
    out.push_str("</table></section>");
}

fn audit_section(out: &mut String, entries: &[AuditEntry]) {
    out.push_str("<section id=\"audit\"><h2>Audit trail</h2>");
    if entries.is_empty() {
        out.push_str("<p>Nothing audited yet.</p></section>");
        return;
    }
    out.push_str("<table class=\"audit\"><tr><th>At</th><th>Who</th><th>What</th><th>Database</th><th>Backup</th><th>Outcome</th></tr>");
    for e in entries {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            format_time(e.at),
            esc(&e.actor),
            esc(&e.action),
            esc(&e.database),
            e.backup_id.as_ref().map_or_else(
                || "-".into(),
                |id| format!("<code>{}</code>", esc(id.as_str()))
            ),
            esc(&e.outcome)
        );
    }
    out.push_str("</table></section>");
}

/// Text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// A fragment id for a database name: its bytes in hex (any name, always a valid id).
fn anchor(db: &str) -> String {
    hex::encode(db.as_bytes())
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms} ms");
    }
    human_age((ms / 1000) as i64)
}

fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackupId, BackupKind, Compression};
    use chrono::TimeZone;

    #[test]
    fn names_and_reasons_are_escaped_and_nothing_is_fetched() {
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
        let at = now - Duration::hours(3);
        let mut r = BackupRecord::start(
            BackupId::generate(at),
            "<script>alert(1)</script>",
            BackupKind::Scheduled,
            Compression::Zstd,
        );
        r.created_at = at;
        r.status = BackupStatus::Failed;
        r.error = Some("pg_dump: \"x\" & <y>".into());
        let html = render(
            &HistoryData {
                records: vec![r],
                ..Default::default()
            },
            now,
            &HealthPolicy::default(),
            &Expiries::new(),
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("pg_dump: &quot;x&quot; &amp; &lt;y&gt;"));
        for series in ["size", "duration", "restore"] {
            assert!(
                html.contains(&format!("data-series=\"{series}\"")),
                "{series}"
            );
        }
        assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("src="));
        assert!(html.contains("default-src 'none'"));
    }

    #[test]
    fn stored_backups_show_when_the_retention_policy_expires_them() {
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
        let records: Vec<BackupRecord> = [(2, BackupKind::Scheduled), (30, BackupKind::Manual)]
            .into_iter()
            .map(|(hours, kind)| {
                let at = now - Duration::hours(hours);
                let mut r =
                    BackupRecord::start(BackupId::generate(at), "shop", kind, Compression::Zstd);
                r.created_at = at;
                r.status = BackupStatus::Completed;
                r
            })
            .collect();
        let mut policy = crate::retention::RetentionPolicy {
            keep_last: 1,
            ..Default::default()
        };
        policy.keep_within_kind = crate::retention::parse_kind_spans("manual=30d").unwrap();
        let data = HistoryData {
            records: records.clone(),
            ..Default::default()
        };
        let expiries = crate::retention::expiries(&policy, &records, now);
        let html = render(&data, now, &HealthPolicy::default(), &expiries);
        let manual_end = format_time(records[1].created_at + Duration::days(30));
        assert!(
            html.contains("Stored backups and when they expire"),
            "{html}"
        );
        assert!(html.contains(&format!("<td>{manual_end}</td><td>kept until {manual_end}: manual backup younger than 30d</td>")), "{html}");
        assert!(
            html.contains("<td>-</td><td>kept while last (1 of 1)</td>"),
            "{html}"
        );
        // No policy: no expiry table.
        let none = render(&data, now, &HealthPolicy::default(), &Expiries::new());
        assert!(!none.contains("when they expire"));
    }
}
