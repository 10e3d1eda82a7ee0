//! Which backups to keep: restic's `forget` policy, per database, plus rules no policy can
//! override. Pure: it is handed the records and `now` and returns a decision, with its reasons,
//! for every record; deleting is [`crate::ops::prune`]'s job.
//!
//! # The policy (restic's semantics)
//!
//! The *candidates* of a database are its `scheduled` and `manual` backups that are `completed`
//! or `verified`. They are sorted newest first (ties: larger id first) and each is kept when any
//! rule claims it:
//!
//! - `keep_last N`: the N newest.
//! - `keep_hourly/daily/weekly/monthly/yearly N`: the newest backup in each of the N most recent
//!   hours/days/ISO weeks/months/years (UTC) that have one. When the oldest candidate is reached
//!   while a rule still has slots left, it is kept too (restic does this to keep the longest
//!   history the counts allow).
//! - `keep_within D`: every backup taken less than D before the *newest* backup (not before
//!   `now`: a database whose backups stopped does not lose its history while nobody looks).
//!   As in restic, the newest backup is the newest one not in the future of `now`, and the
//!   comparison is strict (a backup exactly D older than the newest is not within).
//!
//! # Per kind
//!
//! `keep_within_kind` (`--keep-within-kind scheduled=7d,manual=30d,pre_migration=365d`) keeps
//! every candidate of a kind taken less than its span before `now` (strict, as `keep_within`).
//! Measured from `now`, not from the newest backup: "a manual backup lives 30 days" is a
//! wall-clock promise, and it gives every such backup a date on which it expires. It only adds
//! to the restic rules, which must not all be empty, so the newest candidate is still always
//! kept by them when backups stop. `pre_restore` has its own window (below) and is refused here.
//!
//! # What is not a candidate
//!
//! - `in_progress`: never touched (the reaper turns abandoned ones into `failed`).
//! - `failed`: a failed run has no object; the record is kept as history (it costs no storage,
//!   and health reports recent failures from it). Prune only removes objects a crash may have
//!   left behind for it.
//! - `pre_restore`: safety copies taken before a restore overwrites a database. They do not take
//!   the daily/weekly slots of regular backups (a restore at 03:00 would otherwise push the
//!   nightly backup out of its day); each is kept for `pre_restore_keep_within` after it was
//!   taken, measured from `now` (a safety copy answers "can I still undo last week's restore",
//!   a wall-clock question).
//! - `verification_failed`: a backup whose restore test failed is suspect, so it must not hold
//!   a slot a good backup could hold; it is kept for `verification_failed_keep_within` from
//!   `now` for investigation (re-verifying it successfully makes it a candidate again).
//! - `deleted`: already gone; no decision.
//!
//! # Labels
//!
//! `keep_labels` (`--keep-label KEY[=VALUE]`, like restic's `--keep-tag`) keeps every backup
//! with an object (`completed`, `verified`, `verification_failed`; of any kind) that carries
//! one of the labels, whatever the other rules decide. Labelled backups stay candidates of the
//! other rules, so every other decision is exactly what it would be without `keep_labels`.
//! `keep_labels` alone is not a policy: it only adds to one (otherwise every unlabelled
//! backup, the newest included, would go).
//!
//! # Hard rules
//!
//! The newest `verified` backup of each database (of any kind) is always kept, and an
//! `in_progress` backup is never removed, whatever the policy says. An empty policy is refused
//! rather than read as "keep everything" or "keep nothing".

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use serde::{Deserialize, Serialize, Serializer};

use crate::labels::LabelSelector;
use crate::model::{format_time, BackupId, BackupKind, BackupRecord, BackupStatus};

/// A positive length of time written the way people write it: `30d`, `25h`, `2w`, `1d12h`,
/// `90m`, `45s`; units s, m (minutes), h, d (24 hours) and w (7 days).
///
/// Calendar units (months, years) are not accepted: in UTC a day is always 24 hours, but a month
/// is not a fixed length, and an age limit should mean the same thing in February and in March.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    seconds: i64,
}

