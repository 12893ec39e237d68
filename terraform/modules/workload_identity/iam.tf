locals {
  project_roles = merge({}, [
    for w, cfg in var.workloads : {
      for role in cfg.project_roles : "${w}/${role}" => { workload = w, role = role }
    }
  ]...)

  secret_access = merge({}, [
    for w, cfg in var.workloads : {
      for key, secret in cfg.secrets : "${w}/${key}" => { workload = w, secret = secret }
    }
  ]...)

  secret_prefixes = { for w, cfg in var.workloads : w => cfg.secret_prefix if cfg.secret_prefix != "" }
}

# Only the pod's own Kubernetes service account may act as the Google one.
resource "google_service_account_iam_member" "workload_identity" {
  for_each = var.workloads

  service_account_id = google_service_account.workload[each.key].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.workload_identity_pool}[${coalesce(each.value.namespace, var.namespace)}/${each.value.kubernetes_service_account}]"
}

resource "google_project_iam_member" "workload" {
  for_each = local.project_roles

  project = var.project_id
  role    = each.value.role
  member  = google_service_account.workload[each.value.workload].member
}

resource "google_secret_manager_secret_iam_member" "workload" {
  for_each = local.secret_access

  project   = var.project_id
  secret_id = each.value.secret
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.workload[each.value.workload].member
}

# Secrets added later by hand (API keys, rotated passwords) are covered by the
# name prefix without another Terraform change.
resource "google_project_iam_member" "secret_prefix" {
  for_each = local.secret_prefixes

  project = var.project_id
  role    = "roles/secretmanager.secretAccessor"
  member  = google_service_account.workload[each.key].member

  condition {
    title       = "secrets-${trimsuffix(each.value, "-")}"
    description = "Secret Manager secrets whose name starts with ${each.value}."
    expression  = "resource.name.startsWith(\"projects/${var.project_number}/secrets/${each.value}\")"
  }
}
