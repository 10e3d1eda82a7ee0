# Inputs of the pgkeep module. Only `name`, `databases`, `vpc_subnet_ids` and
# `vpc_security_group_ids` are required; everything else has a production default.

variable "name" {
  description = "Prefix of every resource name (functions, table, key alias, topic). Lowercase letters, digits and hyphens."
  type        = string
  default     = "pgkeep"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name must be 2-31 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "bucket_name" {
  description = "Name of the backup bucket; null for \"<name>-backups-<account id>-<region>\"."
  type        = string
  default     = null
}

variable "repository_prefix" {
  description = "Key prefix of the repository inside the bucket (PGKEEP_REPO is s3://bucket/prefix)."
  type        = string
  default     = "pgkeep"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._/-]*[a-z0-9]$", var.repository_prefix)) && !strcontains(var.repository_prefix, "//")
    error_message = "repository_prefix must be a relative key prefix without leading or trailing slashes."
  }
}

variable "databases" {
  description = <<-EOT
    The databases to back up, by name (the name used in backup ids, the API and the CLI).
    Each gives either `secret_arn` (a Secrets Manager secret in the RDS JSON form: username,
    password, host, port, dbname) or `url` (postgresql://user@host:port/db, never with a
    password), the schedules (EventBridge Scheduler expressions, evaluated in
    `schedule_timezone`), an optional retention override and the maximum age of its newest good
    backup before the stale alarm fires. `selection` limits what its backups hold, with pg_dump
    patterns (psql patterns) in `include_schemas`, `exclude_schemas`, `include_tables`,
    `exclude_tables` and `exclude_table_data` (PGKEEP_SELECTIONS); without it the
    whole database is backed up.
    `runner` says where its backups and verifications run (PGKEEP_RUNNERS): "lambda" (the
    default; a Lambda invocation ends at 15 minutes), "fargate" (an ECS Fargate task from
    pg_tools_image_uri, with `fargate_cpu` CPU units and `fargate_memory` MiB, a valid Fargate
    combination, and `fargate_storage_gib` of scratch space at /tmp when 20 GiB is too little for
    a restore that stages its archive) or "auto" (Fargate when its last successful backup took longer than
    fargate_auto_after or is larger than fargate_auto_size_mib, else Lambda). `jobs` is the
    number of parallel dump streams of its backups, verifications and restores (PGKEEP_JOBS);
    with Fargate, about one per vCPU (docs/OPERATIONS.md, Choosing a runner).
  EOT
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

  validation {
    condition     = length(var.databases) > 0
    error_message = "databases must name at least one database."
  }
  validation {
    condition     = alltrue([for n, d in var.databases : (d.secret_arn == null) != (d.url == null)])
    error_message = "each database needs exactly one of secret_arn or url."
  }
  validation {
    condition     = alltrue([for n, d in var.databases : d.url == null || !can(regex("^[a-z]+://[^/@]*:[^/@]*@", d.url))])
    error_message = "a database url must not contain a password: use secret_arn for credentials."
  }
  validation {
    condition     = alltrue([for n, d in var.databases : d.max_age == null || can(regex("^([0-9]+[wdhms])+$", d.max_age))])
    error_message = "a database's max_age is a span such as 25h, 1d12h or 90m (units w, d, h, m, s)."
  }
  validation {
    condition = alltrue(flatten([for n, d in var.databases : [
      for k, patterns in(d.selection == null ? {} : d.selection) : [
        for p in coalesce(patterns, []) : trimspace(p) != "" && length(p) <= 512
      ]
    ]]))
    error_message = "selection patterns are non-empty and at most 512 bytes."
  }
  validation {
    condition     = alltrue([for n in keys(var.databases) : can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$", n))])
    error_message = "database names are 1-63 letters, digits, '_', '.' or '-'."
  }
  validation {
    condition     = alltrue([for n, d in var.databases : contains(["lambda", "fargate", "auto"], d.runner)])
    error_message = "a database's runner is \"lambda\", \"fargate\" or \"auto\"."
  }
  validation {
    condition     = alltrue([for n, d in var.databases : d.fargate_storage_gib == null || try(d.fargate_storage_gib >= 21 && d.fargate_storage_gib <= 200 && d.fargate_storage_gib == floor(d.fargate_storage_gib), false)])
    error_message = "a database's fargate_storage_gib is a whole number of GiB from 21 to 200 (Fargate's ephemeral storage), or null for the default 20 GiB."
  }
  validation {
    condition     = alltrue([for n, d in var.databases : d.jobs == floor(d.jobs) && d.jobs >= 1 && d.jobs <= 32])
    error_message = "a database's jobs (parallel dump streams) is a whole number from 1 to 32."
  }
  validation {
    # Fargate's CPU and memory pairs: per CPU, the least, the most and the step of memory (MiB)
    # (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size).
    condition = alltrue([for n, d in var.databases : d.runner == "lambda" || try(
      d.fargate_memory >= {
        "256" = 512, "512" = 1024, "1024" = 2048, "2048" = 4096, "4096" = 8192, "8192" = 16384, "16384" = 32768
      }[tostring(d.fargate_cpu)] &&
      d.fargate_memory <= {
        "256" = 2048, "512" = 4096, "1024" = 8192, "2048" = 16384, "4096" = 30720, "8192" = 61440, "16384" = 122880
      }[tostring(d.fargate_cpu)] &&
      (d.fargate_memory == 512 || d.fargate_memory % {
        "256" = 1024, "512" = 1024, "1024" = 1024, "2048" = 1024, "4096" = 1024, "8192" = 4096, "16384" = 8192
      }[tostring(d.fargate_cpu)] == 0),
    false)])
    error_message = "fargate_cpu/fargate_memory must be a Fargate task size: cpu 256 (memory 512, 1024 or 2048), 512 (1024-4096 in steps of 1024), 1024 (2048-8192 in 1024s), 2048 (4096-16384 in 1024s), 4096 (8192-30720 in 1024s), 8192 (16384-61440 in 4096s) or 16384 (32768-122880 in 8192s)."
  }
}

variable "server_runs" {
  description = <<-EOT
    Whole-server runs to schedule, by name: each backs up every database on the server of
    `database` (a key of `databases`, used only to connect; its role should be the server's
    admin or RDS master user) and the globals (roles, memberships, tablespaces, each database's
    owner, grants and settings) as one run, at `schedule` (an EventBridge Scheduler expression in
    `schedule_timezone`). The per-database schedules keep running beside it.
  EOT
  type = map(object({
    database = string
    schedule = optional(string, "cron(0 1 * * ? *)")
  }))
  default = {}

  validation {
    condition     = alltrue([for n, r in var.server_runs : contains(keys(var.databases), r.database)])
    error_message = "each server run's database must be one of var.databases."
  }
  validation {
    condition     = alltrue([for n in keys(var.server_runs) : can(regex("^[a-z0-9-]{1,40}$", n))])
    error_message = "server run names are 1-40 lowercase letters, digits or hyphens."
  }
}

variable "health_schedule" {
  description = "How often the health check runs (the prune function with detail.check = \"health\"): it writes each database's backup age metric and alerts stale databases. An EventBridge Scheduler expression; at most an hour apart, so staleness is noticed within the hour."
  type        = string
  default     = "rate(1 hour)"
}

variable "schedule_timezone" {
  description = "Time zone of the schedule expressions (IANA name)."
  type        = string
  default     = "UTC"
}

variable "retention" {
  description = "Default retention policy of every database (restic forget semantics; PGKEEP_KEEP_* on the prune function). At least one rule."
  type = object({
    keep_last    = optional(number)
    keep_hourly  = optional(number)
    keep_daily   = optional(number, 7)
    keep_weekly  = optional(number, 4)
    keep_monthly = optional(number, 12)
    keep_yearly  = optional(number)
    keep_within  = optional(string)
    # Per kind, how long after it was taken a backup is kept (PGKEEP_KEEP_WITHIN_KIND), on top
    # of the rules above: { scheduled = "7d", manual = "30d", pre_migration = "365d" }.
    keep_within_kind = optional(map(string))
    # KEY or KEY=VALUE: also keep every backup carrying one of these labels (PGKEEP_KEEP_LABELS).
    keep_labels = optional(list(string))
    # How long pre_restore safety copies are kept (PGKEEP_PRE_RESTORE_KEEP_WITHIN); prune's
    # default (30d) when unset. Not a keep rule of its own.
    pre_restore_keep_within = optional(string)
  })
  default = {}

  validation {
    condition     = length([for k, v in var.retention : v if v != null && !contains(["keep_labels", "pre_restore_keep_within", "keep_within_kind"], k)]) > 0
    error_message = "the retention policy needs at least one keep rule (keep_labels, keep_within_kind and pre_restore_keep_within only add to the others)."
  }
  validation {
    condition = var.retention.keep_within_kind == null || alltrue([
      for k, v in coalesce(var.retention.keep_within_kind, {}) :
      contains(["scheduled", "manual", "pre_migration"], k) && can(regex("^([0-9]+[wdhms])+$", v))
    ])
    error_message = "keep_within_kind maps a backup kind (scheduled, manual, pre_migration; pre_restore copies have pre_restore_keep_within) to a span such as 7d, 2w or 1d12h."
  }
  validation {
    condition     = var.retention.pre_restore_keep_within == null || can(regex("^([0-9]+[wdhms])+$", var.retention.pre_restore_keep_within))
    error_message = "pre_restore_keep_within is a span such as 30d, 2w or 1d12h (units w, d, h, m, s)."
  }
  validation {
    condition     = alltrue([for l in coalesce(var.retention.keep_labels, []) : can(regex("^[a-z0-9][a-z0-9_.-]{0,62}(=.*)?$", l))])
    error_message = "keep_labels entries are KEY or KEY=VALUE, keys of 1-63 characters a-z, 0-9, '_', '.', '-' starting with a letter or digit."
  }
}

variable "max_age" {
  description = "Default maximum age of the newest good backup before a database is unhealthy (PGKEEP_MAX_AGE, and the stale alarm's threshold), e.g. 25h."
  type        = string
  default     = "25h"

  validation {
    condition     = can(regex("^([0-9]+[wdhms])+$", var.max_age))
    error_message = "max_age is a span such as 25h, 1d12h or 90m (units w, d, h, m, s)."
  }
}

variable "download_url_ttl" {
  description = "How long a download URL from the status API (GET /backups/{id}/download) works (PGKEEP_DOWNLOAD_URL_TTL), e.g. 15m; at most 7d, and never past the status function's role session."
  type        = string
  default     = "15m"

  validation {
    condition     = can(regex("^([0-9]+[wdhms])+$", var.download_url_ttl))
    error_message = "download_url_ttl is a span such as 15m, 1h or 90s (units w, d, h, m, s)."
  }
}

variable "compression" {
  description = "Compression and level of the backups the dump function takes (PGKEEP_COMPRESSION): zstd (level 3), zstd:1 to zstd:9, gzip (level 6), gzip:1 to gzip:9; null for zstd level 3. A lower level takes less CPU (a shorter invocation) for a larger object (docs/OPERATIONS.md, Compression level)."
  type        = string
  default     = null

  validation {
    condition     = var.compression == null || can(regex("^(zstd|gzip)(:[1-9])?$", var.compression))
    error_message = "compression is zstd, zstd:1 to zstd:9, gzip or gzip:1 to gzip:9."
  }
}

variable "abandon_after" {
  description = "An in-progress backup older than this is abandoned by the reaper (PGKEEP_ABANDON_AFTER); keep it above the dump function's 15-minute timeout."
  type        = string
  default     = "30m"
}

variable "vpc_subnet_ids" {
  description = "Private subnets from which the dump and verify functions reach the databases (and, through NAT or VPC endpoints, S3, DynamoDB, KMS, Secrets Manager, SNS and Lambda)."
  type        = list(string)

  validation {
    condition     = length(var.vpc_subnet_ids) > 0
    error_message = "vpc_subnet_ids needs at least one subnet."
  }
}

variable "vpc_security_group_ids" {
  description = "Security groups of the dump and verify functions; the databases' groups must admit them on the PostgreSQL port."
  type        = list(string)

  validation {
    condition     = length(var.vpc_security_group_ids) > 0
    error_message = "vpc_security_group_ids needs at least one security group."
  }
}

variable "scratch_secret_arn" {
  description = "Secret (RDS JSON) of the server verify restores into (a role with CREATEDB); null to restore on each database's own server."
  type        = string
  default     = null
}

variable "database_iam_auth" {
  description = "Reach the databases with RDS IAM authentication (PGKEEP_DATABASE_IAM_AUTH): a token per connection, signed with the dump and verify roles, instead of a password, over TLS. Every database then needs a url (postgresql://USER@HOST:PORT/DB, no password) and rds_iam_db_users its login."
  type        = bool
  default     = false
}

variable "rds_iam_db_users" {
  description = "Database users the dump and verify functions may log in as with IAM authentication (rds-db:connect), as arn:aws:rds-db:REGION:ACCOUNT:dbuser:DBI-RESOURCE-ID/USER (the DbiResourceId of an instance, cluster-… of an Aurora cluster). Empty: no rds-db:connect statement."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.rds_iam_db_users : can(regex("^arn:aws[a-z-]*:rds-db:[a-z0-9-]+:[0-9]{12}:dbuser:(db|cluster)-[A-Za-z0-9]+/[^/]+$", a))])
    error_message = "each rds_iam_db_users entry is arn:aws:rds-db:REGION:ACCOUNT:dbuser:DBI-RESOURCE-ID/USER (DBI-RESOURCE-ID is db-… or cluster-…, not the instance name)."
  }
}

