# GKE node identities are created here, before the clusters, so that pull
# access to the shared registry exists in one pass and no environment's
# Terraform identity needs rights on the shared project.
resource "google_service_account" "gke_nodes" {
  for_each = var.environment_projects

  project      = each.value
  account_id   = "codigo-gke-nodes"
  display_name = "GKE nodes of codigo-${each.key}"
  description  = "Node identity: logs, metrics, image pulls. Workloads use their own identities."

  depends_on = [google_project_service.environment]
}

resource "google_project_iam_member" "gke_nodes" {
  for_each = var.environment_projects

  project = each.value
  role    = "roles/container.defaultNodeServiceAccount"
  member  = google_service_account.gke_nodes[each.key].member
}
