"""Errors a user can cause and fix. The CLI prints their lines and exits; never a traceback."""
from __future__ import annotations


class UserError(Exception):
    """One or more problems, each a single line that names the setting (or input) and the fix.

    ``exit_code`` follows the CLI convention: 2 = bad settings or arguments, 1 = the thing
    checked is not right (endpoint down, over budget at apply time, ...).
    """

    exit_code = 2

    def __init__(self, lines: list[str] | str, exit_code: int | None = None):
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        if exit_code is not None:
            self.exit_code = exit_code
        super().__init__("\n".join(self.lines))
