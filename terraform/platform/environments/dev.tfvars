# dev: cheapest shape that still runs the whole pipeline. Zonal cluster (covered
# by the GKE free tier), every node on Spot, shared-core PostgreSQL, no HA.
environment      = "dev"
project_id       = "codigo-dev"
region           = "europe-west1"
zones            = ["europe-west1-b"]
regional_cluster = false

network = {
  subnet_cidr                 = "10.10.0.0/20"
  pods_cidr                   = "10.20.0.0/16"
  services_cidr               = "10.30.0.0/20"
  private_service_access_cidr = "10.40.0.0/20"
  master_cidr                 = "172.16.0.0/28"
  flow_log_sampling           = 0.1
  nat_static_ip_count         = 0
}

gke = {
  release_channel            = "REGULAR"
  binary_authorization_mode  = "PROJECT_SINGLETON_POLICY_ENFORCE"
  deletion_protection        = false
  logging_components         = ["SYSTEM_COMPONENTS"]
  master_authorized_networks = []
  general_pool = {
    machine_type   = "e2-standard-4"
    min_node_count = 1
    max_node_count = 3
    disk_size_gb   = 50
    spot           = true
  }
  spot_pool = {
    machine_type   = "e2-standard-2"
    min_node_count = 0
    max_node_count = 3
    disk_size_gb   = 50
  }
}

cloudsql = {
  database_version            = "POSTGRES_16"
  tier                        = "db-g1-small"
  availability_type           = "ZONAL"
  disk_size_gb                = 10
  disk_autoresize_limit_gb    = 50
  retained_backups            = 3
  pitr_log_retention_days     = 1
  maintenance_update_track    = "canary"
  deletion_protection         = false
  iam_database_authentication = false
  extra_database_flags        = {}
}


github_repository          = "codigo/codigo"
github_repository_owner_id = ""
github_apply_environment   = "dev"

state_bucket = "codigo-terraform-state"
state_prefix = "codigo/dev"

# billing_account and github_workload_identity_pool come from CI (TF_VAR_*, GitHub variables
# GCP_BILLING_ACCOUNT and GCP_WORKLOAD_IDENTITY_POOL): no placeholder a provider would refuse.
budget = {
  amount               = 220
  notification_emails  = {} # real addresses only; billing admins are notified regardless
  pubsub_notifications = false
}

jetstream_backup_retention_days = 3

labels = {
  cost-center = "codigo"
}
