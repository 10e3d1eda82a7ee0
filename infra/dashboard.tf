# A CloudWatch dashboard of the metrics the functions (and the Fargate job) already emit as EMF
# log lines (shared/src/metrics.rs: namespace pgkeep, dimension Database): one row per database
# with its backup duration, stored size, throughput, newest-good age (against its max age, the
# stale alarm's threshold) and verification duration over the last two weeks.

locals {
  dashboard_metrics = [
    # metric, title, unit shown, statistic
    { name = "BackupDuration", title = "backup duration (ms)", stat = "Maximum" },
    { name = "BackupSize", title = "stored size (bytes)", stat = "Maximum" },
    { name = "BackupThroughput", title = "throughput (bytes/s)", stat = "Average" },
    { name = "NewestGoodBackupAge", title = "newest good backup age (s)", stat = "Maximum" },
    { name = "VerifyDuration", title = "verify duration (ms)", stat = "Maximum" },
  ]
  dashboard_databases = sort(keys(var.databases))
  dashboard_width     = floor(24 / length(local.dashboard_metrics))

  dashboard_widgets = flatten([
    for row, db in local.dashboard_databases : [
      for col, m in local.dashboard_metrics : {
        type   = "metric"
        x      = col * local.dashboard_width
        y      = row * 6
        width  = local.dashboard_width
        height = 6
        properties = merge(
          {
            title   = "${db}: ${m.title}"
            region  = local.region
            view    = "timeSeries"
            stacked = false
            period  = 3600
            stat    = m.stat
            metrics = [["pgkeep", m.name, "Database", db, { label = db }]]
          },
          m.name == "NewestGoodBackupAge" ? {
            annotations = { horizontal = [{ label = "max age", value = local.max_age_seconds[db] }] }
          } : {},
        )
      }
    ]
  ])
}

resource "aws_cloudwatch_dashboard" "pgkeep" {
  dashboard_name = var.name
  dashboard_body = jsonencode({ start = "-P14D", widgets = local.dashboard_widgets })
}
