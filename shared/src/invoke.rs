//! Starting another pgkeep function without waiting for it: an asynchronous Lambda invocation
//! (`InvocationType=Event`). The status API starts dumps, verifications and restores this way,
//! and the dump function starts the verification of each new backup.
//!
//! Lambda queues the event and answers 202; retries and the dead-letter queue are the target
//! function's asynchronous invocation settings.
//!
//! The API and the jobs see only the [`DumpStarter`] and [`VerifyStarter`] traits;
//! [`LambdaInvoker`] is their AWS implementation.

use async_trait::async_trait;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;

use crate::aws::{describe, error_code, SdkConfig};
use crate::config::FargateSettings;
use crate::trigger::{DumpTrigger, Job, VerifyEvent};

/// Starts a dump without waiting for it (an asynchronous Lambda invocation in AWS).
#[async_trait]
pub trait DumpStarter: Send + Sync {
    /// Hands the trigger to the dump function; returns once it is queued.
    async fn start(&self, trigger: &DumpTrigger) -> Result<(), String>;
}

/// Starts a verification or a restore without waiting for it (an asynchronous invocation of
/// the verify function in AWS).
#[async_trait]
pub trait VerifyStarter: Send + Sync {
    /// Hands the event to the verify function; returns once it is queued.
    async fn start(&self, event: &VerifyEvent) -> Result<(), String>;
}

/// Starts a job in a task of its own (an ECS Fargate task in AWS): the dump and verify
/// functions hand over the work of a database whose runner is Fargate.
#[async_trait]
pub trait TaskStarter: Send + Sync {
    /// Starts a task running `job` for `database`; returns the task's ARN once ECS accepted
    /// it.
    async fn start(&self, database: &str, job: &Job) -> Result<String, String>;
}

/// The container the task definition runs `pgkeep job` in; its overrides carry the job.
pub const JOB_CONTAINER: &str = "pgkeep";

/// What the tasks pgkeep starts are started by (`startedBy`): the task-state rule matches it.
pub const STARTED_BY: &str = "pgkeep";

/// Starts Fargate tasks with ECS RunTask.
#[derive(Debug, Clone)]
pub struct EcsTaskStarter {
    client: aws_sdk_ecs::Client,
    fargate: FargateSettings,
}

impl EcsTaskStarter {
    /// A starter for the cluster and task definitions `fargate` names.
    pub fn new(config: &SdkConfig, fargate: FargateSettings) -> Self {
        EcsTaskStarter {
            client: aws_sdk_ecs::Client::new(config),
            fargate,
        }
    }
}

#[async_trait]
impl TaskStarter for EcsTaskStarter {
    async fn start(&self, database: &str, job: &Job) -> Result<String, String> {
        use aws_sdk_ecs::types::{
            AssignPublicIp, AwsVpcConfiguration, ContainerOverride, KeyValuePair, LaunchType,
            NetworkConfiguration, TaskOverride,
        };
        let cluster = self
            .fargate
            .cluster
            .as_deref()
            .ok_or("PGKEEP_FARGATE_CLUSTER is not set, so no Fargate task can be started")?;
        let definition = self.fargate.task_definitions.get(database).ok_or_else(|| {
            format!("PGKEEP_FARGATE_TASK_DEFINITIONS names no task definition for {database:?}")
        })?;
        let overrides = TaskOverride::builder()
            .container_overrides(
                ContainerOverride::builder()
                    .name(JOB_CONTAINER)
                    .environment(
                        KeyValuePair::builder()
                            .name("PGKEEP_JOB")
                            .value(job.to_json())
                            .build(),
                    )
                    .build(),
            )
            .build();
        let mut request = self
            .client
            .run_task()
            .cluster(cluster)
            .task_definition(definition)
            .launch_type(LaunchType::Fargate)
            .count(1)
            .started_by(STARTED_BY)
            .overrides(overrides);
        if !self.fargate.subnets.is_empty() {
            let vpc = AwsVpcConfiguration::builder()
                .set_subnets(Some(self.fargate.subnets.clone()))
                .set_security_groups(Some(self.fargate.security_groups.clone()))
                .assign_public_ip(AssignPublicIp::Disabled)
                .build()
                .map_err(|e| format!("the task's network configuration: {e}"))?;
            request = request.network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(vpc)
                    .build(),
            );
        }
        let out = request.send().await.map_err(|e| {
            let hint = match error_code(&e) {
                Some("AccessDeniedException") => {
                    " (grant ecs:RunTask on the task definition and iam:PassRole on its roles)"
                }
                Some("ClusterNotFoundException") => " (check PGKEEP_FARGATE_CLUSTER)",
                _ => "",
            };
            format!(
                "starting a Fargate task ({definition}) in {cluster}: {}{hint}",
                describe(&e)
            )
        })?;
        if let Some(failure) = out.failures().first() {
            return Err(format!(
                "ECS did not start the task ({definition}) in {cluster}: {} {}",
                failure.reason().unwrap_or("no reason given"),
                failure.detail().unwrap_or_default()
            ));
        }
        out.tasks()
            .first()
            .and_then(|t| t.task_arn())
            .map(str::to_owned)
            .ok_or_else(|| {
                format!("ECS answered RunTask ({definition}) in {cluster} without a task")
            })
    }
}

