variable "project_id" {
  description = "GCP project of the repository."
  type        = string
}

variable "location" {
  description = "Region of the repository; the same region as the cluster makes pulls free and fast."
  type        = string
}

variable "repository_id" {
  description = "Repository name; images are LOCATION-docker.pkg.dev/PROJECT/REPOSITORY/codigo-producer etc."
  type        = string
  default     = "codigo"
}

variable "immutable_tags" {
  description = "Refuse to move an existing tag. Deployments pin tags (or digests) that must always mean the same image."
  type        = bool
  default     = true
}

variable "keep_recent_versions" {
  description = "Versions of each image always kept, whatever their age (rollback targets)."
  type        = number
  default     = 20
}

variable "keep_tag_prefixes" {
  description = "Tag prefixes kept forever (release tags)."
  type        = list(string)
  default     = ["v"]
}

variable "delete_untagged_after_days" {
  description = "Untagged manifests (superseded builds, orphaned platform manifests) older than this are deleted."
  type        = number
  default     = 7
}

variable "delete_tagged_after_days" {
  description = "Tagged images older than this are deleted unless a keep rule (recent versions, release prefixes) protects them."
  type        = number
  default     = 90
}

variable "reader_members" {
  description = "IAM members allowed to pull, keyed by a static name (keys must be known at plan time; values may come from resources created in the same apply)."
  type        = map(string)
  default     = {}
}

variable "writer_members" {
  description = "IAM members allowed to push (the CI service account), keyed by a static name."
  type        = map(string)
  default     = {}
}

variable "labels" {
  description = "Labels on the repository."
  type        = map(string)
  default     = {}
}
