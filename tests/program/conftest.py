"""Program tests: the real __main__.py under mocks (see harness.py)."""
import pytest

from harness import API_KEYS, HF_TOKEN, KUBECONFIG, expected_plan, run_program as _run_program  # noqa: F401


@pytest.fixture
def run_program():
    return _run_program
