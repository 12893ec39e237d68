variable "project_id" {
  description = "GCP project that owns the VPC."
  type        = string
}

variable "name" {
  description = "Name prefix for every network resource, e.g. codigo-dev."
  type        = string
}

variable "region" {
  description = "Region of the subnet, router and NAT gateway."
  type        = string
}

variable "subnet_cidr" {
  description = "Primary range of the node subnet."
  type        = string
}

variable "pods_cidr" {
  description = "Secondary range for pod IPs (VPC-native GKE). A /16 holds about 250 nodes at 110 pods per node."
  type        = string
}

variable "services_cidr" {
  description = "Secondary range for ClusterIP services."
  type        = string
}

variable "private_service_access_cidr" {
  description = "Range reserved for Google-managed services (Cloud SQL private IP) peered into the VPC. /20 or larger; it cannot be shrunk later."
  type        = string

  validation {
    condition     = tonumber(split("/", var.private_service_access_cidr)[1]) <= 24
    error_message = "The private service access range must be /24 or larger."
  }
}

variable "flow_log_sampling" {
  description = "Share of VPC flow log records kept (0-1]. Flow logs are billed as log ingestion, so non-production keeps less."
  type        = number
  default     = 0.5

  validation {
    condition     = var.flow_log_sampling > 0 && var.flow_log_sampling <= 1
    error_message = "flow_log_sampling must be in (0, 1]."
  }
}

variable "nat_static_ip_count" {
  description = "Number of reserved external IPs for Cloud NAT. 0 lets Google allocate them; reserve them when webhook receivers allowlist our egress."
  type        = number
  default     = 0
}

variable "nat_min_ports_per_vm" {
  description = "Minimum NAT source ports per node. Webhook delivery opens many outbound connections; dynamic allocation grows this up to nat_max_ports_per_vm."
  type        = number
  default     = 128
}

variable "nat_max_ports_per_vm" {
  description = "Ceiling for dynamic NAT port allocation per node."
  type        = number
  default     = 4096
}
