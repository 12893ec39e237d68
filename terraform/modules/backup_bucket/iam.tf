resource "google_service_account" "backup" {
  project      = var.project_id
  account_id   = var.service_account_id
  display_name = "JetStream snapshot CronJob (${var.namespace}/${var.kubernetes_service_account})"
  description  = "Writes stream snapshots; cannot read or delete them."
}

resource "google_service_account_iam_member" "backup_workload_identity" {
  service_account_id = google_service_account.backup.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.workload_identity_pool}[${var.namespace}/${var.kubernetes_service_account}]"
}

# Create-only: a compromised or buggy job cannot delete or overwrite what is
# already there. Restores are run by an operator with their own access.
resource "google_storage_bucket_iam_member" "backup_writer" {
  bucket = google_storage_bucket.jetstream.name
  role   = "roles/storage.objectCreator"
  member = google_service_account.backup.member
}
