# qa: zonal, on-demand general pool so test runs are not preempted, Spot
# consumers, small dedicated-core PostgreSQL without HA.
environment      = "qa"
project_id       = "codigo-qa"
region           = "europe-west1"
zones            = ["europe-west1-c"]
regional_cluster = false

network = {
  subnet_cidr                 = "10.11.0.0/20"
  pods_cidr                   = "10.21.0.0/16"
  services_cidr               = "10.31.0.0/20"
  private_service_access_cidr = "10.41.0.0/20"
  master_cidr                 = "172.16.0.16/28"
  flow_log_sampling           = 0.1
  nat_static_ip_count         = 0
}

gke = {
  release_channel            = "REGULAR"
  binary_authorization_mode  = "PROJECT_SINGLETON_POLICY_ENFORCE"
  deletion_protection        = true
  logging_components         = ["SYSTEM_COMPONENTS"]
  master_authorized_networks = []
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
    max_node_count = 4
    disk_size_gb   = 50
  }
}

cloudsql = {
  database_version            = "POSTGRES_16"
  tier                        = "db-custom-1-3840"
  availability_type           = "ZONAL"
  disk_size_gb                = 20
  disk_autoresize_limit_gb    = 100
  retained_backups            = 7
  pitr_log_retention_days     = 3
  maintenance_update_track    = "canary"
  deletion_protection         = true
  iam_database_authentication = false
  extra_database_flags        = {}
}


github_repository          = "codigo/codigo"
github_repository_owner_id = ""
github_apply_environment   = "qa"

state_bucket = "codigo-terraform-state"
state_prefix = "codigo/qa"

# billing_account and github_workload_identity_pool come from CI (TF_VAR_*, GitHub variables
# GCP_BILLING_ACCOUNT and GCP_WORKLOAD_IDENTITY_POOL): no placeholder a provider would refuse.
budget = {
  amount               = 500
  notification_emails  = {} # real addresses only; billing admins are notified regardless
  pubsub_notifications = false
}

jetstream_backup_retention_days = 3

labels = {
  cost-center = "codigo"
}
