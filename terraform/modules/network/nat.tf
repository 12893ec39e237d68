resource "google_compute_router" "this" {
  project = var.project_id
  name    = "${var.name}-router"
  region  = var.region
  network = google_compute_network.this.id
}

# Stable egress addresses, so webhook receivers can allowlist Codigo.
resource "google_compute_address" "nat" {
  count = var.nat_static_ip_count

  project      = var.project_id
  name         = "${var.name}-nat-${count.index}"
  region       = var.region
  address_type = "EXTERNAL"
  network_tier = "PREMIUM"
}

resource "google_compute_router_nat" "this" {
  project = var.project_id
  name    = "${var.name}-nat"
  router  = google_compute_router.this.name
  region  = var.region

  nat_ip_allocate_option = var.nat_static_ip_count > 0 ? "MANUAL_ONLY" : "AUTO_ONLY"
  nat_ips                = google_compute_address.nat[*].self_link

  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"
  subnetwork {
    name                    = google_compute_subnetwork.gke.id
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  # Webhook targets are many distinct hosts: dynamic allocation avoids port
  # exhaustion on busy consumer nodes without reserving 4096 ports on every node.
  enable_dynamic_port_allocation      = true
  enable_endpoint_independent_mapping = false
  min_ports_per_vm                    = var.nat_min_ports_per_vm
  max_ports_per_vm                    = var.nat_max_ports_per_vm

  # A webhook that hangs should time out in the app, not hold a NAT mapping for 10 min.
  tcp_established_idle_timeout_sec = 600
  tcp_transitory_idle_timeout_sec  = 30

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}
