//! Settings, read once and validated there: by the `pgkeep` command from its flags and the
//! environment, and by the Lambda functions from the environment at cold start (so a
//! misconfigured function fails its first invocation loudly instead of half-working).
//!
//! Each concern has one settings type, shared by both edges: [`BackendSettings`] (repository,
//! catalog, key, AWS endpoint, S3 options), [`DatabaseSettings`] and [`DatabaseAuthSettings`],
//! [`RetentionSettings`], [`AbandonSettings`], [`HealthSettings`], [`ActorSettings`]. Each holds
//! the raw text of its settings (derived as clap arguments behind the `clap` feature, with the
//! variable as `env`), is built by the functions with `from_lookup`, and turns into the
//! library's values in one `resolve` step that both edges go through: every default, exclusion
//! and check is written there once. Empty values count as unset on both edges.
//!
//! | variable | meaning |
//! |---|---|
//! | `PGKEEP_REPO`, `PGKEEP_CATALOG`, `PGKEEP_KEY`, `PGKEEP_AWS_ENDPOINT`, `PGKEEP_S3_*` | backends, see [`BackendSettings`] |
//! | `PGKEEP_OLD_KEY_FILES` | retired key files, comma-separated, only for reading older backups (the key ring) |
//! | `PGKEEP_DATABASES` | JSON: database name → `{"secret_arn": "…"}` or `{"url": "postgresql://…"}` |
//! | `PGKEEP_SELECTIONS` | JSON: database name → what its backups hold, `{"exclude_schemas": ["audit"], "exclude_table_data": ["public.sessions"]}` (fields `include_schemas`, `exclude_schemas`, `include_tables`, `exclude_tables`, `exclude_table_data`: pg_dump patterns); unset or unnamed: everything |
//! | `PGKEEP_DATABASE_IAM_AUTH` | `true`: reach every database with RDS IAM tokens over TLS; each must be a `url` with user, host, port and database, no password (default `false`) |
//! | `PGKEEP_DATABASE_SSL_ROOT_CERT` | with IAM authentication: CA bundle (PEM) to verify the servers against (`verify-full`); unset: TLS without verification (`require`) |
//! | `PGKEEP_MAX_AGE` | newest good backup may be this old before health turns red (`25h`) |
//! | `PGKEEP_ADMIN_GROUP` | JWT group allowed to use the status API (`admin`) |
//! | `PGKEEP_DUMP_FUNCTION` | name of the dump function the status API invokes |
//! | `PGKEEP_VERIFY_FUNCTION` | name of the verify function: dump starts it after each backup, the status API for verifications and restores (unset: nothing started) |
//! | `PGKEEP_SCRATCH_SECRET_ARN` | verify: RDS-style secret (with `host` and `dbname`) of the scratch server; unset: the backup's own database server |
//! | `PGKEEP_ALERT_TOPIC_ARN` | SNS topic alerts are published to (unset: alerts only in the log) |
//! | `PGKEEP_ALERT_WEBHOOK_URL` | Slack-compatible webhook alerts are also POSTed to (a credential: never logged) |
//! | `PGKEEP_KEEP_LAST`, `PGKEEP_KEEP_HOURLY`, `PGKEEP_KEEP_DAILY`, `PGKEEP_KEEP_WEEKLY`, `PGKEEP_KEEP_MONTHLY`, `PGKEEP_KEEP_YEARLY` | prune: retention counts, as the CLI's `--keep-*` |
//! | `PGKEEP_KEEP_WITHIN` | prune: keep everything within this span of the newest backup (`30d`) |
//! | `PGKEEP_KEEP_WITHIN_KIND` | prune (and the expiry shown by the status API): keep each kind this long after it was taken (`scheduled=7d,manual=30d,pre_migration=365d`), on top of the rules above |
//! | `PGKEEP_PRE_RESTORE_KEEP_WITHIN` | prune: keep `pre_restore` safety copies this long (`30d`) |
//! | `PGKEEP_KEEP_LABELS` | prune: keep every backup carrying one of these labels, `KEY` or `KEY=VALUE`, comma-separated or a JSON array of strings (as the CLI's `--keep-label`) |
//! | `PGKEEP_COMPRESSION` | dump (and `pgkeep backup` without `--compression`): compression and level of the backups it takes, `zstd` (level 3, the default), `zstd:1`…`zstd:9`, `gzip`, `gzip:1`…`gzip:9` |
//! | `PGKEEP_JOBS` | dump, verify (and `pgkeep backup`/`verify`/`restore` without `--jobs`): JSON object database → parallel dump streams (`{"shop": 4}`; default 1); an event's `jobs` wins |
//! | `PGKEEP_ABANDON_AFTER` | dump, prune: in-progress runs older than this are abandoned (`20m`) |
//! | `PGKEEP_RUNNERS`, `PGKEEP_FARGATE_*` | dump, verify: which databases' work goes to a Fargate task, see [`RunnerSettings`] |
//! | `PGKEEP_DOWNLOAD_URL_TTL` | status API: how long a `GET /backups/{id}/download` URL works (`15m`, at most `7d`) |
//!
//! Only the functions' crates, the `pgkeep` command and this module read the environment;
//! everything below takes resolved settings.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::alert::webhook::WebhookUrl;
use crate::backends::BackendConfig;
use crate::catalog::CatalogError;
use crate::keys::KeyError;
use crate::model::CompressionChoice;
use crate::ops::download::{DEFAULT_DOWNLOAD_TTL, MAX_DOWNLOAD_TTL};
use crate::ops::health::HealthPolicy;
use crate::postgres::auth::DatabaseAuth;
use crate::postgres::PgError;
use crate::retention::{RetentionPolicy, Span};
use crate::selection::Selection;

