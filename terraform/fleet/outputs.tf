output "redis_address" {
  description = "host:port of the Redis primary (TQ_REDIS_URL is redis://<user:password@>this/0; KEDA's trigger address)."
  value       = "${aws_elasticache_replication_group.redis.primary_endpoint_address}:${aws_elasticache_replication_group.redis.port}"
}

output "postgres_address" {
  description = "host:port of the PostgreSQL instance (TQ_DATABASE_URL is postgresql://<role>:<password>@this/tenantq)."
  value       = aws_db_instance.postgres.endpoint
}

output "postgres_master_secret_arn" {
  description = "Secrets Manager secret holding the RDS master password (for creating the service roles once)."
  value       = try(aws_db_instance.postgres.master_user_secret[0].secret_arn, null)
}

output "worker_role_arn" {
  description = "IAM role of the worker pods: the ServiceAccount annotation eks.amazonaws.com/role-arn."
  value       = aws_iam_role.worker.arn
}

output "data_subnet_cidrs" {
  description = "CIDRs of the subnets Redis and PostgreSQL live in (NetworkPolicy egress of the workers)."
  value       = [for id in local.subnet_ids : var.data_subnets[id]]
}

output "kustomize_fleet_env" {
  description = "The content of deploy/k8s/overlays/production/fleet.env: terraform output -raw kustomize_fleet_env > fleet.env"
  value = join("\n", [
    "# Generated from terraform/fleet outputs (${var.name}); no secrets.",
    "AWS_REGION=${var.region}",
    "WORKER_ROLE_ARN=${aws_iam_role.worker.arn}",
    "REDIS_ADDRESS=${aws_elasticache_replication_group.redis.primary_endpoint_address}:${aws_elasticache_replication_group.redis.port}",
    "POSTGRES_ADDRESS=${aws_db_instance.postgres.endpoint}",
    "DATA_SUBNET_CIDR_A=${var.data_subnets[local.subnet_ids[0]]}",
    "DATA_SUBNET_CIDR_B=${var.data_subnets[local.subnet_ids[1]]}",
    "",
  ])
}
