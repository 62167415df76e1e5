"""pytest plugin used by tools/mutate.py (loaded with ``-p _mutate_pytest``; not a test module, not used by CI).

Two jobs, chosen by environment variables the runner sets:

``MUTATE_TRACE_OUT`` + ``MUTATE_TARGET`` (the baseline run)
    Record, per test, which lines of the target source file it executes (in this process and its threads; the
    subprocesses it starts are traced by ``_mutate_site/sitecustomize.py``), how long it takes, and whether it
    passed. Lines executed outside any test (collection: test-module imports, parametrize lists) are recorded
    under ``<collection>``. Written as JSON at the end of the session.
``MUTATE_SELECT`` (each mutant's run)
    A JSON file ``{"tests": [nodeid, ...]}``: run only those tests, in that order.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest
from _mutate_trace import trace_lines

TRACE_OUT = os.environ.get("MUTATE_TRACE_OUT")
TARGET = os.path.realpath(os.environ["MUTATE_TARGET"]) if os.environ.get("MUTATE_TARGET") else None
SELECT = os.environ.get("MUTATE_SELECT")

_current = "<collection>"
_lines: dict[str, set[int]] = {}
_durations: dict[str, float] = {}
_setup: dict[str, float] = {}
_failed: set[str] = set()


def _record(line: int) -> None:
    _lines.setdefault(_current, set()).add(line)


_tracer = trace_lines(TARGET, _record) if TRACE_OUT and TARGET else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _current
    if not TRACE_OUT:
        yield
        return
    _current = item.nodeid
    os.environ["MUTATE_CURRENT_TEST"] = item.nodeid
    # re-armed for every test: Python drops a trace function that raised (a RecursionError inside it, when a test
    # recurses to the limit on purpose), which would leave every later test untraced
    sys.settrace(_tracer)
    threading.settrace(_tracer)
    started = time.monotonic()
    try:
        yield
    finally:
        _durations[item.nodeid] = time.monotonic() - started
        _current = "<between tests>"
        os.environ.pop("MUTATE_CURRENT_TEST", None)


def pytest_runtest_logreport(report):
    if not TRACE_OUT:
        return
    if report.when == "setup":
        _setup[report.nodeid] = report.duration
    if report.failed:
        _failed.add(report.nodeid)


def pytest_collectreport(report):
    if TRACE_OUT and report.failed:
        _failed.add(report.nodeid or "<collection>")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    if not SELECT:
        return
    with open(SELECT, encoding="utf-8") as f:
        wanted = json.load(f)["tests"]
    order = {nodeid: i for i, nodeid in enumerate(wanted)}
    keep = [item for item in items if item.nodeid in order]
    drop = [item for item in items if item.nodeid not in order]
    keep.sort(key=lambda item: order[item.nodeid])
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_sessionfinish(session, exitstatus):
    if not TRACE_OUT:
        return
    sys.settrace(None)
    threading.settrace(None)
    out = {
        "tests": {nodeid: {"lines": sorted(_lines.get(nodeid, ())), "duration": round(d, 3),
                           "setup": round(_setup.get(nodeid, 0.0), 3), "failed": nodeid in _failed}
                  for nodeid, d in _durations.items()},
        "collection": sorted(_lines.get("<collection>", ())),
        "failed": sorted(_failed),
    }
    with open(TRACE_OUT, "w", encoding="utf-8") as f:
        json.dump(out, f)
