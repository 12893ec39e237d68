variable "admin_project_id" {
  description = "Project that holds shared platform resources: the Terraform state bucket."
  type        = string
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
  description = "Members (groups) with full access to the state bucket, for break-glass and the first applies. Terraform service accounts get prefix-scoped access from each environment root."
  type        = list(string)
}
