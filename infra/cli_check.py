"""`python -m infra check-endpoint`: check one deployed endpoint now (the same check `pulumi up` runs).

Exit codes: 0 the endpoint passed (summary, or the JSON result with --json, on stdout); 1 it failed (one line on
stderr: URL, step, last HTTP status/body, elapsed time); 2 bad arguments (one line on stderr, at once: an API
key that is not a valid HTTP header value -- e.g. the CR of a key file with Windows line endings --, a URL that
is not a plain http(s) base URL, timeouts that are not finite or too large).

Every line printed is bounded and scrubbed of the API key; an unexpected error is one line too (exit 1), never a
traceback. The key itself is never echoed, not even when it is mistakenly given where a variable name belongs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from infra.endpoint import (
    DEFAULT_KAITO_VERSION,
    MAX_REQUEST_TIMEOUT_S,
    MAX_TIMEOUT_S,
    RUNTIMES,
    EndpointCheckError,
    Scrubber,
    api_key_problem,
    check_endpoint,
    summarize,
)
from infra.errors import MAX_LINE_CHARS, UserError
from infra.settings import DEFAULT_CHECK_CONCURRENCY, MAX_CHECK_CONCURRENCY, MIN_CHECK_CONCURRENCY

MAX_ECHO = 40        # characters of a bad argument quoted back
MAX_LINE = MAX_LINE_CHARS   # any line this command prints on stderr (400)


def _echo(text: str) -> str:
    """An argument quoted back in an error: repr, bounded (a pasted megabyte is not printed back)."""
    return repr(text) if len(text) <= MAX_ECHO else repr(text[:MAX_ECHO]) + "..."


def _seconds(most: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{_echo(text)} is not a number of seconds") from None
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"{_echo(text)} must be a positive number of seconds")
        if v > most:
            raise argparse.ArgumentTypeError(f"{_echo(text)} must be at most {most:g} seconds")
        return v
    return parse


_positive_float = _seconds(MAX_TIMEOUT_S)  # kept for callers of the old name


def _concurrency(text: str) -> int:
    try:
        v = int(text) if len(text) <= 20 else None
    except ValueError:
        v = None
    if v is None:
        raise argparse.ArgumentTypeError(f"{_echo(text)} is not an integer")
    if not MIN_CHECK_CONCURRENCY <= v <= MAX_CHECK_CONCURRENCY:
        raise argparse.ArgumentTypeError(
            f"{_echo(text)} must be from {MIN_CHECK_CONCURRENCY} to {MAX_CHECK_CONCURRENCY}")
    return v


def _env_var_name(text: str) -> str:
    # Never echo it: the key itself is what people paste here (or `--api-key sk-...`, an abbreviation of it).
    if (not text or len(text) > 255 or not (text[0].isascii() and (text[0].isalpha() or text[0] == "_"))
            or not all(c.isascii() and (c.isalnum() or c == "_") for c in text)):
        raise argparse.ArgumentTypeError("is not an environment variable name (letters, digits, '_'); give the NAME "
                                         "of the variable that holds the key, never the key itself (not echoed)")
    return text


class _RefuseKeyOption(argparse.Action):
    """``--api-key VALUE``: refused without echoing VALUE (it is the key)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> NoReturn:
        parser.error(f"{option_string} is not an option (the value given was not echoed): put the key in an "
                     "environment variable and pass its name with --api-key-env VAR")


