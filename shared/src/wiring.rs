//! Building an edge's parts once per process: the AWS configuration (loaded at most once and
//! shared by every client), the backends, and the starters of other functions. The Lambda
//! functions and the command line both start here, so that a process never loads the AWS
//! configuration twice or chooses a starter by a rule of its own.

use std::sync::Arc;

use crate::alert::sns::SnsNotifier;
use crate::alert::webhook::WebhookNotifier;
use crate::alert::{LogNotifier, Notifier, Notifiers};
use crate::api::Api;
use crate::aws::SdkConfig;
use crate::backends::{BackendConfig, KeyUse, Services};
use crate::config::ConfigError;
use crate::config::LambdaSettings;
use crate::invoke::{DumpStarter, VerifyStarter};
use crate::invoke::{LambdaInvoker, Unconfigured};

/// The backends, and the AWS configuration when a backend needs it or `need_aws` asks for it
/// (something else configured calls AWS: a secret, a topic, another function). The
/// configuration is returned so that those other clients share it.
pub async fn connect(
    backends: &BackendConfig,
    key_use: KeyUse,
    need_aws: bool,
) -> Result<(Services, Option<SdkConfig>), ConfigError> {
    let aws = if need_aws || backends.uses_aws() {
        Some(backends.load_aws().await?)
    } else {
        None
    };
    let services = backends.open_with(key_use, aws.as_ref())?;
    Ok((services, aws))
}

/// An asynchronous invoker of `function`, when it is named and AWS is configured (naming a
/// function makes the settings ask for AWS, so both come together).
pub fn invoker(function: Option<&str>, aws: Option<&SdkConfig>) -> Option<Arc<LambdaInvoker>> {
    match (function, aws) {
        (Some(name), Some(aws)) => Some(Arc::new(LambdaInvoker::new(aws, name))),
        _ => None,
    }
}

/// Starts the dump function named by `PGKEEP_DUMP_FUNCTION`; without one every start fails
/// saying so.
pub fn dump_starter(function: Option<&str>, aws: Option<&SdkConfig>) -> Arc<dyn DumpStarter> {
    match invoker(function, aws) {
        Some(invoker) => invoker,
        None => Arc::new(Unconfigured("PGKEEP_DUMP_FUNCTION")),
    }
}

/// Starts the verify function named by `PGKEEP_VERIFY_FUNCTION`; without one every start fails
/// saying so.
pub fn verify_starter(function: Option<&str>, aws: Option<&SdkConfig>) -> Arc<dyn VerifyStarter> {
    match invoker(function, aws) {
        Some(invoker) => invoker,
        None => Arc::new(Unconfigured("PGKEEP_VERIFY_FUNCTION")),
    }
}

/// Where a function's alerts go: the log, plus the SNS topic (`PGKEEP_ALERT_TOPIC_ARN`) and the
/// webhook (`PGKEEP_ALERT_WEBHOOK_URL`) when configured. The same for every function that
/// alerts (the jobs and the status API).
pub fn notifier(
    settings: &LambdaSettings,
    aws: Option<&SdkConfig>,
) -> Result<Arc<dyn Notifier>, ConfigError> {
    let alerts = &settings.alerts;
    let selected = |inner: Arc<dyn Notifier>, events: &Option<Vec<crate::alert::AlertKind>>| {
        Arc::new(crate::alert::Selected {
            inner,
            events: events
                .clone()
                .unwrap_or_else(|| crate::alert::DEFAULT_EVENTS.to_vec()),
        }) as Arc<dyn Notifier>
    };
    let mut notifiers: Vec<Arc<dyn Notifier>> = vec![Arc::new(LogNotifier)];
    if let Some(topic) = &alerts.topic_arn {
        let aws = aws.ok_or_else(|| {
            ConfigError::Invalid("PGKEEP_ALERT_TOPIC_ARN needs the AWS configuration".into())
        })?;
        notifiers.push(selected(
            Arc::new(SnsNotifier::new(aws, topic)),
            &alerts.sns_events,
        ));
    }
    if let Some(url) = &alerts.webhook_url {
        let webhook = WebhookNotifier::new(url.clone())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?
            .with_format(alerts.webhook_format);
        notifiers.push(selected(Arc::new(webhook), &alerts.webhook_events));
    }
    if let Some(url) = &alerts.heartbeat_url {
        let heartbeat = crate::alert::heartbeat::HeartbeatNotifier::new(url.clone())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        notifiers.push(Arc::new(heartbeat));
    }
    Ok(Arc::new(Notifiers(notifiers)))
}

/// The `pgkeep` command's notices: the heartbeat (`PGKEEP_HEARTBEAT_URL`) when set, so a
/// dead man's switch watches local and cron backups as it watches the functions; otherwise
/// none (the command reports on its terminal and exit status).
pub fn command_notifier(
    heartbeat: Option<&crate::alert::webhook::WebhookUrl>,
) -> Result<Arc<dyn Notifier>, ConfigError> {
    let mut notifiers: Vec<Arc<dyn Notifier>> = Vec::new();
    if let Some(url) = heartbeat {
        let heartbeat = crate::alert::heartbeat::HeartbeatNotifier::new(url.clone())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        notifiers.push(Arc::new(heartbeat));
    }
    Ok(Arc::new(Notifiers(notifiers)))
}

/// The status API with everything it needs. It only reads records, starts other functions and
/// alerts (an accepted dump that cannot be started), so no key is loaded.
pub async fn api(settings: &LambdaSettings) -> Result<Api, ConfigError> {
    let (services, aws) = connect(&settings.backends, KeyUse::None, settings.uses_aws()).await?;
    let notifier = notifier(settings, aws.as_ref())?;
    Ok(Api {
        services,
        starter: dump_starter(settings.dump_function.as_deref(), aws.as_ref()),
        verify_starter: verify_starter(settings.verify_function.as_deref(), aws.as_ref()),
        health: settings.health,
        admin_group: settings.admin_group.clone(),
        databases: settings.database_names(),
        download_ttl: settings.download_ttl,
        notifier,
        retention: settings.retention.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::{KeyUrl, RepoUrl};
    use crate::trigger::DumpTrigger;

    fn embedded(dir: &std::path::Path) -> BackendConfig {
        BackendConfig {
            repo: RepoUrl::File(dir.join("repo")),
            catalog: None,
            key: KeyUrl::File(dir.join("key")),
            old_key_files: Vec::new(),
            aws: Default::default(),
        }
    }

    #[tokio::test]
    async fn embedded_backends_load_no_aws_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let (_, aws) = connect(&embedded(dir.path()), KeyUse::None, false)
            .await
            .unwrap();
        assert!(aws.is_none());
    }

    #[tokio::test]
    async fn an_unnamed_function_cannot_be_started_and_says_which_variable_to_set() {
        assert!(invoker(None, None).is_none());
        let trigger =
            DumpTrigger::from_event(&serde_json::json!({"database": "shop", "kind": "manual"}))
                .unwrap();
        let err = dump_starter(None, None).start(&trigger).await.unwrap_err();
        assert!(err.contains("PGKEEP_DUMP_FUNCTION"), "{err}");
    }
}
