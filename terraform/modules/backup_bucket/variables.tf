variable "project_id" {
  description = "GCP project of the bucket."
  type        = string
}

variable "service_account_id" {
  description = "Account ID of the backup CronJob's Google service account."
  type        = string
  default     = "codigo-nats-backup"
}

variable "location" {
  description = "Bucket location. A multi-region (EU) survives the loss of the cluster's region."
  type        = string
  default     = "EU"
}

variable "retention_days" {
  description = "Snapshots older than this are deleted."
  type        = number
  default     = 7
}

variable "workload_identity_pool" {
  description = "Workload Identity pool of the cluster (PROJECT.svc.id.goog)."
  type        = string
}

variable "namespace" {
  description = "Namespace of the backup CronJob."
  type        = string
  default     = "codigo"
}

variable "kubernetes_service_account" {
  description = "Kubernetes service account of the JetStream snapshot CronJob."
  type        = string
  default     = "codigo-nats-backup"
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete a bucket that still holds snapshots (dev only)."
  type        = bool
  default     = false
}

variable "labels" {
  description = "Labels on the bucket."
  type        = map(string)
  default     = {}
}
