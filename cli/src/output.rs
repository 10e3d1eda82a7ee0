//! How the `pgkeep` command prints: tables for people, JSON for scripts, a progress bar only
//! on a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use pgkeep::model::{format_time, BackupRecord, Verification};
use pgkeep::ops::health::DatabaseHealth;
use pgkeep::ops::prune::{PrunePlan, PruneReport};
use pgkeep::ops::restore::{RestoreAction, RestoreReport};
use pgkeep::ops::verify::VerifyReport;
use pgkeep::pipeline::Progress;
use serde::Serialize;

/// The one choice between the two outputs: `value` as JSON for scripts (`--json`), or what
/// `human` prints for people.
pub fn print<T: Serialize + ?Sized>(json: bool, value: &T, human: impl FnOnce()) {
    if json {
        print_json(value);
    } else {
        human();
    }
}

/// Pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("output values serialize")
    );
}

/// `1.5 GiB`, `312 KiB`, `17 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `2h 03m`, `4.2s`.
pub fn human_duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..=59 => format!("{:.1}s", ms as f64 / 1000.0),
        60..=3599 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

fn age(seconds: i64) -> String {
    match seconds {
        s if s < 0 => "in the future".into(),
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86400),
    }
}

/// `k=v, k2=v2`, or `-`.
fn labels_text(r: &BackupRecord) -> String {
    if r.labels.is_empty() {
        return "-".into();
    }
    r.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The listing table (with a LABELS column when any backup has labels).
pub fn print_list(records: &[BackupRecord]) {
    if records.is_empty() {
        println!("no backups yet");
        return;
    }
    let mut header = vec![
        "ID", "DATABASE", "KIND", "STATUS", "CREATED", "SIZE", "TOOK",
    ];
    let labels = records.iter().any(|r| !r.labels.is_empty());
    let runs = records.iter().any(|r| r.run_id.is_some());
    if labels {
        header.push("LABELS");
    }
    if runs {
        header.push("RUN");
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let mut row = list_cells(r).to_vec();
            if labels {
                row.push(labels_text(r));
            }
            if runs {
                row.push(r.run_id.clone().unwrap_or_else(|| "-".into()));
            }
            row
        })
        .collect();
    print_rows(&header, &rows);
}

/// One backup's cells in the listing, label column aside.
fn list_cells(r: &BackupRecord) -> [String; 7] {
    [
        r.id.to_string(),
        shown(&r.database).into_owned(),
        r.kind.to_string(),
        r.status.to_string(),
        format_time(r.created_at),
        r.size_bytes.map(human_bytes).unwrap_or_else(|| "-".into()),
        r.duration_ms
            .map(human_duration)
            .unwrap_or_else(|| "-".into()),
    ]
}

