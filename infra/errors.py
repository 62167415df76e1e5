"""Errors a user can cause and fix. The CLI prints their lines and exits; never a traceback."""
from __future__ import annotations

MAX_LINE_CHARS = 400        # one problem, one readable line, whatever the input held
MAX_LINES = 50              # a stack with 10,000 mistakes still gets a screenful, plus a count


def bounded_line(text: object, limit: int = MAX_LINE_CHARS) -> str:
    """``text`` as one line of at most ``limit`` characters: control characters escaped, the middle elided."""
    line = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text))
    if len(line) <= limit:
        return line
    keep = limit - 5
    return f"{line[:keep * 3 // 4]} ... {line[-(keep - keep * 3 // 4):]}"


def bounded_repr(value: object, limit: int = 60) -> str:
    """A short ``repr`` for echoing a user's value back in a message."""
    try:
        text = repr(value)
    except ValueError:          # e.g. an int beyond Python's digit limit
        text = f"<{type(value).__name__}>"
    return bounded_line(text, limit)


class UserError(Exception):
    """One or more problems, each a single line that names the setting (or input) and the fix.

    ``exit_code`` follows the CLI convention: 2 = bad settings or arguments, 1 = the thing
    checked is not right (endpoint down, over budget at apply time, ...). Lines are bounded in length and
    number here, once, so no input can make an error message unreadable.
    """

    exit_code = 2

    def __init__(self, lines: list[str] | str, exit_code: int | None = None):
        raw = [lines] if isinstance(lines, str) else list(lines)
        bounded = [bounded_line(line) for line in raw[:MAX_LINES]]
        if len(raw) > MAX_LINES:
            bounded.append(f"... and {len(raw) - MAX_LINES} more problems")
        self.lines = bounded
        if exit_code is not None:
            self.exit_code = exit_code
        super().__init__("\n".join(self.lines))
