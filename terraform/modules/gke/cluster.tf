locals {
  node_tag = "${var.name}-node"
}

resource "google_container_cluster" "this" {
  #checkov:skip=CKV_GCP_12:NetworkPolicy is enforced by Dataplane V2 (datapath_provider = ADVANCED_DATAPATH); the legacy Calico network_policy block must stay off with it.
  #checkov:skip=CKV_GCP_61:Intranode visibility would log every pod-to-pod flow as billable VPC flow logs; east-west policy is enforced and logged by Dataplane V2 instead.
  #checkov:skip=CKV_GCP_21:False positive: resource_labels is always non-empty (cluster name merged with the environment labels), but checkov cannot render a merge() across the module boundary.
  #checkov:skip=CKV_GCP_65:Google Groups for RBAC needs the organisation-wide gke-security-groups@<domain> group, which this project does not own; people get cluster access through IAM roles (container.viewer / container.developer) granted to groups instead.
  project  = var.project_id
  name     = var.name
  location = var.location

  node_locations = length(var.node_locations) > 0 ? var.node_locations : null

  network         = var.network_id
  subnetwork      = var.subnetwork_id
  networking_mode = "VPC_NATIVE"

  # Node pools are separate resources so they can be resized or replaced
  # without touching the control plane.
  remove_default_node_pool = true
  initial_node_count       = 1

  deletion_protection = var.deletion_protection
  resource_labels     = merge({ cluster = var.name }, var.labels)

  release_channel {
    channel = var.release_channel
  }

  # Dataplane V2 (eBPF): NetworkPolicy enforcement and policy logging built in.
  datapath_provider = "ADVANCED_DATAPATH"

  enable_shielded_nodes = true
  enable_legacy_abac    = false

  ip_allocation_policy {
    cluster_secondary_range_name  = var.pods_range_name
    services_secondary_range_name = var.services_range_name
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = var.enable_private_endpoint
    master_ipv4_cidr_block  = var.master_ipv4_cidr_block

    master_global_access_config {
      enabled = true
    }
  }

  control_plane_endpoints_config {
    dns_endpoint_config {
      allow_external_traffic = var.enable_dns_endpoint
    }
  }

  master_authorized_networks_config {
    gcp_public_cidrs_access_enabled = false

    dynamic "cidr_blocks" {
      for_each = var.master_authorized_networks
      content {
        cidr_block   = cidr_blocks.value.cidr_block
        display_name = cidr_blocks.value.display_name
      }
    }
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  addons_config {
    http_load_balancing {
      disabled = false
    }
    horizontal_pod_autoscaling {
      disabled = false
    }
    gce_persistent_disk_csi_driver_config {
      enabled = true
    }
    dns_cache_config {
      enabled = true
    }
  }

  vertical_pod_autoscaling {
    enabled = true
  }

  binary_authorization {
    evaluation_mode = var.binary_authorization_mode
  }

  # Metrics are scraped by the in-cluster Prometheus and logs collected into
  # Loki (docs/COST.md says why Managed Service for Prometheus stays off).
  logging_config {
    enable_components = var.logging_components
  }

  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]

    managed_prometheus {
      enabled = false
    }
  }

  cost_management_config {
    enabled = true
  }

  security_posture_config {
    mode               = "BASIC"
    vulnerability_mode = "VULNERABILITY_BASIC"
  }

  maintenance_policy {
    recurring_window {
      start_time = var.maintenance_window.start_time
      end_time   = var.maintenance_window.end_time
      recurrence = var.maintenance_window.recurrence
    }
  }

  # Settings for the throw-away default pool that exists only while the cluster
  # is being created.
  node_config {
    service_account = var.node_service_account_email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    image_type      = "COS_CONTAINERD"
    metadata = {
      disable-legacy-endpoints = "true"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }

  lifecycle {
    ignore_changes = [node_config, initial_node_count]
  }
}
