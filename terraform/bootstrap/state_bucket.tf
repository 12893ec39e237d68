resource "google_storage_bucket" "state" {
  #checkov:skip=CKV_GCP_62:Reads and writes of state are recorded by Cloud Audit Logs (data access logs enabled on the admin project); a usage-log bucket would duplicate them.
  project       = var.admin_project_id
  name          = var.state_bucket
  location      = var.state_bucket_location
  storage_class = "STANDARD"

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # Every apply writes a new generation; a corrupted or wrongly applied state is
  # rolled back by restoring an older one.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      num_newer_versions = var.state_versions_kept
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  labels = {
    app        = "codigo"
    managed-by = "terraform"
    purpose    = "terraform-state"
  }

  lifecycle {
    prevent_destroy = true
  }
}

resource "google_storage_bucket_iam_member" "state_admins" {
  for_each = toset(var.state_admins)

  bucket = google_storage_bucket.state.name
  role   = "roles/storage.admin"
  member = each.value
}
