# The tenant's own IAM role: it may use its bucket and nothing else, and only
# in the tenant's region. Assumed by the principals in var.role_trusted_arns
# (the fleet's worker role), so checks of the bucket run with the tenant's
# credentials instead of the worker's wider ones.

# Known at plan time (the bucket's ARN is not until it exists), so a plan
# shows the policy in full. aws_partition makes no API call.
data "aws_partition" "current" {}

locals {
  bucket_arn = "arn:${data.aws_partition.current.partition}:s3:::${local.bucket_name}"
}

data "aws_iam_policy_document" "tenant_assume" {
  count = length(var.role_trusted_arns) > 0 ? 1 : 0

  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "AWS"
      identifiers = var.role_trusted_arns
    }
  }
}

data "aws_iam_policy_document" "tenant_bucket" {
  count = length(var.role_trusted_arns) > 0 ? 1 : 0

  statement {
    sid       = "Bucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation", "s3:GetBucketTagging", "s3:GetLifecycleConfiguration"]
    resources = [local.bucket_arn]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [var.region]
    }
  }

  statement {
    sid       = "Objects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:GetObjectTagging", "s3:PutObjectTagging"]
    resources = ["${local.bucket_arn}/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [var.region]
    }
  }
}

resource "aws_iam_role" "tenant" {
  count = length(var.role_trusted_arns) > 0 ? 1 : 0

  name                 = "tenantq-tenant-${var.tenant_id}"
  path                 = var.role_path
  assume_role_policy   = data.aws_iam_policy_document.tenant_assume[0].json
  max_session_duration = 3600
  tags                 = local.tags
}

resource "aws_iam_role_policy" "tenant_bucket" {
  count = length(var.role_trusted_arns) > 0 ? 1 : 0

  name   = "bucket-${local.bucket_name}"
  role   = aws_iam_role.tenant[0].id
  policy = data.aws_iam_policy_document.tenant_bucket[0].json

  # The bucket first: the policy names it.
  depends_on = [aws_s3_bucket.documents]
}
