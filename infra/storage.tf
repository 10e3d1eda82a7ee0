# The repository (S3) and the catalog (DynamoDB). The table's key schema, indexes and TTL
# attribute are the ones the DynamoDB catalog uses (shared/src/catalog/dynamodb.rs,
# docs/DYNAMODB.md): partition key `pk`; sparse indexes by_time (item_type), by_database
# (database_key) and by_status (status_key), each sorted by `id`; TTL on `ttl`.

resource "aws_s3_bucket" "backups" {
  #checkov:skip=CKV2_AWS_62:Nothing consumes object events: the catalog table, not the bucket, records every backup and its state.
  #checkov:skip=CKV_AWS_144:A copy in a second region is a disaster-recovery choice with its own key and cost; docs/OPERATIONS.md (RDS settings, and what each gives) discusses it. Versioning, Object Lock and PITR protect against deletion in this region.
  bucket              = local.bucket_name
  object_lock_enabled = var.object_lock != null
}

resource "aws_s3_bucket_ownership_controls" "backups" {
  bucket = aws_s3_bucket.backups.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "backups" {
  bucket = aws_s3_bucket.backups.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "backups" {
  bucket = aws_s3_bucket.backups.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "backups" {
  bucket = aws_s3_bucket.backups.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.pgkeep.arn
    }
    bucket_key_enabled = true
  }
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.backups.arn, "${aws_s3_bucket.backups.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "backups" {
  bucket = aws_s3_bucket.backups.id
  policy = data.aws_iam_policy_document.bucket.json

  depends_on = [aws_s3_bucket_public_access_block.backups]
}

resource "aws_s3_bucket_lifecycle_configuration" "backups" {
  bucket = aws_s3_bucket.backups.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "expire-old-versions"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }
  }

  rule {
    id     = "remove-expired-delete-markers"
    status = "Enabled"

    filter {}

    expiration {
      expired_object_delete_marker = true
    }
  }

  rule {
    id     = "archive-old-backups"
    status = var.archive_after_days == null ? "Disabled" : "Enabled"

    filter {
      prefix = "${var.repository_prefix}/"
    }

    transition {
      days          = coalesce(var.archive_after_days, 30)
      storage_class = var.archive_storage_class
    }
  }

  depends_on = [aws_s3_bucket_versioning.backups]
}

resource "aws_s3_bucket_object_lock_configuration" "backups" {
  count = var.object_lock == null ? 0 : 1

  bucket = aws_s3_bucket.backups.id

  rule {
    default_retention {
      mode = var.object_lock.mode
      days = var.object_lock.days
    }
  }

  depends_on = [aws_s3_bucket_versioning.backups]
}

resource "aws_s3_bucket_logging" "backups" {
  count = var.access_log_bucket == null ? 0 : 1

  bucket        = aws_s3_bucket.backups.id
  target_bucket = var.access_log_bucket
  target_prefix = "${local.bucket_name}/"
}

resource "aws_dynamodb_table" "catalog" {
  name                        = local.table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "pk"
    type = "S"
  }

  attribute {
    name = "start_key"
    type = "S"
  }

  attribute {
    name = "item_type"
    type = "S"
  }

  attribute {
    name = "database_key"
    type = "S"
  }

  attribute {
    name = "status_key"
    type = "S"
  }

  global_secondary_index {
    name            = "by_time"
    hash_key        = "item_type"
    range_key       = "start_key"
    projection_type = "ALL"
  }

  global_secondary_index {
    name            = "by_database"
    hash_key        = "database_key"
    range_key       = "start_key"
    projection_type = "ALL"
  }

  global_secondary_index {
    name            = "by_status"
    hash_key        = "status_key"
    range_key       = "start_key"
    projection_type = "ALL"
  }

  ttl {
    attribute_name = "ttl"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.pgkeep.arn
  }
}
