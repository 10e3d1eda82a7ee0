//! Settings of the Lambda functions, read from the environment once at cold start and
//! validated there, so a misconfigured function fails its first invocation loudly instead of
//! half-working.
//!
//! | variable | meaning |
//! |---|---|
//! | `PGKEEP_REPO`, `PGKEEP_CATALOG`, `PGKEEP_KEY`, `PGKEEP_AWS_ENDPOINT`, `PGKEEP_S3_*` | backends, see [`BackendConfig::from_vars`] |
//! | `PGKEEP_DATABASES` | JSON: database name → `{"secret_arn": "…"}` or `{"url": "postgresql://…"}` |
//! | `PGKEEP_MAX_AGE` | newest good backup may be this old before health turns red (`25h`) |
//! | `PGKEEP_ADMIN_GROUP` | JWT group allowed to use the status API (`admin`) |
//! | `PGKEEP_DUMP_FUNCTION` | name of the dump function the status API invokes |

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::backends::{BackendConfig, ConfigError};
use crate::ops::health::{HealthPolicy, DEFAULT_MAX_AGE};
use crate::retention::Span;

/// How a function reaches one database.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DatabaseSource {
    /// A Secrets Manager secret in the standard RDS JSON form.
    SecretArn(String),
    /// A connection URL (its password, if any, stays in the environment).
    Url(String),
}

/// Everything a function needs besides the event.
#[derive(Debug, Clone)]
pub struct LambdaSettings {
    /// Which backends.
    pub backends: BackendConfig,
    /// The databases this deployment backs up.
    pub databases: BTreeMap<String, DatabaseSource>,
    /// What "healthy" means.
    pub health: HealthPolicy,
    /// JWT group of administrators.
    pub admin_group: String,
    /// The dump function's name, for asynchronous invocations.
    pub dump_function: Option<String>,
}

fn required(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<String, ConfigError> {
    get(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ConfigError::Missing(format!("{name} is not set")))
}

impl LambdaSettings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let backends = BackendConfig::from_vars(&get)?;
        let databases_json = required(&get, "PGKEEP_DATABASES")?;
        let databases: BTreeMap<String, DatabaseSource> = serde_json::from_str(&databases_json)
            .map_err(|e| {
                ConfigError::Missing(format!(
                    "PGKEEP_DATABASES is not a JSON object of database name to {{\"secret_arn\": ...}} or {{\"url\": ...}}: {e}"
                ))
            })?;
        if databases.is_empty() {
            return Err(ConfigError::Missing(
                "PGKEEP_DATABASES names no database".into(),
            ));
        }
        let max_age = match get("PGKEEP_MAX_AGE") {
            Some(text) => text
                .parse::<Span>()
                .map_err(|e| ConfigError::Missing(format!("PGKEEP_MAX_AGE: {e}")))?,
            None => DEFAULT_MAX_AGE,
        };
        Ok(LambdaSettings {
            backends,
            databases,
            health: HealthPolicy { max_age },
            admin_group: get("PGKEEP_ADMIN_GROUP").unwrap_or_else(|| "admin".into()),
            dump_function: get("PGKEEP_DUMP_FUNCTION"),
        })
    }

    /// The configured databases' names.
    pub fn database_names(&self) -> Vec<String> {
        self.databases.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn settings_read_and_validate() {
        let s = LambdaSettings::from_lookup(lookup(&[
            ("PGKEEP_REPO", "/var/repo"),
            ("PGKEEP_KEY", "/etc/pgkeep.key"),
            ("PGKEEP_DATABASES", r#"{"shop": {"secret_arn": "arn:aws:secretsmanager:eu-west-1:1:secret:shop"}, "crm": {"url": "postgresql://u@h/crm"}}"#),
            ("PGKEEP_MAX_AGE", "26h"),
        ]))
        .unwrap();
        assert_eq!(s.database_names(), vec!["crm", "shop"]);
        assert_eq!(s.health.max_age, Span::hours(26));
        assert_eq!(s.admin_group, "admin");
        assert!(matches!(s.databases["shop"], DatabaseSource::SecretArn(_)));
    }

    #[test]
    fn missing_or_malformed_settings_fail_with_the_variable_named() {
        for (pairs, needle) in [
            (
                vec![("PGKEEP_KEY", "/k"), ("PGKEEP_DATABASES", "{}")],
                "PGKEEP_REPO",
            ),
            (
                vec![("PGKEEP_REPO", "/r"), ("PGKEEP_KEY", "/k")],
                "PGKEEP_DATABASES",
            ),
            (
                vec![
                    ("PGKEEP_REPO", "/r"),
                    ("PGKEEP_KEY", "/k"),
                    ("PGKEEP_DATABASES", "[1]"),
                ],
                "PGKEEP_DATABASES",
            ),
            (
                vec![
                    ("PGKEEP_REPO", "/r"),
                    ("PGKEEP_KEY", "/k"),
                    ("PGKEEP_DATABASES", "{}"),
                ],
                "no database",
            ),
            (
                vec![
                    ("PGKEEP_REPO", "/r"),
                    ("PGKEEP_KEY", "/k"),
                    ("PGKEEP_DATABASES", r#"{"a":{"url":"x"}}"#),
                    ("PGKEEP_MAX_AGE", "soon"),
                ],
                "PGKEEP_MAX_AGE",
            ),
        ] {
            let err = LambdaSettings::from_lookup(lookup(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
