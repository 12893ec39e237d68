output "bucket_name" {
  description = "Bucket for JetStream snapshots (gitops: the backup CronJob's destination)."
  value       = google_storage_bucket.jetstream.name
}

output "bucket_url" {
  description = "gs:// URL of the snapshot bucket."
  value       = google_storage_bucket.jetstream.url
}

output "service_account_email" {
  description = "Google service account of the backup CronJob (annotation iam.gke.io/gcp-service-account on its Kubernetes service account)."
  value       = google_service_account.backup.email
}
