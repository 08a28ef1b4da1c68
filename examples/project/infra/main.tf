# A tiny configuration for the project example: built only from `terraform_data`, so it
# needs no provider download and no cloud account, and changes nothing outside its state.

terraform {
  required_version = ">= 1.5.0"
}

variable "environment" {
  description = "Name of the environment (set per workspace in tofuflow.toml)."
  type        = string
}

variable "replicas" {
  description = "How many replicas to manage."
  type        = number
  default     = 1
}

resource "terraform_data" "replica" {
  count = var.replicas
  input = "${var.environment}-${count.index}"
}

output "replicas" {
  description = "The managed replicas."
  value       = terraform_data.replica[*].output
}