def _one_line_error(parser: argparse.ArgumentParser) -> Callable[[str], NoReturn]:
    """argparse errors as one bounded line (no usage block), exit 2."""
    def error(message: str) -> NoReturn:
        line = " ".join(f"{parser.prog}: error: {message} (see --help)".split())
        parser.exit(2, (line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "...") + "\n")
    return error


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check-endpoint", help="check a deployed model endpoint (ready, served model, chat, stream, load)",
        description="Wait until the endpoint is ready, read the served model from /v1/models, send deterministic "
                    "chat/completion/stream requests and a short concurrency probe. Exit 0 = passed, 1 = failed, "
                    "2 = bad arguments.",
        allow_abbrev=False)  # `--api-key sk-...` must not be taken for --api-key-env
    # this subcommand's own error line (argparse makes every subparser of the CLI's class): mypy types an instance's
    # method as the class's unbound function, which no replacement matches
    p.error = _one_line_error(p)  # type: ignore[assignment]
    p.add_argument("--url", required=True,
                   help="server root, e.g. http://10.0.0.9 or a gateway prefix http://gw/phi3 (a trailing /v1 is "
                        "ignored)")
    p.add_argument("--api-key", "--key", "--token", nargs="?", action=_RefuseKeyOption, help=argparse.SUPPRESS)
    p.add_argument("--model", help="the model the endpoint must serve (as /v1/models lists it)")
    p.add_argument("--runtime", choices=RUNTIMES, default="vllm", help="KAITO runtime (default vllm)")
    p.add_argument("--kaito-version", default=DEFAULT_KAITO_VERSION,
                   help=f"KAITO version, decides the API surface (default {DEFAULT_KAITO_VERSION})")
    p.add_argument("--api-key-env", type=_env_var_name, metavar="VAR",
                   help="read the API key (sent as a Bearer token) from this environment variable")
    p.add_argument("--timeout", type=_seconds(MAX_TIMEOUT_S), default=600.0, metavar="SECONDS",
                   help=f"deadline for the whole check, waiting included (default 600, at most {MAX_TIMEOUT_S:g})")
    p.add_argument("--request-timeout", type=_seconds(MAX_REQUEST_TIMEOUT_S), default=30.0, metavar="SECONDS",
                   help=f"bound for one request (default 30, at most {MAX_REQUEST_TIMEOUT_S:g})")
    p.add_argument("--concurrency", type=_concurrency, default=DEFAULT_CHECK_CONCURRENCY, metavar="N",
                   help=f"parallel requests in the load probe (default {DEFAULT_CHECK_CONCURRENCY}, "
                        f"at most {MAX_CHECK_CONCURRENCY})")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="print progress (waiting, retries) on stderr")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:

    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    scrub = Scrubber(api_key, api_key.strip() if api_key else None)
    try:
        return _run(args, api_key)
    except UserError as err:  # already one line each; bound and scrub them anyway (they may quote a server)
        raise UserError([scrub.bounded(line, MAX_LINE_CHARS) for line in err.lines], exit_code=err.exit_code) from None
    except (KeyboardInterrupt, BrokenPipeError):
        raise
    except Exception as e:  # a bug: one scrubbed, bounded line and exit 1, never a traceback
        raise UserError(scrub.bounded(f"check-endpoint: unexpected {type(e).__name__}: {e}", MAX_LINE_CHARS),
                        exit_code=1) from None


def _run(args: argparse.Namespace, api_key: str | None) -> int:

    if args.api_key_env:
        if not api_key:
            raise UserError(f"--api-key-env: environment variable {args.api_key_env} is not set or empty", exit_code=2)
        problem = api_key_problem(api_key)
        if problem:  # before any request: retrying can't fix it (and the message never quotes the key)
            raise UserError(f"--api-key-env {args.api_key_env}: the API key {problem}", exit_code=2)
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.verbose else None
    try:
        result = check_endpoint(
            args.url, runtime=args.runtime, kaito_version=args.kaito_version, expected_model=args.model,
            api_key=api_key, timeout_s=args.timeout, request_timeout_s=args.request_timeout,
            concurrency=args.concurrency, log=log)
    except ValueError as e:  # argument problems found by the library (URL, version, key, unsendable request)
        raise UserError(f"check-endpoint: {e}", exit_code=2) from None
    except EndpointCheckError as e:
        raise UserError(f"endpoint check failed: {e}", exit_code=1) from None
    print(json.dumps(result.to_dict(), indent=2) if args.json else summarize(result))
    return 0