/// The longest span accepted (about 100 years): beyond it, time arithmetic could overflow.
const MAX_SPAN_SECONDS: i64 = 100 * 366 * 86_400;

/// Why text is not a [`Span`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {why}; write a number and a unit (s, m, h, d, w), e.g. 30d, 25h, 2w, 1d12h")]
pub struct SpanError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl Span {
    /// A span of whole seconds; `None` unless positive and at most about 100 years.
    pub fn from_seconds(seconds: i64) -> Option<Span> {
        (1..=MAX_SPAN_SECONDS)
            .contains(&seconds)
            .then_some(Span { seconds })
    }

    /// A span of whole days (usable in constants; panics unless positive and under 100 years).
    pub const fn days(days: i64) -> Span {
        Span::checked(days * 86_400)
    }

    /// A span of whole hours (as [`Span::days`]).
    pub const fn hours(hours: i64) -> Span {
        Span::checked(hours * 3_600)
    }

    /// A span of whole minutes (as [`Span::days`]).
    pub const fn minutes(minutes: i64) -> Span {
        Span::checked(minutes * 60)
    }

    const fn checked(seconds: i64) -> Span {
        assert!(
            seconds >= 1 && seconds <= MAX_SPAN_SECONDS,
            "a span is positive and under 100 years"
        );
        Span { seconds }
    }

    /// Length in seconds.
    pub fn seconds(self) -> i64 {
        self.seconds
    }

    /// The same length for time arithmetic.
    pub fn as_delta(self) -> TimeDelta {
        TimeDelta::seconds(self.seconds)
    }
}

/// Parses `30d`, `25h`, `2w`, `1d12h`: the one duration parser of pgkeep.
pub fn parse_span(text: &str) -> Result<Span, SpanError> {
    let error = |why| SpanError {
        text: text.to_owned(),
        why,
    };
    if text.is_empty() {
        return Err(error("empty"));
    }
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(error("unknown unit")),
        };
        if digits.is_empty() {
            return Err(error("a unit without a number"));
        }
        let n: i64 = digits.parse().map_err(|_| error("number too large"))?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .filter(|s| *s <= MAX_SPAN_SECONDS)
            .ok_or_else(|| error("longer than 100 years"))?;
    }
    if !digits.is_empty() {
        return Err(error("a number without a unit"));
    }
    Span::from_seconds(total).ok_or_else(|| error("must be longer than zero"))
}

impl FromStr for Span {
    type Err = SpanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_span(s)
    }
}

impl fmt::Display for Span {
    /// Days, hours, minutes, seconds, leaving out zero parts: `30d`, `1d1h`, `90s` → `1m30s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.seconds;
        for (unit, name) in [(86_400, 'd'), (3_600, 'h'), (60, 'm'), (1, 's')] {
            if rest >= unit {
                write!(f, "{}{name}", rest / unit)?;
                rest %= unit;
            }
        }
        Ok(())
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_span(&text).map_err(serde::de::Error::custom)
    }
}

/// Default for [`RetentionPolicy::pre_restore_keep_within`]: 30 days.
pub const DEFAULT_PRE_RESTORE_KEEP_WITHIN: Span = Span::days(30);

/// Default for [`RetentionPolicy::verification_failed_keep_within`]: 30 days.
pub const DEFAULT_VERIFICATION_FAILED_KEEP_WITHIN: Span = Span::days(30);

