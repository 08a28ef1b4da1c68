# Allowed resource types and modules per identity: which modules a pipeline may touch.
#
# Configure per workspace with a list of grants; a grant applies when its subject glob
# matches the run's requester (input.run.requester.subject) and allows a change when both
# its type globs and its module globs match (a missing list allows everything; the root
# module is "", which `*` matches):
#
#   "allowed": [
#     {"subject": "repo:acme/network:*", "modules": ["module.network*"]},
#     {"subject": "sc://acme/platform/*", "types": ["aws_*"], "modules": ["*"]}
#   ]
#
# Unset means no restriction; an empty list allows nobody. tofuflow matches the globs before
# evaluation: input.derived.allowed has one entry per grant ({subject: bool, types: {type:
# true}, modules: {module: true}}, over the types and modules this plan changes), and
# input.derived.groups has the changes grouped by module and type.
package tofuflow.library.allowed

import rego.v1

configured if is_array(input.workspace.settings.allowed)

# Not object.get: rego-cpp 1.5 keeps the quotes of its string default inside sprintf.
default subject := "(no requester)"

subject := input.run.requester.subject

grants := [grant | some grant in input.derived.allowed; grant.subject]

granted(group) if {
	some grant in grants
	grant.types[group.type]
	grant.modules[group.module]
}

module_name(module) := "the root module" if module == ""

module_name(module) := module if module != ""

deny contains msg if {
	configured
	count(grants) == 0
	count(input.derived.groups) > 0
	msg := sprintf(
		"requester \"%s\" matches no grant in settings.allowed, so it may not change workspace \"%s\" (%d resource changes): run this from a pipeline the workspace allows, or add a grant for this subject",
		[subject, input.workspace.name, count(input.plan.resource_changes)],
	)
}

deny contains msg if {
	configured
	count(grants) > 0
	some group in input.derived.groups
	not granted(group)
	msg := sprintf(
		"requester \"%s\" may not change %s resources in %s (%d changes, e.g. %s): move the change to a pipeline allowed to, or extend its grant in settings.allowed",
		[subject, group.type, module_name(group.module), group.count, group.first],
	)
}
