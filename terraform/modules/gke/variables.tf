variable "project_id" {
  description = "GCP project of the cluster."
  type        = string
}

variable "name" {
  description = "Cluster name, e.g. codigo-prod."
  type        = string
}

variable "location" {
  description = "A zone (zonal cluster: cheap, one control plane replica) or a region (regional cluster: control plane and nodes in three zones)."
  type        = string
}

variable "node_locations" {
  description = "Zones for the nodes. Empty uses the location's default zones."
  type        = list(string)
  default     = []
}

variable "node_service_account_email" {
  description = "Service account the nodes run as. It is created by the bootstrap root with only roles/container.defaultNodeServiceAccount and pull access to the shared registry, never the Compute Engine default account (Editor)."
  type        = string
}

variable "network_id" {
  description = "VPC ID the cluster attaches to."
  type        = string
}

variable "subnetwork_id" {
  description = "Subnet ID of the nodes."
  type        = string
}

variable "pods_range_name" {
  description = "Secondary range name for pod IPs."
  type        = string
}

variable "services_range_name" {
  description = "Secondary range name for service IPs."
  type        = string
}

variable "master_ipv4_cidr_block" {
  description = "/28 for the control plane's private endpoint. Must not overlap any range in the VPC or its peers."
  type        = string
}

variable "enable_private_endpoint" {
  description = "Serve the control plane's IP endpoint only on its private IP. Operators and CI then reach the API through the DNS endpoint (IAM-checked) or from inside the VPC."
  type        = bool
  default     = true
}

variable "enable_dns_endpoint" {
  description = "Expose the control plane's DNS-based endpoint. Every call is authorised by IAM, so no IP allowlist is needed for kubectl from laptops and CI."
  type        = bool
  default     = true
}

variable "master_authorized_networks" {
  description = "CIDRs allowed to reach the control plane's IP endpoint (in addition to nothing: Google public ranges are refused)."
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  default = []
}

variable "release_channel" {
  description = "GKE release channel: RAPID, REGULAR or STABLE. Production follows STABLE, lower environments see versions first."
  type        = string
  default     = "REGULAR"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR or STABLE."
  }
}

variable "maintenance_window" {
  description = "Recurring maintenance window (RFC 5545 recurrence, times in UTC). Upgrades and node recreation happen only inside it."
  type = object({
    start_time = string
    end_time   = string
    recurrence = string
  })
  default = {
    start_time = "2025-01-04T02:00:00Z"
    end_time   = "2025-01-04T06:00:00Z"
    recurrence = "FREQ=WEEKLY;BYDAY=SA,SU"
  }
}

variable "binary_authorization_mode" {
  description = "Binary Authorization evaluation mode: DISABLED or PROJECT_SINGLETON_POLICY_ENFORCE (admits only images the project policy allows, e.g. from our Artifact Registry)."
  type        = string
  default     = "PROJECT_SINGLETON_POLICY_ENFORCE"

  validation {
    condition     = contains(["DISABLED", "PROJECT_SINGLETON_POLICY_ENFORCE"], var.binary_authorization_mode)
    error_message = "binary_authorization_mode must be DISABLED or PROJECT_SINGLETON_POLICY_ENFORCE."
  }
}

variable "logging_components" {
  description = "What GKE ships to Cloud Logging. Workload logs also go to the in-cluster Loki; keeping WORKLOADS here too buys an off-cluster copy for forensics at $0.50/GiB beyond the free 50 GiB."
  type        = list(string)
  default     = ["SYSTEM_COMPONENTS"]
}

variable "deletion_protection" {
  description = "Refuse `terraform destroy` of the cluster."
  type        = bool
  default     = true
}

variable "general_pool" {
  description = "Node pool for the producer, NATS, ctl and the platform add-ons. Counts are per zone in a regional cluster."
  type = object({
    machine_type   = string
    min_node_count = number
    max_node_count = number
    disk_size_gb   = number
    spot           = bool
  })
}

variable "spot_pool" {
  description = "Spot node pool reserved for codigo-consumer (tainted). min_node_count 0 lets it scale to zero when no jobs are pending. Counts are per zone in a regional cluster."
  type = object({
    machine_type   = string
    min_node_count = number
    max_node_count = number
    disk_size_gb   = number
  })
}

variable "spot_pool_taint" {
  description = "Taint on the spot pool. Only pods that tolerate it (the consumers) land there."
  type = object({
    key    = string
    value  = string
    effect = string
  })
  default = {
    key    = "cloud.google.com/gke-spot"
    value  = "true"
    effect = "NO_SCHEDULE"
  }
}

variable "spot_pool_labels" {
  description = "Kubernetes labels on spot pool nodes, for the consumers' nodeSelector/affinity."
  type        = map(string)
  default = {
    "codigo.io/pool" = "consumers"
  }
}

variable "labels" {
  description = "GCP resource labels on the cluster and its VMs (cost allocation)."
  type        = map(string)
  default     = {}
}
