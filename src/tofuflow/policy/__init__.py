"""Rego policies: is a plan denied, does it need a person, or is it routine?

    from tofuflow.policy import PolicySet, build_input, evaluate
    policies = PolicySet.load(Path("policies"))          # built-in library + your *.rego
    decision = evaluate(policies, build_input(plan, run, workspace))
    decision.outcome    # 'denied' | 'needs_approval' | 'auto_approved'

Rules (conftest style), read from every loaded package:

    deny contains msg if { ... }               any → outcome "denied"
    warn contains msg if { ... }               reported, decides nothing
    require_approval contains msg if { ... }   a person must approve
    auto_approve if { ... }                    this change is routine

Outcome: denied if any deny; else needs_approval if any require_approval or no package's
auto_approve is true; else auto_approved. Each message names the resource or rule and
says what to do. Packages under ``tofuflow.library`` are the built-in library (protected
resources, allowed types/modules per identity, max deletions, production needs a person,
routine changes), configured per workspace through ``input.workspace.settings``; see the
comment at the top of each file in ``tofuflow/policy/library/``.

The input (``build_input``; never any resource or output value):

    plan.resource_changes   [{address, module, type, name, provider, action}]; no-op and
                            read left out; module "" is the root module
    plan.counts             {add, change, destroy, replace, read, no_op, forget,
                             to_add, to_destroy, to_forget, to_import}
    plan.summary            "Plan: 1 to add, 0 to change, 0 to destroy."
    plan.has_changes        bool
    plan.output_changes     [{name, action, sensitive}]; no-op left out
    run                     as given: requester {subject, claims}, commit, branch, ci, ...
    workspace               {name, tags, settings}
    derived                 added by ``evaluate``: groups [{module, type, count, first}],
                            protected [{address, action, pattern}], allowed [{subject,
                            types, modules}] (globs of the settings matched in Python)

Writing policies for rego-cpp (regopy 1.5), which differs from OPA in places:
- a rule may yield a set (``contains``) or an array (``deny := [msg | ...]``); rego-cpp
  builds sets in quadratic time, so a rule that can yield hundreds of messages should be
  an array (1,500 messages: 2 s as a set, 0.1 s as an array);
- ``glob.match`` cannot match ``[``/``]`` literally; compare addresses with ``==``,
  ``startswith``, or use ``input.derived``;
- a string default of ``object.get`` keeps its quotes inside ``sprintf``: use a
  ``default`` rule instead.
User files cannot use the ``tofuflow.library`` packages; ``*_test.rego`` files are skipped.
"""

from typing import TYPE_CHECKING

from tofuflow._lazy import lazy_exports

if TYPE_CHECKING:
    from tofuflow.policy._decision import Decision, Finding, Outcome, evaluate
    from tofuflow.policy._facts import check_settings
    from tofuflow.policy._input import build_input
    from tofuflow.policy._policies import PolicySet

_EXPORTS = {
    "Decision": "tofuflow.policy._decision",
    "Finding": "tofuflow.policy._decision",
    "Outcome": "tofuflow.policy._decision",
    "PolicySet": "tofuflow.policy._policies",
    "build_input": "tofuflow.policy._input",
    "check_settings": "tofuflow.policy._facts",
    "evaluate": "tofuflow.policy._decision",
}
__all__ = [
    "Decision",
    "Finding",
    "Outcome",
    "PolicySet",
    "build_input",
    "check_settings",
    "evaluate",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
