"""Line tracing in the subprocesses of tools/mutate.py's baseline run (``python -m infra plan`` started by a test).

Only on ``PYTHONPATH`` during the baseline run. Active only in a Python process started while a test runs
(``MUTATE_CURRENT_TEST`` is set by tools/_mutate_pytest.py) from the same interpreter prefix (so the vLLM
servers' own virtualenv is never traced). Writes ``{"test": ..., "lines": [...]}`` to ``MUTATE_TRACE_DIR``
when the process exits (normally or on SIGTERM).
"""
import os
import sys

_test = os.environ.get("MUTATE_CURRENT_TEST")
_target = os.environ.get("MUTATE_TARGET")
_out_dir = os.environ.get("MUTATE_TRACE_DIR")

if _test and _target and _out_dir and os.environ.get("MUTATE_PREFIX") == sys.prefix:
    import atexit
    import json
    import signal

    from _mutate_trace import trace_lines      # tools/ is on PYTHONPATH during the baseline run

    _lines: set = set()
    def _dump() -> None:
        if not _lines:
            return
        path = os.path.join(_out_dir, f"sub-{os.getpid()}-{id(_lines)}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"test": _test, "lines": sorted(_lines)}, f)

    def _on_term(signum, frame):
        _dump()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    atexit.register(_dump)
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_term)
    trace_lines(_target, _lines.add)