mod backend;
mod database;
mod retention;
mod runner;
mod runs;

pub use backend::{AwsOptions, BackendDefaults, BackendSettings, KeyPrecedence, S3Settings};
pub use database::{parse_flag, DatabaseAuthSettings, DatabaseChoice, DatabaseSettings};
pub use retention::RetentionSettings;
pub use runner::{FargateSettings, LastRun, Placement, Runner, RunnerSettings, Work};
pub use runs::{AbandonSettings, ActorSettings, HealthSettings};

/// Configuration that cannot work, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A URL with a scheme pgkeep does not know.
    #[error("{what} {url:?}: unsupported scheme; use {expected}")]
    Scheme {
        /// Which setting.
        what: &'static str,
        /// The value given.
        url: String,
        /// The accepted forms.
        expected: &'static str,
    },
    /// A URL with a known scheme whose rest is not usable.
    #[error("{what} {url:?}: {why}")]
    BadUrl {
        /// Which setting.
        what: &'static str,
        /// The value given.
        url: String,
        /// What is wrong and the expected form.
        why: String,
    },
    /// A required setting is missing.
    #[error("{0}")]
    Missing(String),
    /// A setting's value cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// Settings that contradict a safety rule.
    #[error("{0}")]
    Unsafe(String),
    /// The catalog could not be opened.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The database settings do not work.
    #[error(transparent)]
    Database(#[from] PgError),
    /// The database secret could not be read or is not in the expected form.
    #[error("database secret {secret}: {message}")]
    Secret {
        /// The secret's ARN or name.
        secret: String,
        /// What went wrong (never the secret's content).
        message: String,
    },
}

/// One setting by both of its names, so that a message names what the user may have set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Setting {
    /// The environment variable.
    pub env: &'static str,
    /// The command-line flag.
    pub flag: &'static str,
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.env, self.flag)
    }
}

impl Setting {
    pub(crate) fn invalid(self, why: impl std::fmt::Display) -> ConfigError {
        ConfigError::Invalid(format!("{self}: {why}"))
    }

    /// A span, or `None` when unset.
    pub(crate) fn span(self, value: Option<&str>) -> Result<Option<Span>, ConfigError> {
        given(value)
            .map(|v| v.parse::<Span>().map_err(|e| self.invalid(e)))
            .transpose()
    }
}

