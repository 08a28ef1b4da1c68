# Routine changes need no person. A plan is routine when it destroys, replaces and forgets
# nothing and the workspace is not production (see production.rego); a plan without
# changes is routine everywhere (there is nothing to apply). Other policies can still
# demand a person with require_approval, or add their own auto_approve.
package tofuflow.library.routine

import rego.v1

counts := input.plan.counts

auto_approve if not input.plan.has_changes

auto_approve if {
	input.plan.has_changes
	not data.tofuflow.library.production.production
	counts.destroy + counts.replace + counts.forget == 0
}

# An ephemeral environment (`tofuflow env`) exists to be torn down and rebuilt: its changes,
# destroys included, are routine unless it is production or a resource in it is protected
# (require_approval from protected.rego still asks for a person).
auto_approve if {
	input.plan.has_changes
	input.workspace.environment == true
	not data.tofuflow.library.production.production
}
