//! Where a database's work runs: in the function that received it (`lambda`), in an ECS
//! Fargate task started with the same job (`fargate`: no 15-minute limit), or, for `auto`,
//! in Fargate once the database's last run of that work took longer than
//! `PGKEEP_FARGATE_AUTO_AFTER` (or its last backup is larger than
//! `PGKEEP_FARGATE_AUTO_SIZE_MIB`). The rule is [`RunnerSettings::choose`]; the catalog
//! lookups that feed it are the jobs'.
//!
//! | variable | meaning |
//! |---|---|
//! | `PGKEEP_RUNNERS` | JSON: database name → `"lambda"`, `"fargate"` or `"auto"` (unnamed: lambda) |
//! | `PGKEEP_FARGATE_AUTO_AFTER` | `auto` goes to Fargate when the last run took longer (`10m`) |
//! | `PGKEEP_FARGATE_AUTO_SIZE_MIB` | `auto` also goes to Fargate when the last backup is larger (unset: size does not count) |
//! | `PGKEEP_FARGATE_CLUSTER` | the ECS cluster (ARN) the tasks run in |
//! | `PGKEEP_FARGATE_TASK_DEFINITIONS` | JSON: database name → task definition ARN (CPU and memory per database) |
//! | `PGKEEP_FARGATE_SUBNETS`, `PGKEEP_FARGATE_SECURITY_GROUPS` | comma-separated; unset subnets: no network configuration is sent |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::retention::Span;

/// Where a database's work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runner {
    /// In the function that received the event.
    #[default]
    Lambda,
    /// Always in a Fargate task.
    Fargate,
    /// In Fargate once the last run was too long or the last backup too large.
    Auto,
}

/// What a job does, for choosing its runner by the right history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// A backup: judged by the last successful backup.
    Backup,
    /// A verification: judged by the last verification.
    Verify,
    /// A restore: judged by the last successful backup.
    Restore,
}

/// What the catalog says about the last run of the same work on the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LastRun {
    /// How long it took.
    pub duration_ms: Option<u64>,
    /// The size of the backup concerned (stored bytes).
    pub size_bytes: Option<u64>,
}

/// Where one job goes, and why (recorded with a hand-over).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Run it here.
    Here,
    /// Start a Fargate task with it.
    Fargate {
        /// Why, for the record and the log.
        reason: String,
    },
}

/// How tasks are started: the cluster, each database's task definition and the network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FargateSettings {
    /// The cluster's ARN.
    pub cluster: Option<String>,
    /// Database name → task definition ARN.
    pub task_definitions: BTreeMap<String, String>,
    /// Subnets of the task's network interface; empty: no network configuration.
    pub subnets: Vec<String>,
    /// Its security groups.
    pub security_groups: Vec<String>,
}

/// Each database's runner and the `auto` thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerSettings {
    /// Database name → runner; unnamed databases run in Lambda.
    pub runners: BTreeMap<String, Runner>,
    /// `auto`: Fargate when the last run took longer than this.
    pub auto_after: Span,
    /// `auto`: Fargate when the last backup is larger than this many MiB.
    pub auto_size_mib: Option<u64>,
    /// Where the tasks run.
    pub fargate: FargateSettings,
}

/// The default of `PGKEEP_FARGATE_AUTO_AFTER`: well inside the 15-minute limit, so a
/// database that grows is moved before its dump starts failing.
pub const DEFAULT_AUTO_AFTER: Span = Span::minutes(10);

impl Default for RunnerSettings {
    fn default() -> Self {
        RunnerSettings {
            runners: BTreeMap::new(),
            auto_after: DEFAULT_AUTO_AFTER,
            auto_size_mib: None,
            fargate: FargateSettings::default(),
        }
    }
}

fn invalid(name: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid(format!("{name}: {why}"))
}

