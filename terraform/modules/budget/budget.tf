resource "google_billing_budget" "this" {
  billing_account = var.billing_account
  display_name    = "${var.name} monthly"

  budget_filter {
    projects               = ["projects/${var.project_number}"]
    calendar_period        = "MONTH"
    credit_types_treatment = "INCLUDE_ALL_CREDITS"
  }

  amount {
    specified_amount {
      currency_code = var.currency_code
      units         = tostring(floor(var.amount))
    }
  }

  dynamic "threshold_rules" {
    for_each = var.current_spend_thresholds
    content {
      threshold_percent = threshold_rules.value
      spend_basis       = "CURRENT_SPEND"
    }
  }

  threshold_rules {
    threshold_percent = var.forecast_threshold
    spend_basis       = "FORECASTED_SPEND"
  }

  all_updates_rule {
    monitoring_notification_channels = [for c in google_monitoring_notification_channel.email : c.id]
    pubsub_topic                     = var.pubsub_notifications ? google_pubsub_topic.budget[0].id : null
    schema_version                   = var.pubsub_notifications ? "1.0" : null
    # Billing admins keep getting the default emails as well.
    disable_default_iam_recipients = false
  }
}
