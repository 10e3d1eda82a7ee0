# One customer managed key for everything pgkeep stores: the backups' data keys (envelope
# encryption by the functions), the bucket (SSE-KMS), the catalog table, the alert topic, the
# functions' environments, the log groups and the schedules. Nobody gets kms:* on it: the account
# may administer it but not use it, and each use is granted to the principal that needs it,
# directly or only through the AWS service that needs it.

locals {
  account_root = "arn:${local.partition}:iam::${local.account}:root"

  key_admin_actions = [
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListAliases",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:RetireGrant",
    "kms:RevokeGrant",
    "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
  ]

  # Key uses per function (and the Fargate job's task role) and per path, from functions.json.
  key_uses = {
    for group, service in { key = null, key_via_s3 = "s3", key_via_sns = "sns" } : group => {
      service                   = service
      grants = merge(
        { for f, s in local.functions : f => s.actions[group] if contains(keys(s.actions), group) },
        local.uses_fargate && contains(keys(local.task_actions), group) ? { task = local.task_actions[group] } : {},
      )
    }
  }
  key_principals = merge(
    { for f in keys(local.functions) : f => aws_iam_role.function[f].arn },
    local.uses_fargate ? { task = aws_iam_role.task[0].arn } : {},
  )
}

data "aws_iam_policy_document" "key" {
  statement {
    sid       = "Administer"
    actions   = local.key_admin_actions
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = length(var.key_admin_arns) > 0 ? var.key_admin_arns : [local.account_root]
    }
  }

  # The functions' own uses, each role with exactly its actions.
  dynamic "statement" {
    for_each = merge([
      for group, use in local.key_uses : {
        for f, actions in use.grants : "${group}.${f}" => { function = f, actions = actions, service = use.service }
      }
    ]...)

    content {
      sid       = replace(title(replace(statement.key, "/[._]/", " ")), " ", "")
      actions   = statement.value.actions
      resources = ["*"]

      principals {
        type        = "AWS"
        identifiers = [local.key_principals[statement.value.function]]
      }

      dynamic "condition" {
        for_each = statement.value.service == null ? [] : [statement.value.service]
        content {
          test     = "StringEquals"
          variable = "kms:ViaService"
          values   = ["${condition.value}.${local.region}.amazonaws.com"]
        }
      }
    }
  }

  # Restores and manual backups from outside (the pgkeep CLI on an operator's machine).
  dynamic "statement" {
    for_each = length(var.restore_principal_arns) > 0 ? [1] : []
    content {
      sid       = "RestoreAndManualBackups"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = ["*"]

      principals {
        type        = "AWS"
        identifiers = var.restore_principal_arns
      }
    }
  }

  # Services that encrypt resources with the key on the deployer's behalf and then use grants:
  # the catalog table, the functions' environments, the schedules, the Fargate job's secret
  # settings (the deployer writes them, the task's execution role reads them). Only through those services
  # and only for principals of this account.
  statement {
    sid       = "AccountUseThroughServices"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant", "kms:DescribeKey"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = [local.account_root]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:CallerAccount"
      values   = [local.account]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [for s in ["dynamodb", "lambda", "scheduler", "secretsmanager"] : "${s}.${local.region}.amazonaws.com"]
    }
  }

  statement {
    sid       = "CloudWatchLogs"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values = [
        "arn:${local.partition}:logs:${local.region}:${local.account}:log-group:/aws/lambda/${var.name}-*",
        "arn:${local.partition}:logs:${local.region}:${local.account}:log-group:/aws/apigateway/${var.name}-*",
        "arn:${local.partition}:logs:${local.region}:${local.account}:log-group:${local.task_log_group_name}",
      ]
    }
  }

  # CloudWatch alarms publish to the encrypted alert topic.
  statement {
    sid       = "CloudWatchAlarmsToTopic"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
  }
}

resource "aws_kms_key" "pgkeep" {
  description             = "pgkeep ${var.name}: backups, catalog, alerts, logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
}

resource "aws_kms_alias" "pgkeep" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.pgkeep.key_id
}