variable "secrets_kms_key_arns" {
  description = "Customer managed KMS keys that encrypt the database and scratch secrets (none when they use the aws/secretsmanager key)."
  type        = list(string)
  default     = []
}

variable "alert_emails" {
  description = "E-mail addresses subscribed to the alert topic (each must confirm the subscription)."
  type        = list(string)
  default     = []
}

variable "alert_webhook_url" {
  description = "Slack-compatible webhook the dump, verify, prune and status functions post alerts to (PGKEEP_ALERT_WEBHOOK_URL); null for none. Stored encrypted with the pgkeep key in the functions' configuration."
  type        = string
  default     = null
  sensitive   = true
}

variable "alert_sns_events" {
  description = "Events the SNS topic gets (PGKEEP_ALERT_SNS_EVENTS): a comma-separated list of backup_ok, backup_failed, verification_ok, verification_failed, restore_ok, restore_failed, stale, or all, or none; null for every failure and stale."
  type        = string
  default     = null
}

variable "alert_webhook_events" {
  description = "Events the webhook gets (PGKEEP_ALERT_WEBHOOK_EVENTS), as alert_sns_events; null for every failure and stale."
  type        = string
  default     = null
}

variable "alert_webhook_format" {
  description = "Body of the webhook's posts (PGKEEP_ALERT_WEBHOOK_FORMAT): slack ({\"text\": ...}) or teams (an Adaptive Card); null for slack."
  type        = string
  default     = null
  validation {
    condition     = var.alert_webhook_format == null || contains(["slack", "teams"], coalesce(var.alert_webhook_format, "slack"))
    error_message = "alert_webhook_format must be slack or teams."
  }
}

