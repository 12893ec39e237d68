# A private control plane reaches nodes only on 443 and 10250 by default.
# Admission webhooks and aggregated APIs on other ports (KEDA's metrics API
# on 6443, webhooks on 8443/9443) need this rule or their calls time out.
resource "google_compute_firewall" "control_plane_to_webhooks" {
  project     = var.project_id
  name        = "${var.name}-cp-to-webhooks"
  network     = var.network_id
  direction   = "INGRESS"
  priority    = 1000
  description = "GKE control plane to admission webhooks and aggregated API servers on the nodes."

  source_ranges = [var.master_ipv4_cidr_block]
  target_tags   = [local.node_tag]

  allow {
    protocol = "tcp"
    ports    = ["6443", "8443", "9443"]
  }

  log_config {
    metadata = "EXCLUDE_ALL_METADATA"
  }
}
