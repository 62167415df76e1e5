"""`kaito-aks <command>` (or `python -m infra <command>`): plan, check, operate a kaito-aks stack.

Each command lives in its own module exposing ``add_parser(subparsers)``, which registers the
sub-command and sets ``handler`` (a function ``(args) -> int``) as its default. User mistakes
raise :class:`infra.errors.UserError`; they are printed as one line each on stderr. ``stack`` hands its
arguments to the Automation API driver (:mod:`infra.automation`, also ``python -m infra.automation``).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

from infra import automation
from infra.errors import UserError, bounded_line

INTERNAL_ERROR_EXIT = 70   # EX_SOFTWARE: a bug of ours, not a mistake of the user's

# module name -> registered with add_parser(); order is the order in --help
COMMAND_MODULES = ("infra.cli_plan", "infra.cli_check", "infra.cli_gateway", "infra.cli_catalog",
                   "infra.cli_preflight")


class _Parser(argparse.ArgumentParser):
    """One bounded error line (no usage block); unrecognized arguments are not echoed (they may be a key)."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            message = "unrecognized arguments (not echoed: they may hold secrets)"
        self.exit(2, bounded_line(f"{self.prog}: error: {message} (see --help)") + "\n")


STACK_COMMAND = "stack"
STACK_HELP = ("preview | up | destroy | refresh | outputs a stack through Pulumi's Automation API: "
              "`stack up --stack prod --yes` (`stack --help` for its options)")


def build_parser(prog: str = "python -m infra") -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description=(__doc__ or "").splitlines()[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    sub.add_parser(STACK_COMMAND, help=STACK_HELP, add_help=False)   # listed here; main() hands it over
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m infra") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [STACK_COMMAND]:
        return automation.main(argv[1:], prog=f"{prog} {STACK_COMMAND}")
    parser = build_parser(prog)
    args = parser.parse_args(argv)  # exits 2 on bad arguments
    try:
        return int(args.handler(args) or 0)
    except UserError as err:
        for line in err.lines:
            print(line, file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `python -m infra plan ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # noqa: BLE001 -- the last resort: one line, never a traceback for any input
        if os.environ.get("KAITO_AKS_DEBUG"):
            raise
        print(bounded_line(f"{parser.prog} {args.command}: internal error ({type(err).__name__}); this is a bug in "
                           "kaito-aks: please report it with the command you ran (KAITO_AKS_DEBUG=1 shows the "
                           "traceback)"), file=sys.stderr)
        return INTERNAL_ERROR_EXIT


def entrypoint() -> NoReturn:
    """The `kaito-aks` console script (pyproject.toml)."""
    sys.exit(main(prog="kaito-aks"))
