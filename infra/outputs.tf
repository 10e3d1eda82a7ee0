output "api_url" {
  description = "Base URL of the status API (GET /status, GET|POST /backups, GET /backups/{id}, GET /audit, GET /restores/{id}, GET /dashboard)."
  value       = aws_apigatewayv2_stage.default.invoke_url
}

output "bucket" {
  description = "The backup bucket."
  value       = aws_s3_bucket.backups.id
}

output "repository_url" {
  description = "PGKEEP_REPO for the CLI (pgkeep --repo)."
  value       = local.env_values["PGKEEP_REPO"]
}

output "table" {
  description = "The catalog table."
  value       = aws_dynamodb_table.catalog.name
}

output "catalog_url" {
  description = "PGKEEP_CATALOG for the CLI (pgkeep --catalog)."
  value       = local.env_values["PGKEEP_CATALOG"]
}

output "key_arn" {
  description = "The pgkeep KMS key."
  value       = aws_kms_key.pgkeep.arn
}

output "key_url" {
  description = "PGKEEP_KEY for the CLI (pgkeep --key)."
  value       = local.env_values["PGKEEP_KEY"]
}

output "topic_arn" {
  description = "The alert topic."
  value       = aws_sns_topic.alerts.arn
}

output "function_names" {
  description = "Lambda function names by function."
  value       = { for f, fn in aws_lambda_function.function : f => fn.function_name }
}

output "dead_letter_queue_url" {
  description = "Queue of asynchronous invocations that failed for good."
  value       = aws_sqs_queue.dlq.url
}

output "fargate_cluster_arn" {
  description = "ECS cluster of the Fargate jobs (fargate and auto databases); null when every database runs on Lambda."
  value       = local.cluster_arn
}

output "fargate_task_definitions" {
  description = "Task definition (family ARN, latest revision) of each fargate or auto database (PGKEEP_FARGATE_TASK_DEFINITIONS)."
  value       = local.task_definition_arns
}

output "dashboard_name" {
  description = "The CloudWatch dashboard: one row per database (backup duration, size, throughput, newest good age, verify duration)."
  value       = aws_cloudwatch_dashboard.pgkeep.dashboard_name
}
