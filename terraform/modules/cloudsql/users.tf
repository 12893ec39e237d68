# Passwords are generated here and stored in Terraform state and Secret Manager.
# The state bucket is readable only by the Terraform service accounts and admins
# (see terraform/README.md); with iam_database_authentication, people log in with
# their Google identity instead and never need these passwords.
resource "random_password" "app" {
  length  = 32
  special = false
}

resource "random_password" "migration" {
  length  = 32
  special = false
}

resource "random_password" "monitoring" {
  length  = 32
  special = false
}

resource "google_sql_user" "app" {
  project  = var.project_id
  instance = google_sql_database_instance.this.name
  name     = var.app_user
  password = random_password.app.result
}

resource "google_sql_user" "migration" {
  project  = var.project_id
  instance = google_sql_database_instance.this.name
  name     = var.migration_user
  password = random_password.migration.result
}

resource "google_sql_user" "monitoring" {
  project  = var.project_id
  instance = google_sql_database_instance.this.name
  name     = var.monitoring_user
  password = random_password.monitoring.result
}

resource "google_sql_user" "iam" {
  for_each = var.iam_database_authentication ? var.iam_service_accounts : {}

  project  = var.project_id
  instance = google_sql_database_instance.this.name
  # Cloud SQL names IAM service account users without the domain suffix.
  name = trimsuffix(each.value, ".gserviceaccount.com")
  type = "CLOUD_IAM_SERVICE_ACCOUNT"
}
