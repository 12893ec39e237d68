# The first apply runs with local state (this file moved aside) because the
# bucket it would store state in does not exist yet; then the state is migrated
# into the bucket. See terraform/README.md, "Bootstrap".
terraform {
  backend "gcs" {
    bucket = "codigo-terraform-state"
    prefix = "codigo/bootstrap"
  }
}
