# The fleet's own infrastructure on AWS: the queue's Redis (ElastiCache),
# the state's PostgreSQL 15 (RDS), and the IAM role the worker pods assume
# through IRSA. Credentials come from the environment or the caller's AWS
# profile, never from files here; the RDS master password is generated and
# kept by RDS in Secrets Manager (manage_master_user_password).

provider "aws" {
  region = var.region
}

locals {
  tags = merge(var.tags, {
    ManagedBy   = "terraform"
    Application = "tenantq"
    Environment = var.environment
  })
  # Account and partition from the OIDC provider's ARN: no STS call needed.
  partition  = split(":", var.eks_oidc_provider_arn)[1]
  account_id = split(":", var.eks_oidc_provider_arn)[4]
  subnet_ids = sort(keys(var.data_subnets))
}

# ---------------------------------------------------------------- network

resource "aws_security_group" "redis" {
  name        = "${var.name}-redis"
  description = "tenantq queue Redis: 6379 from the workers only"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "redis" {
  for_each = toset(var.client_security_group_ids)

  security_group_id            = aws_security_group.redis.id
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  description                  = "Redis from ${each.value}"
  tags                         = local.tags
}

resource "aws_security_group" "postgres" {
  name        = "${var.name}-postgres"
  description = "tenantq PostgreSQL: 5432 from the workers only"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "postgres" {
  for_each = toset(var.client_security_group_ids)

  security_group_id            = aws_security_group.postgres.id
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  description                  = "PostgreSQL from ${each.value}"
  tags                         = local.tags
}

# ---------------------------------------------------------------- Redis

resource "aws_elasticache_subnet_group" "redis" {
  name       = "${var.name}-redis"
  subnet_ids = local.subnet_ids
  tags       = local.tags
}

# The worker refuses to start on a Redis that may evict (queue keys would
# vanish silently): noeviction is the only policy it accepts.
resource "aws_elasticache_parameter_group" "redis" {
  name        = "${var.name}-redis7"
  family      = "redis7"
  description = "tenantq: never evict queue keys"
  tags        = local.tags

  parameter {
    name  = "maxmemory-policy"
    value = "noeviction"
  }
}

resource "aws_elasticache_replication_group" "redis" {
  replication_group_id = var.name
  description          = "tenantq job queue"
  engine               = "redis"
  engine_version       = var.redis_engine_version
  node_type            = var.redis_node_type
  port                 = 6379
  parameter_group_name = aws_elasticache_parameter_group.redis.name
  subnet_group_name    = aws_elasticache_subnet_group.redis.name
  security_group_ids   = [aws_security_group.redis.id]

  num_cache_clusters         = 1 + var.redis_replicas
  automatic_failover_enabled = var.redis_replicas > 0
  multi_az_enabled           = var.redis_replicas > 0

  at_rest_encryption_enabled = true
  # The worker's Redis client (hiredis 0.14, Debian 12) has no TLS, and
  # ElastiCache allows AUTH/RBAC only with in-transit encryption: access is
  # limited by the security group above (deploy/README.md, "Known limits").
  transit_encryption_enabled = false

  snapshot_retention_limit   = 1
  auto_minor_version_upgrade = true
  apply_immediately          = false
  tags                       = local.tags
}

# ---------------------------------------------------------------- PostgreSQL

resource "aws_db_subnet_group" "postgres" {
  name       = "${var.name}-postgres"
  subnet_ids = local.subnet_ids
  tags       = local.tags
}

resource "aws_db_parameter_group" "postgres" {
  name        = "${var.name}-postgres15"
  family      = "postgres15"
  description = "tenantq state"
  tags        = local.tags

  # TLS for every connection (libpq's default sslmode=prefer then uses it).
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
}

resource "aws_db_instance" "postgres" {
  identifier     = var.name
  engine         = "postgres"
  engine_version = var.postgres_engine_version
  instance_class = var.postgres_instance_class
  db_name        = "tenantq"
  port           = 5432

  # The master user is for the operator's first step only (creating the
  # tq_migrate, tq_worker and tq_cli roles); its password is generated and
  # rotated by RDS in Secrets Manager, never in a file or the state.
  username                    = "tq_admin"
  manage_master_user_password = true

  allocated_storage     = var.postgres_storage_gb
  max_allocated_storage = max(var.postgres_max_storage_gb, var.postgres_storage_gb)
  storage_type          = "gp3"
  storage_encrypted     = true

  db_subnet_group_name   = aws_db_subnet_group.postgres.name
  vpc_security_group_ids = [aws_security_group.postgres.id]
  parameter_group_name   = aws_db_parameter_group.postgres.name
  publicly_accessible    = false
  multi_az               = var.postgres_multi_az

  backup_retention_period   = var.postgres_backup_retention_days
  copy_tags_to_snapshot     = true
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name}-final"

  auto_minor_version_upgrade   = true
  performance_insights_enabled = true
  apply_immediately            = false
  tags                         = local.tags
}

# ---------------------------------------------------------------- IRSA

data "aws_iam_policy_document" "worker_assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.eks_oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.eks_oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.k8s_namespace}:${var.k8s_service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.eks_oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "worker" {
  # The tenants' buckets: rag-<tenant>-documents, nothing else.
  statement {
    sid = "TenantBuckets"
    actions = [
      "s3:CreateBucket", "s3:DeleteBucket", "s3:ListBucket", "s3:ListBucketVersions",
      "s3:GetBucketLocation", "s3:GetBucketTagging", "s3:PutBucketTagging",
      "s3:GetLifecycleConfiguration", "s3:PutLifecycleConfiguration",
      "s3:GetBucketVersioning", "s3:PutBucketVersioning",
      "s3:GetEncryptionConfiguration", "s3:PutEncryptionConfiguration",
      "s3:GetBucketPublicAccessBlock", "s3:PutBucketPublicAccessBlock",
      "s3:GetBucketPolicy", "s3:GetBucketAcl", "s3:GetBucketCORS", "s3:GetBucketWebsite",
      "s3:GetBucketLogging", "s3:GetBucketRequestPayment", "s3:GetBucketObjectLockConfiguration",
      "s3:GetAccelerateConfiguration", "s3:GetReplicationConfiguration", "s3:GetBucketOwnershipControls",
    ]
    resources = ["arn:${local.partition}:s3:::${var.tenant_bucket_prefix}*"]
  }

  # New buckets only in the regions tenants may choose.
  statement {
    sid       = "TenantBucketRegions"
    effect    = "Deny"
    actions   = ["s3:CreateBucket"]
    resources = ["arn:${local.partition}:s3:::${var.tenant_bucket_prefix}*"]
    condition {
      test     = "StringNotEquals"
      variable = "s3:LocationConstraint"
      values   = var.tenant_regions
    }
  }

  statement {
    sid = "TenantObjects"
    actions = [
      "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion",
      "s3:GetObjectTagging", "s3:PutObjectTagging",
    ]
    resources = ["arn:${local.partition}:s3:::${var.tenant_bucket_prefix}*/*"]
  }

  # The per-tenant roles of terraform/modules/tenant, under their own path.
  statement {
    sid = "TenantRoles"
    actions = [
      "iam:CreateRole", "iam:DeleteRole", "iam:GetRole", "iam:TagRole", "iam:UntagRole",
      "iam:UpdateAssumeRolePolicy", "iam:PutRolePolicy", "iam:GetRolePolicy", "iam:DeleteRolePolicy",
      "iam:ListRolePolicies", "iam:ListAttachedRolePolicies", "iam:ListInstanceProfilesForRole",
      "sts:AssumeRole", "sts:TagSession",
    ]
    resources = ["arn:${local.partition}:iam::${local.account_id}:role${var.tenant_role_path}*"]
  }
}

resource "aws_iam_role" "worker" {
  name                 = "${var.name}-worker"
  description          = "tenantq worker pods (IRSA: ${var.k8s_namespace}/${var.k8s_service_account})"
  assume_role_policy   = data.aws_iam_policy_document.worker_assume.json
  max_session_duration = 3600
  tags                 = local.tags
}

resource "aws_iam_role_policy" "worker" {
  name   = "tenant-resources"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.worker.json
}
