//! Table tests over hand-checked histories (expected sets worked out by hand from restic's
//! rules, week numbers checked with `date -u +%G-W%V`), and property tests over random ones.

use super::*;
use crate::model::{BackupKind, BackupRecord, BackupStatus, Compression};
use chrono::{NaiveDateTime, TimeZone};
use proptest::prelude::*;
use std::collections::BTreeSet;

fn at(text: &str) -> DateTime<Utc> {
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M")
        .unwrap_or_else(|e| panic!("{text:?}: {e}"));
    Utc.from_utc_datetime(&naive)
}

/// A deterministic id for the n-th backup taken at `t`.
fn id_at(t: DateTime<Utc>, n: u32) -> BackupId {
    format!("{}-{n:08x}", t.format("%Y%m%dT%H%M%S%3fZ"))
        .parse()
        .unwrap()
}

fn record(
    db: &str,
    n: u32,
    t: DateTime<Utc>,
    status: BackupStatus,
    kind: BackupKind,
) -> BackupRecord {
    let mut r = BackupRecord::start(id_at(t, n), db, kind, Compression::Zstd);
    r.created_at = t;
    r.status = status;
    r
}

/// A named history: `(name, time)`, all completed scheduled backups of one database.
struct History {
    names: Vec<&'static str>,
    records: Vec<BackupRecord>,
}

