# A maximum number of deletions per plan: a typo or a wrong workspace can destroy a lot.
#
# Configure per workspace; unset means no limit. Every destroyed object counts, replaced
# ones included (input.plan.counts.to_destroy, the binary's own "to destroy" number):
#
#   "max_deletions": 10
package tofuflow.library.max_deletions

import rego.v1

deny contains msg if {
	limit := input.workspace.settings.max_deletions
	is_number(limit) # null means no limit, as unset does
	input.plan.counts.to_destroy > limit
	msg := sprintf(
		"this plan destroys %d resources, more than settings.max_deletions (%d) allows in workspace \"%s\": split the change into smaller plans, or raise max_deletions",
		[input.plan.counts.to_destroy, limit, input.workspace.name],
	)
}