/// The value, unless it is unset or empty: the environment cannot tell the two apart reliably
/// (Terraform, container files and shells all write empty values), so both edges treat an
/// empty value as unset.
pub(crate) fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// [`given`] for an owned value.
pub(crate) fn given_owned(value: &Option<String>) -> Option<String> {
    given(value.as_deref()).map(str::to_owned)
}

/// How the functions reach one database.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DatabaseSource {
    /// A Secrets Manager secret in the standard RDS JSON form.
    SecretArn(String),
    /// A connection URL (its password, if any, stays in the environment).
    Url(String),
}

impl DatabaseSource {
    /// The source as a URL and a secret, the way [`DatabaseAuth::check`] takes a database.
    pub fn parts(&self) -> (Option<&str>, Option<&str>) {
        match self {
            DatabaseSource::Url(url) => (Some(url), None),
            DatabaseSource::SecretArn(arn) => (None, Some(arn)),
        }
    }
}

/// Everything a function needs besides the event.
#[derive(Debug, Clone)]
pub struct LambdaSettings {
    /// Which backends.
    pub backends: BackendConfig,
    /// The databases this deployment backs up.
    pub databases: BTreeMap<String, DatabaseSource>,
    /// What part of each database its backups hold, when not all of it (checked, and naming
    /// only configured databases).
    pub selections: BTreeMap<String, Selection>,
    /// How the functions authenticate to them.
    pub database_auth: DatabaseAuth,
    /// What "healthy" means.
    pub health: HealthPolicy,
    /// JWT group of administrators.
    pub admin_group: String,
    /// The dump function's name, for asynchronous invocations.
    pub dump_function: Option<String>,
    /// The verify function's name, for asynchronous invocations (verifications, restores).
    pub verify_function: Option<String>,
    /// The scratch server's secret for verify; `None`: the backup's own database server.
    pub scratch_secret_arn: Option<String>,
    /// Where alerts go besides the log.
    pub alerts: AlertSettings,
    /// Compression and level of the backups the dump function takes (`PGKEEP_COMPRESSION`).
    pub compression: CompressionChoice,
    /// Parallel dump streams per database (`PGKEEP_JOBS`) for its backups, verifications and
    /// restores; a database not named: 1. An event's `jobs` wins.
    pub jobs: BTreeMap<String, u32>,
    /// The retention policy of prune (empty unless `PGKEEP_KEEP_*` are set; prune refuses an
    /// empty one at cold start).
    pub retention: RetentionPolicy,
    /// In-progress runs older than this are abandoned.
    pub abandon_after: Span,
    /// How long a download URL of the status API works.
    pub download_ttl: Span,
    /// Which databases' work the dump and verify functions hand to a Fargate task.
    pub runners: RunnerSettings,
}

/// Where alerts are sent, besides the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertSettings {
    /// An SNS topic.
    pub topic_arn: Option<String>,
    /// A Slack-compatible webhook.
    pub webhook_url: Option<WebhookUrl>,
    /// The events the topic gets (`PGKEEP_ALERT_SNS_EVENTS`); `None`: failures and staleness.
    pub sns_events: Option<Vec<crate::alert::AlertKind>>,
    /// The events the webhook gets (`PGKEEP_ALERT_WEBHOOK_EVENTS`); `None`: as the topic's
    /// default.
    pub webhook_events: Option<Vec<crate::alert::AlertKind>>,
    /// The webhook's body shape (`PGKEEP_ALERT_WEBHOOK_FORMAT`: slack, teams).
    pub webhook_format: crate::alert::WebhookFormat,
    /// A dead man's switch pinged at the start, success and failure of dumps and
    /// verifications (`PGKEEP_HEARTBEAT_URL`, healthchecks.io's convention).
    pub heartbeat_url: Option<WebhookUrl>,
}

fn invalid(name: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid(format!("{name}: {why}"))
}

