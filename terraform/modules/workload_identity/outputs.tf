output "service_account_emails" {
  description = "Google service account email per workload (producer, consumer, ctl)."
  value       = { for k, sa in google_service_account.workload : k => sa.email }
}

output "kubernetes_service_account_annotations" {
  description = "Annotations for each Kubernetes service account, keyed by its name: paste into the gitops values (serviceAccount.annotations)."
  value = {
    for k, cfg in var.workloads : cfg.kubernetes_service_account => {
      "iam.gke.io/gcp-service-account" = google_service_account.workload[k].email
    }
  }
}
