resource "google_service_account" "ci" {
  count = var.create_ci_service_account ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name}-ci"
  display_name = "GitHub Actions: push images and charts"
  description  = "Impersonated by workflows of ${var.repository} through workload identity federation."
}

resource "google_service_account" "tf_plan" {
  count = var.create_terraform_service_accounts ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name}-tf-plan"
  display_name = "GitHub Actions: terraform plan"
  description  = "Read-only; impersonated by any workflow of ${var.repository} (pull requests run plan)."
}

resource "google_service_account" "tf_apply" {
  count = var.create_terraform_service_accounts ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name}-tf-apply"
  display_name = "GitHub Actions: terraform apply"
  description  = "Impersonated only by jobs in the GitHub environment ${var.apply_environment}."
}