/// One record in full.
pub fn print_record(r: &BackupRecord, expiry: Option<&pgkeep::retention::Expiry>) {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!("id:              {}", r.id);
    println!("database:        {}", shown(&r.database));
    println!("kind:            {}", r.kind);
    println!("status:          {}", r.status);
    if let Some(e) = expiry {
        println!("expires:         {}", opt(e.expires_at.map(format_time)));
        println!("retention:       {}", e.expiry);
    }
    if let Some(by) = &r.requested_by {
        println!("requested by:    {}", shown(by));
    }
    println!("created:         {}", format_time(r.created_at));
    println!("completed:       {}", opt(r.completed_at.map(format_time)));
    println!(
        "took:            {}",
        opt(r.duration_ms.map(human_duration))
    );
    println!(
        "size:            {}",
        opt(r
            .size_bytes
            .map(|b| format!("{} ({b} bytes)", human_bytes(b))))
    );
    println!("sha256:          {}", opt(r.sha256.clone()));
    match r.compression_level {
        Some(level) => println!("compression:     {} level {level}", r.compression),
        None => println!("compression:     {}", r.compression),
    }
    println!("key:             {}", opt(r.key_id.clone()));
    println!("server version:  {}", opt(r.server_version.clone()));
    println!("object:          {}", r.object_key);
    if let Some(run) = &r.run_id {
        println!("run:             {run}");
    }
    if let Some(g) = &r.globals {
        println!(
            "globals:         {} roles, {} databases' owners, grants and settings, {} statements",
            g.roles.len(),
            g.databases.len(),
            g.statements
        );
        if !g.role_passwords {
            println!("role passwords:  left out (the backing-up role could not read pg_authid)");
        }
    }
    if !r.labels.is_empty() {
        println!("labels:          {}", labels_text(r));
    }
    if !r.selection.is_everything() {
        println!("selection:       {}", r.selection);
    }
    if let Some(e) = &r.error {
        println!("error:           {e}");
    }
    if let Some(v) = &r.verification {
        print_verification_summary(v);
    }
    if !r.row_counts.is_empty() || !r.schema_only_tables.is_empty() {
        println!(
            "tables ({}):",
            r.row_counts.len() + r.schema_only_tables.len()
        );
        let width = r
            .row_counts
            .keys()
            .chain(&r.schema_only_tables)
            .map(|k| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut lines: Vec<(&String, String)> = r
            .row_counts
            .iter()
            .map(|(table, rows)| (table, rows.to_string()))
            .chain(
                r.schema_only_tables
                    .iter()
                    .map(|table| (table, "schema only".to_owned())),
            )
            .collect();
        lines.sort();
        for (table, rows) in lines {
            println!("  {table:<width$}  {rows:>12}");
        }
    }
}

fn print_verification_summary(v: &Verification) {
    println!(
        "verification:    {} at {}{}",
        v.result,
        format_time(v.verified_at),
        v.restore_duration_ms
            .map(|ms| format!(", restored in {}", human_duration(ms)))
            .unwrap_or_default()
    );
    if let Some(reason) = &v.reason {
        println!("  reason:        {reason}");
    }
}

/// The outcome of `pgkeep verify` for a person: a line, and what differed.
pub fn print_verification(report: &VerifyReport) {
    let (Some(r), Some(v)) = (&report.record, report.verification()) else {
        println!("no completed backup awaits verification");
        return;
    };
    if v.ok {
        let rows: u64 = v.tables.iter().filter_map(|t| t.actual).sum();
        println!(
            "backup {} of {} verified: {} tables with {} rows, {} large objects and {} declared objects match; restored in {}",
            r.id,
            shown(&r.database),
            v.tables.len(),
            rows,
            v.large_objects.and_then(|l| l.actual).unwrap_or(0),
            v.objects_checked,
            v.restore_duration_ms.map(human_duration).unwrap_or_default()
        );
        return;
    }
    println!(
        "backup {} of {}: verification failed ({})",
        r.id,
        shown(&r.database),
        v.result
    );
    if let Some(reason) = &v.reason {
        println!("  {reason}");
    }
    let differing: Vec<_> = v.tables.iter().filter(|t| !t.matches()).collect();
    if !differing.is_empty() {
        let n = |c: Option<u64>| c.map_or("-".to_owned(), |n| n.to_string());
        println!("  {:<40} {:>12} {:>12}", "TABLE", "MANIFEST", "RESTORED");
        for t in differing {
            println!(
                "  {:<40} {:>12} {:>12}",
                t.table,
                n(t.expected),
                n(t.actual)
            );
        }
    }
    for o in &v.missing_objects {
        println!("  missing: {o}");
    }
    for o in &v.extra_objects {
        println!("  not in the archive: {o}");
    }
}

/// The outcome of `pgkeep restore` for a person.
pub fn print_restore(r: &RestoreReport) {
    if r.dry_run {
        if let Some(listing) = &r.listing {
            print!("{listing}");
        }
        let action = match r.action {
            RestoreAction::CreateNew => format!("create the new database {:?}", r.target_database),
            RestoreAction::ReplaceExisting => format!(
                "take a safety backup of {:?} and then replace it",
                r.target_database
            ),
        };
        println!(
            "dry run: backup {} of {} is intact ({} tables, {} rows, {} large objects); a restore would {action} on {}. Nothing was written.",
            r.backup_id, shown(&r.source_database), r.tables, r.rows, r.large_objects, r.server
        );
        return;
    }
    let safety = r
        .safety_backup
        .as_ref()
        .map(|id| format!("; the previous contents are in safety backup {id}"))
        .unwrap_or_default();
    println!(
        "restored backup {} of {} into {:?} on {} in {}: {} tables, {} rows{safety}",
        r.backup_id,
        shown(&r.source_database),
        r.target_database,
        r.server,
        human_duration(r.duration_ms),
        r.tables,
        r.rows
    );
}

/// The per-database summary and health.
pub fn print_status(summary: &[DatabaseHealth]) {
    if summary.is_empty() {
        println!("no backups yet");
        return;
    }
    for health in summary {
        let db = &health.status;
        println!(
            "{}: {}",
            shown(&db.database),
            if health.healthy {
                "healthy"
            } else {
                "UNHEALTHY"
            }
        );
        for p in &health.problems {
            println!("  problem:             {p}");
        }
        for w in &health.warnings {
            println!("  warning:             {w}");
        }
        match &db.latest_good {
            Some(b) => println!(
                "  newest good backup:  {} ({}, {})",
                b.id,
                b.status,
                age(b.age_seconds)
            ),
            None => println!("  newest good backup:  none"),
        }
        if let Some(b) = &db.latest_verified {
            println!("  newest verified:     {} ({})", b.id, age(b.age_seconds));
        }
        if let Some(b) = &db.latest_failure {
            println!(
                "  newest failure:      {} ({}): {}",
                b.id,
                age(b.age_seconds),
                b.error.as_deref().unwrap_or("no reason recorded")
            );
        }
        if let Some(ms) = health.last_restore_drill_ms {
            println!("  last restore drill:  {}", human_duration(ms));
        }
        println!("  failures in 30 days: {}", db.failures_30d);
        let counts: Vec<String> = db.counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
        println!("  backups:             {}", counts.join(", "));
    }
}

/// Left-aligned columns two spaces apart.
fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.to_vec()).collect();
    print_rows(&header, &rows);
}

