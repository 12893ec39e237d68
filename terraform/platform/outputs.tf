# What each output feeds is listed in terraform/README.md ("Outputs and where
# they go").

output "cluster_name" {
  description = "GKE cluster name (gitops: destination cluster; GitHub variable GKE_CLUSTER)."
  value       = module.gke.cluster_name
}

output "cluster_location" {
  description = "Zone or region of the cluster (GitHub variable GKE_LOCATION)."
  value       = module.gke.location
}

output "cluster_dns_endpoint" {
  description = "IAM-authorised DNS endpoint of the control plane."
  value       = module.gke.dns_endpoint
}

output "get_credentials_command" {
  description = "kubectl credentials for an operator or CI job."
  value       = "gcloud container clusters get-credentials ${module.gke.cluster_name} --location ${module.gke.location} --project ${var.project_id} --dns-endpoint"
}

output "cluster_ca_certificate" {
  description = "Base64 cluster CA (for tools that build their own kubeconfig)."
  value       = module.gke.ca_certificate
  sensitive   = true
}

output "spot_pool_scheduling" {
  description = "Taint and labels of the consumer Spot pool (gitops: consumer tolerations and nodeSelector)."
  value = {
    taint  = module.gke.spot_pool_taint
    labels = module.gke.spot_pool_labels
  }
}

output "tf_plan_service_account_email" {
  description = "Service account for terraform plan (GitHub variable GCP_TF_PLAN_SERVICE_ACCOUNT_<ENV>)."
  value       = module.github_oidc.plan_service_account_email
}

output "tf_apply_service_account_email" {
  description = "Service account for terraform apply (GitHub environment variable GCP_TF_APPLY_SERVICE_ACCOUNT)."
  value       = module.github_oidc.apply_service_account_email
}

output "kubernetes_service_account_annotations" {
  description = "Workload Identity annotations keyed namespace/name (gitops: serviceAccounts.*.annotations of the chart, external-secrets serviceAccount.annotations)."
  value       = module.workload_identity.kubernetes_service_account_annotations
}

output "secret_ids" {
  description = "Secret Manager secret IDs by short name (gitops: externalSecrets.remoteKeys and the platform app's ExternalSecrets)."
  value       = merge(module.cloudsql.secret_ids, module.app_secrets.secret_ids)
}

output "secrets_awaiting_value" {
  description = "Secrets an operator fills by hand before the first sync (gcloud secrets versions add)."
  value       = module.app_secrets.awaiting_value
}

output "cloudsql_instance_name" {
  description = "Cloud SQL instance (DR runbook: clone, restore, backups)."
  value       = module.cloudsql.instance_name
}

output "cloudsql_connection_name" {
  description = "PROJECT:REGION:INSTANCE for the Cloud SQL Auth Proxy."
  value       = module.cloudsql.connection_name
}

output "cloudsql_private_ip" {
  description = "Private IP of PostgreSQL (gitops: NetworkPolicy egress to the database)."
  value       = module.cloudsql.private_ip_address
}

output "app_database_url" {
  description = "DATABASE_URL of the application user, for break-glass use; workloads read it from Secret Manager."
  value       = module.cloudsql.app_database_url
  sensitive   = true
}

output "migration_database_url" {
  description = "DATABASE_URL of the migration user, for break-glass use."
  value       = module.cloudsql.migration_database_url
  sensitive   = true
}

output "nat_egress_ips" {
  description = "Fixed egress IPs for webhook receivers' allowlists (empty when not reserved)."
  value       = module.network.nat_egress_ips
}

output "jetstream_backup_bucket" {
  description = "Bucket of the JetStream snapshot CronJob (gitops: backup.bucket)."
  value       = module.jetstream_backups.bucket_name
}

output "jetstream_backup_service_account" {
  description = "Google service account of the snapshot CronJob (gitops: its serviceAccount annotation)."
  value       = module.jetstream_backups.service_account_email
}

output "budget_pubsub_topic" {
  description = "Topic receiving budget notifications (null when disabled)."
  value       = module.budget.pubsub_topic
}
