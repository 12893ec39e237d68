admin_project_id = "acme-platform-admin"
state_bucket     = "acme-codigo-tfstate"

environment_projects = {
  dev     = "acme-codigo-dev"
  qa      = "acme-codigo-qa"
  preprod = "acme-codigo-preprod"
  prod    = "acme-codigo-prod"
}

state_admins = ["group:platform-admins@example.com"]
