"""Program tests: the real __main__.py under mocks (see harness.py)."""
import pytest
from harness import run_program as _run_program


@pytest.fixture
def run_program():
    return _run_program
