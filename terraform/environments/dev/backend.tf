# Backend blocks cannot read variables: bucket and prefix are literals and must
# match state_bucket / state_prefix in terraform.tfvars (scripts/check-terraform.sh
# checks that they do).
terraform {
  backend "gcs" {
    bucket = "codigo-terraform-state"
    prefix = "codigo/dev"
  }
}
