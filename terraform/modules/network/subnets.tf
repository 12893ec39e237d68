locals {
  pods_range_name     = "${var.name}-pods"
  services_range_name = "${var.name}-services"
}

resource "google_compute_subnetwork" "gke" {
  project       = var.project_id
  name          = "${var.name}-gke"
  region        = var.region
  network       = google_compute_network.this.id
  ip_cidr_range = var.subnet_cidr
  stack_type    = "IPV4_ONLY"

  # Nodes have no external IPs: Google APIs (Artifact Registry, Cloud SQL Admin,
  # Secret Manager, Logging) are reached through Private Google Access, not NAT.
  private_ip_google_access = true

  secondary_ip_range {
    range_name    = local.pods_range_name
    ip_cidr_range = var.pods_cidr
  }

  secondary_ip_range {
    range_name    = local.services_range_name
    ip_cidr_range = var.services_cidr
  }

  log_config {
    aggregation_interval = "INTERVAL_5_SEC"
    flow_sampling        = var.flow_log_sampling
    metadata             = "INCLUDE_ALL_METADATA"
  }
}
