variable "project_id" {
  description = "GCP project of the instance."
  type        = string
}

variable "name" {
  description = "Instance name prefix; a random suffix is appended because Cloud SQL reserves a deleted instance's name for up to a week."
  type        = string
}

variable "region" {
  description = "Region of the instance (same as the GKE cluster to keep latency and inter-region egress at zero)."
  type        = string
}

variable "database_version" {
  description = "PostgreSQL major version (POSTGRES_15 or POSTGRES_16). Major upgrades are done in place with `gcloud sql instances patch --database-version`, after a drill on a clone."
  type        = string
  default     = "POSTGRES_16"

  validation {
    condition     = contains(["POSTGRES_15", "POSTGRES_16"], var.database_version)
    error_message = "database_version must be POSTGRES_15 or POSTGRES_16."
  }
}

variable "tier" {
  description = "Machine tier, e.g. db-g1-small (shared core, dev only) or db-custom-<vCPU>-<MiB>."
  type        = string
}

variable "availability_type" {
  description = "ZONAL (single instance) or REGIONAL (HA: synchronous standby in a second zone, automatic failover)."
  type        = string

  validation {
    condition     = contains(["ZONAL", "REGIONAL"], var.availability_type)
    error_message = "availability_type must be ZONAL or REGIONAL."
  }
}

variable "disk_size_gb" {
  description = "Initial SSD size. Storage only grows (autoresize); it can never be shrunk."
  type        = number
}

variable "disk_autoresize_limit_gb" {
  description = "Upper bound for automatic storage growth (0 = unlimited). A bound keeps a runaway table from growing the bill silently."
  type        = number
  default     = 0
}

variable "private_network" {
  description = "VPC ID with private service access to Cloud SQL. The instance has no public IP."
  type        = string
}

variable "backup_start_time" {
  description = "Start of the daily backup window, HH:MM UTC. Keep it outside the maintenance window."
  type        = string
  default     = "01:00"
}

variable "backup_location" {
  description = "Where backups are stored. A multi-region (eu) keeps them when the instance's region is lost."
  type        = string
  default     = "eu"
}

variable "retained_backups" {
  description = "Number of daily automated backups kept."
  type        = number
  default     = 7
}

variable "pitr_log_retention_days" {
  description = "Days of write-ahead log kept for point-in-time recovery (1-7 on the Enterprise edition)."
  type        = number
  default     = 7

  validation {
    condition     = var.pitr_log_retention_days >= 1 && var.pitr_log_retention_days <= 7
    error_message = "pitr_log_retention_days must be between 1 and 7."
  }
}

variable "maintenance_window" {
  description = "Weekly maintenance window: day 1-7 (Monday-Sunday), hour 0-23 UTC, update_track canary|stable|week5. Lower environments take canary so updates land there a week before production."
  type = object({
    day          = number
    hour         = number
    update_track = string
  })
  default = {
    day          = 7
    hour         = 3
    update_track = "stable"
  }
}

variable "log_min_duration_statement_ms" {
  description = "Log statements slower than this (ms). Bind parameters are not logged (log_parameter_max_length = 0) so payloads never reach the logs."
  type        = number
  default     = 500
}

variable "extra_database_flags" {
  description = "Additional PostgreSQL flags, merged over the defaults (e.g. max_connections)."
  type        = map(string)
  default     = {}
}

variable "iam_database_authentication" {
  description = "Turn on Cloud SQL IAM database authentication and create IAM users for iam_service_accounts. Password users are still created for the app, which connects with a password over TLS."
  type        = bool
  default     = false
}

variable "iam_service_accounts" {
  description = "Service account emails that get an IAM database user (only when iam_database_authentication is true), keyed by a static name so the set is known at plan time."
  type        = map(string)
  default     = {}
}

variable "database_name" {
  description = "Name of the application database."
  type        = string
  default     = "codigo"
}

variable "app_user" {
  description = "Login the producer and consumers use (DML only once the migrations have run its grants)."
  type        = string
  default     = "codigo_app"
}

variable "migration_user" {
  description = "Login `codigo-ctl setup` uses to run migrations (owns the schema)."
  type        = string
  default     = "codigo_migrator"
}

variable "monitoring_user" {
  description = "Login of postgres_exporter; its grant (pg_monitor) is applied by SQL, see terraform/README.md."
  type        = string
  default     = "codigo_monitoring"
}

variable "secret_replication_locations" {
  description = "Regions where the Secret Manager copies of the database URLs are stored."
  type        = list(string)
}

variable "deletion_protection" {
  description = "Refuse deletion both in Terraform and in the Cloud SQL API."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels on the instance and secrets."
  type        = map(string)
  default     = {}
}
