# Names, the functions' specification (functions.json) and the values of every PGKEEP_*
# variable. A function's environment is exactly its list in functions.json (common_env plus
# its own env), with unset optional values left out.

data "aws_caller_identity" "current" {}

data "aws_region" "current" {}

data "aws_partition" "current" {}

locals {
  spec      = jsondecode(file("${path.module}/functions.json"))
  functions = local.spec.functions

  account   = data.aws_caller_identity.current.account_id
  region    = data.aws_region.current.name
  partition = data.aws_partition.current.partition

  function_names = { for f in keys(local.functions) : f => "${var.name}-${f}" }
  # Built from names, not from the resources, so that roles and environments can name the
  # functions they call without a dependency cycle.
  function_arns = { for f, n in local.function_names : f => "arn:${local.partition}:lambda:${local.region}:${local.account}:function:${n}" }

  bucket_name = coalesce(var.bucket_name, "${var.name}-backups-${local.account}-${local.region}")
  table_name  = "${var.name}-catalog"

  artifacts_dir = coalesce(var.artifacts_dir, "${path.module}/../target/lambda")
  # dump and verify run from the container image when one is given, the rest always from zips.
  uses_image = { for f, s in local.functions : f => s.needs_pg_tools && var.pg_tools_image_uri != null }
  zip_path   = { for f in keys(local.functions) : f => "${local.artifacts_dir}/${f}/bootstrap.zip" }
  # The layers of dump and verify on the zip path: the pg tools layer (published here from its
  # zip, or given by ARN), then any others.
  pg_tools_layer_zip = try(var.pg_tools_layer.zip, null)
  pg_tools_layers = concat(
    local.pg_tools_layer_zip != null ? [aws_lambda_layer_version.pg_tools[0].arn] : [],
    try(var.pg_tools_layer.arn, null) != null ? [var.pg_tools_layer.arn] : [],
    var.pg_tools_layer_arns,
  )

  database_secret_arns = compact([for n, d in var.databases : d.secret_arn])

  # PGKEEP_DATABASES: name -> {"secret_arn": ...} or {"url": ...}.
  databases_json = jsonencode({
    for n, d in var.databases : n => { for k, v in { secret_arn = d.secret_arn, url = d.url } : k => v if v != null }
  })

  # PGKEEP_SELECTIONS: name -> the lists of pg_dump patterns set for it; databases backed up
  # whole are left out, and the variable is unset when none has a selection.
  database_selections = {
    for n, d in var.databases : n => { for k, v in d.selection : k => v if v != null } if d.selection != null
  }

  # Databases whose backups and verifications may run as a Fargate task (runner fargate or
  # auto): one task definition each. Without any, nothing of ECS is created.
  fargate_databases = { for n, d in var.databases : n => d if d.runner != "lambda" }
  uses_fargate      = length(local.fargate_databases) > 0
  cluster_arn       = !local.uses_fargate ? null : var.fargate_cluster_arn != null ? var.fargate_cluster_arn : aws_ecs_cluster.pgkeep[0].arn
  task_families     = { for n in keys(local.fargate_databases) : n => "${var.name}-${replace(n, ".", "-")}" }
  # Without a revision: RunTask then starts the latest ACTIVE revision, so a new revision takes
  # effect without changing the functions or the schedules (and the task's own environment can
  # name its task definition).
  task_definition_arns = { for n, f in local.task_families : n => "arn:${local.partition}:ecs:${local.region}:${local.account}:task-definition/${f}" }

  span_units = { w = 604800, d = 86400, h = 3600, m = 60, s = 1 }
  # Seconds of a span such as "1d12h" (the alarms compare the age metric, in seconds, with it).
  max_age_seconds = {
    for n, d in var.databases : n => sum([
      for part in regexall("([0-9]+)([wdhms])", coalesce(d.max_age, var.max_age)) : tonumber(part[0]) * local.span_units[part[1]]
    ])
  }

  env_values = {
    PGKEEP_REPO                    = "s3://${local.bucket_name}/${var.repository_prefix}"
    PGKEEP_CATALOG                 = "dynamodb://${local.table_name}"
    PGKEEP_KEY                     = "kms://${aws_kms_key.pgkeep.arn}"
    PGKEEP_DATABASES               = local.databases_json
    PGKEEP_DATABASE_IAM_AUTH       = tostring(var.database_iam_auth)
    PGKEEP_MAX_AGE                 = var.max_age
    PGKEEP_DOWNLOAD_URL_TTL        = var.download_url_ttl
    PGKEEP_ADMIN_GROUP             = var.admin_group
    PGKEEP_DUMP_FUNCTION           = local.function_names["dump"]
    PGKEEP_VERIFY_FUNCTION         = local.function_names["verify"]
    PGKEEP_ABANDON_AFTER           = var.abandon_after
    PGKEEP_ALERT_TOPIC_ARN         = aws_sns_topic.alerts.arn
    PGKEEP_ALERT_WEBHOOK_URL       = var.alert_webhook_url
    PGKEEP_ALERT_SNS_EVENTS        = var.alert_sns_events
    PGKEEP_ALERT_WEBHOOK_EVENTS    = var.alert_webhook_events
    PGKEEP_ALERT_WEBHOOK_FORMAT    = var.alert_webhook_format
    PGKEEP_HEARTBEAT_URL           = var.heartbeat_url
    PGKEEP_SCRATCH_SECRET_ARN      = var.scratch_secret_arn
    PGKEEP_SELECTIONS              = length(local.database_selections) == 0 ? null : jsonencode(local.database_selections)
    PGKEEP_KEEP_LAST               = try(tostring(var.retention.keep_last), null)
    PGKEEP_KEEP_HOURLY             = try(tostring(var.retention.keep_hourly), null)
    PGKEEP_KEEP_DAILY              = try(tostring(var.retention.keep_daily), null)
    PGKEEP_KEEP_WEEKLY             = try(tostring(var.retention.keep_weekly), null)
    PGKEEP_KEEP_MONTHLY            = try(tostring(var.retention.keep_monthly), null)
    PGKEEP_KEEP_YEARLY             = try(tostring(var.retention.keep_yearly), null)
    PGKEEP_KEEP_WITHIN             = var.retention.keep_within
    PGKEEP_KEEP_WITHIN_KIND        = var.retention.keep_within_kind == null ? null : jsonencode(var.retention.keep_within_kind)
    PGKEEP_KEEP_LABELS             = var.retention.keep_labels == null ? null : jsonencode(var.retention.keep_labels)
    PGKEEP_PRE_RESTORE_KEEP_WITHIN = var.retention.pre_restore_keep_within
    # The runner of each database (#16; docs/OPERATIONS.md, Choosing a runner) and what starting
    # a Fargate task needs; the ECS ones are unset when every database runs on Lambda.
    PGKEEP_RUNNERS                  = jsonencode({ for n, d in var.databases : n => d.runner })
    PGKEEP_JOBS                     = jsonencode({ for n, d in var.databases : n => d.jobs })
    PGKEEP_COMPRESSION              = var.compression
    PGKEEP_FARGATE_AUTO_AFTER       = var.fargate_auto_after
    PGKEEP_FARGATE_AUTO_SIZE_MIB    = try(tostring(var.fargate_auto_size_mib), null)
    PGKEEP_FARGATE_CLUSTER          = local.cluster_arn
    PGKEEP_FARGATE_TASK_DEFINITIONS = local.uses_fargate ? jsonencode(local.task_definition_arns) : null
    PGKEEP_FARGATE_SUBNETS          = local.uses_fargate ? join(",", var.vpc_subnet_ids) : null
    PGKEEP_FARGATE_SECURITY_GROUPS  = local.uses_fargate ? join(",", var.vpc_security_group_ids) : null
  }

  function_env = {
    for f, s in local.functions : f => {
      for v in distinct(concat(local.spec.common_env, s.env)) : v => local.env_values[v] if local.env_values[v] != null
    }
  }

  # The Fargate task's environment: that of the functions whose jobs it runs, built the same
  # way; the credentials among it (task.secret_env) go through a secret instead (tasks.tf).
  task_spec = local.spec.task
  task_env_all = {
    for v in distinct(concat(local.spec.common_env, flatten([for f in local.task_spec.runs : local.functions[f].env]))) :
    v => local.env_values[v] if local.env_values[v] != null
  }
  task_env        = { for k, v in local.task_env_all : k => v if !contains(local.task_spec.secret_env, k) }
  task_secret_env = { for k, v in local.task_env_all : k => v if contains(local.task_spec.secret_env, k) }
}
