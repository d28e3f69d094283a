variable "name" {
  description = "Name prefix of every resource (e.g. tenantq-prod): the ElastiCache group, the RDS instance, the IAM role."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}[a-z0-9]$", var.name))
    error_message = "The name must be 4 to 32 lower-case letters, digits or hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "environment" {
  description = "Deployment environment, written to the Environment tag (production, staging, ...)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,31}$", var.environment))
    error_message = "The environment must match ^[a-z][a-z0-9-]{0,31}$."
  }
}

variable "region" {
  description = "AWS region of the fleet's Redis, PostgreSQL and IAM role (the EKS cluster's region)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]+$", var.region))
    error_message = "The region must look like an AWS region name, e.g. us-east-1."
  }
}

variable "vpc_id" {
  description = "VPC of the EKS cluster; Redis and PostgreSQL get security groups in it."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "The vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "data_subnets" {
  description = "Private subnets for Redis and PostgreSQL, at least two in different zones: id => CIDR. The CIDRs go to the production overlay's NetworkPolicy (fleet.env), so they are given here rather than looked up."
  type        = map(string)

  validation {
    condition     = length(var.data_subnets) >= 2 && alltrue([for id, cidr in var.data_subnets : can(regex("^subnet-[0-9a-f]{8,17}$", id)) && can(cidrnetmask(cidr))])
    error_message = "The data_subnets must map at least two subnet ids (subnet-...) to IPv4 CIDRs."
  }
}

variable "client_security_group_ids" {
  description = "Security groups allowed to reach Redis (6379) and PostgreSQL (5432): the EKS nodes' or the worker pods' (security groups for pods)."
  type        = list(string)

  validation {
    condition     = length(var.client_security_group_ids) > 0 && alltrue([for g in var.client_security_group_ids : can(regex("^sg-[0-9a-f]{8,17}$", g))])
    error_message = "The client_security_group_ids must be one or more security group ids (sg-...)."
  }
}

variable "redis_node_type" {
  description = "ElastiCache node type. The queue holds job ids only: a small node goes far."
  type        = string
  default     = "cache.t4g.small"

  validation {
    condition     = can(regex("^cache\\.[a-z0-9]+\\.[a-z0-9]+$", var.redis_node_type))
    error_message = "The redis_node_type must be an ElastiCache node type such as cache.t4g.small."
  }
}

variable "redis_engine_version" {
  description = "Redis engine version (7.x: the worker uses BLMOVE and LMOVE)."
  type        = string
  default     = "7.1"

  validation {
    condition     = can(regex("^7\\.[0-9]+$", var.redis_engine_version))
    error_message = "The redis_engine_version must be 7.x (BLMOVE needs Redis 6.2 or later; the project tests 7)."
  }
}

variable "redis_replicas" {
  description = "Read replicas besides the primary (0 to 5). One or more enables automatic failover across zones."
  type        = number
  default     = 1

  validation {
    condition     = var.redis_replicas >= 0 && var.redis_replicas <= 5 && floor(var.redis_replicas) == var.redis_replicas
    error_message = "The redis_replicas must be a whole number from 0 to 5."
  }
}

variable "postgres_instance_class" {
  description = "RDS instance class. PostgreSQL takes most of the fleet's load (one group commit per flush)."
  type        = string
  default     = "db.m6g.large"

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.postgres_instance_class))
    error_message = "The postgres_instance_class must be an RDS class such as db.m6g.large."
  }
}

variable "postgres_engine_version" {
  description = "PostgreSQL major (or major.minor) version; the project is built and tested against 15."
  type        = string
  default     = "15"

  validation {
    condition     = can(regex("^15(\\.[0-9]+)?$", var.postgres_engine_version))
    error_message = "The postgres_engine_version must be 15 or 15.x."
  }
}

