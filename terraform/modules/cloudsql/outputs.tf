output "instance_name" {
  description = "Cloud SQL instance name (for gcloud sql commands and restores)."
  value       = google_sql_database_instance.this.name
}

output "connection_name" {
  description = "PROJECT:REGION:INSTANCE, for the Cloud SQL Auth Proxy or connectors."
  value       = google_sql_database_instance.this.connection_name
}

output "private_ip_address" {
  description = "Private IP of the instance inside the VPC."
  value       = google_sql_database_instance.this.private_ip_address
}

output "database_name" {
  description = "Name of the application database."
  value       = google_sql_database.codigo.name
}

output "app_user" {
  description = "Login of the application (producer, consumers)."
  value       = google_sql_user.app.name
}

output "migration_user" {
  description = "Login used by `codigo-ctl setup` for migrations."
  value       = google_sql_user.migration.name
}

output "secret_ids" {
  description = "Secret Manager secret IDs, keyed database-url-app / database-url-migration / postgres-monitoring-password / postgres-monitoring-dsn (gitops: ExternalSecret remoteRef.key)."
  value       = { for k, s in google_secret_manager_secret.database : k => s.secret_id }
}

output "monitoring_user" {
  description = "Login of postgres_exporter."
  value       = google_sql_user.monitoring.name
}

output "app_database_url" {
  description = "DATABASE_URL of the application user."
  value       = local.database_secrets["database-url-app"]
  sensitive   = true
}

output "migration_database_url" {
  description = "DATABASE_URL of the migration user."
  value       = local.database_secrets["database-url-migration"]
  sensitive   = true
}
