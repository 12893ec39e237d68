resource "google_iam_workload_identity_pool" "github" {
  count = var.create_pool ? 1 : 0

  project                   = var.project_id
  workload_identity_pool_id = var.pool_id
  display_name              = "GitHub Actions"
  description               = "Federation for ${var.repository}; no service account keys exist."
}

locals {
  owner_condition     = var.repository_owner_id == "" ? "" : " && assertion.repository_owner_id == \"${var.repository_owner_id}\""
  attribute_condition = "assertion.repository == \"${var.repository}\"${local.owner_condition}"
  pool_name           = var.create_pool ? google_iam_workload_identity_pool.github[0].name : var.pool_name
}

resource "google_iam_workload_identity_pool_provider" "github" {
  #checkov:skip=CKV_GCP_125:The condition pins the repository (and optionally the owner ID); finer trust is set per service account: apply accepts only the subject repo:OWNER/NAME:environment:ENV, so one provider serves image push, plan and apply without a wildcard.
  count = var.create_pool ? 1 : 0

  project                            = var.project_id
  workload_identity_pool_id          = google_iam_workload_identity_pool.github[0].workload_identity_pool_id
  workload_identity_pool_provider_id = var.provider_id
  display_name                       = "GitHub OIDC"
  description                        = "token.actions.githubusercontent.com, restricted to ${var.repository}."

  # Without a condition any GitHub repository could exchange its token here.
  attribute_condition = local.attribute_condition

  # google.subject is repo:OWNER/NAME:ref:refs/heads/main, or
  # repo:OWNER/NAME:environment:prod for jobs bound to an environment.
  attribute_mapping = {
    "google.subject"                = "assertion.sub"
    "attribute.repository"          = "assertion.repository"
    "attribute.repository_owner_id" = "assertion.repository_owner_id"
    "attribute.ref"                 = "assertion.ref"
  }

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}