/// An event selection (`backup_ok,backup_failed`, `all`, `none`); `None` when unset.
fn events(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<Vec<crate::alert::AlertKind>>, ConfigError> {
    get(name)
        .map(|text| crate::alert::AlertKind::parse_list(&text).map_err(|e| invalid(name, e)))
        .transpose()
}

/// `PGKEEP_SELECTIONS`: checked patterns, for databases `PGKEEP_DATABASES` names.
fn selections(
    get: &impl Fn(&str) -> Option<String>,
    databases: &BTreeMap<String, DatabaseSource>,
) -> Result<BTreeMap<String, Selection>, ConfigError> {
    const NAME: &str = "PGKEEP_SELECTIONS";
    let Some(json) = get(NAME) else {
        return Ok(BTreeMap::new());
    };
    let selections: BTreeMap<String, Selection> = serde_json::from_str(&json).map_err(|e| {
        invalid(
            NAME,
            format!(
                "not a JSON object of database name to {{\"exclude_schemas\": [...], ...}}: {e}"
            ),
        )
    })?;
    for (database, selection) in &selections {
        if !databases.contains_key(database) {
            return Err(invalid(
                NAME,
                format!("names database {database:?}, which PGKEEP_DATABASES does not"),
            ));
        }
        selection
            .validate()
            .map_err(|e| invalid(NAME, format!("{database}: {e}")))?;
    }
    Ok(selections)
}

/// `PGKEEP_DOWNLOAD_URL_TTL`: 15 minutes unless set; SigV4 allows at most 7 days.
fn download_ttl(get: &impl Fn(&str) -> Option<String>) -> Result<Span, ConfigError> {
    let name = "PGKEEP_DOWNLOAD_URL_TTL";
    let ttl = get(name)
        .map(|v| v.trim().parse::<Span>().map_err(|e| invalid(name, e)))
        .transpose()?;
    match ttl {
        None => Ok(DEFAULT_DOWNLOAD_TTL),
        Some(ttl) if ttl > MAX_DOWNLOAD_TTL => Err(invalid(
            name,
            format!("{ttl} is longer than the 7 days a presigned URL can be valid"),
        )),
        Some(ttl) => Ok(ttl),
    }
}

/// The compression variable, read by the functions and the `pgkeep` command alike.
pub const COMPRESSION: &str = "PGKEEP_COMPRESSION";

/// `PGKEEP_COMPRESSION`: `zstd`, `zstd:1`, `gzip:9` (as `pgkeep backup --compression`); unset
/// or empty: zstd at its default level.
pub fn compression(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<CompressionChoice, ConfigError> {
    given_owned(&get(COMPRESSION))
        .map(|text| text.parse().map_err(|e| invalid(COMPRESSION, e)))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// The parallel-jobs variable, read by the functions and the `pgkeep` command alike.
pub const JOBS: &str = "PGKEEP_JOBS";

/// `PGKEEP_JOBS`: a JSON object, database name → parallel dump streams (1-32) for its backups,
/// verifications and restores (`backup --jobs N`); unset or empty: none named (1 each). With
/// `databases` (the functions' `PGKEEP_DATABASES`), naming another database is refused.
pub fn jobs<T>(
    get: &impl Fn(&str) -> Option<String>,
    databases: Option<&BTreeMap<String, T>>,
) -> Result<BTreeMap<String, u32>, ConfigError> {
    let Some(json) = given_owned(&get(JOBS)) else {
        return Ok(BTreeMap::new());
    };
    let jobs: BTreeMap<String, u32> = serde_json::from_str(&json).map_err(|e| {
        invalid(
            JOBS,
            format!("{e}; expected a JSON object of database name to a number of parallel streams, e.g. {{\"shop\": 4}}"),
        )
    })?;
    for (database, n) in &jobs {
        if !(1..=crate::ops::backup::MAX_JOBS).contains(n) {
            return Err(invalid(
                JOBS,
                format!(
                    "{database}: {n} is not between 1 and {}",
                    crate::ops::backup::MAX_JOBS
                ),
            ));
        }
        if databases.is_some_and(|d| !d.contains_key(database)) {
            return Err(invalid(
                JOBS,
                format!("names database {database:?}, which PGKEEP_DATABASES does not"),
            ));
        }
    }
    Ok(jobs)
}

/// `n` when given (a flag, an event), else `database`'s `PGKEEP_JOBS` through `get`, else 1:
/// the `pgkeep` command's default, the same rule as the functions'.
pub fn jobs_or_setting(
    n: Option<u32>,
    get: &impl Fn(&str) -> Option<String>,
    database: &str,
) -> Result<u32, ConfigError> {
    match n {
        Some(n) => Ok(n),
        None => Ok(jobs::<()>(get, None)?.get(database).copied().unwrap_or(1)),
    }
}

/// The heartbeat variable, read by the functions and by `pgkeep backup`/`verify` alike.
pub const HEARTBEAT_URL: &str = "PGKEEP_HEARTBEAT_URL";

/// `PGKEEP_HEARTBEAT_URL`: the dead man's switch, unset or empty for none. Only from the
/// environment (never a flag): such a URL is a credential, and argv is visible to every user.
pub fn heartbeat_url(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<WebhookUrl>, ConfigError> {
    given_owned(&get(HEARTBEAT_URL))
        .map(|url| WebhookUrl::parse(&url).map_err(|e| invalid(HEARTBEAT_URL, e)))
        .transpose()
}

fn required(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<String, ConfigError> {
    get(name).ok_or_else(|| ConfigError::Missing(format!("{name} is not set")))
}

impl LambdaSettings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `get` (tests pass a map), through the same settings types and
    /// `resolve` steps as the `pgkeep` command, with no defaults for the repository and key.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| get(name).filter(|v| !v.is_empty());
        let backends = BackendSettings::from_lookup(get).resolve(
            &AwsOptions::from_lookup(get),
            &BackendDefaults::required(),
            KeyPrecedence::Refuse,
        )?;
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
        let database_auth = DatabaseAuthSettings::from_lookup(get)?.resolve()?;
        for (name, source) in &databases {
            let (url, secret) = source.parts();
            database_auth.check(&format!("PGKEEP_DATABASES[{name:?}]"), url, secret)?;
        }
        let health = HealthSettings::from_lookup(get).resolve()?;
        let retention = RetentionSettings::from_lookup(get).resolve(get)?;
        let abandon_after = AbandonSettings::from_lookup(get).resolve()?;
        let selections = selections(&get, &databases)?;
        let runners =
            RunnerSettings::from_lookup(get, &databases.keys().cloned().collect::<Vec<_>>())?;
        let jobs = jobs(&get, Some(&databases))?;
        let compression = compression(&get)?;
        let webhook_url = get("PGKEEP_ALERT_WEBHOOK_URL")
            .map(|url| WebhookUrl::parse(&url).map_err(|e| invalid("PGKEEP_ALERT_WEBHOOK_URL", e)))
            .transpose()?;
        Ok(LambdaSettings {
            backends,
            databases,
            selections,
            database_auth,
            health,
            admin_group: get("PGKEEP_ADMIN_GROUP").unwrap_or_else(|| "admin".into()),
            dump_function: get("PGKEEP_DUMP_FUNCTION"),
            verify_function: get("PGKEEP_VERIFY_FUNCTION"),
            scratch_secret_arn: get("PGKEEP_SCRATCH_SECRET_ARN"),
            alerts: AlertSettings {
                topic_arn: get("PGKEEP_ALERT_TOPIC_ARN"),
                webhook_url,
                sns_events: events(&get, "PGKEEP_ALERT_SNS_EVENTS")?,
                webhook_events: events(&get, "PGKEEP_ALERT_WEBHOOK_EVENTS")?,
                webhook_format: get("PGKEEP_ALERT_WEBHOOK_FORMAT")
                    .map(|f| {
                        f.parse()
                            .map_err(|e| invalid("PGKEEP_ALERT_WEBHOOK_FORMAT", e))
                    })
                    .transpose()?
                    .unwrap_or_default(),
                heartbeat_url: heartbeat_url(&get)?,
            },
            retention,
            abandon_after,
            download_ttl: download_ttl(&get)?,
            runners,
            jobs,
            compression,
        })
    }

    /// The parallel dump streams for `database` (`PGKEEP_JOBS`; 1 when not named).
    pub fn jobs_for(&self, database: &str) -> u32 {
        self.jobs.get(database).copied().unwrap_or(1)
    }

    /// Whether anything configured calls AWS (backends, a database or scratch secret, the
    /// alert topic, another function), so the AWS configuration must be loaded.
    pub fn uses_aws(&self) -> bool {
        self.backends.uses_aws()
            || self.database_auth.iam
            || self
                .databases
                .values()
                .any(|d| matches!(d, DatabaseSource::SecretArn(_)))
            || self.scratch_secret_arn.is_some()
            || self.alerts.topic_arn.is_some()
            || self.dump_function.is_some()
            || self.verify_function.is_some()
            || self.runners.any_fargate()
    }

    /// The configured databases' names.
    pub fn database_names(&self) -> Vec<String> {
        self.databases.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::reaper::DEFAULT_ABANDON_AFTER;

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
    fn function_settings_default_to_off_and_read_the_cli_names() {
        let base = [
            ("PGKEEP_REPO", "/var/repo"),
            ("PGKEEP_KEY", "/etc/pgkeep.key"),
            (
                "PGKEEP_DATABASES",
                r#"{"shop": {"url": "postgresql://u@h/shop"}}"#,
            ),
        ];
        let s = LambdaSettings::from_lookup(lookup(&base)).unwrap();
        assert_eq!(s.verify_function, None);
        assert_eq!(s.alerts, AlertSettings::default());
        assert!(s.retention.validate().is_err(), "no policy unless set");
        assert_eq!(s.abandon_after, DEFAULT_ABANDON_AFTER);
        assert_eq!(s.download_ttl, Span::minutes(15));
        assert!(!s.uses_aws());

        let mut all = base.to_vec();
        all.extend([
            ("PGKEEP_VERIFY_FUNCTION", "pgkeep-verify"),
            (
                "PGKEEP_SCRATCH_SECRET_ARN",
                "arn:aws:secretsmanager:eu-west-1:1:secret:scratch",
            ),
            ("PGKEEP_ALERT_TOPIC_ARN", "arn:aws:sns:eu-west-1:1:pgkeep"),
            (
                "PGKEEP_ALERT_WEBHOOK_URL",
                "https://hooks.slack.com/services/T/B/tok",
            ),
            ("PGKEEP_KEEP_DAILY", "7"),
            ("PGKEEP_KEEP_WEEKLY", " 5 "),
            ("PGKEEP_KEEP_LAST", ""),
            ("PGKEEP_KEEP_WITHIN", "2d"),
            ("PGKEEP_ABANDON_AFTER", "45m"),
            ("PGKEEP_DOWNLOAD_URL_TTL", "5m"),
        ]);
        let s = LambdaSettings::from_lookup(lookup(&all)).unwrap();
        assert_eq!(s.verify_function.as_deref(), Some("pgkeep-verify"));
        assert!(s.scratch_secret_arn.is_some());
        assert_eq!(
            s.alerts.topic_arn.as_deref(),
            Some("arn:aws:sns:eu-west-1:1:pgkeep")
        );
        assert_eq!(
            format!("{:?}", s.alerts.webhook_url.as_ref().unwrap()),
            "https://hooks.slack.com/…"
        );
        assert!(
            !format!("{s:?}").contains("tok"),
            "settings never show the webhook's token"
        );
        assert_eq!(
            (
                s.retention.keep_daily,
                s.retention.keep_weekly,
                s.retention.keep_last
            ),
            (7, 5, 0)
        );
        assert_eq!(s.retention.keep_within, Some(Span::days(2)));
        assert_eq!(s.abandon_after, Span::minutes(45));
        assert_eq!(s.download_ttl, Span::minutes(5));
        assert!(s.uses_aws());
    }

    #[test]
    fn malformed_function_settings_name_the_variable_and_hide_the_webhook() {
        let base = [
            ("PGKEEP_REPO", "/var/repo"),
            ("PGKEEP_KEY", "/etc/pgkeep.key"),
            (
                "PGKEEP_DATABASES",
                r#"{"shop": {"url": "postgresql://u@h/shop"}}"#,
            ),
        ];
        for (name, value) in [
            ("PGKEEP_KEEP_DAILY", "seven"),
            ("PGKEEP_KEEP_HOURLY", "-1"),
            ("PGKEEP_KEEP_WITHIN", "1 month"),
            ("PGKEEP_ABANDON_AFTER", "0s"),
            ("PGKEEP_DOWNLOAD_URL_TTL", "8d"),
            ("PGKEEP_DOWNLOAD_URL_TTL", "soon"),
            (
                "PGKEEP_ALERT_WEBHOOK_URL",
                "hooks.slack.com/services/T/B/tok",
            ),
        ] {
            let mut vars = base.to_vec();
            vars.push((name, value));
            let err = LambdaSettings::from_lookup(lookup(&vars))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{err}");
            assert!(!err.contains("tok"), "{err}");
        }
    }

    #[test]
    fn per_database_selections_and_kept_labels_are_read_and_checked() {
        let base = [
            ("PGKEEP_REPO", "/var/repo"),
            ("PGKEEP_KEY", "/etc/pgkeep.key"),
            (
                "PGKEEP_DATABASES",
                r#"{"shop": {"url": "postgresql://u@h/shop"}, "crm": {"url": "postgresql://u@h/crm"}}"#,
            ),
        ];
        let s = LambdaSettings::from_lookup(lookup(&base)).unwrap();
        assert!(s.selections.is_empty());
        assert!(s.retention.keep_labels.is_empty());

        let mut vars = base.to_vec();
        vars.extend([
            (
                "PGKEEP_SELECTIONS",
                r#"{"shop": {"exclude_schemas": ["audit"], "exclude_table_data": ["public.sessions"]}}"#,
            ),
            ("PGKEEP_KEEP_LABELS", "pinned, release=v2"),
            ("PGKEEP_KEEP_DAILY", "7"),
        ]);
        let s = LambdaSettings::from_lookup(lookup(&vars)).unwrap();
        assert_eq!(s.selections["shop"].exclude_schemas, ["audit"]);
        assert_eq!(
            s.selections["shop"].pg_dump_args(),
            [
                "--exclude-schema=audit",
                "--exclude-table-data=public.sessions"
            ]
        );
        assert!(!s.selections.contains_key("crm"));
        let kept: Vec<String> = s
            .retention
            .keep_labels
            .iter()
            .map(|l| l.to_string())
            .collect();
        assert_eq!(kept, ["pinned", "release=v2"]);

        for (name, value, needle) in [
            ("PGKEEP_SELECTIONS", r#"{"billing": {}}"#, "billing"),
            (
                "PGKEEP_SELECTIONS",
                r#"{"shop": {"exclude_schemas": [""]}}"#,
                "is empty",
            ),
            (
                "PGKEEP_SELECTIONS",
                r#"{"shop": {"schemas": ["x"]}}"#,
                "unknown field",
            ),
            ("PGKEEP_SELECTIONS", "audit", "JSON object"),
            ("PGKEEP_KEEP_LABELS", "Pinned", "upper-case"),
            ("PGKEEP_KEEP_LABELS", "[\"a\", 1]", "JSON array"),
        ] {
            let mut vars = base.to_vec();
            vars.push((name, value));
            let err = LambdaSettings::from_lookup(lookup(&vars))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name) && err.contains(needle), "{err}");
        }
    }

    #[test]
    fn iam_authentication_needs_complete_urls_and_excludes_passwords_and_secrets() {
        let with = |databases: &str, extra: &[(&'static str, &'static str)]| {
            let mut vars = vec![
                ("PGKEEP_REPO", "/var/repo"),
                ("PGKEEP_KEY", "/etc/pgkeep.key"),
                ("PGKEEP_DATABASES", databases),
                ("PGKEEP_DATABASE_IAM_AUTH", "true"),
            ];
            vars.extend_from_slice(extra);
            let map: BTreeMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            LambdaSettings::from_lookup(move |k| map.get(k).cloned())
        };
        let ok = with(
            r#"{"shop": {"url": "postgresql://pgkeep_backup@shop.abc.eu-west-1.rds.amazonaws.com:5432/shop"}}"#,
            &[("PGKEEP_DATABASE_SSL_ROOT_CERT", "/opt/rds/global-bundle.pem")],
        )
        .unwrap();
        assert!(ok.database_auth.iam);
        assert_eq!(
            ok.database_auth.ssl_root_cert.as_deref(),
            Some(std::path::Path::new("/opt/rds/global-bundle.pem"))
        );
        assert!(ok.uses_aws(), "tokens are signed with the AWS identity");

        for (databases, needle) in [
            (
                r#"{"shop": {"secret_arn": "arn:aws:secretsmanager:eu-west-1:1:secret:shop"}}"#,
                "exclude each other",
            ),
            (
                r#"{"shop": {"url": "postgresql://u:hunter2@h:5432/shop"}}"#,
                "no password",
            ),
            (
                r#"{"shop": {"url": "postgresql://u@h1,h2:5432/shop"}}"#,
                "exactly one host",
            ),
            (
                r#"{"shop": {"url": "postgresql://h:5432/shop"}}"#,
                "the database user",
            ),
            (
                r#"{"shop": {"url": "host=/run/postgresql port=5432 user=u dbname=shop"}}"#,
                "not a Unix socket",
            ),
            (r#"{"shop": {"url": "postgresql://u@h:5432"}}"#, "database"),
        ] {
            let err = with(databases, &[]).unwrap_err().to_string();
            assert!(err.contains(needle), "{databases}: {err}");
            assert!(err.contains("shop"), "names the database: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        for (name, value, needle) in [
            ("PGKEEP_DATABASE_IAM_AUTH", "yes", "write true or false"),
            (
                "PGKEEP_DATABASE_IAM_AUTH",
                "false",
                "used with PGKEEP_DATABASE_IAM_AUTH=true only",
            ),
        ] {
            let map: BTreeMap<String, String> = [
                ("PGKEEP_REPO", "/var/repo"),
                ("PGKEEP_KEY", "/etc/pgkeep.key"),
                (
                    "PGKEEP_DATABASES",
                    r#"{"shop": {"url": "postgresql://u@h:5432/shop"}}"#,
                ),
                ("PGKEEP_DATABASE_SSL_ROOT_CERT", "/ca.pem"),
                (name, value),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let err = LambdaSettings::from_lookup(move |k| map.get(k).cloned())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
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

    /// The functions' settings for two databases, shop and crm, with `name` set to `value`.
    fn settings_with(name: &str, value: &str) -> Result<LambdaSettings, ConfigError> {
        let vars = [
            ("PGKEEP_REPO", "/var/pgkeep/repo"),
            ("PGKEEP_KEY", "kms://alias/pgkeep"),
            (
                "PGKEEP_DATABASES",
                r#"{"shop": {"url": "postgresql://b@h/shop"}, "crm": {"url": "postgresql://b@h/crm"}}"#,
            ),
            (name, value),
        ];
        LambdaSettings::from_lookup(move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn jobs_per_database_are_checked() {
        let base = |jobs: &str| settings_with("PGKEEP_JOBS", jobs);
        let s = base(r#"{"shop": 4}"#).unwrap();
        assert_eq!((s.jobs_for("shop"), s.jobs_for("crm")), (4, 1));
        assert_eq!(base("").unwrap().jobs_for("shop"), 1);
        for (bad, says) in [
            (r#"{"shop": 0}"#, "between 1 and 32"),
            (r#"{"shop": 33}"#, "between 1 and 32"),
            (r#"{"other": 2}"#, "which PGKEEP_DATABASES does not"),
            ("4", "expected a JSON object"),
        ] {
            let err = base(bad).unwrap_err().to_string();
            assert!(
                err.contains("PGKEEP_JOBS") && err.contains(says),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_compression_setting_is_checked_at_cold_start() {
        let with = |value: &str| settings_with("PGKEEP_COMPRESSION", value);
        assert_eq!(with("").unwrap().compression, CompressionChoice::default());
        assert_eq!(with("zstd:1").unwrap().compression.level(), 1);
        let err = with("zstd:22").unwrap_err().to_string();
        assert!(
            err.contains("PGKEEP_COMPRESSION") && err.contains("1-9"),
            "{err}"
        );
    }
}
