variable "env" {
  type        = string
  description = "the environment"
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "visibility" {
  type    = number
  default = 30
}
