variable "tenant_id" {
  description = "Tenant id: becomes part of the bucket name rag-<tenant_id>-documents and the TenantID tag."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,39}$", var.tenant_id))
    error_message = "The tenant_id must match ^[a-z][a-z0-9-]{2,39}$ (a lower-case letter, then 2 to 39 lower-case letters, digits or hyphens)."
  }
}

variable "tier" {
  description = "Service tier: Gold, Silver or Bronze. Sets the archive age (90/60/30 days) and the default cost center."
  type        = string

  validation {
    condition     = contains(["Gold", "Silver", "Bronze"], var.tier)
    error_message = "The tier must be one of Gold, Silver, Bronze."
  }
}

variable "region" {
  description = "AWS region of the tenant's resources (the platform checks it against its allow-list before this runs)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]+$", var.region))
    error_message = "The region must look like an AWS region name, e.g. us-east-1."
  }
}

variable "environment" {
  description = "Deployment environment, written to the Environment cost tag (e.g. production, staging, dev)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,31}$", var.environment))
    error_message = "The environment must match ^[a-z][a-z0-9-]{0,31}$."
  }
}

variable "cost_center" {
  description = "CostCenter tag; null (the default) derives rag-platform-<lower-case tier>."
  type        = string
  default     = null

  validation {
    condition     = var.cost_center == null || can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", var.cost_center))
    error_message = "The cost_center must be null or 1 to 128 letters, digits, '.', '_' or '-'."
  }
}

variable "s3_endpoint" {
  description = "S3-compatible endpoint URL (e.g. http://127.0.0.1:9000 for tests/stubs/s3server.py); null uses AWS. When set, path-style addressing is used and the AWS account/credential look-ups are skipped."
  type        = string
  default     = null

  validation {
    condition     = var.s3_endpoint == null || can(regex("^https?://[^/]+/?$", var.s3_endpoint))
    error_message = "The s3_endpoint must be null or an http(s)://host[:port] URL."
  }
}

variable "force_destroy" {
  description = "Let destroy delete a bucket that still holds objects (rollback and deprovision must leave no bucket behind)."
  type        = bool
  default     = true
}

variable "role_trusted_arns" {
  description = "IAM principals (ARNs) allowed to assume the tenant's role tenantq-tenant-<tenant_id>, e.g. the worker role of terraform/fleet so object-storage checks run with the tenant's own credentials. Empty (the default): no tenant role is created."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.role_trusted_arns : can(regex("^arn:aws[a-z-]*:(iam|sts)::[0-9]{12}:[A-Za-z0-9+=,.@_/:-]+$", a))])
    error_message = "Each role_trusted_arns entry must be an IAM or STS ARN such as arn:aws:iam::123456789012:role/tenantq-prod-worker."
  }
}

variable "role_path" {
  description = "IAM path of the tenant role; the fleet worker's IAM permissions are limited to roles under it."
  type        = string
  default     = "/tenantq/tenants/"

  validation {
    condition     = can(regex("^/([A-Za-z0-9+=,.@_-]+/)*$", var.role_path))
    error_message = "The role_path must start and end with '/', e.g. /tenantq/tenants/."
  }
}
