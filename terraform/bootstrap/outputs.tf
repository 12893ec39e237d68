output "state_bucket" {
  description = "Terraform state bucket (backend.tf of every root; variable state_bucket of every environment)."
  value       = google_storage_bucket.state.name
}

output "enabled_services" {
  description = "APIs enabled per environment project."
  value = {
    for env, project in var.environment_projects : env => sort([
      for key, s in google_project_service.environment : s.service if startswith(key, "${env}/")
    ])
  }
}

output "artifact_registry_url" {
  description = "Image prefix of the shared registry (gitops/environments/*/images.yaml registry; GitHub variable GCP_CHART_REPOSITORY is this plus /charts)."
  value       = module.artifact_registry.repository_url
}

output "github_workload_identity_pool" {
  description = "Full name of the GitHub pool (environment roots: variable github_workload_identity_pool)."
  value       = module.github_oidc.pool_name
}

output "github_workload_identity_provider" {
  description = "Provider for google-github-actions/auth (GitHub variables GCP_WORKLOAD_IDENTITY_PROVIDER and GCP_WORKLOAD_IDENTITY_PROVIDER_<ENV>, repository and environment level)."
  value       = module.github_oidc.workload_identity_provider
}

output "ci_service_account_email" {
  description = "Service account that pushes images and charts (GitHub variable GCP_CI_SERVICE_ACCOUNT)."
  value       = module.github_oidc.ci_service_account_email
}

output "gke_node_service_accounts" {
  description = "Node service account per environment (the environment roots use codigo-gke-nodes@<project>)."
  value       = { for env, sa in google_service_account.gke_nodes : env => sa.email }
}
