variable "project_id" {
  description = "GCP project of the Google service accounts."
  type        = string
}

variable "project_number" {
  description = "Number of the project; Secret Manager resource names in IAM conditions use it."
  type        = string
}

variable "name" {
  description = "Prefix of the default service account IDs: <name>-<workload>, e.g. codigo-producer (the project scopes them to one environment)."
  type        = string
  default     = "codigo"
}

variable "workload_identity_pool" {
  description = "Workload Identity pool of the cluster (PROJECT.svc.id.goog), taken from the GKE module so the bindings wait for the cluster."
  type        = string
}

variable "namespace" {
  description = "Default Kubernetes namespace of the workloads."
  type        = string
  default     = "codigo"
}

variable "workloads" {
  description = "One Google service account per workload: its Kubernetes service account (and namespace, account ID when not the default), project roles, individual Secret Manager secrets it may read (full names), and a secret name prefix it may read (for the External Secrets controller)."
  type = map(object({
    kubernetes_service_account = string
    namespace                  = optional(string)
    account_id                 = optional(string)
    project_roles              = optional(list(string), [])
    secrets                    = optional(map(string), {})
    secret_prefix              = optional(string, "")
  }))
}
