"""Stopping the real servers the tests start: politely first, then for sure."""
from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen | None, timeout_s: float = 10) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL and reap (a server that ignores SIGTERM can't leak)."""
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)
