# Production changes need a person: any change to a workspace tagged "production", or to
# one whose settings say "require_approval": true, waits for an approver.
package tofuflow.library.production

import rego.v1

production if "production" in input.workspace.tags

production if input.workspace.settings.require_approval == true

require_approval contains msg if {
	"production" in input.workspace.tags
	input.plan.has_changes
	msg := sprintf(
		"workspace \"%s\" is tagged production, so every change needs a person: an approver must approve this run (%s)",
		[input.workspace.name, input.plan.summary],
	)
}

require_approval contains msg if {
	input.workspace.settings.require_approval == true
	input.plan.has_changes
	msg := sprintf(
		"workspace \"%s\" sets require_approval, so every change needs a person: an approver must approve this run (%s)",
		[input.workspace.name, input.plan.summary],
	)
}