/// `scheduled=7d,manual=30d`: a span per backup kind, for [`RetentionPolicy::keep_within_kind`].
/// Also accepts a JSON object (`{"manual": "30d"}`), as environment variables often hold.
pub fn parse_kind_spans(text: &str) -> Result<BTreeMap<BackupKind, Span>, String> {
    let text = text.trim();
    let pairs: Vec<(String, String)> = if text.starts_with('{') {
        serde_json::from_str::<BTreeMap<String, String>>(text)
            .map_err(|e| format!("not a JSON object of kind to duration: {e}"))?
            .into_iter()
            .collect()
    } else {
        text.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| format!("{p:?} is not KIND=DURATION (e.g. manual=30d)"))
            })
            .collect::<Result<_, _>>()?
    };
    let mut out = BTreeMap::new();
    for (kind, span) in pairs {
        let kind: BackupKind = kind.parse()?;
        if kind == BackupKind::PreRestore {
            return Err("pre_restore copies have their own window: use --pre-restore-keep-within (PGKEEP_PRE_RESTORE_KEEP_WITHIN)".into());
        }
        let span: Span = span.parse().map_err(|e: SpanError| e.to_string())?;
        if out.insert(kind, span).is_some() {
            return Err(format!("{kind} is given twice"));
        }
    }
    Ok(out)
}

/// What to keep of each database; see the module documentation for the exact rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Keep the N newest backups.
    pub keep_last: u32,
    /// Keep the newest backup of each of the N most recent hours that have one.
    pub keep_hourly: u32,
    /// ... days (UTC).
    pub keep_daily: u32,
    /// ... ISO weeks (Monday to Sunday, UTC).
    pub keep_weekly: u32,
    /// ... months.
    pub keep_monthly: u32,
    /// ... years.
    pub keep_yearly: u32,
    /// Keep every backup taken within this span before the newest backup.
    pub keep_within: Option<Span>,
    /// Keep `pre_restore` safety copies this long after they were taken.
    pub pre_restore_keep_within: Span,
    /// Keep backups that failed verification this long after they were taken.
    pub verification_failed_keep_within: Span,
    /// Keep every candidate of a kind taken within its span before `now` (in addition to the
    /// rules above, which must not all be empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keep_within_kind: BTreeMap<BackupKind, Span>,
    /// Keep every stored backup carrying one of these labels (in addition to the rules
    /// above, which must not all be empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_labels: Vec<LabelSelector>,
}

impl Default for RetentionPolicy {
    /// An empty policy (refused by [`RetentionPolicy::validate`]) with the default windows for
    /// safety copies and suspect backups.
    fn default() -> Self {
        RetentionPolicy {
            keep_last: 0,
            keep_hourly: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            keep_yearly: 0,
            keep_within: None,
            pre_restore_keep_within: DEFAULT_PRE_RESTORE_KEEP_WITHIN,
            verification_failed_keep_within: DEFAULT_VERIFICATION_FAILED_KEEP_WITHIN,
            keep_within_kind: BTreeMap::new(),
            keep_labels: Vec::new(),
        }
    }
}

/// A policy that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// No keep rule is set: refusing is safer than guessing "all" or "nothing".
    #[error("the retention policy is empty: set at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly or --keep-within (or the PGKEEP_KEEP_* variables); --keep-label and --keep-within-kind only add to those")]
    Empty,
    /// A per-kind window for `pre_restore`, which has its own.
    #[error("--keep-within-kind (PGKEEP_KEEP_WITHIN_KIND) cannot name pre_restore: use --pre-restore-keep-within (PGKEEP_PRE_RESTORE_KEEP_WITHIN)")]
    PreRestoreKind,
}

impl RetentionPolicy {
    /// Refuses a policy with no keep rule.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let counts = [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ];
        if counts.iter().all(|n| *n == 0) && self.keep_within.is_none() {
            return Err(PolicyError::Empty);
        }
        if self.keep_within_kind.contains_key(&BackupKind::PreRestore) {
            return Err(PolicyError::PreRestoreKind);
        }
        Ok(())
    }
}

