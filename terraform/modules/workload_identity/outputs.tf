output "service_account_emails" {
  description = "Google service account email per workload key."
  value       = { for k, sa in google_service_account.workload : k => sa.email }
}

output "kubernetes_service_account_annotations" {
  description = "Annotations for each Kubernetes service account, keyed namespace/name: paste into the gitops values (serviceAccount.annotations)."
  value = {
    for k, cfg in var.workloads : "${coalesce(cfg.namespace, var.namespace)}/${cfg.kubernetes_service_account}" => {
      "iam.gke.io/gcp-service-account" = google_service_account.workload[k].email
    }
  }
}
