# Protected resources: destroying one (delete or replace) needs a person's approval.
#
# Configure per workspace with address globs, where `*` matches any run of characters and
# nothing else is special (so `aws_instance.web[0]` means exactly that address):
#
#   "protected": ["module.db.*", "aws_s3_bucket.state", "aws_kms_key.*"]
#
# tofuflow matches the globs before evaluation and lists every changed resource they match
# in input.derived.protected as {address, action, pattern}. A forget (`removed` with
# destroy = false) is not a destroy: the object lives on, unmanaged.
package tofuflow.library.protected

import rego.v1

verbs := {"delete": "delete", "replace": "destroy and re-create"}

# An array, not `contains`: rego-cpp builds sets in quadratic time, and a plan can destroy
# hundreds of protected resources (1,500 messages: 2 s as a set, 0.1 s as an array).
require_approval := [msg |
	some match in input.derived.protected
	verb := verbs[match.action]
	msg := sprintf(
		"%s is protected (it matches \"%s\" in settings.protected) and this plan would %s it: an approver must approve this run, or change the configuration to keep it",
		[match.address, match.pattern, verb],
	)
]
