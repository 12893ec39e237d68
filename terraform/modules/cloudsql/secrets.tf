locals {
  host = google_sql_database_instance.this.private_ip_address
  # Secret ID suffix => value. The gitops side reads these names
  # (codigo-<env>-database-url-app, ...) through External Secrets.
  database_secrets = {
    database-url-app             = "postgres://${var.app_user}:${random_password.app.result}@${local.host}:5432/${var.database_name}?sslmode=require"
    database-url-migration       = "postgres://${var.migration_user}:${random_password.migration.result}@${local.host}:5432/${var.database_name}?sslmode=require"
    postgres-monitoring-password = random_password.monitoring.result
    # postgres_exporter's DATA_SOURCE_NAME: the private address exists only after apply,
    # so the exporter reads it from here at sync time instead of a committed copy.
    postgres-monitoring-dsn = "postgresql://${var.monitoring_user}:${random_password.monitoring.result}@${local.host}:5432/${var.database_name}?sslmode=require"
  }
}

resource "google_secret_manager_secret" "database" {
  for_each = local.database_secrets

  project   = var.project_id
  secret_id = "${var.name}-${each.key}"
  labels    = var.labels

  replication {
    user_managed {
      dynamic "replicas" {
        for_each = var.secret_replication_locations
        content {
          location = replicas.value
        }
      }
    }
  }
}

resource "google_secret_manager_secret_version" "database" {
  for_each = local.database_secrets

  secret      = google_secret_manager_secret.database[each.key].id
  secret_data = each.value
}
