variable "project_id" {
  description = "GCP project of the secrets."
  type        = string
}

variable "prefix" {
  description = "Secret ID prefix, e.g. codigo-prod. The External Secrets controller may read every secret under it."
  type        = string
}

variable "generated" {
  description = "Secrets whose value Terraform generates (random, 48 characters): the NATS user passwords (read by both the NATS servers and the clients) and the webhook HMAC key."
  type        = list(string)
  default = [
    "grafana-admin-password",
    "nats-producer-password",
    "nats-consumer-password",
    "nats-ctl-password",
    "webhook-signing-key",
  ]
}

variable "provided" {
  description = "Secrets created empty; an operator adds the value (`gcloud secrets versions add`). CODIGO_API_KEYS holds tenant tokens that are issued outside Terraform; Alertmanager's receivers read the PagerDuty routing key and the Slack webhook URL."
  type        = list(string)
  default     = ["api-keys", "pagerduty-routing-key", "slack-webhook-url"]
}

variable "replication_locations" {
  description = "Regions where the secrets are stored."
  type        = list(string)
}

variable "labels" {
  description = "Labels on the secrets."
  type        = map(string)
  default     = {}
}