variable "postgres_storage_gb" {
  description = "Allocated storage in GiB (gp3); storage autoscaling may grow it to postgres_max_storage_gb."
  type        = number
  default     = 50

  validation {
    condition     = var.postgres_storage_gb >= 20 && var.postgres_storage_gb <= 65536
    error_message = "The postgres_storage_gb must be from 20 to 65536."
  }
}

variable "postgres_max_storage_gb" {
  description = "Upper bound of storage autoscaling in GiB (at least postgres_storage_gb)."
  type        = number
  default     = 500

  validation {
    condition     = var.postgres_max_storage_gb >= 20 && var.postgres_max_storage_gb <= 65536
    error_message = "The postgres_max_storage_gb must be from 20 to 65536."
  }
}

variable "postgres_multi_az" {
  description = "Run a standby in a second zone (failover in about a minute; the worker's lease rides it out)."
  type        = bool
  default     = true
}

variable "postgres_backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window)."
  type        = number
  default     = 14

  validation {
    condition     = var.postgres_backup_retention_days >= 1 && var.postgres_backup_retention_days <= 35
    error_message = "The postgres_backup_retention_days must be from 1 to 35."
  }
}

variable "deletion_protection" {
  description = "Refuse to delete the RDS instance (turn off only to tear a test fleet down)."
  type        = bool
  default     = true
}

variable "eks_oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider (IRSA)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/.+$", var.eks_oidc_provider_arn))
    error_message = "The eks_oidc_provider_arn must be an IAM OIDC provider ARN (arn:aws:iam::<account>:oidc-provider/...)."
  }
}

variable "eks_oidc_issuer" {
  description = "The cluster's OIDC issuer without https:// (oidc.eks.<region>.amazonaws.com/id/<ID>)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9.-]+/id/[A-Za-z0-9]+$", var.eks_oidc_issuer)) && !startswith(var.eks_oidc_issuer, "https://")
    error_message = "The eks_oidc_issuer must be the issuer host and path without https://, e.g. oidc.eks.us-east-1.amazonaws.com/id/ABC123."
  }
}

variable "k8s_namespace" {
  description = "Namespace of the worker's ServiceAccount (deploy/k8s: tenantq)."
  type        = string
  default     = "tenantq"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.k8s_namespace))
    error_message = "The k8s_namespace must be a DNS label."
  }
}

variable "k8s_service_account" {
  description = "Name of the worker's ServiceAccount (deploy/k8s: tenantq-worker)."
  type        = string
  default     = "tenantq-worker"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.k8s_service_account))
    error_message = "The k8s_service_account must be a DNS subdomain name."
  }
}

variable "tenant_bucket_prefix" {
  description = "Prefix of the tenants' bucket names (rag-<tenant_id>-documents): the worker role may touch only buckets that start with it."
  type        = string
  default     = "rag-"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,30}$", var.tenant_bucket_prefix))
    error_message = "The tenant_bucket_prefix must be 2 to 31 lower-case letters, digits, dots or hyphens."
  }
}

variable "tenant_regions" {
  description = "Regions tenants' buckets may be created in (TQ_REGIONS of the worker)."
  type        = list(string)
  default     = ["us-east-1", "us-west-2", "eu-west-1"]

  validation {
    condition     = length(var.tenant_regions) > 0 && alltrue([for r in var.tenant_regions : can(regex("^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]+$", r))])
    error_message = "The tenant_regions must be one or more AWS region names."
  }
}

variable "tenant_role_path" {
  description = "IAM path of the per-tenant roles of terraform/modules/tenant (its role_path): the worker may manage and assume roles under it only."
  type        = string
  default     = "/tenantq/tenants/"

  validation {
    condition     = can(regex("^/([A-Za-z0-9+=,.@_-]+/)+$", var.tenant_role_path))
    error_message = "The tenant_role_path must start and end with '/' and not be '/' alone."
  }
}

variable "tags" {
  description = "Extra tags on every resource (CostCenter, Owner, ...); ManagedBy and Environment are always set."
  type        = map(string)
  default     = {}
}
