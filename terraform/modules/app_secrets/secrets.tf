# Values live in Terraform state as well as in Secret Manager; the state bucket
# is readable only by the Terraform service accounts and admins. Rotate one with
# `terraform apply -replace='module.app_secrets.random_password.generated["NAME"]'`.
resource "random_password" "generated" {
  for_each = toset(var.generated)

  length  = 48
  special = false
}

resource "google_secret_manager_secret" "this" {
  for_each = toset(concat(var.generated, var.provided))

  project   = var.project_id
  secret_id = "${var.prefix}-${each.value}"
  labels    = var.labels

  replication {
    user_managed {
      dynamic "replicas" {
        for_each = var.replication_locations
        content {
          location = replicas.value
        }
      }
    }
  }
}

resource "google_secret_manager_secret_version" "generated" {
  for_each = toset(var.generated)

  secret      = google_secret_manager_secret.this[each.value].id
  secret_data = random_password.generated[each.value].result
}
