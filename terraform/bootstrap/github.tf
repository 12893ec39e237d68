# The organisation's one federation pool for GitHub Actions. Image pushes
# impersonate the CI account created here; each environment root creates its
# own plan/apply accounts trusting this same pool.
module "github_oidc" {
  source = "../modules/github_oidc"

  project_id                = var.admin_project_id
  name                      = "codigo"
  repository                = var.github_repository
  repository_owner_id       = var.github_repository_owner_id
  create_pool               = true
  create_ci_service_account = true
}
