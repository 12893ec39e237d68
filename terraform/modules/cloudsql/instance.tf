locals {
  default_flags = {
    # Slow-query log; bind values stay out of the log (payloads may hold PII).
    log_min_duration_statement = tostring(var.log_min_duration_statement_ms)
    log_parameter_max_length   = "0"
    log_checkpoints            = "on"
    log_connections            = "on"
    log_disconnections         = "on"
    log_lock_waits             = "on"
    log_temp_files             = "0"
    log_min_error_statement    = "error"
    log_min_messages           = "warning"
    # Cuts idle-in-transaction sessions that would hold row locks on
    # account_balances after a consumer died mid-transaction.
    idle_in_transaction_session_timeout = "60000"
  }
  iam_flags = var.iam_database_authentication ? { "cloudsql.iam_authentication" = "on" } : {}
  flags     = merge(local.default_flags, local.iam_flags, var.extra_database_flags)
}

resource "random_id" "suffix" {
  byte_length = 2
}

resource "google_sql_database_instance" "this" {
  #checkov:skip=CKV_GCP_57:log_min_duration_statement is deliberately on for slow-query diagnosis; log_parameter_max_length = 0 keeps bind values (the sensitive part) out of the logs.
  #checkov:skip=CKV_GCP_6:ssl_mode ENCRYPTED_ONLY makes TLS mandatory on every connection. Client certificates are not required: the instance has no public IP, workloads authenticate with passwords over TLS (sslmode=require) and people with IAM; requiring client certs would force the Auth Proxy or certificate distribution into every pod.
  project             = var.project_id
  name                = "${var.name}-${random_id.suffix.hex}"
  region              = var.region
  database_version    = var.database_version
  deletion_protection = var.deletion_protection

  settings {
    tier                        = var.tier
    edition                     = "ENTERPRISE"
    availability_type           = var.availability_type
    disk_type                   = "PD_SSD"
    disk_size                   = var.disk_size_gb
    disk_autoresize             = true
    disk_autoresize_limit       = var.disk_autoresize_limit_gb
    deletion_protection_enabled = var.deletion_protection
    user_labels                 = var.labels

    ip_configuration {
      ipv4_enabled    = false
      private_network = var.private_network
      # TLS required; the app connects with sslmode=require in DATABASE_URL.
      ssl_mode = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled                        = true
      start_time                     = var.backup_start_time
      location                       = var.backup_location
      point_in_time_recovery_enabled = true
      transaction_log_retention_days = var.pitr_log_retention_days

      backup_retention_settings {
        retained_backups = var.retained_backups
        retention_unit   = "COUNT"
      }
    }

    maintenance_window {
      day          = var.maintenance_window.day
      hour         = var.maintenance_window.hour
      update_track = var.maintenance_window.update_track
    }

    insights_config {
      query_insights_enabled  = true
      query_string_length     = 1024
      record_application_tags = true
      record_client_address   = false
    }

    dynamic "database_flags" {
      for_each = local.flags
      content {
        name  = database_flags.key
        value = database_flags.value
      }
    }
  }

  lifecycle {
    # Storage grows on its own; Terraform must not try to shrink it back.
    ignore_changes = [settings[0].disk_size]
  }
}
