# The quickstart: one file per service under ./out (or var.out_dir), created on apply and
# removed on destroy. Built only from `terraform_data` and `local-exec`, so it runs offline
# with OpenTofu or Terraform and touches nothing outside that directory.

terraform {
  required_version = ">= 1.5.0"
}

variable "environment" {
  description = "Name of the environment; part of every file name."
  type        = string
  default     = "dev"
}

variable "out_dir" {
  description = "Where the files go (default: ./out next to this file). tofuflow runs every stage in a private copy of the configuration, so `tofuflow demo` sets it."
  type        = string
  default     = ""
}

variable "services" {
  description = "One file is managed per service."
  type        = set(string)
  default     = ["api", "web", "worker"]
}

resource "terraform_data" "service" {
  for_each = var.services

  # A new path means a new file: replace, so the old file's destroy provisioner runs.
  triggers_replace = [var.environment]

  input = {
    name = each.key
    path = abspath("${var.out_dir != "" ? var.out_dir : "${path.root}/out"}/${var.environment}-${each.key}.txt")
    text = "service ${each.key} runs in ${var.environment}"
  }

  provisioner "local-exec" {
    command     = "mkdir -p \"$(dirname \"$FILE\")\" && printf '%s\\n' \"$TEXT\" > \"$FILE\""
    environment = { FILE = self.output.path, TEXT = self.output.text }
  }

  provisioner "local-exec" {
    when        = destroy
    command     = "rm -f \"$FILE\""
    environment = { FILE = self.output.path }
  }
}

output "files" {
  description = "The files this configuration manages."
  value       = sort([for s in terraform_data.service : s.output.path])
}
