"""Tests for `pbx.dialplan`."""
