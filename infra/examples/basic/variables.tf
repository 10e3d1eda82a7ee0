variable "region" {
  description = "AWS region of the deployment (the databases' region)."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "pgkeep"
}

variable "databases" {
  description = "Databases to back up; see the module's variable of the same name."
  type = map(object({
    secret_arn      = optional(string)
    url             = optional(string)
    dump_schedule   = optional(string, "cron(0 2 * * ? *)")
    verify_schedule = optional(string, "cron(0 5 * * ? *)")
    prune_schedule  = optional(string, "cron(0 6 * * ? *)")
    max_age         = optional(string)
    retention = optional(object({
      keep_last    = optional(number)
      keep_hourly  = optional(number)
      keep_daily   = optional(number)
      keep_weekly  = optional(number)
      keep_monthly = optional(number)
      keep_yearly  = optional(number)
      keep_within  = optional(string)
    }))
    selection = optional(object({
      include_schemas    = optional(list(string))
      exclude_schemas    = optional(list(string))
      include_tables     = optional(list(string))
      exclude_tables     = optional(list(string))
      exclude_table_data = optional(list(string))
    }))
    runner         = optional(string, "lambda")
    fargate_cpu    = optional(number, 1024)
    fargate_memory = optional(number, 2048)
    # The task's ephemeral storage in GiB (21-200); null: Fargate's 20 GiB.
    fargate_storage_gib = optional(number)
    jobs                = optional(number, 1)
  }))
}

variable "retention" {
  description = "Default retention policy (keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, keep_within); {} for the module's default of 7 daily, 4 weekly, 12 monthly."
  type        = any
  default     = {}
}

variable "vpc_subnet_ids" {
  description = "Private subnets that reach the databases."
  type        = list(string)
}

variable "vpc_security_group_ids" {
  description = "Security groups of the dump and verify functions."
  type        = list(string)
}

variable "scratch_secret_arn" {
  description = "Secret of the server verify restores into; null for each database's own server."
  type        = string
  default     = null
}

variable "database_iam_auth" {
  description = "Reach the databases with RDS IAM authentication (every database a url, no password); see the module's variable."
  type        = bool
  default     = false
}

variable "rds_iam_db_users" {
  description = "arn:aws:rds-db:REGION:ACCOUNT:dbuser:DBI-RESOURCE-ID/USER the functions log in as with IAM authentication."
  type        = list(string)
  default     = []
}

variable "secrets_kms_key_arns" {
  description = "Customer managed keys of the database secrets, if any."
  type        = list(string)
  default     = []
}

variable "alert_emails" {
  description = "E-mail addresses for alerts."
  type        = list(string)
  default     = []
}

variable "alert_webhook_url" {
  description = "Slack-compatible webhook for alerts."
  type        = string
  default     = null
  sensitive   = true
}

variable "alert_sns_events" {
  description = "Events the SNS topic gets (comma-separated; null: every failure and stale)."
  type        = string
  default     = null
}

variable "alert_webhook_events" {
  description = "Events the webhook gets (as alert_sns_events)."
  type        = string
  default     = null
}

variable "alert_webhook_format" {
  description = "slack or teams."
  type        = string
  default     = null
}

variable "compression" {
  description = "Compression and level of the backups: zstd (level 3), zstd:1 to zstd:9, gzip, gzip:1 to gzip:9."
  type        = string
  default     = null
}

variable "heartbeat_url" {
  description = "Dead man's switch pinged on start, success and failure (healthchecks.io convention)."
  type        = string
  default     = null
  sensitive   = true
}

variable "object_lock" {
  description = "Optional Object Lock (mode and days)."
  type = object({
    mode = string
    days = number
  })
  default = null
}

variable "log_retention_days" {
  description = "Log retention in days."
  type        = number
  default     = 365
}

variable "architecture" {
  description = "x86_64 or arm64."
  type        = string
  default     = "x86_64"
}

variable "artifacts_dir" {
  description = "Where scripts/package-lambdas left <function>/bootstrap.zip; null for the repository's target/lambda."
  type        = string
  default     = null
}

variable "pg_tools_image_uri" {
  description = "ECR image built from infra/Dockerfile for dump and verify."
  type        = string
  default     = null
}

variable "fargate_cluster_arn" {
  description = "ECS cluster for the Fargate jobs of fargate and auto databases; null to create one."
  type        = string
  default     = null
}

variable "fargate_auto_after" {
  description = "An auto database runs on Fargate when its last backup took longer than this (e.g. 10m)."
  type        = string
  default     = "10m"
}

variable "fargate_auto_size_mib" {
  description = "An auto database also runs on Fargate when its last backup is larger than this (MiB); null for no limit."
  type        = number
  default     = null
}

variable "pg_tools_layer" {
  description = "Without an image: the PostgreSQL client tools layer for dump and verify, {zip = path from scripts/package-pg-layer} or {arn = published layer version}."
  type = object({
    zip = optional(string)
    arn = optional(string)
  })
  default = null
}

variable "restore_principal_arns" {
  description = "Roles allowed to decrypt backups with the CLI (disaster recovery)."
  type        = list(string)
  default     = []
}

variable "jwt_authorizer" {
  description = "JWT issuer and audiences for the status API instead of IAM authorization."
  type = object({
    issuer    = string
    audiences = list(string)
  })
  default = null
}

variable "deletion_protection" {
  description = "Protect the catalog table from deletion."
  type        = bool
  default     = true
}
