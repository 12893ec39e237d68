resource "google_monitoring_notification_channel" "email" {
  for_each = var.notification_emails

  project      = var.project_id
  display_name = "${var.name} budget: ${each.key}"
  type         = "email"
  user_labels  = var.labels

  labels = {
    email_address = each.value
  }
}

resource "google_pubsub_topic" "budget" {
  #checkov:skip=CKV_GCP_83:Budget notifications carry only spend figures; Google-managed encryption is enough and avoids a KMS dependency for alerting.
  count = var.pubsub_notifications ? 1 : 0

  project                    = var.project_id
  name                       = "${var.name}-budget"
  labels                     = var.labels
  message_retention_duration = "604800s"
}

# Cloud Billing publishes budget notifications as this Google-owned account.
resource "google_pubsub_topic_iam_member" "billing_publisher" {
  count = var.pubsub_notifications ? 1 : 0

  project = var.project_id
  topic   = google_pubsub_topic.budget[0].name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:billing-budget-alert@system.gserviceaccount.com"
}