/// Invokes one function asynchronously.
#[derive(Debug, Clone)]
pub struct LambdaInvoker {
    client: aws_sdk_lambda::Client,
    function: String,
}

impl LambdaInvoker {
    /// An invoker of `function` (name, ARN or partial ARN), using the AWS configuration loaded
    /// once per process.
    pub fn new(config: &SdkConfig, function: &str) -> Self {
        LambdaInvoker {
            client: aws_sdk_lambda::Client::new(config),
            function: function.to_owned(),
        }
    }

    /// The function invoked.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// Queues `payload` for the function; returns once Lambda accepted it.
    pub async fn invoke(&self, payload: &serde_json::Value) -> Result<(), String> {
        let out = self
            .client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload.to_string()))
            .send()
            .await
            .map_err(|e| {
                let hint = match error_code(&e) {
                    Some("ResourceNotFoundException") => " (check the function name and region)",
                    Some("AccessDeniedException") => " (grant lambda:InvokeFunction on it)",
                    _ => "",
                };
                format!(
                    "invoking the Lambda function {}: {}{hint}",
                    self.function,
                    describe(&e)
                )
            })?;
        match out.status_code() {
            202 => Ok(()),
            other => Err(format!(
                "invoking the Lambda function {}: expected 202 Accepted for an asynchronous invocation, got {other}",
                self.function
            )),
        }
    }
}

#[async_trait]
impl DumpStarter for LambdaInvoker {
    async fn start(&self, trigger: &DumpTrigger) -> Result<(), String> {
        self.invoke(&trigger.to_event()).await
    }
}

#[async_trait]
impl VerifyStarter for LambdaInvoker {
    async fn start(&self, event: &VerifyEvent) -> Result<(), String> {
        self.invoke(&event.to_event()).await
    }
}

/// Stands in for a function whose name is not configured: every start fails, naming the
/// variable to set (an API call that cannot start anything must say so, not answer 202).
#[derive(Debug, Clone, Copy)]
pub struct Unconfigured(pub &'static str);

#[async_trait]
impl DumpStarter for Unconfigured {
    async fn start(&self, _: &DumpTrigger) -> Result<(), String> {
        Err(format!("{} is not set, so nothing can be started", self.0))
    }
}

#[async_trait]
impl VerifyStarter for Unconfigured {
    async fn start(&self, _: &VerifyEvent) -> Result<(), String> {
        Err(format!("{} is not set, so nothing can be started", self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BackupKind;
    use crate::testing::{moto, unique};

    /// A function in the emulator to invoke (moto queues asynchronous invocations and answers
    /// 202; it does not need to run them). Its role is created with a plain IAM query request:
    /// the emulator does not check signatures, and this spares the tests the IAM SDK.
    async fn function(config: &SdkConfig) -> String {
        let endpoint = std::env::var("PGKEEP_TEST_AWS_ENDPOINT").unwrap();
        let role = unique("pgkeep-role");
        let response = reqwest::Client::new()
            .post(format!("{endpoint}/"))
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20261124/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "Action=CreateRole&Version=2010-05-08&RoleName={role}&AssumeRolePolicyDocument=%7B%7D"
            ))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
        let name = unique("pgkeep-verify");
        // An empty zip archive: the end-of-central-directory record alone.
        let mut zip = b"PK\x05\x06".to_vec();
        zip.resize(22, 0);
        aws_sdk_lambda::Client::new(config)
            .create_function()
            .function_name(&name)
            .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
            .role(format!("arn:aws:iam::123456789012:role/{role}"))
            .handler("bootstrap")
            .code(
                aws_sdk_lambda::types::FunctionCode::builder()
                    .zip_file(Blob::new(zip))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        name
    }

    #[tokio::test]
    async fn asynchronous_invocations_are_queued_or_fail_with_the_function_named() {
        let Some(config) = moto().await else { return };
        let name = function(&config).await;
        let invoker = LambdaInvoker::new(&config, &name);
        let dump = DumpTrigger {
            database: "shop".into(),
            kind: BackupKind::Manual,
            backup_id: None,
            requested_by: Some("alice".into()),
            labels: Default::default(),
            selection: None,
            all_databases: false,
            jobs: None,
        };
        DumpStarter::start(&invoker, &dump).await.unwrap();
        let verify = VerifyEvent::Verify(crate::trigger::VerifyTrigger {
            backup_id: None,
            requested_by: None,
            jobs: None,
        });
        VerifyStarter::start(&invoker, &verify).await.unwrap();

        let missing = LambdaInvoker::new(&config, "pgkeep-no-such-function");
        let err = DumpStarter::start(&missing, &dump).await.unwrap_err();
        assert!(err.contains("pgkeep-no-such-function"), "{err}");
        assert!(err.contains("check the function name"), "{err}");
    }

    #[tokio::test]
    async fn unconfigured_functions_name_the_variable() {
        let err = VerifyStarter::start(
            &Unconfigured("PGKEEP_VERIFY_FUNCTION"),
            &VerifyEvent::Verify(crate::trigger::VerifyTrigger {
                backup_id: None,
                requested_by: None,
                jobs: None,
            }),
        )
        .await
        .unwrap_err();
        assert!(err.contains("PGKEEP_VERIFY_FUNCTION"), "{err}");
    }
}
