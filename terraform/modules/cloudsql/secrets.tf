locals {
  host = google_sql_database_instance.this.private_ip_address
  database_urls = {
    app       = "postgres://${var.app_user}:${random_password.app.result}@${local.host}:5432/${var.database_name}?sslmode=require"
    migration = "postgres://${var.migration_user}:${random_password.migration.result}@${local.host}:5432/${var.database_name}?sslmode=require"
  }
}

# DATABASE_URL for the workloads, synced into Kubernetes Secrets by the gitops
# side (External Secrets or the Secret Manager CSI add-on).
resource "google_secret_manager_secret" "database_url" {
  for_each = local.database_urls

  project   = var.project_id
  secret_id = "${var.name}-database-url-${each.key}"
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

resource "google_secret_manager_secret_version" "database_url" {
  for_each = local.database_urls

  secret      = google_secret_manager_secret.database_url[each.key].id
  secret_data = each.value
}
