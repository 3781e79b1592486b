"""Test-wide fixtures."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from twisted.trial import unittest as trial

# Property tests share two cores with end-to-end tests running in other workers (scripts/test runs four):
# a per-example deadline would fail on a slow moment, not on a slow parser. Examples stay bounded by count.
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _trial_tests_work_in_a_temp_dir(request: pytest.FixtureRequest, tmp_path, monkeypatch) -> None:
    """trial's `mktemp()` works relative to the working directory: keep it out of the checkout."""
    if isinstance(request.instance, trial.SynchronousTestCase):
        monkeypatch.chdir(tmp_path)
