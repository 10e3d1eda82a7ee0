//! The backup history page (`pgkeep report --html FILE`, the status API's `GET /dashboard`)
//! as a browser shows it: Debian's Chromium, headless, loads the page the real binary wrote
//! from a loopback server that records every request, dumps the DOM and takes a screenshot.
//! The page must name every database, draw a chart per series, show the failure reasons, fetch
//! nothing but itself, and render 10,000 backups quickly.

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use pgkeep::catalog::sqlite::SqliteCatalog;
use pgkeep::catalog::Catalog;
use pgkeep::model::{AuditEntry, BackupId, BackupKind, BackupRecord, BackupStatus, Compression};
use pgkeep_tests::cli::Pgkeep;
use pgkeep_tests::http1::read_request;

const NOW: &str = "2026-11-24T12:00:00Z";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
}

/// The browser: `PGKEEP_TEST_CHROMIUM` (scripts/test sets it), else `chromium` on PATH. A
/// missing browser fails the test: the page is not tested by skipping it.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("PGKEEP_TEST_CHROMIUM") {
        return PathBuf::from(path);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let candidate = dir.join("chromium");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("chromium not found: install Debian's chromium package (scripts/test does) or set PGKEEP_TEST_CHROMIUM");
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// One record of `db`, `hours_ago` before [`now`], in `status`.
fn record(db: &str, hours_ago: i64, status: BackupStatus, n: u64) -> BackupRecord {
    let at = now() - chrono::Duration::hours(hours_ago) - chrono::Duration::seconds(n as i64 % 60);
    let mut r = BackupRecord::start(
        BackupId::generate(at),
        db,
        BackupKind::Scheduled,
        Compression::Zstd,
    );
    r.created_at = at;
    r.status = status;
    r.completed_at = Some(at + chrono::Duration::minutes(3));
    r.requested_by = Some("schedule".into());
    if status != BackupStatus::Failed {
        r.size_bytes = Some(10_000_000 + n * 1_000);
        r.duration_ms = Some(60_000 + n % 7 * 1_000);
    }
    if matches!(
        status,
        BackupStatus::Verified | BackupStatus::VerificationFailed
    ) {
        let ok = status == BackupStatus::Verified;
        r.verification = Some(
            serde_json::from_value(serde_json::json!({
                "verified_at": at + chrono::Duration::minutes(10),
                "ok": ok,
                "result": if ok { "verified" } else { "differences" },
                "reason": if ok { None } else { Some("row counts differ: public.orders 10 != 12") },
                "restore_duration_ms": 30_000 + n % 5 * 1_000,
                "duration_ms": 40_000,
            }))
            .unwrap(),
        );
    }
    r
}

/// Fills the repository's catalog: `shop` healthy, `crm` failing with reasons, `billing` with a
/// failed verification; `extra` more records spread over `shop`'s 90 days.
fn seed(pgkeep: &Pgkeep, extra: u64) -> SqliteCatalog {
    let catalog = SqliteCatalog::open(pgkeep.repo_dir().join("catalog.sqlite3")).unwrap();
    let mut records = Vec::new();
    for day in 0..60 {
        records.push(record(
            "shop",
            day * 24 + 2,
            BackupStatus::Verified,
            day as u64,
        ));
        records.push(record(
            "crm",
            day * 24 + 3,
            BackupStatus::Completed,
            day as u64,
        ));
    }
    let mut failed = record("crm", 1, BackupStatus::Failed, 0);
    failed.error = Some("pg_dump: error: connection to server failed: FATAL: password authentication failed for user \"crm_backup\"".into());
    records.push(failed);
    let mut failed = record("crm", 30, BackupStatus::Failed, 1);
    failed.error = Some("abandoned: the run's lease lapsed (its process is gone)".into());
    records.push(failed);
    records.push(record("billing", 5, BackupStatus::VerificationFailed, 3));
    records.push(record("billing", 29, BackupStatus::Verified, 4));
    for n in 0..extra {
        // Every ~13 minutes back over 90 days.
        let hours = (n * 13 / 60) as i64 % (89 * 24);
        let status = match n % 10 {
            0 => BackupStatus::Failed,
            1..=3 => BackupStatus::Completed,
            4 => BackupStatus::Deleted,
            _ => BackupStatus::Verified,
        };
        let mut r = record("shop", hours, status, n);
        if status == BackupStatus::Failed {
            r.error = Some(format!("synthetic failure {n}"));
        }
        records.push(r);
    }
    block_on(async {
        for r in &records {
            catalog.insert(r).await.unwrap();
        }
        catalog
            .append_audit(&AuditEntry {
                id: BackupId::generate(now() - chrono::Duration::hours(4)),
                at: now() - chrono::Duration::hours(4),
                actor: "alice".into(),
                action: "delete".into(),
                backup_id: Some(records[0].id.clone()),
                database: "shop".into(),
                outcome: "ok".into(),
                details: serde_json::json!({}),
            })
            .await
            .unwrap();
    });
    catalog
}

/// Serves `page` at `/page.html` on a loopback port, recording every request path; anything
/// else is answered 404 (and recorded).
fn serve(page: PathBuf) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            while let Ok(Some(request)) = read_request(&mut reader, &mut stream) {
                log.lock().unwrap().push(request.path.clone());
                let (status, body) = if request.path == "/page.html" {
                    ("200 OK", std::fs::read(&page).unwrap())
                } else {
                    ("404 Not Found", b"not here".to_vec())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                if stream.write_all(head.as_bytes()).is_err() || stream.write_all(&body).is_err() {
                    break;
                }
            }
        }
    });
    (origin, seen)
}

