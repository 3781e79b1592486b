"""Dialplans: Jinja2 templates, rendered in a sandbox, that produce the actions a call runs.

One rule everywhere: template + context -> actions (docs/dialplan.md is the reference for template authors
and for the B2BUA's action runner).

- `pbx.dialplan.actions`: the action language (tokenizer, parser, validation), `Action` values, the escaping
  of ``{{ }}`` output, and `RunState`, the bookkeeping of the execution protocol.
- `pbx.dialplan.engine`: the sandboxed environment, loading with reload on change and last-good fallback,
  rendering with errors that name the template file and line.
- `pbx.dialplan.simulate`: the context's values (`make_context`), `simulate_call` and `check_dialplans`.
- ``pbx dialplan check`` and ``pbx dialplan simulate`` are in `pbx.cli.dialplan` (the command line reads
  the config).

The layer sits above `pbx.config` and below the B2BUA; it knows nothing of SIP.
"""

from pbx.dialplan.actions import (
    ACTIONS,
    CONDITIONS,
    RESULT_STATUS,
    RESULTS,
    Action,
    DialplanError,
    DialTarget,
    RunState,
    escape_value,
    format_value,
    parse_actions,
    parse_line,
    parse_target,
    template_for,
)
from pbx.dialplan.engine import DialplanEngine, DialplanUnavailable, make_environment
from pbx.dialplan.simulate import (
    MAX_RENDERS,
    CallerInfo,
    CallInfo,
    ExtensionInfo,
    TenantDirectory,
    check_dialplans,
    make_context,
    simulate_call,
)

__all__ = [
    "ACTIONS",
    "CONDITIONS",
    "MAX_RENDERS",
    "RESULTS",
    "RESULT_STATUS",
    "Action",
    "CallInfo",
    "CallerInfo",
    "DialTarget",
    "DialplanEngine",
    "DialplanError",
    "DialplanUnavailable",
    "ExtensionInfo",
    "RunState",
    "TenantDirectory",
    "check_dialplans",
    "escape_value",
    "format_value",
    "make_context",
    "make_environment",
    "parse_actions",
    "parse_line",
    "parse_target",
    "simulate_call",
    "template_for",
]
