# One role per function granting exactly the actions functions.json lists for it, each on the
# resources of its group; plus the role EventBridge Scheduler assumes to start the functions.

locals {
  # Resources of each permission group, per function (see permission_groups in functions.json).
  group_resources = {
    for f, s in local.functions : f => {
      objects     = ["${aws_s3_bucket.backups.arn}/${var.repository_prefix}/*"]
      bucket      = [aws_s3_bucket.backups.arn]
      catalog     = [aws_dynamodb_table.catalog.arn, "${aws_dynamodb_table.catalog.arn}/index/*"]
      key         = [aws_kms_key.pgkeep.arn]
      key_via_s3  = [aws_kms_key.pgkeep.arn]
      key_via_sns = [aws_kms_key.pgkeep.arn]
      secrets     = f == "verify" ? concat(local.database_secret_arns, compact([var.scratch_secret_arn])) : local.database_secret_arns
      login_cmk   = var.secrets_kms_key_arns
      rds_db      = var.rds_iam_db_users
      invoke      = [for target in s.invokes : local.function_arns[target]]
      topic       = [aws_sns_topic.alerts.arn]
      dlq         = [aws_sqs_queue.dlq.arn]
      logs        = ["${aws_cloudwatch_log_group.function[f].arn}:*"]
      tracing     = ["*"]
      # The task definitions by family and by revision (RunTask names the family; IAM sees the
      # revision it resolves to).
      run_task        = flatten([for a in values(local.task_definition_arns) : [a, "${a}:*"]])
      pass_task_roles = local.uses_fargate ? [aws_iam_role.task[0].arn, aws_iam_role.task_execution[0].arn] : []
    }
  }

  # Groups usable only through one AWS service (kms:ViaService), or only on one cluster or for
  # one service: the conditions of each group's statements.
  group_via_service = local.spec.via_service
  group_conditions = merge(
    { for g, service in local.group_via_service : g => [{ test = "StringEquals", variable = "kms:ViaService", values = ["${service}.${local.region}.amazonaws.com"] }] },
    {
      run_task        = [{ test = "ArnEquals", variable = "ecs:cluster", values = [local.cluster_arn] }]
      pass_task_roles = [{ test = "StringEquals", variable = "iam:PassedToService", values = ["ecs-tasks.amazonaws.com"] }]
    },
  )
}

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  for_each = local.functions

  name               = "${var.name}-${each.key}"
  description        = "pgkeep ${each.key} function: ${each.value.description}"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

data "aws_iam_policy_document" "function" {
  for_each = local.functions

  dynamic "statement" {
    # A group with no resource in this deployment (no secret with a customer managed key, say)
    # grants nothing.
    for_each = { for group, actions in each.value.actions : group => actions if length(local.group_resources[each.key][group]) > 0 }

    content {
      # The statement id names the group, so the deployed policy can be compared with the list.
      sid       = replace(title(replace(statement.key, "_", " ")), " ", "")
      actions   = statement.value
      resources = local.group_resources[each.key][statement.key]

      dynamic "condition" {
        for_each = lookup(local.group_conditions, statement.key, [])
        content {
          test     = condition.value.test
          variable = condition.value.variable
          values   = condition.value.values
        }
      }
    }
  }
}

resource "aws_iam_role_policy" "function" {
  for_each = local.functions

  name   = "pgkeep-${each.key}"
  role   = aws_iam_role.function[each.key].id
  policy = data.aws_iam_policy_document.function[each.key].json

  lifecycle {
    precondition {
      condition     = !var.database_iam_auth || alltrue([for n, d in var.databases : d.url != null])
      error_message = "database_iam_auth = true reaches every database with RDS IAM tokens: give each a url (postgresql://USER@HOST:PORT/DB, no password), not a secret_arn."
    }
    precondition {
      condition     = var.pg_tools_image_uri != null || !local.uses_fargate
      error_message = "pg_tools_image_uri is required when a database's runner is fargate or auto (${join(", ", keys(local.fargate_databases))}): the Fargate task runs `pgkeep job` from that image (infra/Dockerfile). Build and push it, or set those databases' runner to \"lambda\"."
    }
    precondition {
      condition     = !var.database_iam_auth || length(var.rds_iam_db_users) > 0
      error_message = "database_iam_auth = true needs rds_iam_db_users: the arn:aws:rds-db:REGION:ACCOUNT:dbuser:DBI-RESOURCE-ID/USER the functions log in as (rds-db:connect)."
    }
  }
}

# Elastic network interfaces in the VPC, for the functions that reach the databases.
resource "aws_iam_role_policy_attachment" "vpc" {
  for_each = { for f, s in local.functions : f => s if s.in_vpc }

  role       = aws_iam_role.function[each.key].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

data "aws_iam_policy_document" "scheduler_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  name               = "${var.name}-scheduler"
  description        = "EventBridge Scheduler starts the pgkeep dump, verify and prune functions, and the Fargate jobs of fargate databases"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume.json
}

data "aws_iam_policy_document" "scheduler" {
  statement {
    sid       = "Invoke"
    actions   = ["lambda:InvokeFunction"]
    resources = [for f, s in local.functions : local.function_arns[f] if s.scheduled]
  }

  statement {
    sid       = "DeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.dlq.arn]
  }

  # The schedules of fargate databases start their task directly (schedules.tf).
  dynamic "statement" {
    for_each = length(local.scheduled_task_definitions) > 0 ? [1] : []
    content {
      sid       = "RunTask"
      actions   = ["ecs:RunTask"]
      resources = flatten([for a in local.scheduled_task_definitions : [a, "${a}:*"]])

      condition {
        test     = "ArnEquals"
        variable = "ecs:cluster"
        values   = [local.cluster_arn]
      }
    }
  }

  dynamic "statement" {
    for_each = length(local.scheduled_task_definitions) > 0 ? [1] : []
    content {
      sid       = "PassTaskRoles"
      actions   = ["iam:PassRole"]
      resources = [aws_iam_role.task[0].arn, aws_iam_role.task_execution[0].arn]

      condition {
        test     = "StringEquals"
        variable = "iam:PassedToService"
        values   = ["ecs-tasks.amazonaws.com"]
      }
    }
  }

  statement {
    sid       = "EncryptedSchedules"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.pgkeep.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["scheduler.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "scheduler" {
  name   = "pgkeep-scheduler"
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.scheduler.json
}