/// Runs headless Chromium on `url` with `extra` arguments; returns stdout and the wall time.
fn browse(url: &str, dir: &Path, extra: &[String]) -> (String, Duration) {
    let profile = tempfile::tempdir_in(dir).unwrap();
    let started = Instant::now();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("running chromium");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), took)
}

/// Every request the browser's network log records (`URL_REQUEST_START_JOB`) as (url,
/// initiator). The page's own load and the browser's background requests (component updates,
/// time and account checks) have the initiator "not an origin"; whatever the page itself asks
/// for carries the page's origin.
fn logged_requests(net_log: &Path) -> Vec<(String, String)> {
    let log: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(net_log).unwrap()).unwrap();
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        .as_u64()
        .expect("the net log names URL_REQUEST_START_JOB");
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"].as_u64() == Some(start_job))
        // The end of a job (no parameters) repeats its start.
        .filter_map(|e| {
            let url = e["params"]["url"].as_str()?;
            let initiator = e["params"]["initiator"].as_str().unwrap_or("none");
            Some((url.to_owned(), initiator.to_owned()))
        })
        .collect()
}

#[test]
fn the_history_page_shows_every_database_charts_and_failures_and_fetches_nothing_else() {
    let pgkeep = Pgkeep::new();
    seed(&pgkeep, 0);
    let work = tempfile::tempdir().unwrap();
    let page = work.path().join("page.html");
    pgkeep.run_ok(&["report", "--html", page.to_str().unwrap(), "--now", NOW]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&page).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let (origin, requests) = serve(page.clone());
    let url = format!("{origin}/page.html");
    let net_log = work.path().join("netlog.json");
    let (dom, _) = browse(
        &url,
        work.path(),
        &[
            "--dump-dom".into(),
            format!("--log-net-log={}", net_log.display()),
        ],
    );
    for db in ["shop", "crm", "billing"] {
        assert!(
            dom.contains(&format!("data-database=\"{db}\"")),
            "{db} missing"
        );
        for series in ["size", "duration", "restore"] {
            assert!(
                dom.contains(&format!(
                    "class=\"chart\" data-series=\"{series}\" data-database=\"{db}\""
                )),
                "no {series} chart for {db}"
            );
        }
    }
    assert_eq!(dom.matches("<figure class=\"chart\"").count(), 9);
    assert_eq!(dom.matches("<svg").count(), 12, "3 timelines and 9 charts");
    for reason in [
        "password authentication failed for user \"crm_backup\"",
        "abandoned: the run's lease lapsed (its process is gone)",
        "row counts differ: public.orders 10 != 12",
    ] {
        let escaped = reason.replace('"', "&quot;").replace('\'', "&#39;");
        assert!(
            dom.contains(reason) || dom.contains(&escaped),
            "failure reason {reason:?} missing"
        );
    }
    // Health as `status` judges it: crm's newest backup failed an hour ago but its newest
    // good one is recent; billing's newest verification failed.
    assert!(dom.contains("id=\"audit\"") && dom.contains("alice"));
    let billing = &dom[dom.find("data-database=\"billing\"").unwrap()..];
    assert!(billing[..400].contains("unhealthy"), "{}", &billing[..400]);

    // Nothing but the page itself was asked for, by the recording server and in the
    // browser's own network log.
    let asked = requests.lock().unwrap().clone();
    assert_eq!(asked, ["/page.html"], "requests: {asked:?}");
    let logged = logged_requests(&net_log);
    assert!(
        logged.iter().any(|(u, _)| u == &url),
        "the net log lacks the page itself: {logged:?}"
    );
    let from_page: Vec<&(String, String)> = logged
        .iter()
        .filter(|(_, initiator)| initiator != "not an origin")
        .collect();
    let foreign: Vec<&&(String, String)> = from_page
        .iter()
        .filter(|(u, _)| !u.starts_with(&format!("{origin}/")))
        .collect();
    assert!(
        foreign.is_empty(),
        "requests off the page's origin: {foreign:?}"
    );

    // The screenshot (docs/history-page.png is one of these).
    let shot = work.path().join("history.png");
    browse(
        &url,
        work.path(),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1200,2200".into(),
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    if let Some(keep) = std::env::var_os("PGKEEP_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

#[test]
fn ten_thousand_backups_render_in_under_two_seconds() {
    let pgkeep = Pgkeep::new();
    seed(&pgkeep, 10_000);
    let work = tempfile::tempdir().unwrap();
    let page = work.path().join("page.html");
    let started = Instant::now();
    pgkeep.run_ok(&["report", "--html", page.to_str().unwrap(), "--now", NOW]);
    let written = started.elapsed();
    let size = std::fs::metadata(&page).unwrap().len();

    // The browser's own start-up is measured on an empty page and taken off.
    let empty = work.path().join("empty.html");
    std::fs::write(&empty, "<!DOCTYPE html><title>empty</title><p>empty").unwrap();
    let (_, baseline) = browse(
        &format!("file://{}", empty.display()),
        work.path(),
        &["--dump-dom".into()],
    );
    let (dom, took) = browse(
        &format!("file://{}", page.display()),
        work.path(),
        &["--dump-dom".into()],
    );
    let render = took.saturating_sub(baseline);
    eprintln!(
        "10,120 records: report written in {written:?} ({size} bytes); chromium {took:?} against {baseline:?} for an empty page: {render:?} to load and render"
    );
    assert!(dom.contains("data-database=\"shop\"") && dom.contains("synthetic failure"));
    assert!(written < Duration::from_secs(2), "writing took {written:?}");
    assert!(render < Duration::from_secs(2), "rendering took {render:?}");
}
