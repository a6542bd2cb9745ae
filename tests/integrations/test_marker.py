"""The integrations' tests are selected by their marker, so the core suite leaves them out
and `python -m pytest -m integrations` runs them (and nothing else)."""

from __future__ import annotations

import pytest


def test_this_module_carries_the_integrations_marker(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("integrations") is not None
