# Nodes run as a dedicated least-privilege identity, never the Compute Engine
# default service account (which holds Editor). Workloads get their own
# identities through Workload Identity and never see this one.
resource "google_service_account" "nodes" {
  project      = var.project_id
  account_id   = "${var.name}-nodes"
  display_name = "GKE nodes of ${var.name}"
}

resource "google_project_iam_member" "nodes" {
  project = var.project_id
  role    = "roles/container.defaultNodeServiceAccount"
  member  = google_service_account.nodes.member
}
