# One Lambda function per crate under functions/ (the names in functions.json). dump and verify
# need pg_dump and pg_restore: they run from the container image built from infra/Dockerfile
# when pg_tools_image_uri is set, otherwise from their zips with the pg tools layer
# (pg_tools_layer, scripts/package-pg-layer) and pg_tools_layer_arns.

resource "aws_cloudwatch_log_group" "function" {
  for_each = local.functions

  name              = "/aws/lambda/${local.function_names[each.key]}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.pgkeep.arn
}

# Failed asynchronous invocations (schedules, dump -> verify, API -> dump) end here.
resource "aws_sqs_queue" "dlq" {
  name                      = "${var.name}-dead-letters"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
}

# pg_dump, pg_restore and psql for the zip path, from scripts/package-pg-layer's zip (x86_64).
resource "aws_lambda_layer_version" "pg_tools" {
  count = local.pg_tools_layer_zip != null ? 1 : 0

  layer_name               = "${var.name}-pg-tools"
  description              = "PostgreSQL client tools (pg_dump, pg_restore, psql) for pgkeep dump and verify"
  filename                 = local.pg_tools_layer_zip
  source_code_hash         = filebase64sha256(local.pg_tools_layer_zip)
  compatible_runtimes      = ["provided.al2023"]
  compatible_architectures = ["x86_64"]
  license_info             = "PostgreSQL"

  lifecycle {
    precondition {
      condition     = var.architecture == "x86_64"
      error_message = "The layer of scripts/package-pg-layer is x86_64 only: with architecture = \"arm64\" use pg_tools_image_uri or an arm64 layer's arn."
    }
    precondition {
      condition     = !var.database_iam_auth
      error_message = "The layer of scripts/package-pg-layer has no TLS, which database_iam_auth requires: use pg_tools_image_uri."
    }
  }
}

resource "aws_lambda_function" "function" {
  #checkov:skip=CKV_AWS_272:Lambda code signing does not apply to container images (dump and verify) and needs an AWS Signer profile in the deployer's pipeline; the artifacts are built from this repository by scripts/package-lambdas and deployed by the same pipeline.
  for_each = local.functions

  function_name = local.function_names[each.key]
  description   = "pgkeep ${each.key}: ${each.value.description}"
  role          = aws_iam_role.function[each.key].arn
  architectures = [var.architecture]
  timeout       = each.value.timeout
  memory_size   = each.value.memory

  package_type     = local.uses_image[each.key] ? "Image" : "Zip"
  image_uri        = local.uses_image[each.key] ? var.pg_tools_image_uri : null
  filename         = local.uses_image[each.key] ? null : local.zip_path[each.key]
  source_code_hash = local.uses_image[each.key] ? null : try(filebase64sha256(local.zip_path[each.key]), null)
  handler          = local.uses_image[each.key] ? null : "bootstrap"
  runtime          = local.uses_image[each.key] ? null : "provided.al2023"
  layers           = !local.uses_image[each.key] && each.value.needs_pg_tools ? local.pg_tools_layers : null

  reserved_concurrent_executions = lookup(var.reserved_concurrency, each.key, -1)
  kms_key_arn                    = aws_kms_key.pgkeep.arn

  environment {
    variables = local.function_env[each.key]
  }

  tracing_config {
    mode = "Active"
  }

  dead_letter_config {
    target_arn = aws_sqs_queue.dlq.arn
  }

  dynamic "vpc_config" {
    for_each = each.value.in_vpc ? [1] : []
    content {
      subnet_ids         = var.vpc_subnet_ids
      security_group_ids = var.vpc_security_group_ids
    }
  }

  dynamic "image_config" {
    for_each = local.uses_image[each.key] ? [1] : []
    content {
      # The image holds both binaries; each function starts its own.
      entry_point = ["/var/task/${each.key}"]
    }
  }

  lifecycle {
    precondition {
      condition     = local.uses_image[each.key] || fileexists(local.zip_path[each.key])
      error_message = "No ${local.zip_path[each.key]}: build the functions with scripts/package-lambdas (or set artifacts_dir)."
    }
    precondition {
      condition     = local.uses_image[each.key] || !each.value.needs_pg_tools || length(local.pg_tools_layers) > 0
      error_message = "${each.key} needs pg_dump and pg_restore: set pg_tools_image_uri (recommended) or pg_tools_layer (scripts/package-pg-layer)."
    }
  }

  depends_on = [
    aws_cloudwatch_log_group.function,
    aws_iam_role_policy.function,
    aws_iam_role_policy_attachment.vpc,
  ]
}
