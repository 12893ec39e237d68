resource "google_service_account" "workload" {
  for_each = var.workloads

  project      = var.project_id
  account_id   = coalesce(each.value.account_id, "${var.name}-${each.key}")
  display_name = "${each.key} (${coalesce(each.value.namespace, var.namespace)}/${each.value.kubernetes_service_account})"
  description  = "Used only through GKE Workload Identity; no keys."
}
