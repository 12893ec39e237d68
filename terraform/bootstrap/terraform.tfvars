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

state_admins = ["group:platform-admins@example.com"]
