resource "google_sql_database" "codigo" {
  project  = var.project_id
  name     = var.database_name
  instance = google_sql_database_instance.this.name
  charset  = "UTF8"

  # Dropping the database must be a deliberate act outside Terraform.
  deletion_policy = "ABANDON"
}