impl History {
    fn completed(entries: &[(&'static str, &str)]) -> Self {
        let spec: Vec<_> = entries
            .iter()
            .map(|(n, t)| (*n, *t, BackupStatus::Completed, BackupKind::Scheduled))
            .collect();
        History::of(&spec)
    }

    fn of(entries: &[(&'static str, &str, BackupStatus, BackupKind)]) -> Self {
        let records = entries
            .iter()
            .enumerate()
            .map(|(i, (_, t, status, kind))| record("shop", i as u32, at(t), *status, *kind))
            .collect();
        History {
            names: entries.iter().map(|e| e.0).collect(),
            records,
        }
    }

    fn name(&self, id: &BackupId) -> &'static str {
        let i = self.records.iter().position(|r| &r.id == id).unwrap();
        self.names[i]
    }

    fn decide(
        &self,
        policy: &RetentionPolicy,
        now: DateTime<Utc>,
    ) -> Vec<(&'static str, Decision)> {
        apply(policy, &self.records, now)
            .unwrap()
            .into_iter()
            .map(|d| (self.name(&d.id), d))
            .collect()
    }

    fn kept(&self, policy: &RetentionPolicy, now: DateTime<Utc>) -> Vec<&'static str> {
        self.decide(policy, now)
            .into_iter()
            .filter(|(_, d)| d.keeps())
            .map(|(n, _)| n)
            .collect()
    }
}

/// Seventeen backups over three years: several per hour and day, ISO weeks that straddle a
/// year, and two backups in the oldest day.
fn h1() -> History {
    History::completed(&[
        ("a01", "2026-11-24 10:00"), // Tue 2026-W48
        ("a02", "2026-11-24 09:30"),
        ("a03", "2026-11-24 09:10"),
        ("a04", "2026-11-23 23:50"), // Mon 2026-W48
        ("a05", "2026-11-23 02:00"),
        ("a06", "2026-11-22 02:00"), // Sun 2026-W47
        ("a07", "2026-11-21 02:00"),
        ("a08", "2026-11-16 02:00"), // Mon 2026-W47
        ("a09", "2026-11-15 02:00"), // Sun 2026-W46
        ("a10", "2026-11-01 02:00"), // Sun 2026-W44
        ("a11", "2026-10-31 02:00"), // Sat 2026-W44
        ("a12", "2026-09-15 02:00"), // 2026-W38
        ("a13", "2026-01-02 03:00"), // Fri 2026-W01
        ("a14", "2025-12-31 23:00"), // Wed 2026-W01 (ISO year 2026, calendar year 2025)
        ("a15", "2025-06-01 02:00"), // 2025-W22
        ("a16", "2024-03-01 02:00"), // 2024-W09
        ("a17", "2024-03-01 01:00"),
    ])
}

fn policy(f: impl FnOnce(&mut RetentionPolicy)) -> RetentionPolicy {
    let mut p = RetentionPolicy::default();
    f(&mut p);
    p
}

fn span(s: &str) -> Span {
    s.parse().unwrap()
}

#[test]
fn restic_semantics_on_a_hand_checked_history() {
    let h = h1();
    let now = at("2026-11-25 00:00");
    let cases: Vec<(&str, RetentionPolicy, Vec<&str>)> = vec![
        (
            "last 3",
            policy(|p| p.keep_last = 3),
            vec!["a01", "a02", "a03"],
        ),
        // a03 shares a02's hour.
        (
            "hourly 3",
            policy(|p| p.keep_hourly = 3),
            vec!["a01", "a02", "a04"],
        ),
        (
            "daily 3",
            policy(|p| p.keep_daily = 3),
            vec!["a01", "a04", "a06"],
        ),
        // a04 and a05 are in a01's week (W48), a07 and a08 in a06's (W47).
        (
            "weekly 3",
            policy(|p| p.keep_weekly = 3),
            vec!["a01", "a06", "a09"],
        ),
        // a14 (2025-12-31) is in a13's ISO week 2026-W01; a17 is the oldest and shares a16's
        // week, kept because weekly slots are left.
        (
            "weekly 100",
            policy(|p| p.keep_weekly = 100),
            vec![
                "a01", "a06", "a09", "a10", "a12", "a13", "a15", "a16", "a17",
            ],
        ),
        (
            "monthly 4",
            policy(|p| p.keep_monthly = 4),
            vec!["a01", "a11", "a12", "a13"],
        ),
        // By calendar year a14 is 2025's newest; a17 is the oldest with slots left.
        (
            "yearly 5",
            policy(|p| p.keep_yearly = 5),
            vec!["a01", "a14", "a16", "a17"],
        ),
        // Exactly used up: no slot left for the oldest.
        (
            "yearly 3",
            policy(|p| p.keep_yearly = 3),
            vec!["a01", "a14", "a16"],
        ),
        // Within 2 days of the newest (a01, 2026-11-24 10:00): after 2026-11-22 10:00.
        (
            "within 2d",
            policy(|p| p.keep_within = Some(span("2d"))),
            vec!["a01", "a02", "a03", "a04", "a05"],
        ),
        // Strictly after: a02 is exactly 30 minutes older than a01.
        (
            "within 30m",
            policy(|p| p.keep_within = Some(span("30m"))),
            vec!["a01"],
        ),
        (
            "last 1, daily 2, weekly 2, monthly 2",
            policy(|p| {
                p.keep_last = 1;
                p.keep_daily = 2;
                p.keep_weekly = 2;
                p.keep_monthly = 2;
            }),
            vec!["a01", "a04", "a06", "a11"],
        ),
        (
            "within 14h and yearly 2",
            policy(|p| {
                p.keep_within = Some(span("14h"));
                p.keep_yearly = 2;
            }),
            vec!["a01", "a02", "a03", "a04", "a14"],
        ),
    ];
    for (name, policy, expected) in cases {
        assert_eq!(h.kept(&policy, now), expected, "{name}");
    }
}

#[test]
fn keep_within_is_measured_from_the_newest_backup_not_now() {
    let h = h1();
    let p = policy(|p| p.keep_within = Some(span("2d")));
    // A year without backups changes nothing.
    assert_eq!(
        h.kept(&p, at("2027-12-01 00:00")),
        vec!["a01", "a02", "a03", "a04", "a05"]
    );
    // A backup in the future of `now` (clock skew) is not the reference: a02 is, and the future
    // a01 is within by being newer.
    let p = policy(|p| p.keep_within = Some(span("1h")));
    assert_eq!(
        h.kept(&p, at("2026-11-24 09:45")),
        vec!["a01", "a02", "a03"]
    );
}

#[test]
fn reasons_say_which_rules_kept_a_backup() {
    let h = h1();
    let p = policy(|p| {
        p.keep_last = 1;
        p.keep_daily = 2;
        p.keep_weekly = 2;
        p.keep_monthly = 2;
    });
    let decisions = h.decide(&p, at("2026-11-25 00:00"));
    let text: Vec<(&str, String)> = decisions.iter().map(|(n, d)| (*n, d.to_string())).collect();
    assert_eq!(
        text[0],
        (
            "a01",
            "kept: last (1 of 1), daily 2026-11-24, weekly 2026-W48, monthly 2026-11".into()
        )
    );
    assert_eq!(text[1], ("a02", "removed: outside policy".into()));
    assert_eq!(text[3], ("a04", "kept: daily 2026-11-23".into()));
    assert_eq!(text[5], ("a06", "kept: weekly 2026-W47".into()));
    assert_eq!(text[10], ("a11", "kept: monthly 2026-10".into()));

    let oldest = h.decide(&policy(|p| p.keep_yearly = 5), at("2026-11-25 00:00"));
    assert_eq!(
        oldest.last().unwrap().1.reasons,
        vec![Reason::Bucket {
            period: Period::Yearly,
            label: "2024".into(),
            oldest: true
        }]
    );
    let within = h.decide(
        &policy(|p| p.keep_within = Some(span("2d"))),
        at("2026-11-25 00:00"),
    );
    assert_eq!(
        within[0].1.to_string(),
        "kept: within 2d of the newest backup (2026-11-24T10:00:00.000Z)"
    );
}

#[test]
fn statuses_kinds_and_hard_rules() {
    use BackupKind::*;
    use BackupStatus::*;
    let h = History::of(&[
        ("b01", "2026-11-24 10:00", InProgress, Scheduled),
        ("b02", "2026-11-24 09:00", Failed, Scheduled),
        ("b03", "2026-11-24 08:00", Completed, Scheduled),
        ("b04", "2026-11-23 08:00", Completed, PreRestore),
        ("b05", "2026-11-22 08:00", VerificationFailed, Scheduled),
        ("b06", "2026-11-21 08:00", Verified, Manual),
        ("b07", "2026-10-01 08:00", Verified, PreRestore),
        ("b08", "2026-10-01 07:00", VerificationFailed, Scheduled),
        ("b09", "2026-09-01 08:00", Completed, Scheduled),
        ("b10", "2026-08-01 08:00", Deleted, Scheduled),
        ("b11", "2026-07-01 08:00", Verified, Scheduled),
        ("b12", "2024-01-01 08:00", Failed, Scheduled),
    ]);
    let p = policy(|p| p.keep_last = 1);
    let got: Vec<(&str, Action, Vec<Reason>)> = h
        .decide(&p, at("2026-11-25 00:00"))
        .into_iter()
        .map(|(n, d)| (n, d.action, d.reasons))
        .collect();
    let thirty = span("30d");
    let expected = vec![
        ("b01", Action::Keep, vec![Reason::InProgress]),
        ("b02", Action::Keep, vec![Reason::FailedHistory]),
        ("b03", Action::Keep, vec![Reason::Last { nth: 1, of: 1 }]),
        ("b04", Action::Keep, vec![Reason::PreRestoreWithin(thirty)]),
        (
            "b05",
            Action::Keep,
            vec![Reason::VerificationFailedWithin(thirty)],
        ),
        // Outside the policy, but the newest verified backup.
        ("b06", Action::Keep, vec![Reason::NewestVerified]),
        (
            "b07",
            Action::Remove,
            vec![Reason::PreRestoreExpired(thirty)],
        ),
        (
            "b08",
            Action::Remove,
            vec![Reason::VerificationFailedExpired(thirty)],
        ),
        ("b09", Action::Remove, vec![Reason::OutsidePolicy]),
        // b10 is deleted: no decision.
        ("b11", Action::Remove, vec![Reason::OutsidePolicy]),
        ("b12", Action::Keep, vec![Reason::FailedHistory]),
    ];
    assert_eq!(got, expected);
}

#[test]
fn pre_restore_copies_do_not_take_slots_and_the_newest_verified_may_be_one() {
    use BackupKind::*;
    use BackupStatus::*;
    let h = History::of(&[
        ("c01", "2026-11-24 23:00", Completed, PreRestore),
        ("c02", "2026-11-24 02:00", Completed, Scheduled),
        ("c03", "2026-11-23 02:00", VerificationFailed, Scheduled),
        ("c04", "2026-11-23 01:00", Completed, Scheduled),
        ("c05", "2026-06-01 02:00", Verified, PreRestore),
    ]);
    let p = policy(|p| {
        p.keep_daily = 2;
        p.pre_restore_keep_within = span("7d");
    });
    let decisions = h.decide(&p, at("2026-11-25 00:00"));
    let text: Vec<String> = decisions.iter().map(|(n, d)| format!("{n} {d}")).collect();
    assert_eq!(
        text,
        vec![
            "c01 kept: pre-restore copy younger than 7d",
            // The pre-restore copy c01 did not take 2026-11-24's slot.
            "c02 kept: daily 2026-11-24",
            "c03 kept: failed verification, kept 30d for investigation",
            // c03 is newer on 2026-11-23 but suspect: the slot goes to c04.
            "c04 kept: daily 2026-11-23",
            // Expired, but the only verified backup.
            "c05 kept: newest verified",
        ]
    );
}

fn labelled(mut r: BackupRecord, labels: &[(&str, &str)]) -> BackupRecord {
    r.labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    r
}

fn selectors(items: &[&str]) -> Vec<LabelSelector> {
    items.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn labelled_backups_are_kept_with_the_label_as_reason() {
    use BackupKind::*;
    use BackupStatus::*;
    let mut h = History::of(&[
        ("d01", "2026-11-24 02:00", Completed, Scheduled),
        ("d02", "2026-11-23 14:00", Completed, PreMigration),
        ("d03", "2026-11-23 02:00", Completed, Scheduled),
        ("d04", "2026-11-10 02:00", Verified, Manual),
        ("d05", "2026-10-01 02:00", VerificationFailed, PreMigration),
        ("d06", "2026-09-01 02:00", Completed, PreRestore),
        ("d07", "2026-08-01 02:00", Completed, Scheduled),
        ("d08", "2026-07-01 02:00", Failed, PreMigration),
        ("d09", "2026-06-01 02:00", Completed, Scheduled),
    ]);
    let labels: &[(&str, &[(&str, &str)])] = &[
        ("d02", &[("release", "v2"), ("ticket", "OPS-1")]),
        ("d03", &[("release", "v1")]),
        ("d05", &[("release", "v2")]),
        ("d06", &[("pinned", "")]),
        ("d07", &[("release", "v1"), ("pinned", "yes")]),
        ("d08", &[("pinned", "")]),
        ("d09", &[("team", "ops")]),
    ];
    for (name, l) in labels {
        let i = h.names.iter().position(|n| n == name).unwrap();
        h.records[i] = labelled(h.records[i].clone(), l);
    }
    let now = at("2026-11-25 00:00");
    let without = policy(|p| p.keep_last = 1);
    let with = policy(|p| {
        p.keep_last = 1;
        p.keep_labels = selectors(&["release=v2", "pinned"]);
    });
    let text = |p: &RetentionPolicy| -> Vec<String> {
        h.decide(p, now)
            .iter()
            .map(|(n, d)| format!("{n} {d}"))
            .collect()
    };
    assert_eq!(
        text(&without),
        vec![
            "d01 kept: last (1 of 1)",
            "d02 removed: outside policy",
            "d03 removed: outside policy",
            "d04 kept: newest verified",
            "d05 removed: failed verification, older than 30d",
            "d06 removed: pre-restore copy older than 30d",
            "d07 removed: outside policy",
            "d08 kept: failed run, kept as history (it has no object)",
            "d09 removed: outside policy",
        ]
    );
    assert_eq!(
        text(&with),
        vec![
            "d01 kept: last (1 of 1)",
            "d02 kept: label release=v2",
            // release=v1 is not kept.
            "d03 removed: outside policy",
            "d04 kept: newest verified",
            // Any stored backup of any kind and status carrying the label.
            "d05 kept: label release=v2",
            "d06 kept: label pinned",
            "d07 kept: label pinned",
            // A failed run has no object: its reason stays.
            "d08 kept: failed run, kept as history (it has no object)",
            "d09 removed: outside policy",
        ]
    );
    assert_eq!(
        with.to_string(),
        "keep last 1, label release=v2, label pinned; pre-restore copies 30d, failed verifications 30d"
    );
    // Labels alone are not a policy.
    let only_labels = policy(|p| p.keep_labels = selectors(&["pinned"]));
    assert_eq!(only_labels.validate(), Err(PolicyError::Empty));
    // A label kept by another rule too shows both reasons.
    let both = policy(|p| {
        p.keep_last = 2;
        p.keep_labels = selectors(&["release"]);
    });
    let d02 = h.decide(&both, now).into_iter().find(|(n, _)| *n == "d02");
    assert_eq!(
        d02.unwrap().1.to_string(),
        "kept: last (2 of 2), label release"
    );
}

#[test]
fn an_empty_policy_is_refused() {
    let h = h1();
    let err = apply(
        &RetentionPolicy::default(),
        &h.records,
        at("2026-11-25 00:00"),
    )
    .unwrap_err();
    assert_eq!(err, PolicyError::Empty);
    assert!(err.to_string().contains("--keep-daily"), "{err}");
    // Windows for special kinds alone are not a policy.
    let only_windows = policy(|p| p.pre_restore_keep_within = span("1d"));
    assert!(only_windows.validate().is_err());
    assert!(policy(|p| p.keep_within = Some(span("1s")))
        .validate()
        .is_ok());
}

#[test]
fn databases_are_decided_independently() {
    let t = at("2026-11-24 10:00");
    let records = vec![
        record("shop", 1, t, BackupStatus::Completed, BackupKind::Scheduled),
        record(
            "shop",
            2,
            t - TimeDelta::hours(1),
            BackupStatus::Completed,
            BackupKind::Scheduled,
        ),
        record(
            "crm",
            3,
            t - TimeDelta::days(30),
            BackupStatus::Completed,
            BackupKind::Scheduled,
        ),
    ];
    let d = apply(&policy(|p| p.keep_last = 1), &records, t).unwrap();
    let summary: Vec<(&str, bool)> = d.iter().map(|d| (d.database.as_str(), d.keeps())).collect();
    assert_eq!(
        summary,
        vec![("crm", true), ("shop", true), ("shop", false)]
    );
}

#[test]
fn spans_parse_and_print() {
    for (text, seconds, shown) in [
        ("30d", 30 * 86_400, "30d"),
        ("25h", 25 * 3_600, "1d1h"),
        ("2w", 14 * 86_400, "14d"),
        ("1d12h", 36 * 3_600, "1d12h"),
        ("90m", 5_400, "1h30m"),
        ("1s", 1, "1s"),
        ("1h1s", 3_601, "1h1s"),
    ] {
        let s: Span = text.parse().unwrap();
        assert_eq!(s.seconds(), seconds, "{text}");
        assert_eq!(s.to_string(), shown, "{text}");
        assert_eq!(s.to_string().parse::<Span>().unwrap(), s);
    }
    for bad in [
        "",
        "30",
        "d",
        "0d",
        "0s",
        "3x",
        "1.5d",
        "-1d",
        " 1d",
        "1d ",
        "1M",
        "999999999999w",
        "1y",
    ] {
        let err = bad.parse::<Span>().unwrap_err();
        assert!(err.to_string().contains("e.g. 30d"), "{bad:?}: {err}");
    }
    assert_eq!(
        serde_json::to_string(&span("25h")).unwrap(),
        "\"1d1h\"".to_owned()
    );
    assert_eq!(serde_json::from_str::<Span>("\"2w\"").unwrap(), span("14d"));
}

#[test]
fn per_kind_windows_keep_each_kind_from_now_and_say_when_it_expires() {
    use BackupKind::*;
    use BackupStatus::*;
    let h = History::of(&[
        ("s1", "2026-11-24 02:00", Completed, Scheduled),
        ("m1", "2026-11-20 12:00", Completed, Manual),
        ("s2", "2026-11-10 02:00", Verified, Scheduled),
        ("s3", "2026-11-01 02:00", Completed, Scheduled),
        ("m2", "2026-10-01 12:00", Completed, Manual),
        ("p1", "2026-06-01 12:00", Completed, PreMigration),
        ("p2", "2025-06-01 12:00", Completed, PreMigration),
    ]);
    let p = policy(|p| {
        p.keep_last = 1;
        p.keep_within_kind =
            parse_kind_spans("scheduled=7d,manual=30d,pre_migration=365d").unwrap();
    });
    let now = at("2026-11-24 12:00");
    assert_eq!(h.kept(&p, now), ["s1", "m1", "s2", "p1"]);
    let decided = h.decide(&p, now);
    let expiry = |name: &str| {
        decided
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| d.expiry())
            .unwrap()
    };
    // s1: the newest (keep_last) ends by no date; m1: 30 days after it was taken.
    assert_eq!(expiry("s1").expires_at, None);
    assert_eq!(expiry("s1").expiry, "kept while last (1 of 1)");
    assert_eq!(expiry("m1").expires_at, Some(at("2026-12-20 12:00")));
    assert_eq!(
        expiry("m1").expiry,
        "kept until 2026-12-20T12:00:00.000Z: manual backup younger than 30d"
    );
    // s2 is older than 7 days but the newest verified.
    assert_eq!(expiry("s2").expiry, "kept while newest verified");
    assert_eq!(expiry("p1").expires_at, Some(at("2027-06-01 12:00")));
    assert_eq!(expiry("m2").expiry, "due for removal: outside policy");
    // Without a restic rule the per-kind windows are not a policy; pre_restore is refused.
    let alone = policy(|p| p.keep_within_kind = parse_kind_spans("manual=30d").unwrap());
    assert_eq!(alone.validate(), Err(PolicyError::Empty));
    let mut pre = p.clone();
    pre.keep_within_kind.insert(PreRestore, Span::days(1));
    assert_eq!(pre.validate(), Err(PolicyError::PreRestoreKind));
    assert!(parse_kind_spans("pre_restore=1d").is_err());
    assert_eq!(
        parse_kind_spans(r#"{"manual": "30d"}"#).unwrap(),
        BTreeMap::from([(Manual, Span::days(30))])
    );
    assert!(
        p.to_string()
            .contains("scheduled within 7d, manual within 30d, pre_migration within 365d"),
        "{p}"
    );
}

// ---- properties over random histories ----

fn arb_status() -> impl Strategy<Value = BackupStatus> {
    prop::sample::select(BackupStatus::ALL.to_vec())
}

fn arb_kind() -> impl Strategy<Value = BackupKind> {
    prop::sample::select(vec![
        BackupKind::Scheduled,
        BackupKind::Scheduled,
        BackupKind::Manual,
        BackupKind::PreRestore,
        BackupKind::PreMigration,
    ])
}

/// Up to 60 backups of two databases over about three years, clustered so that hours and days
/// often hold several; `now` is sometimes before the newest backups.
fn arb_history() -> impl Strategy<Value = (Vec<BackupRecord>, DateTime<Utc>)> {
    let base = at("2024-01-01 00:00");
    let entry = (
        prop::sample::select(vec!["shop", "crm"]),
        prop_oneof![
            0i64..3 * 365 * 1440,
            2 * 365 * 1440i64..2 * 365 * 1440 + 3 * 1440
        ],
        arb_status(),
        arb_kind(),
    );
    (
        prop::collection::vec(entry, 0..60),
        -3 * 1440i64..400 * 1440,
    )
        .prop_map(move |(entries, now_offset)| {
            let records: Vec<BackupRecord> = entries
                .into_iter()
                .enumerate()
                .map(|(i, (db, minute, status, kind))| {
                    record(
                        db,
                        i as u32,
                        base + TimeDelta::minutes(minute),
                        status,
                        kind,
                    )
                })
                .collect();
            let newest = records.iter().map(|r| r.created_at).max().unwrap_or(base);
            (records, newest + TimeDelta::minutes(now_offset))
        })
}

/// Per-kind windows for some of the kinds a candidate can have (never pre_restore).
fn arb_kind_spans() -> impl Strategy<Value = BTreeMap<BackupKind, Span>> {
    prop::collection::btree_map(
        prop::sample::select(vec![
            BackupKind::Scheduled,
            BackupKind::Manual,
            BackupKind::PreMigration,
        ]),
        (1i64..400 * 86_400).prop_map(|s| Span::from_seconds(s).unwrap()),
        0..3,
    )
}

fn arb_policy() -> impl Strategy<Value = RetentionPolicy> {
    (
        prop::array::uniform6(prop_oneof![3 => Just(0u32), 2 => 1u32..6]),
        prop::option::of(1i64..90 * 86_400),
        1i64..60 * 86_400,
        1i64..60 * 86_400,
        prop_oneof![Just(BTreeMap::new()), arb_kind_spans()],
    )
        .prop_map(|(n, within, pre, vf, kinds)| {
            let mut p = RetentionPolicy {
                keep_last: n[0],
                keep_hourly: n[1],
                keep_daily: n[2],
                keep_weekly: n[3],
                keep_monthly: n[4],
                keep_yearly: n[5],
                keep_within: within.and_then(Span::from_seconds),
                pre_restore_keep_within: Span::from_seconds(pre).unwrap(),
                verification_failed_keep_within: Span::from_seconds(vf).unwrap(),
                keep_within_kind: kinds,
                keep_labels: Vec::new(),
            };
            if p.validate().is_err() {
                p.keep_last = 1;
            }
            p
        })
}

/// A random history whose records carry random labels from a small set, so selectors match
/// some and miss others.
fn arb_labelled_history() -> impl Strategy<Value = (Vec<BackupRecord>, DateTime<Utc>)> {
    let label = prop::sample::select(vec![
        None,
        Some(("release", "v1")),
        Some(("release", "v2")),
        Some(("pinned", "")),
        Some(("team", "ops")),
    ]);
    (arb_history(), prop::collection::vec(label, 60)).prop_map(|((records, now), labels)| {
        let records = records
            .into_iter()
            .zip(labels)
            .map(|(r, l)| match l {
                Some(pair) => labelled(r, &[pair]),
                None => r,
            })
            .collect();
        (records, now)
    })
}

fn arb_selectors() -> impl Strategy<Value = Vec<LabelSelector>> {
    prop::collection::vec(
        prop::sample::select(vec!["release", "release=v2", "pinned", "absent=x"]),
        1..3,
    )
    .prop_map(|items| selectors(&items))
}

fn newest_verified(records: &[BackupRecord]) -> BTreeSet<BackupId> {
    let mut by_db: BTreeMap<&str, &BackupRecord> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.status == BackupStatus::Verified)
    {
        let e = by_db.entry(&r.database).or_insert(r);
        if (r.created_at, &r.id) > (e.created_at, &e.id) {
            *e = r;
        }
    }
    by_db.values().map(|r| r.id.clone()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn hard_rules_hold_and_pruning_is_idempotent(
        (records, now) in arb_history(),
        policy in arb_policy(),
    ) {
        let decisions = apply(&policy, &records, now).unwrap();

        // Exactly one decision per record that is not deleted, each with a reason.
        let decided: BTreeSet<_> = decisions.iter().map(|d| d.id.clone()).collect();
        let live: BTreeSet<_> = records
            .iter()
            .filter(|r| r.status != BackupStatus::Deleted)
            .map(|r| r.id.clone())
            .collect();
        prop_assert_eq!(decisions.len(), decided.len());
        prop_assert_eq!(&decided, &live);
        prop_assert!(decisions.iter().all(|d| !d.reasons.is_empty()));

        // Never an in-progress backup, never the newest verified one.
        let protected = newest_verified(&records);
        for d in &decisions {
            if d.status == BackupStatus::InProgress || protected.contains(&d.id) {
                prop_assert!(d.keeps(), "{} {:?} removed: {}", d.id, d.status, d);
            }
            if !d.keeps() {
                prop_assert!(d.status.has_object(), "{} {:?} removed", d.id, d.status);
            }
        }

        // Pruning what was kept removes nothing more.
        let kept: BTreeSet<_> = decisions.iter().filter(|d| d.keeps()).map(|d| d.id.clone()).collect();
        let survivors: Vec<BackupRecord> =
            records.iter().filter(|r| kept.contains(&r.id)).cloned().collect();
        let again = apply(&policy, &survivors, now).unwrap();
        prop_assert_eq!(again.len(), survivors.len());
        for d in &again {
            prop_assert!(d.keeps(), "second prune removed {}: {}", d.id, d);
        }
    }

    #[test]
    fn labelled_backups_are_never_removed_and_other_decisions_do_not_change(
        (records, now) in arb_labelled_history(),
        policy in arb_policy(),
        keep_labels in arb_selectors(),
    ) {
        let plain = apply(&policy, &records, now).unwrap();
        let with = RetentionPolicy { keep_labels: keep_labels.clone(), ..policy.clone() };
        let labelled = apply(&with, &records, now).unwrap();
        prop_assert_eq!(plain.len(), labelled.len());
        for (p, l) in plain.iter().zip(&labelled) {
            prop_assert_eq!(&p.id, &l.id);
            let record = records.iter().find(|r| r.id == l.id).unwrap();
            let carries = keep_labels.iter().any(|s| s.matches(&record.labels));
            if carries && record.status.has_object() {
                // Never in the delete set, and the plan says why.
                prop_assert!(l.keeps(), "{} labelled {:?} removed: {}", l.id, record.labels, l);
                prop_assert!(l.reasons.iter().any(|r| matches!(r, Reason::Label(_))), "{}", l);
            } else {
                // Everything else is decided exactly as without the label rule.
                prop_assert_eq!(p, l);
            }
        }
        // Pruning the survivors with the same policy removes nothing more.
        let kept: BTreeSet<_> = labelled.iter().filter(|d| d.keeps()).map(|d| d.id.clone()).collect();
        let survivors: Vec<BackupRecord> =
            records.iter().filter(|r| kept.contains(&r.id)).cloned().collect();
        for d in apply(&with, &survivors, now).unwrap() {
            prop_assert!(d.keeps(), "second prune removed {}: {}", d.id, d);
        }
    }

    #[test]
    fn run_ids_never_keep_or_drop_a_backup(
        (records, now) in arb_history(),
        policy in arb_policy(),
        runs in prop::collection::vec(prop::option::of(0u8..3), 60),
    ) {
        // A whole-server run is a grouping only: whichever backups share a run, each is
        // decided exactly as it would be on its own.
        let plain = apply(&policy, &records, now).unwrap();
        let grouped: Vec<BackupRecord> = records
            .iter()
            .zip(runs.iter().cycle())
            .map(|(r, run)| BackupRecord {
                run_id: run.map(|n| format!("20261124T020000000Z-0000000{n}")),
                ..r.clone()
            })
            .collect();
        let decided = apply(&policy, &grouped, now).unwrap();
        prop_assert_eq!(plain, decided);
    }

    #[test]
    fn the_newest_candidate_is_always_kept(
        (records, now) in arb_history(),
        policy in arb_policy(),
    ) {
        // A non-empty policy never empties a database of its newest good backup.
        let decisions = apply(&policy, &records, now).unwrap();
        let mut newest: BTreeMap<&str, &BackupRecord> = BTreeMap::new();
        for r in records.iter().filter(|r| {
            r.kind != BackupKind::PreRestore
                && matches!(r.status, BackupStatus::Completed | BackupStatus::Verified)
        }) {
            let e = newest.entry(&r.database).or_insert(r);
            if (r.created_at, &r.id) > (e.created_at, &e.id) {
                *e = r;
            }
        }
        for r in newest.values() {
            let d = decisions.iter().find(|d| d.id == r.id).unwrap();
            prop_assert!(d.keeps(), "newest candidate {} removed: {}", r.id, d);
        }
    }

    #[test]
    fn per_kind_windows_only_add_and_never_remove_the_newest_verified(
        (records, now) in arb_history(),
        policy in arb_policy(),
        kinds in arb_kind_spans(),
    ) {
        let plain = RetentionPolicy { keep_within_kind: BTreeMap::new(), ..policy.clone() };
        let with = RetentionPolicy { keep_within_kind: kinds.clone(), ..policy };
        let before = apply(&plain, &records, now).unwrap();
        let after = apply(&with, &records, now).unwrap();
        let protected = newest_verified(&records);
        prop_assert_eq!(before.len(), after.len());
        for (b, a) in before.iter().zip(&after) {
            prop_assert_eq!(&b.id, &a.id);
            if b.keeps() {
                prop_assert!(a.keeps(), "{} kept without per-kind rules, removed with: {}", a.id, a);
            }
            if protected.contains(&a.id) {
                prop_assert!(a.keeps(), "newest verified {} removed: {}", a.id, a);
            }
            let record = records.iter().find(|r| r.id == a.id).unwrap();
            let in_window = kinds.get(&record.kind).is_some_and(|s| {
                record.created_at > now - s.as_delta()
                    && record.kind != BackupKind::PreRestore
                    && matches!(record.status, BackupStatus::Completed | BackupStatus::Verified)
            });
            prop_assert_eq!(
                in_window,
                a.reasons.iter().any(|r| matches!(r, Reason::KindWithin { .. })),
                "{}", a
            );
            if in_window {
                prop_assert!(a.keeps(), "{}", a);
            }
        }
    }

    #[test]
    fn the_expiry_is_the_first_time_the_policy_no_longer_keeps_a_backup(
        (records, now) in arb_history(),
        policy in arb_policy(),
    ) {
        // "If nothing else changes": no new backup, and none dated after `now`.
        let newest = records.iter().map(|r| r.created_at).max();
        let now = newest.map_or(now, |n| now.max(n + TimeDelta::minutes(1)));
        let decided = |t| -> BTreeMap<BackupId, bool> {
            apply(&policy, &records, t).unwrap().into_iter().map(|d| (d.id.clone(), d.keeps())).collect()
        };
        let far = decided(now + TimeDelta::days(200 * 366));
        for d in apply(&policy, &records, now).unwrap() {
            let e = d.expiry();
            match (d.keeps(), e.expires_at) {
                (true, Some(t)) => {
                    prop_assert!(t > now, "{}: {:?}", d, e);
                    prop_assert!(decided(t - TimeDelta::seconds(1))[&d.id], "{}: {:?}", d, e);
                    prop_assert!(!decided(t)[&d.id], "{} still kept at its expiry: {:?}", d, e);
                    prop_assert!(e.expiry.starts_with("kept until"), "{:?}", e);
                }
                (true, None) => {
                    prop_assert!(far[&d.id], "{} said to be kept but removed later: {:?}", d, e);
                    prop_assert!(e.expiry.starts_with("kept while"), "{:?}", e);
                }
                (false, at) => {
                    prop_assert!(at.is_none_or(|t| t <= now), "{:?}", e);
                    prop_assert!(!far[&d.id], "{:?}", e);
                    prop_assert!(e.expiry.starts_with("due for removal"), "{:?}", e);
                }
            }
        }
    }
}
