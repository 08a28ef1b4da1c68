# A file that pyvider_file_content writes and reads back on refresh (PROTOCOLS §6), so an
# edit outside tofuflow is real drift. The path comes in as a variable: tasks run in a
# private copy of this directory, so path.module would not last.
terraform {
  required_providers {
    pyvider = {
      source = "local/providers/pyvider"
    }
  }
}

variable "dir" {
  type = string
}

resource "pyvider_file_content" "motd" {
  filename = "${var.dir}/motd.txt"
  content  = "hello from tofuflow\n"
}