impl fmt::Display for RetentionPolicy {
    /// `last 3, daily 7, within 2d; pre-restore 30d, failed verification 30d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (n, name) in [
            (self.keep_last, "last"),
            (self.keep_hourly, "hourly"),
            (self.keep_daily, "daily"),
            (self.keep_weekly, "weekly"),
            (self.keep_monthly, "monthly"),
            (self.keep_yearly, "yearly"),
        ] {
            if n > 0 {
                parts.push(format!("{name} {n}"));
            }
        }
        if let Some(w) = self.keep_within {
            parts.push(format!("within {w}"));
        }
        for (kind, w) in &self.keep_within_kind {
            parts.push(format!("{kind} within {w}"));
        }
        for label in &self.keep_labels {
            parts.push(format!("label {label}"));
        }
        if parts.is_empty() {
            parts.push("nothing".into());
        }
        write!(
            f,
            "keep {}; pre-restore copies {}, failed verifications {}",
            parts.join(", "),
            self.pre_restore_keep_within,
            self.verification_failed_keep_within
        )
    }
}

/// The calendar periods of the bucket rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// A UTC hour.
    Hourly,
    /// A UTC day.
    Daily,
    /// An ISO week.
    Weekly,
    /// A calendar month.
    Monthly,
    /// A calendar year.
    Yearly,
}

impl Period {
    /// The name used in reasons and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The bucket a time falls in, as the label people read: `2026-11-20T14`, `2026-11-20`,
    /// `2026-W47`, `2026-11`, `2026`. Two times share a bucket exactly when labels are equal.
    pub fn label(self, t: DateTime<Utc>) -> String {
        match self {
            Period::Hourly => t.format("%Y-%m-%dT%H").to_string(),
            Period::Daily => t.format("%Y-%m-%d").to_string(),
            Period::Weekly => {
                let w = t.iso_week();
                format!("{:04}-W{:02}", w.year(), w.week())
            }
            Period::Monthly => t.format("%Y-%m").to_string(),
            Period::Yearly => format!("{:04}", t.year()),
        }
    }
}

/// Why a backup is kept or removed; printed as text (`daily 2026-11-20`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// One of the `keep_last` newest.
    Last {
        /// Its position among them, from 1.
        nth: u32,
        /// The policy's count.
        of: u32,
    },
    /// The newest backup of a calendar bucket.
    Bucket {
        /// Which rule.
        period: Period,
        /// The bucket.
        label: String,
        /// Kept because it is the oldest candidate and the rule had slots left.
        oldest: bool,
    },
    /// Within `keep_within` of the newest backup.
    Within {
        /// The policy's span.
        span: Span,
        /// The time measured from (the newest backup not in the future); `None` when every
        /// backup is in the future, in which case all are within.
        newest: Option<DateTime<Utc>>,
    },
    /// A candidate of a kind with its own window, taken less than the span before `now`.
    KindWithin {
        /// Its kind.
        kind: BackupKind,
        /// The policy's span for the kind.
        span: Span,
    },
    /// Carries a label the policy keeps.
    Label(LabelSelector),
    /// The newest verified backup of its database: kept whatever the policy says.
    NewestVerified,
    /// Still being written: never touched.
    InProgress,
    /// A failed run: no object, the record stays as history.
    FailedHistory,
    /// A pre-restore safety copy younger than its window.
    PreRestoreWithin(Span),
    /// A backup that failed verification, younger than its window.
    VerificationFailedWithin(Span),
    /// No rule claims it.
    OutsidePolicy,
    /// A pre-restore safety copy older than its window.
    PreRestoreExpired(Span),
    /// A backup that failed verification, older than its window.
    VerificationFailedExpired(Span),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Last { nth, of } => write!(f, "last ({nth} of {of})"),
            Reason::Bucket {
                period,
                label,
                oldest,
            } => {
                write!(f, "{} {label}", period.as_str())?;
                if *oldest {
                    write!(f, " (oldest backup, {} slots left)", period.as_str())?;
                }
                Ok(())
            }
            Reason::Within { span, newest } => match newest {
                Some(t) => write!(
                    f,
                    "within {span} of the newest backup ({})",
                    format_time(*t)
                ),
                None => write!(f, "within {span} (every backup is in the future)"),
            },
            Reason::KindWithin { kind, span } => write!(f, "{kind} backup younger than {span}"),
            Reason::Label(selector) => write!(f, "label {selector}"),
            Reason::NewestVerified => f.write_str("newest verified"),
            Reason::InProgress => f.write_str("in progress"),
            Reason::FailedHistory => f.write_str("failed run, kept as history (it has no object)"),
            Reason::PreRestoreWithin(s) => write!(f, "pre-restore copy younger than {s}"),
            Reason::VerificationFailedWithin(s) => {
                write!(f, "failed verification, kept {s} for investigation")
            }
            Reason::OutsidePolicy => f.write_str("outside policy"),
            Reason::PreRestoreExpired(s) => write!(f, "pre-restore copy older than {s}"),
            Reason::VerificationFailedExpired(s) => {
                write!(f, "failed verification, older than {s}")
            }
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Keep or remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The backup stays.
    Keep,
    /// The backup's object and manifest go and its record becomes `deleted`.
    Remove,
}

