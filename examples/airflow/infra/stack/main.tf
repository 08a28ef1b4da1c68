# One stack of the stacks example (dags/tofuflow_stacks.py): a file per stack, written on
# apply and removed on destroy (terraform_data and local-exec only, so it runs offline),
# with what the stack received from its dependencies in it, and a line appended to a
# shared order.log (with the same), so the order the stacks ran in is visible on disk.

variable "name" {
  type        = string
  description = "The workspace; its file is <dir>/stacks/<name with / as _>.txt."
}

variable "dir" {
  type        = string
  description = "Where the example's files live."
}

# Inputs: tofuflow.toml fills these from the dependencies' outputs (`inputs`).
variable "subnet" {
  type    = string
  default = ""
}

variable "dsn" {
  type    = string
  default = ""
}

variable "network_token" {
  type      = string
  default   = ""
  sensitive = true
}

locals {
  home = "${var.dir}/stacks"
  file = "${local.home}/${replace(var.name, "/", "_")}.txt"
  # The stack's name and what it received; the token only as a digest (nonsensitive: a
  # digest does not reveal it, and the binary may then show the command it runs).
  received = join(" ", compact([
    var.name,
    var.subnet == "" ? "" : "subnet=${var.subnet}",
    var.dsn == "" ? "" : "dsn=${var.dsn}",
    nonsensitive(var.network_token == "" ? "" : "token_sha256=${sha256(var.network_token)}"),
  ]))
}

resource "terraform_data" "stack" {
  input = { file = local.file, log = "${local.home}/order.log", name = var.name }

  provisioner "local-exec" {
    command = "mkdir -p '${local.home}' && echo '${local.received}' > '${self.input.file}' && echo 'apply ${local.received}' >> '${self.input.log}'"
  }

  provisioner "local-exec" {
    when    = destroy
    command = "rm -f '${self.input.file}' && echo 'destroy ${self.input.name}' >> '${self.input.log}'"
  }
}

output "file" {
  value = terraform_data.stack.input.file
}

output "subnet" {
  value = "10.42.0.0/24"
}

output "dsn" {
  value = "db://${replace(var.name, "/", "-")}.internal:5432"
}

# Derived from the name so a test can know it; a real one would come from a secret store.
output "token" {
  value     = "tok-${substr(sha256("token:${var.name}"), 0, 32)}"
  sensitive = true
}