variable "heartbeat_url" {
  description = "A dead man's switch (healthchecks.io convention) the dump and verify functions ping on start (URL/start), success (URL) and failure (URL/fail) (PGKEEP_HEARTBEAT_URL); null for none. The URL is a secret of sorts: stored encrypted like the webhook's."
  type        = string
  default     = null
  sensitive   = true
}

variable "object_lock" {
  description = "Optional S3 Object Lock on the bucket: mode GOVERNANCE or COMPLIANCE and a default retention in days. Object Lock can only be chosen when the bucket is created; prune and DELETE leave a backup whose lock has not ended alone and delete it at the first prune after."
  type = object({
    mode = string
    days = number
  })
  default = null

  validation {
    condition     = var.object_lock == null || try(contains(["GOVERNANCE", "COMPLIANCE"], var.object_lock.mode) && var.object_lock.days > 0, false)
    error_message = "object_lock.mode is GOVERNANCE or COMPLIANCE and object_lock.days is positive."
  }
}

variable "archive_after_days" {
  description = "Backups older than this move to the archive storage class; null to keep them in STANDARD."
  type        = number
  default     = 30
}

variable "archive_storage_class" {
  description = "Storage class of old backups. GLACIER_IR keeps them readable at once (verify and restore still work); GLACIER or DEEP_ARCHIVE need a restore request before reading."
  type        = string
  default     = "GLACIER_IR"

  validation {
    condition     = contains(["STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"], var.archive_storage_class)
    error_message = "archive_storage_class must be an S3 transition storage class."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days a deleted or overwritten object version is kept before it expires (the undo window after prune)."
  type        = number
  default     = 30
}

variable "access_log_bucket" {
  description = "Existing bucket that receives S3 server access logs of the backup bucket; null for none (CloudTrail data events are the alternative)."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "Retention of the functions' and the API's CloudWatch log groups."
  type        = number
  default     = 365
}

variable "architecture" {
  description = "CPU architecture of the functions: x86_64 (what scripts/package-lambdas builds here) or arm64 (artifacts built elsewhere with cargo lambda build --arm64)."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture is x86_64 or arm64."
  }
}

