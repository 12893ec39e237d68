# One environment of Codigo: VPC, private GKE, Cloud SQL, secrets, workload
# identities, Terraform's own CI identities, backups and a budget. The image
# registry, the GitHub federation pool and the node service accounts are shared
# and live in bootstrap/. This one root serves dev, qa, preprod and prod: they
# differ only in data, environments/<env>.tfvars and environments/<env>.gcs.tfbackend.

locals {
  name = "codigo-${var.environment}"
  labels = merge(var.labels, {
    app         = "codigo"
    environment = var.environment
    managed-by  = "terraform"
  })
  cluster_location = var.regional_cluster ? var.region : var.zones[0]
  node_locations   = var.regional_cluster ? var.zones : []
}

data "google_project" "this" {
  project_id = var.project_id
}

module "network" {
  source = "../modules/network"

  project_id                  = var.project_id
  name                        = local.name
  region                      = var.region
  subnet_cidr                 = var.network.subnet_cidr
  pods_cidr                   = var.network.pods_cidr
  services_cidr               = var.network.services_cidr
  private_service_access_cidr = var.network.private_service_access_cidr
  flow_log_sampling           = var.network.flow_log_sampling
  nat_static_ip_count         = var.network.nat_static_ip_count
}

module "gke" {
  source = "../modules/gke"

  project_id                 = var.project_id
  name                       = local.name
  node_service_account_email = "codigo-gke-nodes@${var.project_id}.iam.gserviceaccount.com"
  location                   = local.cluster_location
  node_locations             = local.node_locations
  network_id                 = module.network.network_id
  subnetwork_id              = module.network.subnet_id
  pods_range_name            = module.network.pods_range_name
  services_range_name        = module.network.services_range_name
  master_ipv4_cidr_block     = var.network.master_cidr
  master_authorized_networks = concat(
    [{ cidr_block = module.network.subnet_cidr, display_name = "${local.name} nodes and in-VPC operators" }],
    var.gke.master_authorized_networks,
  )
  release_channel           = var.gke.release_channel
  binary_authorization_mode = var.gke.binary_authorization_mode
  deletion_protection       = var.gke.deletion_protection
  logging_components        = var.gke.logging_components
  general_pool              = var.gke.general_pool
  spot_pool                 = var.gke.spot_pool
  labels                    = local.labels
}

module "cloudsql" {
  source = "../modules/cloudsql"

  project_id                   = var.project_id
  name                         = local.name
  region                       = var.region
  private_network              = module.network.private_service_access_network
  database_version             = var.cloudsql.database_version
  tier                         = var.cloudsql.tier
  availability_type            = var.cloudsql.availability_type
  disk_size_gb                 = var.cloudsql.disk_size_gb
  disk_autoresize_limit_gb     = var.cloudsql.disk_autoresize_limit_gb
  retained_backups             = var.cloudsql.retained_backups
  pitr_log_retention_days      = var.cloudsql.pitr_log_retention_days
  deletion_protection          = var.cloudsql.deletion_protection
  extra_database_flags         = var.cloudsql.extra_database_flags
  iam_database_authentication  = var.cloudsql.iam_database_authentication
  iam_service_accounts         = { for k, email in module.workload_identity.service_account_emails : k => email if contains(["producer", "consumer", "ctl"], k) }
  secret_replication_locations = [var.region]
  labels                       = local.labels

  maintenance_window = {
    day          = 7
    hour         = 3
    update_track = var.cloudsql.maintenance_update_track
  }
}

module "workload_identity" {
  source = "../modules/workload_identity"

  project_id             = var.project_id
  project_number         = data.google_project.this.number
  name                   = "codigo"
  workload_identity_pool = module.gke.workload_identity_pool
  namespace              = "codigo"

  # Account IDs are what the chart's values expect:
  # codigo-producer@codigo-<env>.iam.gserviceaccount.com, external-secrets@...
  workloads = {
    producer = {
      kubernetes_service_account = "codigo-producer"
      project_roles              = local.database_iam_roles
    }
    consumer = {
      kubernetes_service_account = "codigo-consumer"
      project_roles              = local.database_iam_roles
    }
    ctl = {
      kubernetes_service_account = "codigo-ctl"
      project_roles              = local.database_iam_roles
    }
    # The workloads never read Secret Manager themselves: the External Secrets
    # controller syncs codigo-<env>-* secrets into Kubernetes Secrets.
    external-secrets = {
      kubernetes_service_account = "external-secrets"
      namespace                  = "external-secrets"
      account_id                 = "external-secrets"
      secret_prefix              = "${local.name}-"
    }
  }
}

locals {
  # IAM database login needs instanceUser; cloudsql.client lets the Auth Proxy
  # or a connector fetch the instance's ephemeral certificate.
  database_iam_roles = var.cloudsql.iam_database_authentication ? ["roles/cloudsql.client", "roles/cloudsql.instanceUser"] : []
}

module "github_oidc" {
  source = "../modules/github_oidc"

  project_id                        = var.project_id
  name                              = "codigo"
  repository                        = var.github_repository
  repository_owner_id               = var.github_repository_owner_id
  create_pool                       = false
  pool_name                         = var.github_workload_identity_pool
  create_terraform_service_accounts = true
  apply_environment                 = var.github_apply_environment
  state_bucket                      = var.state_bucket
  state_prefix                      = var.state_prefix
  billing_account                   = var.billing_account
}

module "app_secrets" {
  source = "../modules/app_secrets"

  project_id            = var.project_id
  prefix                = local.name
  replication_locations = [var.region]
  labels                = local.labels
}

module "jetstream_backups" {
  source = "../modules/backup_bucket"

  project_id             = var.project_id
  location               = "EU"
  retention_days         = var.jetstream_backup_retention_days
  workload_identity_pool = module.gke.workload_identity_pool
  force_destroy          = var.environment == "dev"
  labels                 = local.labels
}

module "budget" {
  source = "../modules/budget"

  project_id           = var.project_id
  project_number       = data.google_project.this.number
  name                 = local.name
  billing_account      = var.billing_account
  amount               = var.budget.amount
  notification_emails  = var.budget.notification_emails
  pubsub_notifications = var.budget.pubsub_notifications
  labels               = local.labels
}
