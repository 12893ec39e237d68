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
