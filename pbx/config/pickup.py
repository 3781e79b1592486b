"""The call pickup settings of an extension: its pickup groups and whether it may pick up any extension's
call (`docs/features-transfer.md`), kept out of `pbx.config.load` (the extension loader adds them with one
line, as it does the SRTP settings).

- ``pickup_groups = ["sales", "support"]``: the groups the extension belongs to; `pickup group` (the demo's
  `*8`) picks up a call ringing at any extension sharing a group with the picker, and `pickup EXTENSION`
  (the demo's `**EXT`) one ringing at an extension sharing a group. Names are 1-32 letters, digits, `.`,
  `_` or `-`; at most 16 groups. Default: none.
- ``directed_pickup = true``: `pickup EXTENSION` may take a call ringing at any extension of the tenant.
  Default: false.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["PICKUP_KEYS", "pickup_settings"]

PICKUP_KEYS: tuple[str, ...] = ("pickup_groups", "directed_pickup")
"""The keys this module reads in an extension's table."""

_GROUP = re.compile(r"[A-Za-z0-9._-]{1,32}")
MAX_GROUPS = 16


def pickup_settings(table: object, path: str) -> dict[str, Any]:
    """The `pickup_groups` (a tuple, in order, without repeats) and `directed_pickup` of an extension table.

    Raises:
        ValueError: (path of the key, reason) as its two arguments, for the caller's ConfigError.
    """
    values = table if isinstance(table, dict) else {}
    groups = values.get("pickup_groups", [])
    if not isinstance(groups, list) or len(groups) > MAX_GROUPS:
        raise ValueError(f"{path}.pickup_groups", f"must be an array of at most {MAX_GROUPS} group names")
    for group in groups:
        if not isinstance(group, str) or not _GROUP.fullmatch(group):
            raise ValueError(
                f"{path}.pickup_groups",
                f"must hold names of 1-32 letters, digits, '.', '_' or '-', not {group!r}",
            )
    directed = values.get("directed_pickup", False)
    if not isinstance(directed, bool):
        raise ValueError(f"{path}.directed_pickup", f"must be true or false, not {directed!r}")
    return {"pickup_groups": tuple(dict.fromkeys(groups)), "directed_pickup": directed}
