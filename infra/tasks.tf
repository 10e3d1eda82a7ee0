# Beyond the Lambda's 15 minutes (#16): databases whose runner is fargate or auto get an ECS
# Fargate task definition that runs `pgkeep job` from the pg tools image (the same work through
# the same code; the job is the PGKEEP_JOB override of each RunTask). The dump and verify
# functions start it for auto databases and for work they are asked to do for a fargate one;
# the Scheduler starts it directly for a fargate database's schedules (schedules.tf). A task that
# stops with a failure reaches the dump function through the task-stopped rule below, which
# records it and alerts the same way as a failed Lambda run. Nothing here exists when every
# database runs on Lambda. docs/OPERATIONS.md, "Choosing a runner".

locals {
  # An image in ECR (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG or @DIGEST) needs the
  # execution role's pull permissions on that repository; any other registry, none.
  image_ecr            = try(regex("^([0-9]{12})\\.dkr\\.ecr\\.([a-z0-9-]+)\\.amazonaws\\.com(?:\\.cn)?/([^:@]+)", var.pg_tools_image_uri), null)
  image_repository_arn = local.image_ecr == null ? null : "arn:${local.partition}:ecr:${local.image_ecr[1]}:${local.image_ecr[0]}:repository/${local.image_ecr[2]}"

  task_log_group_name = "/aws/ecs/${var.name}-job"

  # The task role: the union of the actions of the functions whose jobs it runs (functions.json
  # task.runs), group by group on the union of their resources, without the Lambda platform's
  # groups (task.not_in_task).
  task_actions = {
    for g in distinct(flatten([for f in local.task_spec.runs : keys(local.functions[f].actions)])) :
    g => sort(distinct(flatten([for f in local.task_spec.runs : lookup(local.functions[f].actions, g, [])])))
    if !contains(local.task_spec.not_in_task, g)
  }
  task_group_resources = {
    for g in keys(local.task_actions) : g => distinct(flatten([
      for f in local.task_spec.runs : local.group_resources[f][g] if contains(keys(local.functions[f].actions), g)
    ]))
  }

  # The execution role (ECS starts the container with it): functions.json task.execution_actions.
  execution_group_resources = {
    task_logs         = local.uses_fargate ? ["${aws_cloudwatch_log_group.task[0].arn}:*"] : []
    image_auth        = local.image_repository_arn != null ? ["*"] : []
    image_pull        = compact([local.image_repository_arn])
    task_settings     = local.uses_fargate ? [aws_secretsmanager_secret.task[0].arn] : []
    task_settings_key = [aws_kms_key.pgkeep.arn]
  }
}

