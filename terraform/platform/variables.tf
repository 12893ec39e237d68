variable "environment" {
  description = "Environment name: dev, qa, preprod or prod."
  type        = string

  validation {
    condition     = contains(["dev", "qa", "preprod", "prod"], var.environment)
    error_message = "environment must be dev, qa, preprod or prod."
  }
}

variable "project_id" {
  description = "GCP project of this environment (one project per environment)."
  type        = string
}

variable "region" {
  description = "Region of every regional resource."
  type        = string
  default     = "europe-west1"
}

variable "zones" {
  description = "Zones used by the nodes. A zonal cluster lives in the first one."
  type        = list(string)
}

variable "regional_cluster" {
  description = "Regional GKE cluster (control plane and nodes in every zone of `zones`) instead of a zonal one."
  type        = bool
}

variable "network" {
  description = "Address plan of the environment. Ranges differ per environment so the VPCs can be peered or joined by VPN later without renumbering."
  type = object({
    subnet_cidr                 = string
    pods_cidr                   = string
    services_cidr               = string
    private_service_access_cidr = string
    master_cidr                 = string
    flow_log_sampling           = number
    nat_static_ip_count         = number
  })
}

variable "gke" {
  description = "Cluster settings. Pool node counts are per zone for a regional cluster."
  type = object({
    release_channel           = string
    binary_authorization_mode = string
    deletion_protection       = bool
    logging_components        = list(string)
    master_authorized_networks = list(object({
      cidr_block   = string
      display_name = string
    }))
    general_pool = object({
      machine_type   = string
      min_node_count = number
      max_node_count = number
      disk_size_gb   = number
      spot           = bool
    })
    spot_pool = object({
      machine_type   = string
      min_node_count = number
      max_node_count = number
      disk_size_gb   = number
    })
  })
}

variable "cloudsql" {
  description = "PostgreSQL settings (see modules/cloudsql for each field)."
  type = object({
    database_version            = string
    tier                        = string
    availability_type           = string
    disk_size_gb                = number
    disk_autoresize_limit_gb    = number
    retained_backups            = number
    pitr_log_retention_days     = number
    maintenance_update_track    = string
    deletion_protection         = bool
    iam_database_authentication = bool
    extra_database_flags        = map(string)
  })
}

variable "github_repository" {
  description = "GitHub repository (OWNER/NAME) whose workflows may federate into this project."
  type        = string
}

variable "github_repository_owner_id" {
  description = "Numeric ID of the repository owner, pinned in the federation condition (empty to match on the name only)."
  type        = string
  default     = ""
}

variable "github_workload_identity_pool" {
  description = "Full name of the shared GitHub workload identity pool (bootstrap output github_workload_identity_pool). Not in the tfvars: CI passes TF_VAR_github_workload_identity_pool from the GitHub variable GCP_WORKLOAD_IDENTITY_POOL."
  type        = string

  validation {
    condition     = can(regex("^projects/[1-9][0-9]*/locations/global/workloadIdentityPools/[a-z0-9-]+$", var.github_workload_identity_pool))
    error_message = "github_workload_identity_pool must be bootstrap's output github_workload_identity_pool (projects/<number>/locations/global/workloadIdentityPools/<id>): set the GitHub variable GCP_WORKLOAD_IDENTITY_POOL, or TF_VAR_github_workload_identity_pool locally."
  }
}

variable "github_apply_environment" {
  description = "GitHub environment whose jobs may run terraform apply here."
  type        = string
}

variable "state_bucket" {
  description = "Terraform state bucket; must equal the bucket in backend.tf."
  type        = string
}

variable "state_prefix" {
  description = "State prefix of this environment; must equal the prefix in backend.tf."
  type        = string
}

variable "billing_account" {
  description = "Billing account ID the project is linked to (budgets live on it). Not in the tfvars: CI passes TF_VAR_billing_account from the GitHub variable GCP_BILLING_ACCOUNT."
  type        = string

  validation {
    condition     = can(regex("^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$", var.billing_account)) && var.billing_account != "000000-000000-000000"
    error_message = "billing_account must be the real billing account ID (XXXXXX-XXXXXX-XXXXXX, see `gcloud billing accounts list`): set the GitHub variable GCP_BILLING_ACCOUNT, or TF_VAR_billing_account locally."
  }
}

variable "budget" {
  description = "Monthly budget in USD and who hears about it."
  type = object({
    amount               = number
    notification_emails  = map(string)
    pubsub_notifications = bool
  })

  validation {
    condition     = alltrue([for email in values(var.budget.notification_emails) : can(regex("^[^@\\s]+@[^@\\s]+\\.[a-z]+$", email)) && !can(regex("@(.+\\.)?example\\.(com|org|net)$", email))])
    error_message = "budget.notification_emails must be real addresses (example.com/org/net are reserved and never delivered); leave the map empty and the billing account's administrators still get the alerts."
  }
}

variable "jetstream_backup_retention_days" {
  description = "Days JetStream snapshots are kept in the backup bucket."
  type        = number
}

variable "labels" {
  description = "Extra labels on every labelled resource (cost centre, owner)."
  type        = map(string)
  default     = {}
}
