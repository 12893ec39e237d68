resource "google_compute_network" "this" {
  project                 = var.project_id
  name                    = var.name
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"
  description             = "Codigo VPC: GKE nodes, pods and the Cloud SQL private service access peering."
}
