//! Settings of runs: when one still in progress is taken for abandoned, when a database counts
//! as unhealthy, and who the audit trail names.

use super::{given_owned, ConfigError, Setting};
use crate::ops::health::{HealthPolicy, DEFAULT_MAX_AGE};
use crate::ops::reaper::DEFAULT_ABANDON_AFTER;
use crate::retention::Span;

const ABANDON_AFTER: Setting = Setting {
    env: "PGKEEP_ABANDON_AFTER",
    flag: "--abandon-after",
};
const MAX_AGE: Setting = Setting {
    env: "PGKEEP_MAX_AGE",
    flag: "--max-age",
};

/// When an in-progress run is abandoned, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct AbandonSettings {
    /// How old an unfinished upload that no run owns must be before prune sweeps it [default:
    /// 20m]. Runs in progress are judged by their heartbeat, never by age.
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            env = "PGKEEP_ABANDON_AFTER",
            global = true,
            value_name = "DURATION"
        )
    )]
    pub abandon_after: Option<String>,
}

impl AbandonSettings {
    /// From `PGKEEP_ABANDON_AFTER`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        AbandonSettings {
            abandon_after: get(ABANDON_AFTER.env),
        }
    }

    /// The span, [`DEFAULT_ABANDON_AFTER`] unless set.
    pub fn resolve(&self) -> Result<Span, ConfigError> {
        Ok(ABANDON_AFTER
            .span(self.abandon_after.as_deref())?
            .unwrap_or(DEFAULT_ABANDON_AFTER))
    }
}

/// What "healthy" means, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct HealthSettings {
    /// Unhealthy when the newest good backup is older than this (e.g. 25h, 2d, 1w) [default: 25h].
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "PGKEEP_MAX_AGE", value_name = "DURATION")
    )]
    pub max_age: Option<String>,
}

impl HealthSettings {
    /// From `PGKEEP_MAX_AGE`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        HealthSettings {
            max_age: get(MAX_AGE.env),
        }
    }

    /// The policy, [`DEFAULT_MAX_AGE`] unless set.
    pub fn resolve(&self) -> Result<HealthPolicy, ConfigError> {
        Ok(HealthPolicy {
            max_age: MAX_AGE
                .span(self.max_age.as_deref())?
                .unwrap_or(DEFAULT_MAX_AGE),
        })
    }
}

/// Who the audit trail names for what a person does with the `pgkeep` command (the functions
/// name the API caller, or `schedule`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct ActorSettings {
    /// Who is acting, for the audit trail [default: $USER].
    #[cfg_attr(feature = "clap", arg(long, env = "PGKEEP_ACTOR"))]
    pub actor: Option<String>,
}

impl ActorSettings {
    /// The actor: as given, else the login name (`USER`, then `LOGNAME`, through `get`), else
    /// `unknown`. The one default of every command that writes the audit trail.
    pub fn resolve(&self, get: impl Fn(&str) -> Option<String>) -> String {
        given_owned(&self.actor)
            .or_else(|| get("USER").filter(|v| !v.trim().is_empty()))
            .or_else(|| get("LOGNAME").filter(|v| !v.trim().is_empty()))
            .unwrap_or_else(|| "unknown".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        assert_eq!(
            AbandonSettings::from_lookup(|_| Some(String::new()))
                .resolve()
                .unwrap(),
            DEFAULT_ABANDON_AFTER
        );
        assert_eq!(
            HealthSettings::default().resolve().unwrap().max_age,
            DEFAULT_MAX_AGE
        );
        let err = HealthSettings::from_lookup(|_| Some("soon".into()))
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(err.contains("PGKEEP_MAX_AGE"), "{err}");
    }

    #[test]
    fn the_actor_falls_back_to_the_login_name_then_unknown() {
        let given = ActorSettings {
            actor: Some("ops".into()),
        };
        assert_eq!(given.resolve(|_| Some("dora".into())), "ops");
        let unset = ActorSettings::default();
        assert_eq!(
            unset.resolve(|k| (k == "LOGNAME").then(|| "lee".into())),
            "lee"
        );
        assert_eq!(unset.resolve(|_| None), "unknown");
    }
}