/// A table of any width: left-aligned columns two spaces apart.
fn print_rows(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!("{}", line(header.to_vec()));
    for row in rows {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
}

/// Every decision of a prune plan, with its reasons, and the repairs it will make.
pub fn print_prune_plan(plan: &PrunePlan) {
    println!("policy: {}", plan.policy);
    if plan.decisions.is_empty() {
        println!("no backups to consider");
    } else {
        let rows: Vec<[String; 6]> = plan
            .decisions
            .iter()
            .map(|d| {
                let reasons: Vec<String> = d.reasons.iter().map(|r| r.to_string()).collect();
                [
                    if d.keeps() { "keep" } else { "remove" }.to_owned(),
                    d.id.to_string(),
                    shown(&d.database).into_owned(),
                    d.status.to_string(),
                    d.kind.to_string(),
                    reasons.join(", "),
                ]
            })
            .collect();
        print_table(["ACTION", "ID", "DATABASE", "STATUS", "KIND", "WHY"], &rows);
    }
    for a in &plan.abandoned {
        println!(
            "abandoned: {} of {:?} started {} and is still in progress: it will be marked failed (or completed, if its run published its backup)",
            a.id,
            a.database,
            format_time(a.created_at)
        );
    }
    for r in &plan.repairs {
        println!(
            "leftover: {} of {} backup {} will be removed",
            r.key, r.status, r.id
        );
    }
    for k in &plan.unknown_keys {
        println!("unknown key (no record mentions it; left alone): {k}");
    }
    for o in &plan.orphans {
        println!(
            "orphan: {}, {}: will be removed",
            shown(&o.describe()),
            human_bytes(o.size())
        );
    }
    let removals = plan.removals().count();
    println!(
        "{} to remove, {} kept, {} abandoned, {} leftover keys, {} orphans ({})",
        removals,
        plan.decisions.len() - removals,
        plan.abandoned.len(),
        plan.repairs.len(),
        plan.orphans.len(),
        human_bytes(plan.orphans.iter().map(|o| o.size()).sum())
    );
}

/// What a prune did.
pub fn print_prune_report(report: &PruneReport) {
    println!(
        "removed {} backups, marked {} abandoned runs failed, settled {} dead runs as completed, removed {} leftover keys, swept {} orphans ({}){}",
        report.deleted.len(),
        report.reaped.len(),
        report.settled.len(),
        report.repaired.len(),
        report.swept.count,
        human_bytes(report.swept.bytes),
        if report.skipped.is_empty() {
            String::new()
        } else {
            format!(", skipped {} that changed meanwhile", report.skipped.len())
        }
    );
    for id in &report.reaped_restores {
        println!("restore {id}: its run died while running; marked failed (abandoned)");
    }
}

/// The line a person sees after a backup.
/// A whole-server run: one line per backup, then what failed.
pub fn print_run(r: &pgkeep::ops::server::RunReport) {
    println!("run {} of {}", r.run_id, r.server);
    let rows: Vec<[String; 4]> = std::iter::once(&r.globals)
        .chain(&r.databases)
        .map(|m| {
            [
                shown(&m.database).into_owned(),
                m.backup_id.to_string(),
                m.status.to_string(),
                match (&m.error, m.size_bytes) {
                    (Some(e), _) => e.clone(),
                    (None, Some(b)) => human_bytes(b),
                    (None, None) => String::new(),
                },
            ]
        })
        .collect();
    print_table(["DATABASE", "BACKUP", "STATUS", "SIZE / ERROR"], &rows);
    if r.role_passwords == Some(false) {
        println!("role passwords: left out (the role cannot read pg_authid)");
    }
    if r.failed.is_empty() {
        println!("all {} backups completed", r.databases.len() + 1);
    } else {
        println!("failed: {}", r.failed.join(", "));
    }
}

/// A whole-server restore (or its plan): the globals step, then one line per database.
pub fn print_run_restore(r: &pgkeep::ops::restore_run::RunRestoreReport) {
    let verb = if r.dry_run {
        "plan for restoring"
    } else {
        "restored"
    };
    println!("{verb} run {} onto {}", r.run_id, r.server);
    let g = &r.globals;
    if let Some(id) = &g.backup_id {
        println!("globals (backup {id}):");
    }
    let names = |v: &[String]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(", ")
        }
    };
    let create = if r.dry_run {
        "roles to create"
    } else {
        "roles created"
    };
    println!("  {create}: {}", names(&g.roles_created));
    println!(
        "  roles that exist, kept as they are: {}",
        names(&g.roles_kept)
    );
    if !r.dry_run {
        println!("  statements applied: {}", g.statements_applied);
    }
    for s in &g.statements_skipped {
        println!("  skipped: {s}");
    }
    for f in &g.statements_failed {
        println!("  failed: {}: {}", f.statement, f.error);
    }
    if !g.role_passwords {
        println!("  role passwords: not in the backup; set them again");
    }
    let rows: Vec<[String; 4]> = r
        .databases
        .iter()
        .map(|d| {
            [
                shown(&d.database).into_owned(),
                d.backup_id.to_string(),
                match d.action {
                    Some(pgkeep::ops::restore::RestoreAction::CreateNew) => "create".into(),
                    Some(pgkeep::ops::restore::RestoreAction::ReplaceExisting) => "replace".into(),
                    None => "-".into(),
                },
                match &d.error {
                    Some(e) => format!("{}: {e}", d.outcome),
                    None => d.outcome.clone(),
                },
            ]
        })
        .collect();
    print_table(["DATABASE", "BACKUP", "ACTION", "OUTCOME"], &rows);
}

