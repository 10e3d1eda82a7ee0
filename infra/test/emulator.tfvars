# The example as infra/test/run applies it against the AWS emulator: every optional feature on,
# so every environment variable and every permission group is deployed and checked.
region = "us-east-1"
name   = "pgkeep-test"

# One database on each runner: shop on Fargate (its schedules start the task), crm auto (the
# functions decide), ledger on Lambda (the default). infra/test/run's second apply (the zip
# path, no image) turns them all to Lambda, which removes every ECS resource again.
databases = {
  shop = {
    secret_arn     = "arn:aws:secretsmanager:us-east-1:123456789012:secret:pgkeep/shop-AbCdEf"
    retention      = { keep_last = 3, keep_within = "2d" }
    selection      = { exclude_schemas = ["audit"], exclude_table_data = ["public.sessions"] }
    runner         = "fargate"
    fargate_cpu    = 2048
    fargate_memory = 4096
    # Room for restores that stage a whole single-stream archive.
    fargate_storage_gib = 50
    jobs                = 2
  }
  crm = {
    secret_arn    = "arn:aws:secretsmanager:us-east-1:123456789012:secret:pgkeep/crm-GhIjKl"
    dump_schedule = "cron(30 1 * * ? *)"
    max_age       = "2d"
    runner        = "auto"
  }
  ledger = {
    url = "postgresql://pgkeep_backup@ledger.example.internal:5432/ledger"
  }
}
fargate_auto_after    = "8m"
fargate_auto_size_mib = 20480

retention = {
  keep_last    = 2
  keep_hourly  = 0
  keep_daily   = 7
  keep_weekly  = 4
  keep_monthly = 12
  keep_yearly  = 3
  keep_within  = "1d"
  keep_labels  = ["release", "pinned=yes"]
  # Per kind, on top of the rules above (PGKEEP_KEEP_WITHIN_KIND).
  keep_within_kind = { scheduled = "7d", manual = "30d", pre_migration = "365d" }
  # Safety copies taken before a restore: kept two weeks here instead of prune's 30 days.
  pre_restore_keep_within = "14d"
}

vpc_subnet_ids         = ["subnet-0a1b2c3d4e5f60001", "subnet-0a1b2c3d4e5f60002"]
vpc_security_group_ids = ["sg-0a1b2c3d4e5f60003"]

scratch_secret_arn     = "arn:aws:secretsmanager:us-east-1:123456789012:secret:pgkeep/scratch-MnOpQr"
secrets_kms_key_arns   = ["arn:aws:kms:us-east-1:123456789012:key/0b9e1b7c-0000-4000-8000-000000000001"]
alert_emails           = ["ops@example.com"]
alert_webhook_url      = "https://hooks.example.com/services/T000/B000/placeholder"
alert_sns_events       = "backup_failed,verification_failed,restore_failed,stale"
alert_webhook_events   = "all"
alert_webhook_format   = "teams"
heartbeat_url          = "https://hc-ping.example.com/00000000-0000-4000-8000-000000000000"
compression            = "zstd:1"
object_lock            = { mode = "GOVERNANCE", days = 35 }
restore_principal_arns = ["arn:aws:iam::123456789012:root"]
artifacts_dir          = "@ARTIFACTS@"
# dump and verify from the container image (the emulator does not look for it in ECR), prune
# and status from their zips: both packagings are deployed. infra/test/run then applies again with
# layer.auto.tfvars (pg_tools_image_uri = null, pg_tools_layer = the built layer zip): the zip path.
pg_tools_image_uri = "123456789012.dkr.ecr.us-east-1.amazonaws.com/pgkeep:0.1.0"

# A test stack must be destroyable.
deletion_protection = false

# The rds-db:connect statement is deployed and checked; database_iam_auth itself stays false
# here because it excludes the secret_arn databases above (their Secrets statement is checked).
rds_iam_db_users = ["arn:aws:rds-db:us-east-1:123456789012:dbuser:db-ABCDEFGHIJKLMNOPQRSTUVWXYZ/pgkeep_backup"]
