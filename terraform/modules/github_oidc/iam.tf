locals {
  repository_members  = "principalSet://iam.googleapis.com/${local.pool_name}/attribute.repository/${var.repository}"
  environment_subject = "principal://iam.googleapis.com/${local.pool_name}/subject/repo:${var.repository}:environment:${var.apply_environment}"
  state_prefix        = trimsuffix(var.state_prefix, "/")
  state_objects       = "projects/_/buckets/${var.state_bucket}/objects/${local.state_prefix}/"
  # Listing is checked on the bucket, reads and writes on objects: allow the
  # first, restrict the second to this environment's prefix.
  state_condition = "resource.type == \"storage.googleapis.com/Bucket\" || resource.name.startsWith(\"${local.state_objects}\")"
  terraform_sas   = var.create_terraform_service_accounts ? 1 : 0
  billing_grants  = var.create_terraform_service_accounts && var.billing_account != "" ? 1 : 0
}

# --- who may impersonate whom ------------------------------------------------

resource "google_service_account_iam_member" "ci_federation" {
  count = var.create_ci_service_account ? 1 : 0

  service_account_id = google_service_account.ci[0].name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.repository_members
}

resource "google_service_account_iam_member" "plan_federation" {
  count = local.terraform_sas

  service_account_id = google_service_account.tf_plan[0].name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.repository_members
}

resource "google_service_account_iam_member" "apply_federation" {
  count = local.terraform_sas

  service_account_id = google_service_account.tf_apply[0].name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.environment_subject

  lifecycle {
    precondition {
      condition     = var.apply_environment != "" && var.state_bucket != "" && local.state_prefix != ""
      error_message = "apply_environment, state_bucket and state_prefix are required with create_terraform_service_accounts."
    }
  }
}

# --- what they may do ------------------------------------------------------

resource "google_project_iam_member" "plan" {
  #checkov:skip=CKV_GCP_117:roles/viewer is read-only and is the one role that lets plan refresh every resource type this root manages (compute, GKE, Cloud SQL, IAM, Pub/Sub, budgets' channels); it grants no data access to buckets or secrets.
  for_each = var.create_terraform_service_accounts ? toset(var.plan_roles) : toset([])

  project = var.project_id
  role    = each.value
  member  = google_service_account.tf_plan[0].member
}

resource "google_project_iam_member" "apply" {
  #checkov:skip=CKV_GCP_49:serviceAccountAdmin/serviceAccountUser let Terraform create the workload service accounts and attach the node one to GKE node pools; the apply identity has no key and is reachable only from the protected GitHub environment.
  #checkov:skip=CKV_GCP_41:Granted to Terraform's service account, not to a user; it attaches service accounts to the resources it creates.
  for_each = var.create_terraform_service_accounts ? toset(var.apply_roles) : toset([])

  project = var.project_id
  role    = each.value
  member  = google_service_account.tf_apply[0].member
}

resource "google_storage_bucket_iam_member" "plan_state" {
  count = local.terraform_sas

  bucket = var.state_bucket
  role   = "roles/storage.objectViewer"
  member = google_service_account.tf_plan[0].member

  condition {
    title       = "state-${replace(local.state_prefix, "/", "-")}"
    description = "Read this environment's Terraform state only (plan runs with -lock=false)."
    expression  = local.state_condition
  }
}

resource "google_storage_bucket_iam_member" "apply_state" {
  count = local.terraform_sas

  bucket = var.state_bucket
  role   = "roles/storage.objectUser"
  member = google_service_account.tf_apply[0].member

  condition {
    title       = "state-${replace(local.state_prefix, "/", "-")}"
    description = "Read, write and lock this environment's Terraform state only."
    expression  = local.state_condition
  }
}

resource "google_billing_account_iam_member" "apply_budgets" {
  count = local.billing_grants

  billing_account_id = var.billing_account
  role               = "roles/billing.costsManager"
  member             = google_service_account.tf_apply[0].member
}

resource "google_billing_account_iam_member" "plan_budgets" {
  count = local.billing_grants

  billing_account_id = var.billing_account
  role               = "roles/billing.viewer"
  member             = google_service_account.tf_plan[0].member
}
