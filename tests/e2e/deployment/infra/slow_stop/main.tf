# An apply that takes `seconds` and, once interrupted, still needs them to stop: the
# provisioner's shell ignores INT and TERM, and its `sleep` child keeps the output pipe the
# binary waits on open even when the shell itself is killed.

variable "seconds" {
  type    = number
  default = 20
}

resource "terraform_data" "slow" {
  input = var.seconds

  provisioner "local-exec" {
    command = "trap '' INT TERM; echo slow-stop-started; sleep ${var.seconds}; echo slow-stop-done"
  }
}
