# An apply that takes a while: for showing that a killed task stops the binary gracefully.

variable "seconds" {
  type    = number
  default = 120
}

resource "terraform_data" "slow" {
  input = var.seconds

  provisioner "local-exec" {
    # exec: the shell becomes sleep, so the interrupt reaches the process doing the work.
    command = "exec sleep ${var.seconds}"
  }
}
