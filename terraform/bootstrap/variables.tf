variable "admin_project_id" {
  description = "Shared project (codigo-artifacts): the Terraform state bucket, the image registry and the GitHub federation pool."
  type        = string
}

variable "region" {
  description = "Region of the image registry (the clusters' region: pulls stay in-region and free)."
  type        = string
  default     = "europe-west1"
}

variable "github_repository" {
  description = "GitHub repository (OWNER/NAME) allowed to federate into the pool."
  type        = string
}

variable "github_repository_owner_id" {
  description = "Numeric ID of the repository owner, pinned in the federation condition (empty to match on the name only)."
  type        = string
  default     = ""
}

variable "registry_retention" {
  description = "Image retention of the shared registry: versions always kept per image, and age after which other images go."
  type = object({
    keep_recent_versions     = number
    delete_tagged_after_days = number
  })
  default = {
    keep_recent_versions     = 30
    delete_tagged_after_days = 180
  }
}

variable "state_bucket" {
  description = "Name of the Terraform state bucket (one per organisation; environments use a prefix each)."
  type        = string
}

variable "state_bucket_location" {
  description = "Location of the state bucket; a multi-region keeps state readable when one region is down."
  type        = string
  default     = "EU"
}

variable "state_versions_kept" {
  description = "Old state versions kept per object, to roll back a bad apply by restoring a previous generation."
  type        = number
  default     = 20
}

variable "environment_projects" {
  description = "Project ID of each environment, keyed by environment name. The projects themselves come from the organisation's project factory."
  type        = map(string)
}

variable "services" {
  description = "APIs every environment project needs before its root can be applied."
  type        = list(string)
  default = [
    "artifactregistry.googleapis.com",
    "billingbudgets.googleapis.com",
    "binaryauthorization.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "serviceusage.googleapis.com",
    "sqladmin.googleapis.com",
    "storage.googleapis.com",
    "sts.googleapis.com",
  ]
}

variable "state_admins" {
  description = "Members (groups) with full access to the state bucket, for break-glass and the first applies. Terraform service accounts get prefix-scoped access from the platform root. Not in the tfvars (organisation-specific): pass -var 'state_admins=[\"group:...\"]' or TF_VAR_state_admins."
  type        = list(string)

  validation {
    condition     = length(var.state_admins) > 0 && alltrue([for m in var.state_admins : can(regex("^(group|user|serviceAccount|domain):[^@\\s]+(@[^@\\s]+)?$", m)) && !can(regex("example\\.(com|org|net)$", m))])
    error_message = "state_admins must list real IAM members (group:admins@your-domain); example.com/org/net addresses are reserved and IAM refuses them."
  }
}
