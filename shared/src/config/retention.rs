//! The retention policy of prune: the same settings for `pgkeep prune` and the prune function.

use super::{given, ConfigError, Setting};
use crate::labels::{parse_selector_list, LabelSelector};
use crate::retention::{parse_kind_spans, RetentionPolicy, DEFAULT_PRE_RESTORE_KEEP_WITHIN};

const KEEP_LAST: Setting = Setting {
    env: "PGKEEP_KEEP_LAST",
    flag: "--keep-last",
};
const KEEP_HOURLY: Setting = Setting {
    env: "PGKEEP_KEEP_HOURLY",
    flag: "--keep-hourly",
};
const KEEP_DAILY: Setting = Setting {
    env: "PGKEEP_KEEP_DAILY",
    flag: "--keep-daily",
};
const KEEP_WEEKLY: Setting = Setting {
    env: "PGKEEP_KEEP_WEEKLY",
    flag: "--keep-weekly",
};
const KEEP_MONTHLY: Setting = Setting {
    env: "PGKEEP_KEEP_MONTHLY",
    flag: "--keep-monthly",
};
const KEEP_YEARLY: Setting = Setting {
    env: "PGKEEP_KEEP_YEARLY",
    flag: "--keep-yearly",
};
const KEEP_WITHIN: Setting = Setting {
    env: "PGKEEP_KEEP_WITHIN",
    flag: "--keep-within",
};
const KEEP_WITHIN_KIND: Setting = Setting {
    env: "PGKEEP_KEEP_WITHIN_KIND",
    flag: "--keep-within-kind",
};
const PRE_RESTORE_KEEP_WITHIN: Setting = Setting {
    env: "PGKEEP_PRE_RESTORE_KEEP_WITHIN",
    flag: "--pre-restore-keep-within",
};
const KEEP_LABELS: Setting = Setting {
    env: "PGKEEP_KEEP_LABELS",
    flag: "--keep-label",
};

/// Which backups prune keeps, as given (restic's forget options).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct RetentionSettings {
    /// Keep the N newest backups.
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "PGKEEP_KEEP_LAST", value_name = "N")
    )]
    pub keep_last: Option<String>,
    /// Keep the newest backup of each of the N most recent hours that have one.
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "PGKEEP_KEEP_HOURLY", value_name = "N")
    )]
    pub keep_hourly: Option<String>,
    /// Keep the newest backup of each of the N most recent days (UTC) that have one.
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "PGKEEP_KEEP_DAILY", value_name = "N")
    )]
    pub keep_daily: Option<String>,
    /// Keep the newest backup of each of the N most recent ISO weeks that have one.
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "PGKEEP_KEEP_WEEKLY", value_name = "N")
    )]
    pub keep_weekly: Option<String>,
    /// Keep the newest backup of each of the N most recent months that have one.
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "PGKEEP_KEEP_MONTHLY", value_name = "N")
    )]
    pub keep_monthly: Option<String>,
    /// Keep the newest backup of each of the N most recent years that have one.
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "PGKEEP_KEEP_YEARLY", value_name = "N")
    )]
    pub keep_yearly: Option<String>,
    /// Keep every backup taken within this span before the newest one (e.g. 30d, 2w).
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "PGKEEP_KEEP_WITHIN", value_name = "DURATION")
    )]
    pub keep_within: Option<String>,
    /// Also keep every backup of a kind taken within its span before now:
    /// KIND=DURATION,... e.g. scheduled=7d,manual=30d,pre_migration=365d (or a JSON object).
    /// Adds to the other rules; it is not a policy by itself.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            env = "PGKEEP_KEEP_WITHIN_KIND",
            value_name = "KIND=DURATION,..."
        )
    )]
    pub keep_within_kind: Option<String>,
    /// Keep pre-restore safety copies this long [default: 30d].
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "PGKEEP_PRE_RESTORE_KEEP_WITHIN", value_name = "DURATION")
    )]
    pub pre_restore_keep_within: Option<String>,
    /// Also keep every stored backup carrying this label: KEY (any value) or KEY=VALUE
    /// (repeatable) [env: PGKEEP_KEEP_LABELS, comma-separated or a JSON array]. Adds to the
    /// other rules; it is not a policy by itself.
    // Not clap's `env`: the variable holds a list (comma-separated or JSON), the flag one
    // selector per use (a value may hold a comma). `resolve` reads the variable.
    #[cfg_attr(feature = "clap", arg(long = "keep-label", value_name = "KEY[=VALUE]"))]
    pub keep_labels: Vec<LabelSelector>,
}

/// A count: a whole number, surrounding blanks ignored; unset or empty is 0 (rule unused).
fn count(setting: Setting, value: Option<&str>) -> Result<u32, ConfigError> {
    given(value).map_or(Ok(0), |v| {
        v.parse()
            .map_err(|_| setting.invalid(format!("{v:?} is not a whole number")))
    })
}

