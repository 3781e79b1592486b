"""Test-wide fixtures."""

from __future__ import annotations

import pytest
from twisted.trial import unittest as trial


@pytest.fixture(autouse=True)
def _trial_tests_work_in_a_temp_dir(request: pytest.FixtureRequest, tmp_path, monkeypatch) -> None:
    """trial's `mktemp()` works relative to the working directory: keep it out of the checkout."""
    if isinstance(request.instance, trial.SynchronousTestCase):
        monkeypatch.chdir(tmp_path)