resource "aws_ecs_cluster" "pgkeep" {
  count = local.uses_fargate && var.fargate_cluster_arn == null ? 1 : 0

  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "task" {
  count = local.uses_fargate ? 1 : 0

  name              = local.task_log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.pgkeep.arn
}

# The task's credentials (functions.json task.secret_env: the webhook and heartbeat URLs), which
# the functions keep in their KMS-encrypted configuration: a task definition's environment is
# plain text to anyone who may describe it, so the container gets them as `secrets` from here.
resource "aws_secretsmanager_secret" "task" {
  #checkov:skip=CKV2_AWS_57:These are webhook and heartbeat URLs issued by Slack, Teams or healthchecks.io, not credentials AWS can rotate; they change with the Terraform variables (alert_webhook_url, heartbeat_url), which rewrite this secret.
  count = local.uses_fargate ? 1 : 0

  name                    = "${var.name}-task-env"
  description             = "pgkeep ${var.name}: the Fargate job's secret settings (${join(", ", local.task_spec.secret_env)}), JSON by variable name"
  kms_key_id              = aws_kms_key.pgkeep.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "task" {
  count = local.uses_fargate ? 1 : 0

  secret_id     = aws_secretsmanager_secret.task[0].id
  secret_string = jsonencode(local.task_secret_env)
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

# What the job itself does: a dump, verify or prune job, like those functions.
resource "aws_iam_role" "task" {
  count = local.uses_fargate ? 1 : 0

  name               = "${var.name}-task"
  description        = "pgkeep Fargate job (pgkeep job): runs the work of the ${join(", ", local.task_spec.runs)} functions"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "task" {
  count = local.uses_fargate ? 1 : 0

  dynamic "statement" {
    for_each = { for g, actions in local.task_actions : g => actions if length(local.task_group_resources[g]) > 0 }

    content {
      sid       = replace(title(replace(statement.key, "_", " ")), " ", "")
      actions   = statement.value
      resources = local.task_group_resources[statement.key]

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

resource "aws_iam_role_policy" "task" {
  count = local.uses_fargate ? 1 : 0

  name   = "pgkeep-task"
  role   = aws_iam_role.task[0].id
  policy = data.aws_iam_policy_document.task[0].json
}

# What ECS needs to start the container: pull the image, write its logs, read its secrets.
resource "aws_iam_role" "task_execution" {
  count = local.uses_fargate ? 1 : 0

  name               = "${var.name}-task-execution"
  description        = "ECS starts the pgkeep Fargate job with this role: image pull, logs, the job's secret settings"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "task_execution" {
  count = local.uses_fargate ? 1 : 0

  dynamic "statement" {
    for_each = { for g, actions in local.task_spec.execution_actions : g => actions if length(local.execution_group_resources[g]) > 0 }

    content {
      sid       = replace(title(replace(statement.key, "_", " ")), " ", "")
      actions   = statement.value
      resources = local.execution_group_resources[statement.key]

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

resource "aws_iam_role_policy" "task_execution" {
  count = local.uses_fargate ? 1 : 0

  name   = "pgkeep-task-execution"
  role   = aws_iam_role.task_execution[0].id
  policy = data.aws_iam_policy_document.task_execution[0].json
}

# One per fargate or auto database: its CPU and memory; the container `pgkeep` runs
# `/var/task/pgkeep job` (the image's own entry point is the dump function's bootstrap).
resource "aws_ecs_task_definition" "job" {
  for_each = local.fargate_databases

  family                   = local.task_families[each.key]
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(each.value.fargate_cpu)
  memory                   = tostring(each.value.fargate_memory)
  task_role_arn            = aws_iam_role.task[0].arn
  execution_role_arn       = aws_iam_role.task_execution[0].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.architecture == "arm64" ? "ARM64" : "X86_64"
  }

  # Scratch space (a restore with more than one job stages its archive under /tmp) on the
  # task's ephemeral storage; the rest of the root file system is read-only.
  volume {
    name = "tmp"
  }

  dynamic "ephemeral_storage" {
    for_each = each.value.fargate_storage_gib == null ? [] : [each.value.fargate_storage_gib]
    content {
      size_in_gib = ephemeral_storage.value
    }
  }

  container_definitions = jsonencode([{
    name       = "pgkeep"
    image      = var.pg_tools_image_uri
    essential  = true
    entryPoint = ["/var/task/pgkeep", "job"]
    environment = [
      for k in sort(keys(local.task_env)) : { name = k, value = local.task_env[k] }
    ]
    secrets = [
      for k in sort(keys(local.task_secret_env)) : { name = k, valueFrom = "${aws_secretsmanager_secret.task[0].arn}:${k}::" }
    ]
    # ECS sends SIGTERM on StopTask and kills the container this many seconds later: the job
    # marks its record failed, aborts its upload and releases its lease in that time.
    stopTimeout            = 30
    readonlyRootFilesystem = true
    mountPoints = [
      { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }
    ]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.task[0].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "job"
      }
    }
  }])

  depends_on = [aws_secretsmanager_secret_version.task]
}

# A task that stopped (finished, failed to start, killed by ECS or by the OOM killer) goes to
# the dump function, which records a failure of the job in its PGKEEP_JOB override and alerts
# as for a failed Lambda run (exit code 0: nothing to do).
resource "aws_cloudwatch_event_rule" "task_stopped" {
  count = local.uses_fargate ? 1 : 0

  name        = "${var.name}-task-stopped"
  description = "pgkeep: a Fargate job stopped (the dump function records a failure and alerts)"
  event_pattern = jsonencode({
    source        = ["aws.ecs"]
    "detail-type" = ["ECS Task State Change"]
    detail = {
      lastStatus = ["STOPPED"]
      clusterArn = [local.cluster_arn]
      startedBy  = ["pgkeep"]
    }
  })
}

resource "aws_cloudwatch_event_target" "task_stopped" {
  count = local.uses_fargate ? 1 : 0

  rule      = aws_cloudwatch_event_rule.task_stopped[0].name
  target_id = "dump"
  arn       = aws_lambda_function.function["dump"].arn

  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 3
  }

  dead_letter_config {
    arn = aws_sqs_queue.dlq.arn
  }
}

resource "aws_lambda_permission" "task_stopped" {
  count = local.uses_fargate ? 1 : 0

  statement_id  = "pgkeep-task-stopped"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.function["dump"].function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.task_stopped[0].arn
}

# EventBridge puts the events it could not deliver into the dead-letter queue with its own
# service principal, for this rule only.
data "aws_iam_policy_document" "dlq" {
  count = local.uses_fargate ? 1 : 0

  statement {
    sid       = "TaskStoppedRule"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.dlq.arn]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.task_stopped[0].arn]
    }
  }
}

resource "aws_sqs_queue_policy" "dlq" {
  count = local.uses_fargate ? 1 : 0

  queue_url = aws_sqs_queue.dlq.id
  policy    = data.aws_iam_policy_document.dlq[0].json
}
