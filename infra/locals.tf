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
    PGKEEP_KEEP_LABELS             = var.retention.keep_labels == null ? null : jsonencode(var.retention.keep_labels)
    PGKEEP_PRE_RESTORE_KEEP_WITHIN = var.retention.pre_restore_keep_within
  }

  function_env = {
    for f, s in local.functions : f => {
      for v in distinct(concat(local.spec.common_env, s.env)) : v => local.env_values[v] if local.env_values[v] != null
    }
  }
}
