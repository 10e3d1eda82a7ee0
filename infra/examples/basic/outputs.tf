output "api_url" {
  description = "Base URL of the status API."
  value       = module.pgkeep.api_url
}

output "bucket" {
  description = "The backup bucket."
  value       = module.pgkeep.bucket
}

output "table" {
  description = "The catalog table."
  value       = module.pgkeep.table
}

output "key_arn" {
  description = "The pgkeep KMS key."
  value       = module.pgkeep.key_arn
}

output "topic_arn" {
  description = "The alert topic."
  value       = module.pgkeep.topic_arn
}

output "cli_environment" {
  description = "Settings for the pgkeep CLI against this deployment (export them, add PGKEEP_DATABASE_URL)."
  value = {
    PGKEEP_REPO    = module.pgkeep.repository_url
    PGKEEP_CATALOG = module.pgkeep.catalog_url
    PGKEEP_KEY     = module.pgkeep.key_url
  }
}
