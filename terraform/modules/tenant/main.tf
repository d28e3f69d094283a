# One tenant's cloud resources: the documents bucket with its cost tags,
# archive lifecycle by tier, versioning, encryption and a public-access block.
# The worker's exec step applies this as the root of a per-tenant working
# directory (see ../../README.md), so the module configures its own provider.

provider "aws" {
  region = var.region

  # Pointed at an S3-compatible endpoint (tests/stubs/s3server.py, MinIO, ...)
  # when s3_endpoint is set: path-style URLs, and no STS/IMDS/account calls
  # that such an endpoint cannot answer. All null/false against real AWS.
  s3_use_path_style           = var.s3_endpoint != null
  skip_credentials_validation = var.s3_endpoint != null
  skip_requesting_account_id  = var.s3_endpoint != null
  skip_metadata_api_check     = var.s3_endpoint != null
  skip_region_validation      = var.s3_endpoint != null

  endpoints {
    s3 = var.s3_endpoint
  }
}

locals {
  bucket_name = "rag-${var.tenant_id}-documents"
  cost_center = coalesce(var.cost_center, "rag-platform-${lower(var.tier)}")

  # Objects move to the archive storage class after this many days (docs/design.md §1).
  archive_days = {
    Gold   = 90
    Silver = 60
    Bronze = 30
  }

  # The cost tags every taggable resource carries (docs/design.md §1). Written out
  # on each resource rather than through the provider's default_tags, so the
  # module tags the same whoever configures the provider.
  tags = {
    TenantID    = var.tenant_id
    Tier        = var.tier
    CostCenter  = local.cost_center
    ManagedBy   = "tenantq"
    Environment = var.environment
  }
}

resource "aws_s3_bucket" "documents" {
  bucket        = local.bucket_name
  force_destroy = var.force_destroy
  tags          = local.tags

  # Pinned to the tenant's region: the provider creates it there (provider
  # region = var.region), and an apply that finds it elsewhere (a bucket of
  # that name made by hand in another region) fails instead of adopting it.
  lifecycle {
    postcondition {
      condition     = var.s3_endpoint != null || self.region == var.region
      error_message = "The bucket ${local.bucket_name} is in region ${self.region}, not the tenant's region ${var.region}."
    }
  }
}

resource "aws_s3_bucket_public_access_block" "documents" {
  bucket = aws_s3_bucket.documents.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "documents" {
  bucket = aws_s3_bucket.documents.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_versioning" "documents" {
  bucket = aws_s3_bucket.documents.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "documents" {
  bucket = aws_s3_bucket.documents.id

  # On a versioned bucket the lifecycle rules should be applied after versioning.
  depends_on = [aws_s3_bucket_versioning.documents]

  rule {
    # Same rule id as the worker's own bucket step writes.
    id     = "archive-after-${local.archive_days[var.tier]}-days"
    status = "Enabled"

    filter {
      prefix = ""
    }

    transition {
      days          = local.archive_days[var.tier]
      storage_class = "GLACIER"
    }

    noncurrent_version_transition {
      noncurrent_days = local.archive_days[var.tier]
      storage_class   = "GLACIER"
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}