pub fn print_backup_done(r: &BackupRecord) {
    let rows: u64 = r.row_counts.values().sum();
    let schema_only = if r.schema_only_tables.is_empty() {
        String::new()
    } else {
        format!(" (and {} without their data)", r.schema_only_tables.len())
    };
    println!(
        "backup {} of {} completed: {} stored in {}, {} tables, {} rows{schema_only}",
        r.id,
        shown(&r.database),
        r.size_bytes.map(human_bytes).unwrap_or_default(),
        r.duration_ms.map(human_duration).unwrap_or_default(),
        r.row_counts.len(),
        rows
    );
}

/// A spinner with bytes dumped and the rate, drawn only when stderr is a terminal.
pub struct ProgressBar {
    bar: Option<indicatif::ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressBar {
    /// Starts drawing (or does nothing off a terminal).
    pub fn start(database: &str, progress: Arc<Progress>) -> Self {
        Self::start_with("dumping", database, progress)
    }

    /// Starts drawing `{verb} {label}: bytes (rate) elapsed` (or does nothing off a terminal).
    pub fn start_with(verb: &str, label: &str, progress: Arc<Progress>) -> Self {
        if !std::io::stderr().is_terminal() {
            return ProgressBar {
                bar: None,
                ticker: None,
            };
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {prefix} {msg}: {bytes} ({bytes_per_sec}) {elapsed}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(verb.to_owned());
        bar.set_message(shown(label).into_owned());
        let ticking = bar.clone();
        let ticker = tokio::spawn(async move {
            loop {
                ticking.set_position(progress.archive_bytes());
                ticking.tick();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        ProgressBar {
            bar: Some(bar),
            ticker: Some(ticker),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(t) = &self.ticker {
            t.abort();
        }
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// `backups read/total` while `pgkeep repair` reads the repository, drawn only when stderr is a
/// terminal.
pub struct CountBar {
    bar: Option<indicatif::ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl CountBar {
    /// Starts drawing (or does nothing off a terminal).
    pub fn start(progress: Arc<pgkeep::ops::repair::RepairProgress>) -> Self {
        if !std::io::stderr().is_terminal() {
            return CountBar {
                bar: None,
                ticker: None,
            };
        }
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} reading the repository: {pos}/{len} backups {elapsed}",
            )
            .expect("valid template"),
        );
        let ticking = bar.clone();
        let ticker = tokio::spawn(async move {
            loop {
                let (done, total) = progress.counts();
                ticking.set_length(total);
                ticking.set_position(done);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        CountBar {
            bar: Some(bar),
            ticker: Some(ticker),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(t) = &self.ticker {
            t.abort();
        }
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// What `pgkeep repair` did or would do.
pub fn print_repair_report(r: &pgkeep::ops::repair::RepairReport) {
    let verb = |done: &'static str, would: &'static str| if r.dry_run { would } else { done };
    for c in &r.changes {
        match c.previous {
            None => println!(
                "{} {} of {} ({})",
                verb("added", "would add"),
                c.id,
                shown(&c.database),
                c.status
            ),
            Some(previous) => println!(
                "{} {} of {} ({previous} -> {})",
                verb("updated", "would update"),
                c.id,
                shown(&c.database),
                c.status
            ),
        }
    }
    for k in &r.kept {
        println!(
            "kept {}: the catalog says {}, the repository {}",
            k.id, k.catalog_status, k.repository_status
        );
    }
    for s in &r.strays {
        println!("stray {}: {}", s.key, s.why);
    }
    for s in &r.unreadable {
        println!("unreadable {}: {}", s.key, s.why);
    }
    for key in &r.removed {
        println!("removed {key}");
    }
    println!(
        "{} backups in {}: {} {}, {} unchanged, {} kept as the catalog has them, {} unreadable, {} stray keys{}",
        r.backups,
        r.repository,
        r.changes.len(),
        verb("records written", "records to write"),
        r.unchanged,
        r.kept.len(),
        r.unreadable.len(),
        r.strays.len(),
        if r.strays.is_empty() || !r.removed.is_empty() {
            ""
        } else {
            " (left alone; --remove-strays deletes them)"
        }
    );
    if r.dry_run {
        println!("dry run: nothing was changed");
    }
}

/// The audit trail, newest first.
pub fn print_audit(entries: &[pgkeep::model::AuditEntry]) {
    if entries.is_empty() {
        println!("no audit entries");
        return;
    }
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            [
                format_time(e.at),
                shown(&e.actor).into_owned(),
                shown(&e.action).into_owned(),
                shown(&e.database).into_owned(),
                e.backup_id
                    .as_ref()
                    .map_or_else(|| "-".into(), ToString::to_string),
                shown(&e.outcome).into_owned(),
            ]
        })
        .collect();
    print_table(
        ["AT", "ACTOR", "ACTION", "DATABASE", "BACKUP", "OUTCOME"],
        &rows,
    );
}

/// Restores, newest first.
pub fn print_restores(runs: &[pgkeep::model::RestoreRun]) {
    if runs.is_empty() {
        println!("no restores yet");
        return;
    }
    let rows: Vec<[String; 7]> = runs
        .iter()
        .map(|r| {
            [
                r.id.to_string(),
                r.state.to_string(),
                format!(
                    "{}{}",
                    shown(&r.target_db),
                    if r.dry_run { " (dry run)" } else { "" }
                ),
                r.backup_id.to_string(),
                format_time(r.requested_at),
                r.duration_ms.map_or_else(|| "-".into(), human_duration),
                r.error
                    .as_deref()
                    .map(|e| shown(e).into_owned())
                    .or_else(|| {
                        r.safety_backup_id
                            .as_ref()
                            .map(|s| format!("safety backup {s}"))
                    })
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(
        [
            "ID",
            "STATE",
            "TARGET",
            "BACKUP",
            "REQUESTED",
            "TOOK",
            "NOTE",
        ],
        &rows,
    );
}

/// One restore in full.
pub fn print_restore_run(r: &pgkeep::model::RestoreRun) {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!("id:              {}", r.id);
    println!("state:           {}", r.state);
    println!("backup:          {}", r.backup_id);
    println!("target:          {}", shown(&r.target_db));
    println!("dry run:         {}", r.dry_run);
    println!("overwrite:       {}", r.overwrite);
    println!(
        "requested by:    {}",
        opt(r.requested_by.as_deref().map(|b| shown(b).into_owned()))
    );
    println!("requested:       {}", format_time(r.requested_at));
    println!("started:         {}", opt(r.started_at.map(format_time)));
    println!("finished:        {}", opt(r.finished_at.map(format_time)));
    println!(
        "took:            {}",
        opt(r.duration_ms.map(human_duration))
    );
    println!(
        "safety backup:   {}",
        opt(r.safety_backup_id.as_ref().map(ToString::to_string))
    );
    if let Some(e) = &r.error {
        println!("error:           {}", shown(e));
    }
    if let Some(listing) = &r.listing {
        println!("archive listing:");
        print!("{listing}");
    }
}

/// A name from the catalog as a terminal may show it: control characters (an escape sequence
/// in a database name could rewrite the screen) are printed escaped, like `\u{1b}`.
pub fn shown(name: &str) -> std::borrow::Cow<'_, str> {
    if !name.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod shown_tests {
    use super::shown;

    #[test]
    fn control_characters_in_names_are_escaped() {
        assert_eq!(shown("shop's db"), "shop's db");
        assert_eq!(shown("évé"), "évé");
        assert_eq!(shown("a\x1b[2Jb\nc\u{9b}d"), "a\\u{1b}[2Jb\\nc\\u{9b}d");
    }
}
