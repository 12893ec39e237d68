output "pool_name" {
  description = "Full name of the workload identity pool (environment roots: variable github_workload_identity_pool)."
  value       = local.pool_name
}

output "workload_identity_provider" {
  description = "Full provider name for google-github-actions/auth (GitHub variable GCP_WORKLOAD_IDENTITY_PROVIDER); null where the pool is not created."
  value       = var.create_pool ? google_iam_workload_identity_pool_provider.github[0].name : null
}

output "ci_service_account_email" {
  description = "Service account that pushes images and charts (GitHub variable GCP_CI_SERVICE_ACCOUNT); null when not created."
  value       = var.create_ci_service_account ? google_service_account.ci[0].email : null
}

output "ci_service_account_member" {
  description = "IAM member string of the CI service account; null when not created."
  value       = var.create_ci_service_account ? google_service_account.ci[0].member : null
}

output "plan_service_account_email" {
  description = "Service account for `terraform plan` (GitHub variable GCP_TF_PLAN_SERVICE_ACCOUNT_<ENV>); null when not created."
  value       = var.create_terraform_service_accounts ? google_service_account.tf_plan[0].email : null
}

output "apply_service_account_email" {
  description = "Service account for `terraform apply` (variable GCP_TF_APPLY_SERVICE_ACCOUNT of the GitHub environment); null when not created."
  value       = var.create_terraform_service_accounts ? google_service_account.tf_apply[0].email : null
}

output "attribute_condition" {
  description = "CEL condition the provider enforces on every GitHub token."
  value       = local.attribute_condition
}
