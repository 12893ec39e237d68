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
}

# The pod's Kubernetes service account may act as the Google service account;
# nothing else in the cluster can.
resource "google_service_account_iam_member" "workload_identity" {
  for_each = var.workloads

  service_account_id = google_service_account.workload[each.key].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.workload_identity_pool}[${var.namespace}/${each.value.kubernetes_service_account}]"
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
