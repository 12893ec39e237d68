resource "google_artifact_registry_repository" "docker" {
  #checkov:skip=CKV_GCP_84:Images hold no secrets and are encrypted at rest with Google-managed keys; a customer-managed key would add a KMS dependency to every image pull.
  project       = var.project_id
  location      = var.location
  repository_id = var.repository_id
  description   = "Codigo container images (producer, consumer, ctl, loadtest)."
  format        = "DOCKER"
  mode          = "STANDARD_REPOSITORY"
  labels        = var.labels

  docker_config {
    immutable_tags = var.immutable_tags
  }

  cleanup_policy_dry_run = false

  # KEEP rules win over DELETE rules: anything recent or released survives.
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.keep_recent_versions
    }
  }

  cleanup_policies {
    id     = "keep-releases"
    action = "KEEP"
    condition {
      tag_state    = "TAGGED"
      tag_prefixes = var.keep_tag_prefixes
    }
  }

  cleanup_policies {
    id     = "delete-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "${var.delete_untagged_after_days * 86400}s"
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "${var.delete_tagged_after_days * 86400}s"
    }
  }
}
