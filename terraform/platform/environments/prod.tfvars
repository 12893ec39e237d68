# prod: regional cluster across three zones, HA PostgreSQL with 14 daily
# backups and 7 days of point-in-time recovery, fixed NAT egress IPs for
# webhook receivers' allowlists.
environment      = "prod"
project_id       = "codigo-prod"
region           = "europe-west1"
zones            = ["europe-west1-b", "europe-west1-c", "europe-west1-d"]
regional_cluster = true

network = {
  subnet_cidr                 = "10.13.0.0/20"
  pods_cidr                   = "10.23.0.0/16"
  services_cidr               = "10.33.0.0/20"
  private_service_access_cidr = "10.43.0.0/20"
  master_cidr                 = "172.16.0.48/28"
  flow_log_sampling           = 0.5
  nat_static_ip_count         = 2
}

gke = {
  release_channel            = "STABLE"
  binary_authorization_mode  = "PROJECT_SINGLETON_POLICY_ENFORCE"
  deletion_protection        = true
  logging_components         = ["SYSTEM_COMPONENTS", "WORKLOADS"]
  master_authorized_networks = []
  # Per zone: 3 to 9 general nodes, 0 to 15 Spot consumer nodes.
  general_pool = {
    machine_type   = "e2-standard-4"
    min_node_count = 1
    max_node_count = 3
    disk_size_gb   = 50
    spot           = false
  }
  spot_pool = {
    machine_type   = "e2-standard-4"
    min_node_count = 0
    max_node_count = 5
    disk_size_gb   = 50
  }
}

cloudsql = {
  database_version            = "POSTGRES_16"
  tier                        = "db-custom-4-16384"
  availability_type           = "REGIONAL"
  disk_size_gb                = 100
  disk_autoresize_limit_gb    = 500
  retained_backups            = 14
  pitr_log_retention_days     = 7
  maintenance_update_track    = "stable"
  deletion_protection         = true
  iam_database_authentication = true
  extra_database_flags        = {}
}


github_repository          = "codigo/codigo"
github_repository_owner_id = ""
github_apply_environment   = "prod"

state_bucket = "codigo-terraform-state"
state_prefix = "codigo/prod"

# billing_account and github_workload_identity_pool come from CI (TF_VAR_*, GitHub variables
# GCP_BILLING_ACCOUNT and GCP_WORKLOAD_IDENTITY_POOL): no placeholder a provider would refuse.
budget = {
  amount               = 1500
  notification_emails  = {} # real addresses only; billing admins are notified regardless
  pubsub_notifications = true
}

jetstream_backup_retention_days = 7

labels = {
  cost-center = "codigo"
}
