output "secret_ids" {
  description = "Secret IDs keyed by short name (gitops: externalSecrets.remoteKeys)."
  value       = { for k, s in google_secret_manager_secret.this : k => s.secret_id }
}

output "awaiting_value" {
  description = "Secrets an operator must fill before the workloads can start."
  value       = [for k in var.provided : google_secret_manager_secret.this[k].secret_id]
}
