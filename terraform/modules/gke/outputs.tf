output "cluster_name" {
  description = "Name of the GKE cluster."
  value       = google_container_cluster.this.name
}

output "cluster_id" {
  description = "ID of the GKE cluster."
  value       = google_container_cluster.this.id
}

output "location" {
  description = "Zone or region of the cluster (for `gcloud container clusters get-credentials --location`)."
  value       = google_container_cluster.this.location
}

output "endpoint" {
  description = "Private IP of the control plane."
  value       = google_container_cluster.this.endpoint
  sensitive   = true
}

output "dns_endpoint" {
  description = "DNS-based control plane endpoint (IAM-authorised); use `gcloud container clusters get-credentials --dns-endpoint`."
  value       = try(google_container_cluster.this.control_plane_endpoints_config[0].dns_endpoint_config[0].endpoint, null)
}

output "ca_certificate" {
  description = "Base64 cluster CA certificate."
  value       = google_container_cluster.this.master_auth[0].cluster_ca_certificate
  sensitive   = true
}

output "workload_identity_pool" {
  description = "Workload Identity pool of the cluster (PROJECT.svc.id.goog). Read from the cluster so bindings wait for it to exist."
  value       = google_container_cluster.this.workload_identity_config[0].workload_pool
}

output "node_service_account_email" {
  description = "Service account the nodes run as."
  value       = var.node_service_account_email
}

output "spot_pool_taint" {
  description = "Taint of the consumer Spot pool; the consumer pods need the matching toleration."
  value       = var.spot_pool_taint
}

output "spot_pool_labels" {
  description = "Labels of the consumer Spot pool nodes, for the consumer nodeSelector."
  value       = var.spot_pool_labels
}