impl RetentionSettings {
    /// The variables that [`RetentionSettings::resolve`] reads itself instead of a field.
    pub const LOOKED_UP: &'static [&'static str] = &[KEEP_LABELS.env];

    /// `PGKEEP_KEEP_*` and `PGKEEP_PRE_RESTORE_KEEP_WITHIN` (`PGKEEP_KEEP_LABELS` is read by
    /// [`RetentionSettings::resolve`]).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        RetentionSettings {
            keep_last: get(KEEP_LAST.env),
            keep_hourly: get(KEEP_HOURLY.env),
            keep_daily: get(KEEP_DAILY.env),
            keep_weekly: get(KEEP_WEEKLY.env),
            keep_monthly: get(KEEP_MONTHLY.env),
            keep_yearly: get(KEEP_YEARLY.env),
            keep_within: get(KEEP_WITHIN.env),
            keep_within_kind: get(KEEP_WITHIN_KIND.env),
            pre_restore_keep_within: get(PRE_RESTORE_KEEP_WITHIN.env),
            keep_labels: Vec::new(),
        }
    }

    /// The policy (not checked for emptiness: prune does that, where an empty policy is
    /// refused). Labels given as flags win; otherwise `PGKEEP_KEEP_LABELS` through `get`.
    pub fn resolve(
        &self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<RetentionPolicy, ConfigError> {
        let keep_labels = if self.keep_labels.is_empty() {
            match get(KEEP_LABELS.env) {
                Some(text) => parse_selector_list(&text).map_err(|e| KEEP_LABELS.invalid(e))?,
                None => Vec::new(),
            }
        } else {
            self.keep_labels.clone()
        };
        Ok(RetentionPolicy {
            keep_last: count(KEEP_LAST, self.keep_last.as_deref())?,
            keep_hourly: count(KEEP_HOURLY, self.keep_hourly.as_deref())?,
            keep_daily: count(KEEP_DAILY, self.keep_daily.as_deref())?,
            keep_weekly: count(KEEP_WEEKLY, self.keep_weekly.as_deref())?,
            keep_monthly: count(KEEP_MONTHLY, self.keep_monthly.as_deref())?,
            keep_yearly: count(KEEP_YEARLY, self.keep_yearly.as_deref())?,
            keep_within: KEEP_WITHIN.span(self.keep_within.as_deref())?,
            keep_within_kind: given(self.keep_within_kind.as_deref())
                .map(|v| parse_kind_spans(v).map_err(|e| KEEP_WITHIN_KIND.invalid(e)))
                .transpose()?
                .unwrap_or_default(),
            pre_restore_keep_within: PRE_RESTORE_KEEP_WITHIN
                .span(self.pre_restore_keep_within.as_deref())?
                .unwrap_or(DEFAULT_PRE_RESTORE_KEEP_WITHIN),
            keep_labels,
            ..RetentionPolicy::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::Span;

    #[test]
    fn counts_spans_and_labels_are_read_once() {
        let vars = [
            ("PGKEEP_KEEP_DAILY", " 7 "),
            ("PGKEEP_KEEP_LAST", ""),
            ("PGKEEP_PRE_RESTORE_KEEP_WITHIN", "3d"),
            ("PGKEEP_KEEP_LABELS", "pinned, release=v2"),
            (
                "PGKEEP_KEEP_WITHIN_KIND",
                "scheduled=7d, pre_migration=365d",
            ),
        ];
        let get = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let policy = RetentionSettings::from_lookup(get).resolve(get).unwrap();
        assert_eq!((policy.keep_daily, policy.keep_last), (7, 0));
        assert_eq!(policy.pre_restore_keep_within, Span::days(3));
        assert_eq!(policy.keep_labels.len(), 2);
        assert_eq!(
            policy.keep_within_kind.into_iter().collect::<Vec<_>>(),
            [
                (crate::model::BackupKind::Scheduled, Span::days(7)),
                (crate::model::BackupKind::PreMigration, Span::days(365)),
            ]
        );
        for (bad, says) in [
            ("manual=30", "a number without a unit"),
            ("daily=3d", "unknown BackupKind"),
            ("pre_restore=3d", "--pre-restore-keep-within"),
            ("manual", "KIND=DURATION"),
            ("manual=1d,manual=2d", "twice"),
        ] {
            let err = RetentionSettings {
                keep_within_kind: Some(bad.into()),
                ..RetentionSettings::default()
            }
            .resolve(|_| None)
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("PGKEEP_KEEP_WITHIN_KIND (--keep-within-kind)") && err.contains(says),
                "{bad}: {err}"
            );
        }
        let unset = RetentionSettings::default().resolve(|_| None).unwrap();
        assert_eq!(
            unset.pre_restore_keep_within,
            DEFAULT_PRE_RESTORE_KEEP_WITHIN
        );
        let err = RetentionSettings {
            keep_hourly: Some("-1".into()),
            ..RetentionSettings::default()
        }
        .resolve(|_| None)
        .unwrap_err()
        .to_string();
        assert!(err.contains("PGKEEP_KEEP_HOURLY (--keep-hourly)"), "{err}");
    }
}
