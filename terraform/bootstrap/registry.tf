# One registry for every environment: an image is built and signed once, and
# promotion moves its digest through gitops/environments/*/images.yaml; it is
# never rebuilt or copied per environment.
module "artifact_registry" {
  source = "../modules/artifact_registry"

  project_id               = var.admin_project_id
  location                 = var.region
  repository_id            = "codigo"
  keep_recent_versions     = var.registry_retention.keep_recent_versions
  delete_tagged_after_days = var.registry_retention.delete_tagged_after_days
  labels = {
    app        = "codigo"
    managed-by = "terraform"
  }

  reader_members = { for env, sa in google_service_account.gke_nodes : "gke-nodes-${env}" => sa.member }
  writer_members = { github-ci = module.github_oidc.ci_service_account_member }
}