variable "artifacts_dir" {
  description = "Directory with <function>/bootstrap.zip for every function, as scripts/package-lambdas leaves them (cargo lambda's target/lambda)."
  type        = string
  default     = null
}

variable "pg_tools_image_uri" {
  description = "ECR image built from infra/Dockerfile (the dump and verify binaries, the pgkeep CLI and the PostgreSQL client tools). When set, dump and verify run from it; when null they run from their zips with pg_tools_layer_arns. The Fargate tasks of fargate and auto databases always run it (`pgkeep job`), so it is required when any database's runner is not lambda."
  type        = string
  default     = null
}

variable "fargate_cluster_arn" {
  description = "ECS cluster the Fargate tasks of fargate and auto databases run in; null to create one (<name>, with Container Insights). Unused when every database runs on Lambda."
  type        = string
  default     = null

  validation {
    condition     = var.fargate_cluster_arn == null || can(regex("^arn:aws[a-z-]*:ecs:[a-z0-9-]+:[0-9]{12}:cluster/[A-Za-z0-9_-]+$", var.fargate_cluster_arn))
    error_message = "fargate_cluster_arn is an ECS cluster ARN: arn:aws:ecs:REGION:ACCOUNT:cluster/NAME."
  }
}

variable "fargate_auto_after" {
  description = "An auto database runs on Fargate when its last successful backup (for a verification, its last verification) took longer than this (PGKEEP_FARGATE_AUTO_AFTER), e.g. 10m; keep it well under the Lambda's 15 minutes."
  type        = string
  default     = "10m"

  validation {
    condition     = can(regex("^([0-9]+[wdhms])+$", var.fargate_auto_after))
    error_message = "fargate_auto_after is a span such as 10m, 600s or 1h (units w, d, h, m, s)."
  }
}

