# Cloud SQL with a private IP only: Google's service producer network is peered
# into this VPC over a reserved range.
resource "google_compute_global_address" "private_service_access" {
  project       = var.project_id
  name          = "${var.name}-psa"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  address       = split("/", var.private_service_access_cidr)[0]
  prefix_length = tonumber(split("/", var.private_service_access_cidr)[1])
  network       = google_compute_network.this.id
}

resource "google_service_networking_connection" "this" {
  network                 = google_compute_network.this.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_service_access.name]

  # Removing the peering fails while Google still tears down a deleted Cloud SQL
  # instance; abandoning it on destroy keeps `terraform destroy` of dev from wedging.
  deletion_policy = "ABANDON"
}
