# EventBridge Scheduler: for each database, one schedule each for dump, verify and prune. Each
# sends the same EventBridge-shaped event (what functions/dump accepts, see events/dump/):
# detail.database names the database, and the event id is the scheduler's execution id, so a
# duplicate delivery of one execution maps to the same backup id. Prune's detail also carries
# the database's retention override, when it has one.
#
# A fargate database's dump and verify schedules start its Fargate task instead (#16): the
# Scheduler's universal target for ECS RunTask, with the request in the ECS API's own JSON and
# the job, {"function": ..., "event": <the event the Lambda target would get>}, as the
# container's PGKEEP_JOB. auto databases keep their Lambda targets (the function decides).

locals {
  schedules = merge([
    for db, d in var.databases : {
      for f, s in local.functions : "${f}-${db}" => {
        database   = db
        function   = f
        expression = { dump = d.dump_schedule, verify = d.verify_schedule, prune = d.prune_schedule }[f]
        detail = merge(
          { database = db },
          f == "prune" && d.retention != null ? { retention = { for k, v in d.retention : k => v if v != null } } : {},
        )
        on_ecs = d.runner == "fargate" && contains(["dump", "verify"], f)
      } if s.scheduled
    }
  ]...)

  # Task definitions the Scheduler starts (its role may run exactly these).
  scheduled_task_definitions = distinct([for k, s in local.schedules : local.task_definition_arns[s.database] if s.on_ecs])

  # The event each schedule's Lambda target gets (and a Fargate job's PGKEEP_JOB carries);
  # <aws.scheduler.*> are the Scheduler's context attributes, filled in at each execution.
  schedule_events = {
    for k, s in local.schedules : k => {
      version       = "0"
      id            = "<aws.scheduler.execution-id>"
      "detail-type" = "Scheduled Event"
      source        = "aws.scheduler"
      account       = local.account
      time          = "<aws.scheduler.scheduled-time>"
      region        = local.region
      resources     = ["<aws.scheduler.schedule-arn>"]
      detail        = s.detail
    }
  }

  # jsonencode writes < and > as \u003c and \u003e; the context attributes must stay literal
  # to be filled in, also inside the job's JSON string (valid JSON either way).
  schedule_run_task = {
    for k, s in local.schedules : k => replace(replace(jsonencode({
      Cluster        = local.cluster_arn
      TaskDefinition = local.task_definition_arns[s.database]
      LaunchType     = "FARGATE"
      Count          = 1
      StartedBy      = "pgkeep"
      NetworkConfiguration = {
        AwsvpcConfiguration = {
          Subnets        = var.vpc_subnet_ids
          SecurityGroups = var.vpc_security_group_ids
          AssignPublicIp = "DISABLED"
        }
      }
      Overrides = {
        ContainerOverrides = [{
          Name = "pgkeep"
          Environment = [{
            Name  = "PGKEEP_JOB"
            Value = replace(replace(jsonencode({ function = s.function, event = local.schedule_events[k] }), "\\u003c", "<"), "\\u003e", ">")
          }]
        }]
      }
    }), "\\u003c", "<"), "\\u003e", ">") if s.on_ecs
  }
}

resource "aws_scheduler_schedule_group" "pgkeep" {
  name = var.name
}

resource "aws_scheduler_schedule" "run" {
  for_each = local.schedules

  name                         = "${var.name}-${each.key}"
  group_name                   = aws_scheduler_schedule_group.pgkeep.name
  description                  = "pgkeep: ${each.value.function} ${each.value.database}"
  schedule_expression          = each.value.expression
  schedule_expression_timezone = var.schedule_timezone
  kms_key_arn                  = aws_kms_key.pgkeep.arn

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = each.value.on_ecs ? "arn:${local.partition}:scheduler:::aws-sdk:ecs:runTask" : aws_lambda_function.function[each.value.function].arn
    role_arn = aws_iam_role.scheduler.arn
    input    = each.value.on_ecs ? local.schedule_run_task[each.key] : jsonencode(local.schedule_events[each.key])

    retry_policy {
      maximum_event_age_in_seconds = 3600
      maximum_retry_attempts       = 3
    }

    dead_letter_config {
      arn = aws_sqs_queue.dlq.arn
    }
  }
}

# The hourly health check: the prune function asked only to check (detail.check = "health").
# It writes every database's NewestGoodBackupAge metric (which the stale alarm in alerts.tf
# watches) and sends a `stale` alert for each database whose newest good backup is past its
# maximum age, so a stale database is noticed within the hour, not at the next prune.
resource "aws_scheduler_schedule" "health" {
  name                         = "${var.name}-health"
  group_name                   = aws_scheduler_schedule_group.pgkeep.name
  description                  = "pgkeep: health check (stale backups)"
  schedule_expression          = var.health_schedule
  schedule_expression_timezone = var.schedule_timezone
  kms_key_arn                  = aws_kms_key.pgkeep.arn

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.function["prune"].arn
    role_arn = aws_iam_role.scheduler.arn
    input = jsonencode({
      version       = "0"
      id            = "<aws.scheduler.execution-id>"
      "detail-type" = "Scheduled Event"
      source        = "aws.scheduler"
      account       = local.account
      time          = "<aws.scheduler.scheduled-time>"
      region        = local.region
      resources     = ["<aws.scheduler.schedule-arn>"]
      detail        = { check = "health" }
    })

    retry_policy {
      maximum_event_age_in_seconds = 900
      maximum_retry_attempts       = 1
    }

    dead_letter_config {
      arn = aws_sqs_queue.dlq.arn
    }
  }
}

# Whole-server runs (var.server_runs): the dump function with detail.all_databases, so every
# database on that server and the globals are backed up as one run (one run id per execution).
resource "aws_scheduler_schedule" "server_run" {
  for_each = var.server_runs

  name                         = "${var.name}-server-${each.key}"
  group_name                   = aws_scheduler_schedule_group.pgkeep.name
  description                  = "pgkeep: whole-server run on the server of ${each.value.database}"
  schedule_expression          = each.value.schedule
  schedule_expression_timezone = var.schedule_timezone
  kms_key_arn                  = aws_kms_key.pgkeep.arn

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.function["dump"].arn
    role_arn = aws_iam_role.scheduler.arn
    input = jsonencode({
      version       = "0"
      id            = "<aws.scheduler.execution-id>"
      "detail-type" = "Scheduled Event"
      source        = "aws.scheduler"
      account       = local.account
      time          = "<aws.scheduler.scheduled-time>"
      region        = local.region
      resources     = ["<aws.scheduler.schedule-arn>"]
      detail        = { database = each.value.database, all_databases = true }
    })

    retry_policy {
      maximum_event_age_in_seconds = 3600
      maximum_retry_attempts       = 3
    }

    dead_letter_config {
      arn = aws_sqs_queue.dlq.arn
    }
  }
}
