resource "aws_s3_bucket" "logs" {
  bucket = "conf-iac-logs"
  server_side_encryption_configuration {
    rule {
      apply_server_side_encryption_by_default {
        sse_algorithm = "AES256"
      }
    }
  }
}

resource "aws_sqs_queue" "jobs" {
  name = "conf-iac-jobs"
}
