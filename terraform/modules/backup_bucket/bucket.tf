# Off-cluster copies of `nats stream backup` snapshots (see docs/DR.md).
resource "google_storage_bucket" "jetstream" {
  #checkov:skip=CKV_GCP_62:Data access to this bucket is recorded by Cloud Audit Logs (DATA_WRITE/DATA_READ); legacy usage-log buckets add nothing.
  project       = var.project_id
  name          = "${var.project_id}-jetstream-backups"
  location      = var.location
  storage_class = "STANDARD"
  labels        = var.labels
  force_destroy = var.force_destroy

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  # A deleted or overwritten snapshot stays recoverable for a week.
  soft_delete_policy {
    retention_duration_seconds = 604800
  }

  lifecycle_rule {
    condition {
      age = var.retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
    }
    action {
      type = "Delete"
    }
  }
}