fn list(value: Option<String>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl RunnerSettings {
    /// Reads the `PGKEEP_RUNNERS` and `PGKEEP_FARGATE_*` variables through `get`; every
    /// database named must be one `databases` holds.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        databases: &[String],
    ) -> Result<Self, ConfigError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let map = |name: &str| -> Result<Option<BTreeMap<String, serde_json::Value>>, ConfigError> {
            get(name)
                .map(|json| {
                    serde_json::from_str(&json).map_err(|e| {
                        invalid(
                            name,
                            format!("not a JSON object keyed by database name: {e}"),
                        )
                    })
                })
                .transpose()
        };
        let known = |name: &str, database: &str| {
            if databases.iter().any(|d| d == database) {
                Ok(())
            } else {
                Err(invalid(
                    name,
                    format!("names database {database:?}, which PGKEEP_DATABASES does not"),
                ))
            }
        };
        let mut runners = BTreeMap::new();
        for (database, value) in map("PGKEEP_RUNNERS")?.unwrap_or_default() {
            known("PGKEEP_RUNNERS", &database)?;
            let runner: Runner = serde_json::from_value(value.clone()).map_err(|_| {
                invalid(
                    "PGKEEP_RUNNERS",
                    format!("{database}: {value} is not \"lambda\", \"fargate\" or \"auto\""),
                )
            })?;
            runners.insert(database, runner);
        }
        let mut task_definitions = BTreeMap::new();
        for (database, value) in map("PGKEEP_FARGATE_TASK_DEFINITIONS")?.unwrap_or_default() {
            known("PGKEEP_FARGATE_TASK_DEFINITIONS", &database)?;
            let arn = value.as_str().filter(|s| !s.is_empty()).ok_or_else(|| {
                invalid(
                    "PGKEEP_FARGATE_TASK_DEFINITIONS",
                    format!("{database}: {value} is not a task definition ARN"),
                )
            })?;
            task_definitions.insert(database, arn.to_owned());
        }
        let auto_after = get("PGKEEP_FARGATE_AUTO_AFTER")
            .map(|v| {
                v.trim()
                    .parse::<Span>()
                    .map_err(|e| invalid("PGKEEP_FARGATE_AUTO_AFTER", e))
            })
            .transpose()?
            .unwrap_or(DEFAULT_AUTO_AFTER);
        let auto_size_mib = get("PGKEEP_FARGATE_AUTO_SIZE_MIB")
            .map(|v| {
                v.trim().parse::<u64>().map_err(|_| {
                    invalid(
                        "PGKEEP_FARGATE_AUTO_SIZE_MIB",
                        format!("{v:?} is not a whole number of MiB"),
                    )
                })
            })
            .transpose()?;
        Ok(RunnerSettings {
            runners,
            auto_after,
            auto_size_mib,
            fargate: FargateSettings {
                cluster: get("PGKEEP_FARGATE_CLUSTER"),
                task_definitions,
                subnets: list(get("PGKEEP_FARGATE_SUBNETS")),
                security_groups: list(get("PGKEEP_FARGATE_SECURITY_GROUPS")),
            },
        })
    }

    /// The runner of `database`.
    pub fn runner(&self, database: &str) -> Runner {
        self.runners.get(database).copied().unwrap_or_default()
    }

    /// Whether any database may be handed to Fargate (so the functions need an ECS client).
    pub fn any_fargate(&self) -> bool {
        self.runners.values().any(|r| *r != Runner::Lambda)
    }

    /// Refuses a database that may go to Fargate without a cluster or a task definition, so
    /// a function that would hand work over fails at its start rather than at the first
    /// large database.
    pub fn check_startable(&self) -> Result<(), ConfigError> {
        for (database, runner) in &self.runners {
            if *runner == Runner::Lambda {
                continue;
            }
            if self.fargate.cluster.is_none() {
                return Err(ConfigError::Missing(format!(
                    "PGKEEP_RUNNERS runs {database:?} on {}, but PGKEEP_FARGATE_CLUSTER is not set",
                    runner.as_str()
                )));
            }
            if !self.fargate.task_definitions.contains_key(database) {
                return Err(ConfigError::Missing(format!(
                    "PGKEEP_RUNNERS runs {database:?} on {}, but PGKEEP_FARGATE_TASK_DEFINITIONS names no task definition for it",
                    runner.as_str()
                )));
            }
        }
        Ok(())
    }

    /// Where a job on `database` runs, given the last run of the same work there (`None`:
    /// never ran, so `auto` starts in Lambda).
    pub fn choose(&self, database: &str, work: Work, last: Option<&LastRun>) -> Placement {
        match self.runner(database) {
            Runner::Lambda => Placement::Here,
            Runner::Fargate => Placement::Fargate {
                reason: format!("{database} runs on fargate"),
            },
            Runner::Auto => {
                let Some(last) = last else {
                    return Placement::Here;
                };
                let what = match work {
                    Work::Backup | Work::Restore => "backup",
                    Work::Verify => "verification",
                };
                let limit_ms = u64::try_from(self.auto_after.seconds()).unwrap_or(0) * 1000;
                if let Some(ms) = last.duration_ms.filter(|ms| *ms > limit_ms) {
                    return Placement::Fargate {
                        reason: format!(
                            "auto: the last {what} of {database} took {}s, longer than {}",
                            ms / 1000,
                            self.auto_after
                        ),
                    };
                }
                if let (Some(size), Some(mib)) = (last.size_bytes, self.auto_size_mib) {
                    if size > mib.saturating_mul(1024 * 1024) {
                        return Placement::Fargate {
                            reason: format!(
                                "auto: the last backup of {database} is {} MiB, larger than {mib} MiB",
                                size / (1024 * 1024)
                            ),
                        };
                    }
                }
                Placement::Here
            }
        }
    }
}

