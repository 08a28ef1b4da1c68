# Workspaces the server marks disposable (server.toml [[workspace_settings]]) may be torn
# down without a person: their destroys are routine. The setting comes from the server's
# configuration, so a pipeline cannot grant it to itself.
package examples.disposable

import rego.v1

auto_approve if {
	input.plan.has_changes
	input.workspace.settings.disposable == true
	not data.tofuflow.library.production.production
}
