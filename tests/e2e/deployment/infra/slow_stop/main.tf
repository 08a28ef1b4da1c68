# An apply whose binary needs `seconds` to stop once interrupted: it reads a remote state
# from `slow_url`, a server that answers after `seconds`, and a read in flight is not
# interrupted — the binary waits for it before it stops (as it waits for any provider
# call in flight). The read depends on a resource, so it happens during the apply.

variable "seconds" {
  type    = number
  default = 20
}

variable "slow_url" {
  type        = string
  description = "Answers GET <slow_url>/<seconds> with an empty state after that long."
}

resource "terraform_data" "started" {
  input = var.seconds
}

data "terraform_remote_state" "slow" {
  backend = "http"
  config = {
    address = "${var.slow_url}/${terraform_data.started.output}"
  }
}

resource "terraform_data" "after" {
  input = data.terraform_remote_state.slow.outputs
}
