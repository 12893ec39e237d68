# preprod: the production topology at a smaller size. Regional cluster and HA
# PostgreSQL, so upgrades, failovers and restore drills are rehearsed here first.
environment      = "preprod"
project_id       = "codigo-preprod"
region           = "europe-west1"
zones            = ["europe-west1-b", "europe-west1-c", "europe-west1-d"]
regional_cluster = true

network = {
  subnet_cidr                 = "10.12.0.0/20"
  pods_cidr                   = "10.22.0.0/16"
  services_cidr               = "10.32.0.0/20"
  private_service_access_cidr = "10.42.0.0/20"
  master_cidr                 = "172.16.0.32/28"
  flow_log_sampling           = 0.25
  nat_static_ip_count         = 0
}

gke = {
  release_channel            = "STABLE"
  binary_authorization_mode  = "PROJECT_SINGLETON_POLICY_ENFORCE"
  deletion_protection        = true
  logging_components         = ["SYSTEM_COMPONENTS"]
  master_authorized_networks = []
  # Per zone: 3 general nodes at minimum, one per zone for the NATS R3 peers.
  general_pool = {
    machine_type   = "e2-standard-4"
    min_node_count = 1
    max_node_count = 2
    disk_size_gb   = 50
    spot           = false
  }
  spot_pool = {
    machine_type   = "e2-standard-4"
    min_node_count = 0
    max_node_count = 3
    disk_size_gb   = 50
  }
}

cloudsql = {
  database_version            = "POSTGRES_16"
  tier                        = "db-custom-2-7680"
  availability_type           = "REGIONAL"
  disk_size_gb                = 50
  disk_autoresize_limit_gb    = 200
  retained_backups            = 7
  pitr_log_retention_days     = 7
  maintenance_update_track    = "stable"
  deletion_protection         = true
  iam_database_authentication = true
  extra_database_flags        = {}
}


github_repository          = "codigo/codigo"
github_repository_owner_id = ""
github_apply_environment   = "preprod"

state_bucket = "codigo-terraform-state"
state_prefix = "codigo/preprod"

# billing_account and github_workload_identity_pool come from CI (TF_VAR_*, GitHub variables
# GCP_BILLING_ACCOUNT and GCP_WORKLOAD_IDENTITY_POOL): no placeholder a provider would refuse.
budget = {
  amount               = 900
  notification_emails  = {} # real addresses only; billing admins are notified regardless
  pubsub_notifications = false
}

jetstream_backup_retention_days = 7

labels = {
  cost-center = "codigo"
}
