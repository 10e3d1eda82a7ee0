//! Alerts published to an SNS topic (`PGKEEP_ALERT_TOPIC_ARN`): the subject line as the SNS
//! subject (what e-mail subscribers see), the text as the message, and the alert's kind and
//! database as message attributes so subscriptions can filter on them.

use async_trait::async_trait;
use aws_sdk_sns::types::MessageAttributeValue;

use super::{Alert, Notifier, NotifyError};
use crate::aws::{describe, error_code, SdkConfig};

/// Publishes each alert to one topic.
#[derive(Debug, Clone)]
pub struct SnsNotifier {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsNotifier {
    /// A notifier for `topic_arn`, using the AWS configuration loaded once per process.
    pub fn new(config: &SdkConfig, topic_arn: &str) -> Self {
        SnsNotifier {
            client: aws_sdk_sns::Client::new(config),
            topic_arn: topic_arn.to_owned(),
        }
    }
}

fn attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data type is set")
}

#[async_trait]
impl Notifier for SnsNotifier {
    async fn notify(&self, alert: &Alert) -> Result<(), NotifyError> {
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(alert.subject())
            .message(alert.text())
            .message_attributes("kind", attribute(alert.kind.as_str()))
            .message_attributes("database", attribute(&alert.database))
            .send()
            .await
            .map_err(|e| {
                let hint = match error_code(&e) {
                    Some("NotFound") => " (check PGKEEP_ALERT_TOPIC_ARN and the region)",
                    Some("AuthorizationError") => {
                        " (grant sns:Publish on the topic, and kms:GenerateDataKey and kms:Decrypt on its key if it is encrypted)"
                    }
                    _ => "",
                };
                NotifyError {
                    channel: format!("sns {}", self.topic_arn),
                    message: format!("{}{hint}", describe(&e)),
                }
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertKind;
    use crate::testing::{moto, unique};
    use chrono::Utc;

    fn alert() -> Alert {
        Alert::new(
            AlertKind::Stale,
            "shop",
            None,
            "the newest good backup is 30h old",
            Utc::now(),
        )
    }

    #[tokio::test]
    async fn publishes_to_a_topic_and_explains_a_missing_one() {
        let Some(config) = moto().await else { return };
        let topic = aws_sdk_sns::Client::new(&config)
            .create_topic()
            .name(unique("pgkeep-alerts"))
            .send()
            .await
            .unwrap();
        SnsNotifier::new(&config, topic.topic_arn().unwrap())
            .notify(&alert())
            .await
            .unwrap();

        let missing = "arn:aws:sns:us-east-1:123456789012:pgkeep-no-such-topic";
        let err = SnsNotifier::new(&config, missing)
            .notify(&alert())
            .await
            .unwrap_err();
        assert!(err.channel.contains(missing), "{err}");
        assert!(err.message.contains("PGKEEP_ALERT_TOPIC_ARN"), "{err}");
    }
}
