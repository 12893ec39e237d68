locals {
  project_services = {
    for pair in setproduct(keys(var.environment_projects), var.services) :
    "${pair[0]}/${pair[1]}" => {
      project = var.environment_projects[pair[0]]
      service = pair[1]
    }
  }
}

resource "google_project_service" "environment" {
  for_each = local.project_services

  project = each.value.project
  service = each.value.service

  # Turning an API off from here would break running workloads; APIs are only
  # ever switched off by hand.
  disable_on_destroy         = false
  disable_dependent_services = false
}
