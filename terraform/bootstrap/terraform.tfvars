admin_project_id = "codigo-artifacts"
region           = "europe-west1"
state_bucket     = "codigo-terraform-state"

github_repository          = "codigo/codigo"
github_repository_owner_id = ""

environment_projects = {
  dev     = "codigo-dev"
  qa      = "codigo-qa"
  preprod = "codigo-preprod"
  prod    = "codigo-prod"
}

# state_admins is organisation-specific and has no placeholder here: pass it on the command
# line (terraform/README.md, Bootstrap).
