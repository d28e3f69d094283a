output "bucket_name" {
  description = "Name of the tenant's documents bucket (rag-<tenant_id>-documents)."
  value       = aws_s3_bucket.documents.bucket
}

output "bucket_arn" {
  description = "ARN of the tenant's documents bucket."
  value       = aws_s3_bucket.documents.arn
}

output "tags" {
  description = "The cost tags written on the tenant's resources."
  value       = local.tags
}

output "archive_after_days" {
  description = "Days after which objects (and noncurrent versions) move to GLACIER."
  value       = local.archive_days[var.tier]
}

output "role_arn" {
  description = "ARN of the tenant's IAM role (null when role_trusted_arns is empty)."
  value       = length(aws_iam_role.tenant) > 0 ? aws_iam_role.tenant[0].arn : null
}

output "region" {
  description = "The region the bucket is pinned to."
  value       = var.region
}