impl Runner {
    /// Its name in `PGKEEP_RUNNERS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Runner::Lambda => "lambda",
            Runner::Fargate => "fargate",
            Runner::Auto => "auto",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<RunnerSettings, ConfigError> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RunnerSettings::from_lookup(
            move |k| map.get(k).cloned(),
            &["shop".into(), "big".into(), "grow".into()],
        )
    }

    fn last(minutes: u64, mib: u64) -> LastRun {
        LastRun {
            duration_ms: Some(minutes * 60_000),
            size_bytes: Some(mib * 1024 * 1024),
        }
    }

    #[test]
    fn each_database_gets_its_runner_and_auto_follows_the_last_run() {
        let s = settings(&[
            ("PGKEEP_RUNNERS", r#"{"big": "fargate", "grow": "auto"}"#),
            ("PGKEEP_FARGATE_AUTO_SIZE_MIB", "2048"),
            (
                "PGKEEP_FARGATE_CLUSTER",
                "arn:aws:ecs:us-east-1:1:cluster/c",
            ),
            (
                "PGKEEP_FARGATE_TASK_DEFINITIONS",
                r#"{"big": "arn:td/big:1", "grow": "arn:td/grow:1"}"#,
            ),
            ("PGKEEP_FARGATE_SUBNETS", "subnet-a, subnet-b"),
        ])
        .unwrap();
        s.check_startable().unwrap();
        assert_eq!(s.fargate.subnets, ["subnet-a", "subnet-b"]);
        assert!(s.fargate.security_groups.is_empty());
        assert_eq!(s.auto_after, DEFAULT_AUTO_AFTER);

        // Unnamed and lambda databases stay, however long they took.
        assert_eq!(
            s.choose("shop", Work::Backup, Some(&last(14, 1))),
            Placement::Here
        );
        assert!(matches!(
            s.choose("big", Work::Backup, None),
            Placement::Fargate { .. }
        ));
        // auto: no history, short and small: here; 20 minutes, or 3 GiB: Fargate.
        assert_eq!(s.choose("grow", Work::Backup, None), Placement::Here);
        assert_eq!(
            s.choose("grow", Work::Backup, Some(&last(9, 100))),
            Placement::Here
        );
        match s.choose("grow", Work::Backup, Some(&last(20, 100))) {
            Placement::Fargate { reason } => {
                assert!(
                    reason.contains("1200s") && reason.contains("10m"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        match s.choose("grow", Work::Verify, Some(&last(1, 3 * 1024))) {
            Placement::Fargate { reason } => assert!(reason.contains("3072 MiB"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // Exactly at the limit is not longer.
        assert_eq!(
            s.choose("grow", Work::Restore, Some(&last(10, 2048))),
            Placement::Here
        );
    }

    #[test]
    fn bad_runner_settings_name_the_variable_and_the_fix() {
        let err = settings(&[("PGKEEP_RUNNERS", r#"{"shop": "ec2"}"#)]).unwrap_err();
        assert!(
            err.to_string().contains("PGKEEP_RUNNERS") && err.to_string().contains("\"auto\""),
            "{err}"
        );
        let err = settings(&[("PGKEEP_RUNNERS", r#"{"nope": "fargate"}"#)]).unwrap_err();
        assert!(err.to_string().contains("PGKEEP_DATABASES"), "{err}");
        let err = settings(&[("PGKEEP_FARGATE_AUTO_AFTER", "soon")]).unwrap_err();
        assert!(
            err.to_string().contains("PGKEEP_FARGATE_AUTO_AFTER"),
            "{err}"
        );
        let s = settings(&[("PGKEEP_RUNNERS", r#"{"big": "auto"}"#)]).unwrap();
        let err = s.check_startable().unwrap_err();
        assert!(err.to_string().contains("PGKEEP_FARGATE_CLUSTER"), "{err}");
        let s = settings(&[
            ("PGKEEP_RUNNERS", r#"{"big": "fargate"}"#),
            ("PGKEEP_FARGATE_CLUSTER", "c"),
        ])
        .unwrap();
        let err = s.check_startable().unwrap_err();
        assert!(
            err.to_string().contains("PGKEEP_FARGATE_TASK_DEFINITIONS"),
            "{err}"
        );
        assert!(RunnerSettings::default().check_startable().is_ok());
    }
}