/// What the policy decided about one backup, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The backup.
    pub id: BackupId,
    /// Its database.
    pub database: String,
    /// Its kind.
    pub kind: BackupKind,
    /// Its status when decided.
    pub status: BackupStatus,
    /// When it was taken.
    pub created_at: DateTime<Utc>,
    /// Keep or remove.
    pub action: Action,
    /// Every rule that applied, in the order evaluated (never empty).
    pub reasons: Vec<Reason>,
}

impl Decision {
    /// Whether the backup stays.
    pub fn keeps(&self) -> bool {
        self.action == Action::Keep
    }
}

impl fmt::Display for Decision {
    /// `kept: daily 2026-11-20, weekly 2026-W47` or `removed: outside policy`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.action {
            Action::Keep => "kept",
            Action::Remove => "removed",
        };
        write!(f, "{verb}: ")?;
        for (i, r) in self.reasons.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// When a backup stops being kept under the current policy if nothing else changes (no new
/// backup, no label or verification change): shown by `show`, `list --json`, the API and the
/// history page. Serialized flat beside a record as `expires_at` and `expiry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expiry {
    /// The first time at which the policy no longer keeps it. Set when every rule keeping it
    /// is a window measured from `now` (per kind, pre-restore, failed verification), or when it
    /// is already due for removal by a window; `None` when it is kept for a reason time alone
    /// does not end (newest verified, a label, a restic rule) or when no rule keeps it.
    pub expires_at: Option<DateTime<Utc>>,
    /// In words: `kept until ...: manual backup younger than 30d`, `kept while newest verified`,
    /// `due for removal: outside policy`.
    pub expiry: String,
}

impl Decision {
    /// When the policy stops keeping this backup if nothing else changes (see [`Expiry`]).
    /// Every reason but the windows measured from `now` is fixed while the records are: the
    /// restic rules look only at the candidates' times (assuming none is in the future).
    pub fn expiry(&self) -> Expiry {
        let window_end = |r: &Reason| match r {
            Reason::KindWithin { span, .. }
            | Reason::PreRestoreWithin(span)
            | Reason::VerificationFailedWithin(span)
            | Reason::PreRestoreExpired(span)
            | Reason::VerificationFailedExpired(span) => Some(self.created_at + span.as_delta()),
            _ => None,
        };
        let words = |rs: &[&Reason]| {
            rs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let reasons: Vec<&Reason> = self.reasons.iter().collect();
        if !self.keeps() {
            return Expiry {
                expires_at: reasons.iter().filter_map(|r| window_end(r)).max(),
                expiry: format!("due for removal: {}", words(&reasons)),
            };
        }
        let lasting: Vec<&Reason> = reasons
            .iter()
            .copied()
            .filter(|r| window_end(r).is_none())
            .collect();
        if !lasting.is_empty() {
            return Expiry {
                expires_at: None,
                expiry: format!("kept while {}", words(&lasting)),
            };
        }
        let end = reasons.iter().filter_map(|r| window_end(r)).max();
        Expiry {
            expires_at: end,
            expiry: match end {
                Some(t) => format!("kept until {}: {}", format_time(t), words(&reasons)),
                None => format!("kept: {}", words(&reasons)),
            },
        }
    }
}

/// The [`Expiry`] of every record that is not `deleted`, by id; empty when the policy is not
/// usable (no retention configured: nothing expires by policy).
pub fn expiries(
    policy: &RetentionPolicy,
    records: &[BackupRecord],
    now: DateTime<Utc>,
) -> BTreeMap<BackupId, Expiry> {
    apply(policy, records, now)
        .map(|ds| ds.into_iter().map(|d| (d.id.clone(), d.expiry())).collect())
        .unwrap_or_default()
}

/// A record with its expiry beside it, as `show --json`, `list --json` and the API print it:
/// the record's own fields plus `expires_at` and `expiry` (absent without a policy).
#[derive(Debug, Serialize)]
pub struct WithExpiry<'a> {
    /// The record.
    #[serde(flatten)]
    pub record: &'a BackupRecord,
    /// Its expiry, when a policy is configured.
    #[serde(flatten)]
    pub expiry: Option<&'a Expiry>,
}

