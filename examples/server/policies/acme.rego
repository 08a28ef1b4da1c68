# Your own policies sit beside tofuflow's built-in library (docs/policies.md).
package acme.rules

import rego.v1

# Deleting anything needs a person, whatever the workspace's settings say.
require_approval contains msg if {
	deletes := [rc.address | some rc in input.plan.resource_changes; "delete" in rc.change.actions]
	count(deletes) > 0
	msg := sprintf("the plan deletes %d resource(s), e.g. %s", [count(deletes), deletes[0]])
}
