output "repository_id" {
  description = "Repository ID."
  value       = google_artifact_registry_repository.docker.repository_id
}

output "repository_url" {
  description = "Image prefix, LOCATION-docker.pkg.dev/PROJECT/REPOSITORY (gitops image.registry, GitHub variable for pushes)."
  value       = "${google_artifact_registry_repository.docker.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.docker.repository_id}"
}

output "registry_host" {
  description = "Registry host for `docker login` / `gcloud auth configure-docker`."
  value       = "${google_artifact_registry_repository.docker.location}-docker.pkg.dev"
}
