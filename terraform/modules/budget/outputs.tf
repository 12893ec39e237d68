output "budget_id" {
  description = "Resource name of the billing budget."
  value       = google_billing_budget.this.name
}

output "pubsub_topic" {
  description = "Topic receiving budget notifications (null when disabled)."
  value       = var.pubsub_notifications ? google_pubsub_topic.budget[0].id : null
}

output "notification_channel_ids" {
  description = "Cloud Monitoring email channels notified by the budget; reuse them for other alert policies."
  value       = { for k, c in google_monitoring_notification_channel.email : k => c.id }
}
