provider "aws" {
  region = var.region
}

locals {
  prefix = "acme-${var.env}"
  tags = {
    team = "alpha"
    env  = var.env
  }
}

resource "aws_sqs_queue" "jobs" {
  name                       = "${local.prefix}-jobs"
  visibility_timeout_seconds = var.visibility
}

resource "aws_s3_bucket" "logs" {
  bucket = "${local.prefix}-logs"
  tags = {
    team  = local.tags.team
    queue = aws_sqs_queue.jobs.name
  }
}
