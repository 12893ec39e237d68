output "workload_identity_provider" {
  description = "Full provider name for google-github-actions/auth `workload_identity_provider` (GitHub variable GCP_WORKLOAD_IDENTITY_PROVIDER)."
  value       = google_iam_workload_identity_pool_provider.github.name
}

output "ci_service_account_email" {
  description = "Service account that pushes images (GitHub variable GCP_CI_SERVICE_ACCOUNT)."
  value       = google_service_account.ci.email
}

output "ci_service_account_member" {
  description = "IAM member string of the CI service account."
  value       = google_service_account.ci.member
}

output "plan_service_account_email" {
  description = "Service account for `terraform plan` (GitHub variable GCP_TF_PLAN_SERVICE_ACCOUNT)."
  value       = google_service_account.tf_plan.email
}

output "apply_service_account_email" {
  description = "Service account for `terraform apply` (GitHub environment variable GCP_TF_APPLY_SERVICE_ACCOUNT)."
  value       = google_service_account.tf_apply.email
}

output "attribute_condition" {
  description = "CEL condition the provider enforces on every GitHub token."
  value       = local.attribute_condition
}
