# State lives in the GCS bucket made by bootstrap/, one prefix per environment. Backend
# blocks cannot read variables, so the bucket and prefix come at init time from
# environments/<env>.gcs.tfbackend:
#   terraform init -reconfigure -backend-config=environments/<env>.gcs.tfbackend
#   terraform plan -var-file=environments/<env>.tfvars
terraform {
  backend "gcs" {}
}
