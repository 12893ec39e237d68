variable "project_id" {
  description = "GCP project of the Google service accounts."
  type        = string
}

variable "name" {
  description = "Prefix of the service account IDs, e.g. codigo-prod (IDs are limited to 30 characters)."
  type        = string
}

variable "workload_identity_pool" {
  description = "Workload Identity pool of the cluster (PROJECT.svc.id.goog), taken from the GKE module so the bindings wait for the cluster."
  type        = string
}

variable "namespace" {
  description = "Kubernetes namespace of the Codigo workloads."
  type        = string
  default     = "codigo"
}

variable "workloads" {
  description = "One Google service account per workload: the Kubernetes service account it is bound to, its project roles, and the Secret Manager secrets (full names) it may read."
  type = map(object({
    kubernetes_service_account = string
    project_roles              = optional(list(string), [])
    secrets                    = optional(map(string), {})
  }))
}
