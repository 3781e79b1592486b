"""`[edge] nftables_table`: a source the PBX blocks is dropped by the kernel (issue 14, item 1, its option).

The test needs a network namespace of its own (it adds an nftables table and rules, which must never touch
the host's): it runs `tests/e2e/nftables_netns.py` under `unshare --net`, where `twistd pbx` blocks a
flooding 127.0.0.3, pushes it into the set `inet pbx blocked4`, and datagrams from 127.0.0.3 are then counted
and dropped by the kernel's rule before any socket sees them (a plain socket receives only those of
127.0.0.4). Skipped with the reason where that cannot be done: not root, no `nft`, `ip` or `unshare`, or a
kernel or sandbox that refuses a new network namespace or nftables in it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.e2e.harness import REPO

pytestmark = pytest.mark.e2e


def namespace_problem() -> str | None:
    """Why a network namespace with nftables cannot be had here, or None."""
    if os.geteuid() != 0:
        return "needs root for a network namespace and nftables (unshare --net, nft)"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.path.exists("/usr/sbin/nft"):
        return "nft is not installed (Debian package nftables)"
    try:
        probe = subprocess.run(
            ["unshare", "--net", "/usr/sbin/nft", "add", "table", "inet", "probe"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare --net nft failed: {e}"
    if probe.returncode != 0:
        return f"no nftables in a new network namespace here: {probe.stderr.strip()[:200]}"
    return None


def test_a_blocked_source_is_dropped_by_the_kernel(tmp_path):
    problem = namespace_problem()
    if problem is not None:
        pytest.skip(problem)
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "tests.e2e.nftables_netns", "--workdir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(result)
    assert result["in_set"], result  # the PBX ran nft add element ... { 127.0.0.3 timeout 60s }
    assert "127.0.0.3" in result["set"] and "expires" in result["set"], result
    assert result["dropped"] == 50, result  # the kernel's rule counted every probe of the blocked source
    assert result["received_from"] == {"127.0.0.4": 50}, result  # none of them reached a socket
    assert result["nft_failures"] == [], result