/// Pairs each record with its expiry from `expiries`.
pub fn with_expiries<'a>(
    records: &'a [BackupRecord],
    expiries: &'a BTreeMap<BackupId, Expiry>,
) -> Vec<WithExpiry<'a>> {
    records
        .iter()
        .map(|record| WithExpiry {
            record,
            expiry: expiries.get(&record.id),
        })
        .collect()
}

/// Decides, for every record that is not `deleted`, whether it stays; per database, newest
/// first within each database, databases in name order.
pub fn apply(
    policy: &RetentionPolicy,
    records: &[BackupRecord],
    now: DateTime<Utc>,
) -> Result<Vec<Decision>, PolicyError> {
    policy.validate()?;
    let mut by_db: BTreeMap<&str, Vec<&BackupRecord>> = BTreeMap::new();
    for r in records {
        if r.status != BackupStatus::Deleted {
            by_db.entry(&r.database).or_default().push(r);
        }
    }
    let mut out = Vec::new();
    for (_, mut rs) in by_db {
        rs.sort_by(|a, b| newest_first(a, b));
        out.extend(apply_one_database(policy, &rs, now));
    }
    Ok(out)
}

/// Newest first; equal times by larger id first, so the order never depends on the input's.
fn newest_first(a: &BackupRecord, b: &BackupRecord) -> std::cmp::Ordering {
    b.created_at
        .cmp(&a.created_at)
        .then_with(|| b.id.cmp(&a.id))
}

