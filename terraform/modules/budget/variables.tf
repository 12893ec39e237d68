variable "project_id" {
  description = "Project that owns the notification channels and the Pub/Sub topic."
  type        = string
}

variable "project_number" {
  description = "Number of the project whose spend the budget watches."
  type        = string
}

variable "name" {
  description = "Name prefix, e.g. codigo-prod."
  type        = string
}

variable "billing_account" {
  description = "Billing account ID (XXXXXX-XXXXXX-XXXXXX)."
  type        = string
}

variable "amount" {
  description = "Monthly budget in whole units of currency_code (see docs/COST.md for the estimate it is derived from)."
  type        = number
}

variable "currency_code" {
  description = "Currency of the budget; must be the billing account's currency."
  type        = string
  default     = "USD"
}

variable "current_spend_thresholds" {
  description = "Fractions of the budget at which actual spend alerts."
  type        = list(number)
  default     = [0.5, 0.9, 1.0]
}

variable "forecast_threshold" {
  description = "Fraction of the budget at which the month-end forecast alerts: the early warning, days before actual spend gets there."
  type        = number
  default     = 1.0
}

variable "notification_emails" {
  description = "Addresses notified through Cloud Monitoring email channels, keyed by a static name."
  type        = map(string)
  default     = {}
}

variable "pubsub_notifications" {
  description = "Also publish every budget update to a Pub/Sub topic (for chat alerts or automated responses such as scaling lower environments down)."
  type        = bool
  default     = false
}

variable "labels" {
  description = "Labels on the Pub/Sub topic and notification channels."
  type        = map(string)
  default     = {}
}
