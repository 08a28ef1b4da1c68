# A canary: a sensitive output named `result` (Airflow masks keys named like `api_key`
# or `password` by itself; `result` it does not), derived from a fixed string so a test
# knows the value to look for.

resource "terraform_data" "canary" {
  input = "canary-${substr(sha256("tofuflow-canary:result"), 0, 24)}"
}

output "result" {
  value     = terraform_data.canary.output
  sensitive = true
}

output "plain" {
  value = "not-secret"
}
