locals {
  node_metadata = {
    disable-legacy-endpoints = "true"
  }
}

resource "google_container_node_pool" "general" {
  project  = var.project_id
  name     = "general"
  cluster  = google_container_cluster.this.id
  location = var.location

  initial_node_count = var.general_pool.min_node_count

  autoscaling {
    min_node_count  = var.general_pool.min_node_count
    max_node_count  = var.general_pool.max_node_count
    location_policy = "BALANCED"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  # One extra node during upgrades, never one fewer: NATS R3 keeps quorum and
  # PodDisruptionBudgets are honoured.
  upgrade_settings {
    strategy        = "SURGE"
    max_surge       = 1
    max_unavailable = 0
  }

  node_config {
    machine_type    = var.general_pool.machine_type
    spot            = var.general_pool.spot
    disk_type       = "pd-balanced"
    disk_size_gb    = var.general_pool.disk_size_gb
    image_type      = "COS_CONTAINERD"
    service_account = var.node_service_account_email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    tags            = [local.node_tag]
    resource_labels = var.labels
    metadata        = local.node_metadata

    labels = {
      "codigo.io/pool" = "general"
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
    ignore_changes = [initial_node_count]
  }
}

# Consumers are stateless and idempotent on the job id: a Spot preemption only
# redelivers the in-flight messages after AckWait, so they run at the Spot price.
resource "google_container_node_pool" "spot" {
  project  = var.project_id
  name     = "consumers-spot"
  cluster  = google_container_cluster.this.id
  location = var.location

  initial_node_count = var.spot_pool.min_node_count

  autoscaling {
    min_node_count = var.spot_pool.min_node_count
    max_node_count = var.spot_pool.max_node_count
    # ANY: take Spot capacity in whichever zone has it, instead of balancing.
    location_policy = "ANY"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  upgrade_settings {
    strategy        = "SURGE"
    max_surge       = 1
    max_unavailable = 0
  }

  node_config {
    machine_type    = var.spot_pool.machine_type
    spot            = true
    disk_type       = "pd-balanced"
    disk_size_gb    = var.spot_pool.disk_size_gb
    image_type      = "COS_CONTAINERD"
    service_account = var.node_service_account_email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    tags            = [local.node_tag]
    resource_labels = var.labels
    metadata        = local.node_metadata
    labels          = var.spot_pool_labels

    taint {
      key    = var.spot_pool_taint.key
      value  = var.spot_pool_taint.value
      effect = var.spot_pool_taint.effect
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
    ignore_changes = [initial_node_count]
  }
}
