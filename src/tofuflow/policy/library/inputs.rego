# An input (tofuflow.toml `inputs`) whose dependency has state but no such output was
# planned with the variable's default: a typo in the reference, or an output that the
# dependency's own pending change adds. Either way a person looks before it is applied.
package tofuflow.library.inputs

import rego.v1

require_approval contains msg if {
	input.plan.has_changes
	some name in input.run.context.unknown_inputs
	msg := sprintf(
		"input %s was unknown when this was planned (its dependency has no such output), so the variable took its default: check the reference in tofuflow.toml, or plan again once the dependency is applied",
		[name],
	)
}
