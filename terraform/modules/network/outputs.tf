output "network_id" {
  description = "ID of the VPC (projects/P/global/networks/N)."
  value       = google_compute_network.this.id
}

output "network_name" {
  description = "Name of the VPC."
  value       = google_compute_network.this.name
}

output "subnet_id" {
  description = "ID of the GKE node subnet."
  value       = google_compute_subnetwork.gke.id
}

output "subnet_cidr" {
  description = "Primary range of the node subnet (used for control plane authorized networks)."
  value       = google_compute_subnetwork.gke.ip_cidr_range
}

output "pods_range_name" {
  description = "Name of the secondary range for pods."
  value       = local.pods_range_name
}

output "services_range_name" {
  description = "Name of the secondary range for services."
  value       = local.services_range_name
}

output "private_service_access_network" {
  description = "VPC ID taken from the service networking connection, so a Cloud SQL instance that uses it is created only once the peering exists."
  value       = google_service_networking_connection.this.network
}

output "nat_egress_ips" {
  description = "Reserved egress IPs of Cloud NAT (empty when Google allocates them). Give these to webhook receivers that allowlist senders."
  value       = google_compute_address.nat[*].address
}
