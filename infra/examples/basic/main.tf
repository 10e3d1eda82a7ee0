# pgkeep for two databases on RDS: fill in terraform.tfvars (see terraform.tfvars.example),
# build the functions (scripts/package-lambdas), then `terraform init && terraform apply`.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.70.0, < 6.0.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Application = "pgkeep"
    }
  }
}

module "pgkeep" {
  source = "../.."

  name                   = var.name
  databases              = var.databases
  retention              = var.retention
  vpc_subnet_ids         = var.vpc_subnet_ids
  vpc_security_group_ids = var.vpc_security_group_ids
  scratch_secret_arn     = var.scratch_secret_arn
  secrets_kms_key_arns   = var.secrets_kms_key_arns
  database_iam_auth      = var.database_iam_auth
  rds_iam_db_users       = var.rds_iam_db_users
  alert_emails           = var.alert_emails
  alert_webhook_url      = var.alert_webhook_url
  alert_sns_events       = var.alert_sns_events
  alert_webhook_events   = var.alert_webhook_events
  alert_webhook_format   = var.alert_webhook_format
  heartbeat_url          = var.heartbeat_url
  compression            = var.compression
  object_lock            = var.object_lock
  log_retention_days     = var.log_retention_days
  architecture           = var.architecture
  artifacts_dir          = var.artifacts_dir
  pg_tools_image_uri     = var.pg_tools_image_uri
  pg_tools_layer         = var.pg_tools_layer
  fargate_cluster_arn    = var.fargate_cluster_arn
  fargate_auto_after     = var.fargate_auto_after
  fargate_auto_size_mib  = var.fargate_auto_size_mib
  restore_principal_arns = var.restore_principal_arns
  jwt_authorizer         = var.jwt_authorizer
  deletion_protection    = var.deletion_protection
}
