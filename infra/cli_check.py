"""`python -m infra check-endpoint`: check one deployed endpoint now (the same check `pulumi up` runs).

Exit codes: 0 the endpoint passed (summary, or the JSON result with --json, on stdout); 1 it failed (one line on
stderr: URL, step, last HTTP status/body, elapsed time); 2 bad arguments.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

from infra.errors import UserError


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return v


def _concurrency(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= v <= 64:
        raise argparse.ArgumentTypeError(f"{text!r} must be from 1 to 64")
    return v


def _env_var_name(text: str) -> str:
    if not text or not (text[0].isalpha() or text[0] == "_") or not all(c.isalnum() or c == "_" for c in text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an environment variable name")
    return text


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-endpoint", help="check a deployed model endpoint (ready, served model, chat, stream, load)",
        description="Wait until the endpoint is ready, read the served model from /v1/models, send deterministic "
                    "chat/completion/stream requests and a short concurrency probe. Exit 0 = passed, 1 = failed, "
                    "2 = bad arguments.")
    p.add_argument("--url", required=True,
                   help="server root, e.g. http://10.0.0.9 or a gateway prefix http://gw/phi3 (a trailing /v1 is ignored)")
    p.add_argument("--model", help="the model the endpoint must serve (as /v1/models lists it)")
    p.add_argument("--runtime", choices=("vllm", "transformers"), default="vllm", help="KAITO runtime (default vllm)")
    p.add_argument("--kaito-version", default="0.12.0", help="KAITO version, decides the API surface (default 0.12.0)")
    p.add_argument("--api-key-env", type=_env_var_name, metavar="VAR",
                   help="read the API key (sent as a Bearer token) from this environment variable")
    p.add_argument("--timeout", type=_positive_float, default=600.0, metavar="SECONDS",
                   help="deadline for the whole check, waiting included (default 600)")
    p.add_argument("--request-timeout", type=_positive_float, default=30.0, metavar="SECONDS",
                   help="bound for one request (default 30)")
    p.add_argument("--concurrency", type=_concurrency, default=4, metavar="N",
                   help="parallel requests in the load probe (default 4)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="print progress (waiting, retries) on stderr")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from infra.endpoint import EndpointCheckError, check_endpoint, summarize

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise UserError(f"--api-key-env: environment variable {args.api_key_env} is not set or empty", exit_code=2)
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.verbose else None
    try:
        result = check_endpoint(
            args.url, runtime=args.runtime, kaito_version=args.kaito_version, expected_model=args.model,
            api_key=api_key, timeout_s=args.timeout, request_timeout_s=args.request_timeout,
            concurrency=args.concurrency, log=log)
    except ValueError as e:  # argument problems found by the library (URL, version)
        raise UserError(f"check-endpoint: {e}", exit_code=2) from None
    except EndpointCheckError as e:
        raise UserError(f"endpoint check failed: {e}", exit_code=1) from None
    print(json.dumps(result.to_dict(), indent=2) if args.json else summarize(result))
    return 0