/// `records`: one database, none deleted, newest first.
fn apply_one_database(
    policy: &RetentionPolicy,
    records: &[&BackupRecord],
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let is_candidate = |r: &BackupRecord| {
        r.kind != BackupKind::PreRestore
            && matches!(r.status, BackupStatus::Completed | BackupStatus::Verified)
    };
    let candidates: Vec<&BackupRecord> = records
        .iter()
        .copied()
        .filter(|r| is_candidate(r))
        .collect();
    let mut policy_reasons = restic_keep_reasons(policy, &candidates, now);
    let newest_verified =
        crate::model::newest_verified(records.iter().copied()).map(|r| r.id.clone());

    records
        .iter()
        .map(|r| {
            let mut reasons = Vec::new();
            let mut keep = true;
            if r.status == BackupStatus::InProgress {
                reasons.push(Reason::InProgress);
            } else if r.status == BackupStatus::Failed {
                reasons.push(Reason::FailedHistory);
            } else if r.kind == BackupKind::PreRestore {
                let span = policy.pre_restore_keep_within;
                if r.created_at > now - span.as_delta() {
                    reasons.push(Reason::PreRestoreWithin(span));
                } else {
                    keep = false;
                    reasons.push(Reason::PreRestoreExpired(span));
                }
            } else if r.status == BackupStatus::VerificationFailed {
                let span = policy.verification_failed_keep_within;
                if r.created_at > now - span.as_delta() {
                    reasons.push(Reason::VerificationFailedWithin(span));
                } else {
                    keep = false;
                    reasons.push(Reason::VerificationFailedExpired(span));
                }
            } else {
                let mut rs = policy_reasons.remove(&r.id).unwrap_or_default();
                if let Some(span) = policy.keep_within_kind.get(&r.kind) {
                    if r.created_at > now - span.as_delta() {
                        rs.push(Reason::KindWithin {
                            kind: r.kind,
                            span: *span,
                        });
                    }
                }
                if rs.is_empty() {
                    keep = false;
                    reasons.push(Reason::OutsidePolicy);
                } else {
                    reasons.extend(rs);
                }
            }
            let labelled: Vec<&LabelSelector> = if r.status.has_object() {
                policy
                    .keep_labels
                    .iter()
                    .filter(|l| l.matches(&r.labels))
                    .collect()
            } else {
                Vec::new()
            };
            if !labelled.is_empty() {
                if !keep {
                    reasons.clear();
                    keep = true;
                }
                reasons.extend(labelled.into_iter().cloned().map(Reason::Label));
            }
            if newest_verified.as_ref() == Some(&r.id) {
                if !keep {
                    reasons.clear();
                    keep = true;
                }
                reasons.push(Reason::NewestVerified);
            }
            Decision {
                id: r.id.clone(),
                database: r.database.clone(),
                kind: r.kind,
                status: r.status,
                created_at: r.created_at,
                action: if keep { Action::Keep } else { Action::Remove },
                reasons,
            }
        })
        .collect()
}

/// restic's `ApplyPolicy` over `list` (newest first): the keep reasons of each kept backup.
fn restic_keep_reasons(
    policy: &RetentionPolicy,
    list: &[&BackupRecord],
    now: DateTime<Utc>,
) -> BTreeMap<BackupId, Vec<Reason>> {
    struct Bucket {
        period: Option<Period>,
        count: u32,
        taken: u32,
        last: Option<String>,
    }
    let mut buckets: Vec<Bucket> = [
        (None, policy.keep_last),
        (Some(Period::Hourly), policy.keep_hourly),
        (Some(Period::Daily), policy.keep_daily),
        (Some(Period::Weekly), policy.keep_weekly),
        (Some(Period::Monthly), policy.keep_monthly),
        (Some(Period::Yearly), policy.keep_yearly),
    ]
    .into_iter()
    .map(|(period, count)| Bucket {
        period,
        count,
        taken: 0,
        last: None,
    })
    .collect();
    // The newest backup that is not in the future; keep_within is measured back from it.
    let newest = list.iter().map(|r| r.created_at).find(|t| *t < now);

    let mut out = BTreeMap::new();
    for (nr, cur) in list.iter().enumerate() {
        let is_oldest = nr + 1 == list.len();
        let mut reasons = Vec::new();
        if let Some(span) = policy.keep_within {
            let within = newest.is_none_or(|n| cur.created_at > n - span.as_delta());
            if within {
                reasons.push(Reason::Within { span, newest });
            }
        }
        for b in buckets.iter_mut() {
            if b.count == 0 {
                continue;
            }
            let value = match b.period {
                Some(p) => p.label(cur.created_at),
                None => nr.to_string(),
            };
            let new_bucket = b.last.as_deref() != Some(value.as_str());
            if new_bucket || is_oldest {
                b.count -= 1;
                b.taken += 1;
                reasons.push(match b.period {
                    None => Reason::Last {
                        nth: b.taken,
                        of: policy.keep_last,
                    },
                    Some(period) => Reason::Bucket {
                        period,
                        label: value.clone(),
                        oldest: !new_bucket,
                    },
                });
                b.last = Some(value);
            }
        }
        out.insert(cur.id.clone(), reasons);
    }
    out
}

#[cfg(test)]
mod tests;
