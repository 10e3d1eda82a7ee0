# Optional: the RDS settings that complement pgkeep, on an example PostgreSQL instance (created
# only with create_example_database = true; copy the settings onto your own instance instead).
#
# RDS automated backups give point-in-time recovery: any second within the retention period,
# typically to within the last 5 minutes (RPO about 5 minutes), restored as a new instance of
# the same engine in the same account. pgkeep's logical backups give RPO = the dump schedule
# (24 h with one nightly dump), but they are verified by a real restore, portable to any
# PostgreSQL >= the source version, kept as long as the retention policy says, and survive the
# loss of the instance, its snapshots or the account's RDS access. Use both.

variable "create_example_database" {
  description = "Create the example RDS instance below (its password is managed by RDS in Secrets Manager)."
  type        = bool
  default     = false
}

variable "example_database_subnet_group" {
  description = "DB subnet group of the example instance."
  type        = string
  default     = null
}

resource "aws_db_instance" "example" {
  count = var.create_example_database ? 1 : 0

  identifier     = "pgkeep-example"
  engine         = "postgres"
  engine_version = "17"
  instance_class = "db.t4g.micro"
  db_name        = "shop"
  username       = "pgkeep_admin"

  allocated_storage     = 20
  max_allocated_storage = 100
  storage_encrypted     = true
  kms_key_id            = module.pgkeep.key_arn

  # The master password lives in Secrets Manager (RDS JSON: username and password; give the
  # database's host in its pgkeep entry's url, or use a secret that holds host and dbname).
  manage_master_user_password = true

  parameter_group_name   = aws_db_parameter_group.example[0].name
  db_subnet_group_name   = var.example_database_subnet_group
  vpc_security_group_ids = var.vpc_security_group_ids
  publicly_accessible    = false
  multi_az               = true

  # Point-in-time recovery: automated backups kept 14 days (1-35), taken in a quiet window
  # before pgkeep's nightly dump at 02:00 UTC.
  backup_retention_period  = 14
  backup_window            = "00:30-01:30"
  maintenance_window       = "sun:03:00-sun:04:00"
  copy_tags_to_snapshot    = true
  delete_automated_backups = false
  deletion_protection      = true
  skip_final_snapshot      = false

  final_snapshot_identifier = "pgkeep-example-final"

  iam_database_authentication_enabled   = true
  auto_minor_version_upgrade            = true
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = module.pgkeep.key_arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.rds_monitoring[0].arn
}

# Log DDL and slow statements (pgkeep's own sessions are visible here too).
resource "aws_db_parameter_group" "example" {
  count = var.create_example_database ? 1 : 0

  name   = "pgkeep-example-postgres17"
  family = "postgres17"

  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  # TLS only, pgkeep's connections included.
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
}

data "aws_iam_policy_document" "rds_monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "rds_monitoring" {
  count = var.create_example_database ? 1 : 0

  name               = "pgkeep-example-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_assume.json
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  count = var.create_example_database ? 1 : 0

  role       = aws_iam_role.rds_monitoring[0].name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}
