variable "project_id" {
  description = "GCP project holding the pool and the CI / Terraform service accounts."
  type        = string
}

variable "name" {
  description = "Prefix of the service account IDs, e.g. codigo (the project already scopes them to one environment)."
  type        = string
  default     = "codigo"
}

variable "create_pool" {
  description = "Create the pool and its GitHub provider here (the bootstrap root does, once per organisation). When false, pool_name points at that existing pool."
  type        = bool
  default     = true
}

variable "pool_name" {
  description = "Full name of an existing pool (projects/NUMBER/locations/global/workloadIdentityPools/ID), used when create_pool is false."
  type        = string
  default     = ""
}

variable "create_ci_service_account" {
  description = "Create the service account that pushes images and charts (in the project that holds the registry)."
  type        = bool
  default     = false
}

variable "create_terraform_service_accounts" {
  description = "Create the plan and apply service accounts of this project's Terraform root."
  type        = bool
  default     = false
}

variable "repository" {
  description = "GitHub repository allowed to federate, as OWNER/NAME. Tokens from any other repository are refused by the provider's attribute condition."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.repository))
    error_message = "repository must look like OWNER/NAME."
  }
}

variable "repository_owner_id" {
  description = "Numeric GitHub ID of the repository owner. When set, it is also required by the attribute condition, so a deleted-and-recreated org or repo of the same name cannot impersonate us."
  type        = string
  default     = ""
}

variable "pool_id" {
  description = "Workload identity pool ID."
  type        = string
  default     = "github"
}

variable "provider_id" {
  description = "Workload identity pool provider ID."
  type        = string
  default     = "github-actions"
}

variable "apply_environment" {
  description = "GitHub environment whose jobs may impersonate the apply service account (protect it with required reviewers and a main-only branch rule)."
  type        = string
  default     = ""
}

variable "plan_roles" {
  description = "Project roles of the plan service account (read-only). Refresh reads secret versions, and the state it reads holds the same values, so secretAccessor adds no exposure."
  type        = list(string)
  default = [
    "roles/viewer",
    "roles/iam.securityReviewer",
    "roles/secretmanager.secretAccessor",
  ]
}

variable "apply_roles" {
  description = "Project roles of the apply service account: what the environment root creates, nothing broader than that (no Owner/Editor)."
  type        = list(string)
  default = [
    "roles/cloudsql.admin",
    "roles/compute.networkAdmin",
    "roles/compute.securityAdmin",
    "roles/container.admin",
    "roles/iam.serviceAccountAdmin",
    "roles/iam.serviceAccountUser",
    "roles/monitoring.notificationChannelEditor",
    "roles/pubsub.admin",
    "roles/resourcemanager.projectIamAdmin",
    "roles/secretmanager.admin",
    "roles/servicenetworking.networksAdmin",
    "roles/serviceusage.serviceUsageConsumer",
    "roles/storage.admin",
  ]
}

variable "state_bucket" {
  description = "GCS bucket holding Terraform state (needed with create_terraform_service_accounts)."
  type        = string
  default     = ""
}

variable "state_prefix" {
  description = "Object prefix of this environment's state in the bucket (same as backend.tf's prefix). Access is limited to it with an IAM condition."
  type        = string
  default     = ""
}

variable "billing_account" {
  description = "Billing account ID. When set, the apply SA may manage budgets (billing.costsManager) and the plan SA may read them (billing.viewer). Needs a billing admin to apply."
  type        = string
  default     = ""
}