variable "fargate_auto_size_mib" {
  description = "An auto database also runs on Fargate when its last successful backup is larger than this many MiB (PGKEEP_FARGATE_AUTO_SIZE_MIB); null for no size limit."
  type        = number
  default     = null

  validation {
    condition     = var.fargate_auto_size_mib == null || try(var.fargate_auto_size_mib > 0 && var.fargate_auto_size_mib == floor(var.fargate_auto_size_mib), false)
    error_message = "fargate_auto_size_mib is a positive whole number of MiB, or null."
  }
}

variable "pg_tools_layer_arns" {
  description = "Layers that put pg_dump and pg_restore on PATH (/opt/bin) for the zip packaging of dump and verify; unused with pg_tools_image_uri. Added after pg_tools_layer's."
  type        = list(string)
  default     = []
}

variable "pg_tools_layer" {
  description = "The PostgreSQL client tools layer for the zip packaging of dump and verify (unused with pg_tools_image_uri): `zip`, the layer zip of scripts/package-pg-layer (target/pg-layer/pg-tools-layer.zip), which the module publishes as <name>-pg-tools; or `arn`, a layer version already published. Its tools have no TLS: not with database_iam_auth or databases that require TLS (docs/OPERATIONS.md)."
  type = object({
    zip = optional(string)
    arn = optional(string)
  })
  default = null

  validation {
    condition     = var.pg_tools_layer == null || try((var.pg_tools_layer.zip == null) != (var.pg_tools_layer.arn == null), false)
    error_message = "pg_tools_layer takes exactly one of zip (a file from scripts/package-pg-layer) or arn (a published layer version)."
  }
  validation {
    condition     = try(var.pg_tools_layer.arn == null || can(regex("^arn:aws[a-z-]*:lambda:[a-z0-9-]+:[0-9]{12}:layer:[A-Za-z0-9_-]+:[0-9]+$", var.pg_tools_layer.arn)), true)
    error_message = "pg_tools_layer.arn is a layer version ARN: arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION."
  }
}

variable "reserved_concurrency" {
  description = "Reserved concurrent executions per function (caps parallel dumps and the API's load). -1 leaves a function unreserved, which accounts at the default quota of 10 need."
  type        = map(number)
  default = {
    dump   = 4
    verify = 2
    prune  = 1
    status = 4
  }
}

variable "admin_group" {
  description = "JWT group whose members may use the status API (PGKEEP_ADMIN_GROUP)."
  type        = string
  default     = "admin"
}

variable "jwt_authorizer" {
  description = "Use a JWT authorizer (issuer and audiences of e.g. a Cognito user pool) on the status API instead of IAM authorization."
  type = object({
    issuer    = string
    audiences = list(string)
  })
  default = null
}

variable "key_admin_arns" {
  description = "Principals that administer the pgkeep KMS key (never use it to decrypt); empty for the account, i.e. IAM policies decide."
  type        = list(string)
  default     = []
}

variable "restore_principal_arns" {
  description = "Roles or users allowed to decrypt backups outside the functions (pgkeep restore, pgkeep verify from a workstation). Disaster recovery needs at least one."
  type        = list(string)
  default     = []
}

variable "deletion_protection" {
  description = "Protect the catalog table from deletion (turn off only to tear a test stack down)."
  type        = bool
  default     = true
}
