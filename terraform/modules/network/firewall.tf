# The VPC starts with an implied deny-ingress; this explicit rule makes the
# default visible in the firewall list and wins over any broad allow added
# later at a lower priority. GKE adds its own narrower allow rules on top.
resource "google_compute_firewall" "deny_all_ingress" {
  project     = var.project_id
  name        = "${var.name}-deny-all-ingress"
  network     = google_compute_network.this.id
  direction   = "INGRESS"
  priority    = 65534
  description = "Default deny for ingress; specific allows (GKE, webhooks) sit above it."

  source_ranges = ["0.0.0.0/0"]

  deny {
    protocol = "all"
  }
}
