"""The line tracer of tools/mutate.py's baseline run, shared by the pytest plugin (tools/_mutate_pytest.py) and the
subprocess hook (tools/_mutate_site/sitecustomize.py). Not a test module, not used by CI."""
from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable


def trace_lines(target: str, record: Callable[[int], None]) -> Callable:
    """From now on, ``record(line)`` for every line of the file ``target`` executed in this thread and in the
    threads started later (``realpath`` is computed once per code file name). Returns the trace function, to
    re-arm it with ``sys.settrace``."""
    target = os.path.realpath(target)
    is_target: dict[str, bool] = {}

    def local(frame, event, arg):
        if event == "line":
            record(frame.f_lineno)
        return local

    def global_(frame, event, arg):
        name = frame.f_code.co_filename
        hit = is_target.get(name)
        if hit is None:
            hit = is_target[name] = os.path.realpath(name) == target
        if hit:
            record(frame.f_lineno)
            return local
        return None

    threading.settrace(global_)
    sys.settrace(global_)
    return global_
