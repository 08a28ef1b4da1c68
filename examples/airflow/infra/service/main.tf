# A small "service": files that appear on apply and go on destroy (terraform_data and
# local-exec only, so it runs offline), a plain output and a sensitive one.

variable "name" {
  type        = string
  description = "Names the service; files go to <dir>/<name with / as _>/."
}

variable "dir" {
  type        = string
  description = "Where the service's files live."
}

variable "replicas" {
  type    = number
  default = 2
}

locals {
  home = "${var.dir}/${replace(var.name, "/", "_")}"
}

resource "terraform_data" "replica" {
  count = var.replicas
  input = { path = "${local.home}/replica-${count.index}.txt" }

  provisioner "local-exec" {
    command = "mkdir -p '${dirname(self.input.path)}' && echo up > '${self.input.path}'"
  }

  provisioner "local-exec" {
    when    = destroy
    command = "rm -f '${self.input.path}'"
  }
}

output "endpoint" {
  value = "file://${local.home}"
}

output "replica_files" {
  value = [for r in terraform_data.replica : r.input.path]
}

# Derived from the name so a test can know it; a real one would come from a secret store.
output "api_key" {
  value     = "key-${substr(sha256("api-key:${var.name}"), 0, 32)}"
  sensitive = true
}
