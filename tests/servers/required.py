"""When a real server or tool the tests need is missing: skip with the reason, or fail in CI.

CI sets ``KAITO_AKS_REQUIRE_SERVERS=1`` (.ci/run): there a missing vLLM, nginx or actionlint is a failure, not a
silent skip.
"""
from __future__ import annotations

import os

import pytest


def servers_required() -> bool:
    return os.environ.get("KAITO_AKS_REQUIRE_SERVERS") == "1"


def unavailable(reason: str) -> None:
    """Skip with the reason, or fail when servers are required (CI). Never returns."""
    if servers_required():
        pytest.fail(f"KAITO_AKS_REQUIRE_SERVERS=1 but {reason}", pytrace=False)
    pytest.skip(reason)
