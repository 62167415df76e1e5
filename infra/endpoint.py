"""Post-deploy check of one KAITO inference endpoint: is it up, what does it serve, does it answer well?

Plain Python on ``requests`` (no Pulumi), used by ``python -m infra check-endpoint`` and by the
``components.endpoint_check`` dynamic resource.

What is checked depends on the runtime and the KAITO version (they decide the API surface):

============================  ===========================================================================
vllm (any KAITO version)      ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``,
                              one streamed chat request (time to first token), concurrency probe
transformers, KAITO 0.12+     ``GET /v1/models``, ``POST /v1/chat/completions``, concurrency probe
                              (that runtime serves no ``/v1/completions``)
transformers, KAITO 0.6.x     ``GET /health``, KAITO's own ``POST /chat`` (``{"Result": ...}``), concurrency
                              probe; no model list, so the served model is unknown and not verified
============================  ===========================================================================

Waiting: connection errors, timeouts, truncated bodies, HTTP 502/503/504 and 429 (honouring ``Retry-After``)
are retried with capped exponential backoff and jitter until one deadline for the whole check. Every
request's timeout is cut to the time left, so the deadline is never overshot by more than one request timeout.
Anything else (4xx, 500, malformed JSON, a wrong shape, a missing model) fails at once.

A failure raises :class:`EndpointCheckError`: one line (at most ``MAX_LINE_CHARS``) naming the URL, the step, the
last HTTP status and body excerpt, and the elapsed time.

Fail fast: arguments that no retry can fix raise ``ValueError`` before any request -- an API key that is not a
valid HTTP header value (control characters such as the CR of a key file with Windows line endings, leading or
trailing whitespace, non-ASCII, fewer than ``MIN_API_KEY_CHARS`` or more than ``MAX_API_KEY_CHARS`` characters),
a URL that is not a plain ``http(s)://host[:port][/prefix]`` (bad or out-of-range port, spaces or control
characters, no host, another scheme, ``user:password@``, a query or fragment), timeouts that are not finite or
above ``MAX_TIMEOUT_S`` / ``MAX_REQUEST_TIMEOUT_S``. A request the HTTP library still refuses to send is fatal at
once too (:class:`InvalidRequestError`, a ``ValueError``). Messages never quote the key, and quote URLs only redacted.

Secrets: the API key never appears in messages, logs or results. :class:`Scrubber` removes it from every string
that leaves the module (result fields -- also what ``/v1/models`` lists and what the model answered --, error
messages, log lines) in every form a server or a library may print it: any letter case, JSON/``repr``/HTML
escaped, percent-encoded, hex, and base64 (inside any wrapper, e.g. ``Basic``/``Bearer``). Text is scrubbed
before and after it is cut, and a cut that leaves the first or last 4+ characters of the key at the cut (the
start/end of a text, either side of an ``…``) has that piece removed too. What cannot be caught: a key a server
transforms otherwise (reversed, hashed, encoded twice other than inside a JSON string, split by inserted
characters or whitespace), a fragment of it in the middle of a text, and the base64 of keys under 7 characters.

Bounds: every message is one line of at most ``MAX_LINE_CHARS``; model ids are shown up to
``MAX_MODEL_ID_CHARS``; JSON nested deeper than ``MAX_JSON_DEPTH`` is a malformed answer, not a crash; an
unexpected exception inside the check becomes an :class:`EndpointCheckError` (one scrubbed line), never a traceback.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import email.utils
import html
import ipaddress
import itertools
import json
import logging
import math
import random
import re
import statistics
import time
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import requests

from infra.catalog import Runtime, UnknownKaitoVersionError, load_catalog
from infra.errors import MAX_LINE_CHARS as _PROJECT_MAX_LINE
from infra.settings import DEFAULT_CHECK_CONCURRENCY, MAX_CHECK_CONCURRENCY, MIN_CHECK_CONCURRENCY

logger = logging.getLogger(__name__)

RUNTIMES: tuple[Runtime, ...] = ("vllm", "transformers")
# The KAITO version whose API surface a check assumes when it is told none (check-endpoint --kaito-version, the
# EndpointCheck resource): the chart kaito-aks installs by default (infra/catalog/kaito.yaml)
DEFAULT_KAITO_VERSION = load_catalog().default_helm_version
ApiName = Literal["openai", "openai-chat", "kaito-chat"]
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
BACKOFF_BASE_S = 0.25           # first retry delay (before jitter)
BACKOFF_CAP_S = 2.0             # longest delay between attempts: a ready server is noticed within ~2 s
                                # (bench: 0.5 GET/s while waiting is nothing for an LB or the gateway)
RETRY_AFTER_CAP_S = 60.0        # a Retry-After above this is treated as this (a wrong header must not stall us)
MAX_BODY_BYTES = 8 * 1024 * 1024
MIN_ATTEMPT_S = 0.05            # no new attempt in the last 50 ms before the deadline
EXCERPT_CHARS = 160
SAMPLE_CHARS = 200
MAX_LINE_CHARS = _PROJECT_MAX_LINE  # any message line (errors, log lines, notes): the project's bound (400)
MAX_REASON_CHARS = 240          # the reason part of an error line
MAX_URL_CHARS = 2048            # a longer --url is refused
URL_SHOWN_CHARS = 160           # a URL quoted in a message
MAX_MODEL_ID_CHARS = 200        # a served model id as shown (results, messages)
MAX_MODELS_KEPT = 256           # ids kept in the result; a longer /v1/models list is noted
MAX_MODELS_SHOWN = 3            # ids named in a message
MAX_JSON_DEPTH = 64             # OpenAI answers nest ~5 deep; deeper is malformed (and must not blow the stack)
MIN_API_KEY_CHARS = 4           # a shorter key could not be scrubbed without mangling every message
MAX_API_KEY_CHARS = 4096
MAX_TIMEOUT_S = 86_400.0        # the whole check (a day)
MAX_REQUEST_TIMEOUT_S = 3_600.0  # one request (an hour)
MIN_CUT_PIECE = 4               # a piece of the key this long left at a cut is scrubbed
MIN_BASE64_FORM = 8             # base64 forms shorter than this are not searched (they match ordinary words)
ELLIPSIS = "…"

# Deterministic generation: greedy, few tokens. Prompts any chat model can answer in a word or two.
CHAT_PROMPT = "What is the capital of France?"
COMPLETION_PROMPT = "The capital of France is"
MAX_TOKENS = 8                  # single requests
PROBE_MAX_TOKENS = 16           # concurrency probe: enough tokens for a tokens/s figure
USER_AGENT = "kaito-aks-endpoint-check/1"
_VERSION_RE = re.compile(r"^v?(\d{1,6})\.(\d{1,6})(?:\.(\d{1,6}))?$")


# ---------------------------------------------------------------------------------------------------------
# Results and errors
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EndpointResult:
    """What a passing check found. All durations are wall-clock; ``*_ms`` are milliseconds."""

    url: str                         # the base URL checked (credentials in it, if any, redacted)
    runtime: Runtime
    kaito_version: str
    api: ApiName                     # see api_surface
    model: str | None                # the served model name used for the requests (None: the API lists none)
    models_served: tuple[str, ...]   # everything GET /v1/models listed
    model_verified: bool             # an expected model was given and found in the list
    checks: tuple[str, ...]          # the checks that passed, in order
    latency_ms: float                # one non-streamed chat request, end to end
    ttft_ms: float | None            # streamed chat: time to the first content token (vllm only)
    tokens_per_s: float | None       # concurrency probe: completion tokens / probe wall time
    p50_ms: float                    # concurrency probe latencies
    p95_ms: float
    concurrency: int
    sample_text: str                 # what the model answered to CHAT_PROMPT (truncated)
    ready_after_s: float             # from the start of the check to the first good answer
    elapsed_s: float                 # whole check
    checked_at: str                  # ISO 8601, UTC, when the check passed
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples become lists, floats are rounded to what is meaningful."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, float):
                v = round(v, 3 if f.name.endswith("_s") else 1)
            out[f.name] = v
        return out


class EndpointCheckError(Exception):
    """The endpoint failed the check. ``str(err)`` is one line; the fields are there for callers/tests."""

    def __init__(self, url: str, step: str, reason: str, *, status: int | None = None,
                 body_excerpt: str = "", elapsed_s: float = 0.0) -> None:
        # Every part is one bounded line whoever builds the error (callers scrub secrets before).
        self.url = _printable(_one_line(url), URL_SHOWN_CHARS)
        self.step = _printable(_one_line(step), 40)
        self.reason = _printable(_one_line(reason), MAX_REASON_CHARS)
        self.status = status
        self.body_excerpt = _printable(_one_line(body_excerpt), EXCERPT_CHARS)
        self.elapsed_s = elapsed_s
        super().__init__(self.message)

    @property
    def message(self) -> str:
        last = (f"last HTTP {self.status}" + (f" {self.body_excerpt!r}" if self.body_excerpt else " (empty body)")
                if self.status is not None else "no HTTP response")
        return _printable(f"{self.url}: step '{self.step}' failed after {self.elapsed_s:.1f} s: {self.reason}; {last}",
                          MAX_LINE_CHARS)

    def __reduce__(self):  # picklable (the provider host and multiprocessing may pickle it)
        return (_rebuild_error, (self.url, self.step, self.reason, self.status, self.body_excerpt, self.elapsed_s))


def _rebuild_error(url: str, step: str, reason: str, status: int | None, body: str,
                   elapsed: float) -> EndpointCheckError:
    return EndpointCheckError(url, step, reason, status=status, body_excerpt=body, elapsed_s=elapsed)


class InvalidRequestError(ValueError):
    """The HTTP library refused to send a request (a URL or header it cannot use): an argument problem, fatal at
    once. Its message is one scrubbed line that never quotes the header value."""


# ---------------------------------------------------------------------------------------------------------
# API surface per runtime and KAITO version
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ApiSurface:
    name: ApiName
    models: bool         # GET /v1/models
    chat: bool           # POST /v1/chat/completions
    completions: bool    # POST /v1/completions
    stream: bool         # streamed chat (TTFT)
    kaito_chat: bool     # KAITO 0.6 transformers: GET /health + POST /chat


OPENAI = ApiSurface("openai", models=True, chat=True, completions=True, stream=True, kaito_chat=False)
OPENAI_CHAT = ApiSurface("openai-chat", models=True, chat=True, completions=False, stream=False, kaito_chat=False)
KAITO_CHAT = ApiSurface("kaito-chat", models=False, chat=False, completions=False, stream=False, kaito_chat=True)


def parse_kaito_version(version: str) -> tuple[int, int, int]:
    m = _VERSION_RE.match(str(version).strip())
    if not m:
        raise ValueError(f"KAITO version {_printable(repr(version), 60)} is not of the form 0.12.0")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def known_runtime(runtime: str) -> Runtime:
    """``runtime`` as the KAITO runtime it names, or ValueError."""
    for known in RUNTIMES:
        if runtime == known:
            return known
    raise ValueError(f"runtime {_printable(repr(runtime), 60)} is not one of {', '.join(RUNTIMES)}")


def api_surface(runtime: str, kaito_version: str) -> ApiSurface:
    """What the runtime serves in that KAITO version (docs/kaito-runtime.md#api-surface-per-runtime-and-release).

    vLLM serves OpenAI's API in every release; what the transformers runtime serves is the release's
    ``transformers_api`` in the catalog (KAITO's own ``/chat`` up to 0.8, OpenAI chat from 0.9).
    """
    known = known_runtime(runtime)
    major, minor, patch = parse_kaito_version(kaito_version)
    if known == "vllm":
        return OPENAI  # vllm.entrypoints.openai.api_server in every KAITO release since 0.4
    catalog = load_catalog()
    try:
        release = catalog.release(f"{major}.{minor}.{patch}")
    except UnknownKaitoVersionError as e:
        newest = catalog.releases[catalog.known_versions[-1]]
        if (major, minor, patch) <= parse_kaito_version(newest.version):
            raise ValueError(f"the transformers runtime's API: {e}") from None
        release = newest  # a release newer than any known keeps the newest known API (it has only grown since 0.9)
    return KAITO_CHAT if release.transformers_api == "kaito-chat" else OPENAI_CHAT


# ---------------------------------------------------------------------------------------------------------
# Small pure helpers (unit-tested)
# ---------------------------------------------------------------------------------------------------------
def backoff_delay(attempt: int, rng: random.Random, *, base_s: float = BACKOFF_BASE_S,
                  cap_s: float = BACKOFF_CAP_S) -> float:
    """Capped exponential backoff with "equal jitter": in [d/2, d], d = min(cap, base * 2**attempt).

    Half of the delay is fixed so retries never hammer a starting server; the jittered half keeps many
    checks (one per replica) from retrying in lock-step.
    """
    d = min(cap_s, base_s * (2 ** min(attempt, 30)))
    return d / 2 + rng.uniform(0, d / 2)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None when absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return min(float(value), RETRY_AFTER_CAP_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    now_ts = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - now_ts), RETRY_AFTER_CAP_S)


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): always one of the measured values, deterministic for small N."""
    xs = sorted(values)
    if not xs:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(xs)))
    return xs[min(rank, len(xs)) - 1]


# ---------------------------------------------------------------------------------------------------------
# Arguments that no retry can fix: the API key (an HTTP header value) and the base URL
# ---------------------------------------------------------------------------------------------------------
_CHAR_NAMES = {"\r": "a carriage return (CR)", "\n": "a line feed (LF)", "\t": "a tab", " ": "a space",
               "\x00": "a NUL character", "\x7f": "a DEL character"}


def _char_name(ch: str) -> str:
    if ch in _CHAR_NAMES:
        return _CHAR_NAMES[ch]
    if ch.isspace():
        return "a whitespace character"
    # C0 and C1 controls (DEL has its own name above)
    return "a control character" if ord(ch) < 0x20 or 0x80 <= ord(ch) < 0xa0 else "a non-ASCII character"


def api_key_problem(key: Any) -> str | None:
    """Why ``key`` can't be sent as ``Authorization: Bearer <key>``, or None. Never quotes the key.

    A key is sent as an HTTP header value: printable ASCII without whitespace (RFC 6750 tokens have none),
    ``MIN_API_KEY_CHARS`` to ``MAX_API_KEY_CHARS`` characters.
    """
    if not isinstance(key, str):
        return f"is a {type(key).__name__}, not a string"
    if not key:
        return "is empty"
    if len(key) > MAX_API_KEY_CHARS:
        return f"is {len(key)} characters long; at most {MAX_API_KEY_CHARS} fit in an HTTP header"
    for i, ch in enumerate(key):
        if not "\x21" <= ch <= "\x7e":
            where = ("at the end" if i == len(key) - 1 else "at the start" if i == 0
                     else f"at position {i + 1} of {len(key)}")
            hint = (" (a key file with Windows line endings, or a copied newline?): strip it"
                    if ch in "\r\n" and i >= len(key) - 2 else
                    " (give the key alone, without 'Bearer ')" if key[:7].lower() == "bearer " else "")
            return (f"contains {_char_name(ch)} {where}{hint}; a key is sent as an HTTP header value and must be "
                    "printable ASCII without whitespace")
    if len(key) < MIN_API_KEY_CHARS:
        return (f"is {len(key)} characters long; at least {MIN_API_KEY_CHARS} (a shorter key cannot be kept out "
                "of the output)")
    return None


def validate_api_key(key: Any) -> None:
    """ValueError (one line, no key material) when ``key`` can't be sent as a Bearer token."""
    problem = api_key_problem(key)
    if problem:
        raise ValueError(f"API key {problem}")


def redact_url(url: Any) -> str:
    """A URL safe to print: ``user:password@`` -> ``***@``, a query -> ``?***``, a fragment -> ``#***``; one
    escaped line of at most ``URL_SHOWN_CHARS``. Textual (never raises), so it works on URLs that don't parse."""
    text = str(url)
    head, sep, rest = text.partition("://")
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", head):
        head += sep
    else:
        head, rest = "", text
    cut = re.search(r"[/?#]", rest)
    authority, tail = (rest[: cut.start()], rest[cut.start():]) if cut else (rest, "")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    q = re.search(r"[?#]", tail)
    if q:
        tail = tail[: q.start() + 1] + "***"
    return _printable(head + authority + tail, URL_SHOWN_CHARS)


_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?")


def url_problem(url: Any) -> str | None:
    """Why ``url`` is not a plain ``http(s)://host[:port][/prefix]`` base URL, or None. Never quotes the URL."""
    if not isinstance(url, str):
        return f"is a {type(url).__name__}, not a string"
    if not url:
        return "is empty"
    if len(url) > MAX_URL_CHARS:
        return f"is {len(url)} characters long; at most {MAX_URL_CHARS}"
    bad = next((ch for ch in url if not "\x21" <= ch <= "\x7e"), None)
    if bad is not None:
        return (f"contains {_char_name(bad)}; write it percent-encoded (and an international host name in its "
                "xn-- form)")
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return "must start with http:// or https://"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port                 # ValueError: not a number, or not 0-65535
    except ValueError:
        return "has a port that is not a number from 1 to 65535 (or a malformed [IPv6] host)"
    if "@" in parts.netloc:
        return ("must not carry credentials (user:password@); the check sends the API key as a Bearer token "
                "(--api-key-env)")
    if port == 0 or parts.netloc.rsplit("]", 1)[-1].endswith(":"):  # ":0", or an empty port ("host:")
        return "has a port that is not a number from 1 to 65535"
    host = parts.hostname or ""
    if not host:
        return "names no host"
    if parts.netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)           # a zone id ("%eth0") is part of what it accepts
        except ValueError:
            return "has a malformed [IPv6] host"
    elif not all(_HOST_LABEL.fullmatch(label) for label in host.rstrip(".").split(".")):
        return "has a host name that is not letters, digits, '-' and '.'"
    if "?" in url or "#" in url:
        return "must not have a query or fragment (a key goes in --api-key-env, never in the URL)"
    return None


def normalize_base_url(url: str) -> tuple[str, list[str]]:
    """Validate a base URL and return (server root without trailing '/', notes).

    The root may carry a gateway prefix (``http://gw/llama-8b``). A trailing ``/v1`` (the OpenAI SDK's
    base_url convention) is dropped with a note, since the check appends ``/v1/...`` itself. A bad URL is a
    ``ValueError`` whose message quotes the URL only redacted (:func:`redact_url`) and bounded.
    """
    problem = url_problem(url)
    if problem:
        raise ValueError(f"URL {redact_url(url)!r} {problem}")
    notes: list[str] = []
    root = url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
        notes.append(f"the URL ended with /v1; checked {redact_url(root)} as the server root")
    return root, notes


# ---------------------------------------------------------------------------------------------------------
# Secrets and bounded text
# ---------------------------------------------------------------------------------------------------------
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def secret_text_forms(secret: str) -> set[str]:
    """The ways a secret is commonly printed, compared case-insensitively: as is, JSON / ``repr`` / ``ascii`` /
    ``unicode_escape`` / HTML escaped, percent-encoded (``quote``, ``quote_plus``), hex of its UTF-8 -- and each of
    those again inside a JSON string (one more layer: the JSON body of an error that quotes it)."""
    raw = secret.encode("utf-8", "surrogatepass")  # a value from a non-UTF-8 environment has lone surrogates
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
             json.dumps(secret)[1:-1].replace("/", "\\/"), repr(secret)[1:-1], ascii(secret)[1:-1],
             secret.replace("\\", "\\\\").replace("'", "\\'"), secret.replace("\\", "\\\\").replace('"', '\\"'),
             secret.encode("unicode_escape").decode("ascii"), html.escape(secret), html.escape(secret, quote=False),
             urllib.parse.quote(raw, safe=""), urllib.parse.quote(raw), urllib.parse.quote_plus(raw), raw.hex()}
    forms |= {json.dumps(f)[1:-1] for f in forms}  # each of them inside a JSON string (an error body quoting it)
    return {f for f in forms if f}


def secret_base64_forms(secret: str, min_len: int = MIN_BASE64_FORM) -> set[str]:
    """The base64 characters that encode only the secret's bytes, at each of the 3 alignments it can have
    inside a longer base64 text (``Basic base64(user:key)``, ``base64("Bearer " + key)``, ...); standard and
    URL-safe alphabets; of the secret and of its escaped forms (base64 of a JSON document quoting it). Matched
    case-sensitively. Forms shorter than ``min_len`` are left out."""
    forms = set()
    for text in {secret, *(t for t in secret_text_forms(secret) if t.lower() != secret.lower())}:  # escaped ones too
        raw = text.encode("utf-8", "surrogatepass")
        for k in range(3):
            start, end = (8 * k + 5) // 6, (8 * (k + len(raw))) // 6
            for enc in (base64.b64encode, base64.urlsafe_b64encode):
                core = enc(b"\0" * k + raw).decode("ascii")[start:end]
                if len(core) >= min_len:
                    forms.add(core)
    return forms


class Scrubber:
    """Removes secrets (the API key) from any text before it is logged, raised or returned.

    Every form of :func:`secret_text_forms` (any letter case) and :func:`secret_base64_forms` becomes ``***``;
    then, at each cut point -- the start and end of the text, either side of an ``…`` -- a piece of a form of at
    least ``MIN_CUT_PIECE`` characters (the key's first characters before the cut, its last ones after) is
    removed too, so text cut in the middle of the key doesn't keep the rest. Secrets shorter than
    ``MIN_API_KEY_CHARS`` are ignored (they would mangle every message; keys that short are refused).
    """

    def __init__(self, *secrets: str | None) -> None:
        forms: set[str] = set()
        b64: set[str] = set()
        for s in secrets:
            if isinstance(s, str) and len(s) >= MIN_API_KEY_CHARS:
                forms |= {f for f in secret_text_forms(s) if len(f) >= MIN_API_KEY_CHARS}
                b64 |= secret_base64_forms(s)
        ordered = sorted(forms, key=len, reverse=True)
        self._text_re = re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE) if ordered else None
        self._b64_re = (re.compile("|".join(map(re.escape, sorted(b64, key=len, reverse=True)))) if b64 else None)
        self._pieces = [f.translate(_ASCII_LOWER) for f in ordered if len(f) > MIN_CUT_PIECE]
        self.longest = max((len(f) for f in ordered), default=0)

    def __bool__(self) -> bool:
        return self._text_re is not None

    def __call__(self, text: Any) -> str:
        text = str(text)
        if self._text_re is None:
            return text
        text = self._text_re.sub("***", text)
        if self._b64_re is not None:
            text = self._b64_re.sub("***", text)
        return ELLIPSIS.join(self._cut_pieces(seg) for seg in text.split(ELLIPSIS))

    def _cut_pieces(self, seg: str) -> str:
        low = seg.translate(_ASCII_LOWER)
        for form in self._pieces:
            # the end of seg is the start of the form (the rest was cut off)
            lo = max(0, len(low) - len(form) + 1)
            p = low.find(form[:MIN_CUT_PIECE], lo)
            while p != -1:
                if form.startswith(low[p:]):
                    seg, low = seg[:p] + "***", low[:p] + "***"
                    break
                p = low.find(form[:MIN_CUT_PIECE], p + 1)
            # the start of seg is the end of the form (the beginning was cut off)
            head = low[: len(form) - 1]
            q = head.rfind(form[-MIN_CUT_PIECE:])
            while q != -1:
                if form.endswith(low[: q + MIN_CUT_PIECE]):
                    seg, low = "***" + seg[q + MIN_CUT_PIECE:], "***" + low[q + MIN_CUT_PIECE:]
                    break
                q = head.rfind(form[-MIN_CUT_PIECE:], 0, q + MIN_CUT_PIECE - 1)
        return seg

    def bounded(self, text: Any, limit: int) -> str:
        """Scrubbed, one escaped line, at most ``limit`` characters, scrubbed again after the cut."""
        text = str(text)
        text = text[: limit + self.longest + 64]  # enough to scrub a key that straddles the cut
        return self(_printable(_one_line(self(text)), limit))


def _one_line(text: Any) -> str:
    return re.sub(r"\s+", " ", str(text)).strip()


def excerpt(body: bytes | str, limit: int = EXCERPT_CHARS) -> str:
    """A body as a short printable one-liner for an error message (binary junk escaped, not printed raw)."""
    text = body[: 4 * limit + 64].decode("utf-8", "replace") if isinstance(body, bytes) else body[: 2 * limit + 64]
    return _printable(_one_line(text), limit)


def _printable(text: str, limit: int = SAMPLE_CHARS) -> str:
    """Text as a safe one-liner: control characters (and lone surrogates) escaped, truncated with ``…``."""
    text = str(text)[: limit + 1]
    # lone surrogates are not printable (category Cs), so they are escaped like control characters
    out = "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode() for ch in text)
    return out if len(out) <= limit else out[: limit - 1] + ELLIPSIS


def _shown_ids(ids: Iterable[str], limit: int = MAX_MODELS_SHOWN) -> str:
    """Model ids for a message: the count when there are many, then at most ``limit``, each bounded, quoted."""
    ids = list(ids)
    shown = ", ".join(repr(_printable(i, 60)) for i in ids[:limit])
    return (f"{len(ids)} models, the first {limit}: {shown}, ..." if len(ids) > limit else shown)


# ---------------------------------------------------------------------------------------------------------
# JSON with a nesting bound (a server's "[[[[..." must be a malformed answer, not a RecursionError)
# ---------------------------------------------------------------------------------------------------------
class JsonTooDeepError(ValueError):
    """JSON nested deeper than ``MAX_JSON_DEPTH``."""


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEPS = str.maketrans({"[": "\x02", "{": "\x02", "]": "\x00", "}": "\x00"})  # +1 / -1, offset by 1


def json_nesting_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text nests arrays/objects deeper than ``limit`` (counting brackets outside strings;
    unclosed ones count too). Strings and other characters are dropped in C; the running depth stops at the
    first level past ``limit``, so a hostile ``[[[[...`` costs little."""
    if text.count("[") + text.count("{") <= limit:
        return False
    steps = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).translate(_BRACKET_STEPS).encode("latin-1")
    return any(depth > limit for depth in itertools.accumulate(steps, lambda d, x: d + x - 1, initial=0))


def loads_bounded(data: bytes | str, limit: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that raises :class:`JsonTooDeepError` (a ValueError) for JSON nested deeper than ``limit``."""
    text = data.decode(json.detect_encoding(data), "surrogatepass") if isinstance(data, (bytes, bytearray)) else data
    if json_nesting_exceeds(text, limit):
        raise JsonTooDeepError(f"the JSON is nested deeper than {limit} levels")
    try:
        return json.loads(text)
    except RecursionError:
        raise JsonTooDeepError(f"the JSON is nested deeper than {limit} levels") from None


# ---------------------------------------------------------------------------------------------------------
# Server-Sent Events (streamed chat)
# ---------------------------------------------------------------------------------------------------------
class SSEError(ValueError):
    """The byte stream is not well-formed SSE / not a chat completion stream."""


class SSEParser:
    """Incremental SSE parser: ``feed(bytes)`` returns the complete events' data payloads.

    Follows the WHATWG rules that matter here: lines end with LF, CRLF or CR; ``data:`` lines of one event are
    joined with LF; comments (``:``) and other fields are ignored; a blank line ends the event.
    """

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._data_size = 0

    def feed(self, chunk: bytes) -> list[str]:
        self._buf += chunk
        if len(self._buf) > MAX_BODY_BYTES or self._data_size > MAX_BODY_BYTES:
            raise SSEError(f"a stream line or event is larger than {MAX_BODY_BYTES} bytes")
        events: list[str] = []
        while True:
            m = re.search(rb"\r\n|\r|\n", self._buf)
            if not m:
                break
            if m.group() == b"\r" and m.end() == len(self._buf):
                break  # a CR at the end may be the first half of CRLF: wait for more bytes
            line, self._buf = self._buf[: m.start()], self._buf[m.end():]
            self._line(line, events)
        return events

    def close(self) -> list[str]:
        """End of stream: a last event without its blank line counts; a half line or event is reported."""
        events: list[str] = []
        if self._buf:
            self._line(self._buf, events)
            self._buf = b""
        if self._data:
            events.append("\n".join(self._data))
            self._data, self._data_size = [], 0
        return events

    def _line(self, raw: bytes, events: list[str]) -> None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SSEError(f"stream line is not UTF-8: {excerpt(raw)!r}") from e
        if line == "":
            if self._data:
                events.append("\n".join(self._data))
                self._data, self._data_size = [], 0
            return
        if line.startswith(":"):
            return
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._data_size += len(value)


@dataclasses.dataclass
class StreamSummary:
    chunks: int = 0
    text: str = ""
    done: bool = False               # saw data: [DONE]
    finish_reason: str | None = None
    first_content_s: float | None = None
    first_chunk_s: float | None = None


def consume_chat_stream(chunks: Iterable[bytes], clock: Callable[[], float] = time.monotonic,
                        started: float | None = None) -> StreamSummary:
    """Validate a streamed chat completion and time it. Accepts streams with and without ``data: [DONE]``
    (vLLM sends it, some OpenAI-compatible servers don't); requires every event to be a JSON
    ``chat.completion.chunk`` and the stream to end properly ([DONE] or a chunk with a finish_reason)."""
    started = clock() if started is None else started
    parser = SSEParser()
    s = StreamSummary()

    def handle(data: str) -> None:
        now = clock() - started
        if s.done:
            raise SSEError(f"event after data: [DONE]: {excerpt(data)!r}")
        if data.strip() == "[DONE]":
            s.done = True
            return
        try:
            obj = loads_bounded(data)
        except JsonTooDeepError as e:
            raise SSEError(f"stream event JSON: {e}") from None
        except ValueError as e:
            raise SSEError(f"stream event is not JSON: {excerpt(data)!r}") from e
        if not isinstance(obj, dict):
            raise SSEError(f"stream event is not a JSON object: {excerpt(data)!r}")
        if "error" in obj:
            raise SSEError(f"the server reported an error mid-stream: {excerpt(json.dumps(obj['error']))!r}")
        if obj.get("object") != "chat.completion.chunk":
            raise SSEError(f"stream event object is {obj.get('object')!r}, expected 'chat.completion.chunk'")
        choices = obj.get("choices")
        if not isinstance(choices, list):
            raise SSEError("stream event has no 'choices' list")
        s.chunks += 1
        if s.first_chunk_s is None:
            s.first_chunk_s = now
        for ch in choices:  # an empty list is legal: the usage-only chunk of stream_options.include_usage
            if not isinstance(ch, dict) or not isinstance(ch.get("delta", {}), dict):
                raise SSEError("stream choice has no 'delta' object")
            content = ch.get("delta", {}).get("content")
            if content is not None and not isinstance(content, str):
                raise SSEError("stream delta content is not a string")
            if content:
                s.text += content
                if s.first_content_s is None:
                    s.first_content_s = now
            if ch.get("finish_reason"):
                s.finish_reason = str(ch["finish_reason"])

    for chunk in chunks:
        for data in parser.feed(chunk):
            handle(data)
    for data in parser.close():
        handle(data)
    if s.chunks == 0:
        raise SSEError("the stream carried no chat.completion.chunk event")
    if not s.done and s.finish_reason is None:
        raise SSEError(f"the stream ended after {s.chunks} chunk(s) without a finish_reason or data: [DONE] "
                       "(truncated)")
    return s


# ---------------------------------------------------------------------------------------------------------
# Response shape validation
# ---------------------------------------------------------------------------------------------------------
class ShapeError(ValueError):
    """A 2xx response whose JSON is not what the API promises."""


def validate_usage(obj: dict[str, Any], max_tokens: int) -> int | None:
    """Check ``usage`` when present; return completion_tokens (None when the server reports no usage)."""
    usage = obj.get("usage")
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise ShapeError("'usage' is not an object")
    counts = {}
    for key in ("prompt_tokens", "completion_tokens"):
        v = usage.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ShapeError(f"usage.{key} is {v!r}, expected a non-negative integer")
        counts[key] = v
    total = usage.get("total_tokens")
    if total is not None and total != counts["prompt_tokens"] + counts["completion_tokens"]:
        raise ShapeError(f"usage.total_tokens {total!r} != prompt_tokens + completion_tokens")
    if counts["completion_tokens"] > max_tokens:
        raise ShapeError(f"usage.completion_tokens {counts['completion_tokens']} exceeds max_tokens {max_tokens}: "
                         "the server ignored the request's limit")
    return counts["completion_tokens"]


def _first_choice(obj: Any, expected_object: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ShapeError("the response is not a JSON object")
    if obj.get("object") != expected_object:
        raise ShapeError(f"'object' is {obj.get('object')!r}, expected {expected_object!r}")
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ShapeError("'choices' is not a non-empty list of objects")
    return choices[0]


def validate_chat(obj: Any, max_tokens: int) -> tuple[str, int | None]:
    """(assistant text, completion tokens or None) of a ``chat.completion``."""
    choice = _first_choice(obj, "chat.completion")
    message = choice.get("message")
    if not isinstance(message, dict):
        raise ShapeError("choices[0].message is not an object")
    content = message.get("content")
    if not isinstance(content, str):
        raise ShapeError(f"choices[0].message.content is {type(content).__name__}, expected a string")
    if message.get("role", "assistant") != "assistant":
        raise ShapeError(f"choices[0].message.role is {message.get('role')!r}, expected 'assistant'")
    return content, validate_usage(obj, max_tokens)


def validate_completion(obj: Any, max_tokens: int) -> tuple[str, int | None]:
    """(text, completion tokens or None) of a ``text_completion``."""
    choice = _first_choice(obj, "text_completion")
    text = choice.get("text")
    if not isinstance(text, str):
        raise ShapeError(f"choices[0].text is {type(text).__name__}, expected a string")
    return text, validate_usage(obj, max_tokens)


def validate_models(obj: Any) -> tuple[str, ...]:
    """Model ids of a ``GET /v1/models`` list."""
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise ShapeError("GET /v1/models did not return {'data': [...]}")
    ids = []
    for m in obj["data"]:
        if not isinstance(m, dict) or not isinstance(m.get("id"), str) or not m["id"]:
            raise ShapeError("a /v1/models entry has no string 'id'")
        ids.append(m["id"])
    if not ids:
        raise ShapeError("GET /v1/models lists no model")
    return tuple(ids)


def validate_kaito_chat(obj: Any) -> str:
    """KAITO 0.6 transformers runtime: ``POST /chat`` answers ``{"Result": "..."}``."""
    if not isinstance(obj, dict) or not isinstance(obj.get("Result"), str):
        raise ShapeError("POST /chat did not return {'Result': '<text>'}")
    return obj["Result"]


def missing_model_reason(expected: str, served: tuple[str, ...]) -> str:
    """One line: the model asked for is not served (a hint first, then at most MAX_MODELS_SHOWN served ids)."""
    guess = expected.rsplit("/", 1)[-1].lower()
    hint = (f" (KAITO serves the lower-cased last segment of the HF id: use {_printable(guess, 80)!r})"
            if guess in served and guess != expected else "")
    return f"expected model {_printable(expected, 80)!r} is not served{hint}; served: {_shown_ids(served)}"


# ---------------------------------------------------------------------------------------------------------
# HTTP with a deadline
# ---------------------------------------------------------------------------------------------------------
class _TransientError(Exception):
    """A failure worth retrying until the deadline (network, truncation, 429/502/503/504)."""

    def __init__(self, problem: str, status: int | None = None, body: str = "", wait_s: float | None = None):
        super().__init__(problem)
        self.problem = problem
        self.status = status
        self.body = body
        self.wait_s = wait_s


class _FatalError(Exception):
    """A failure that retrying won't fix; raised as EndpointCheckError by the caller."""

    def __init__(self, reason: str, status: int | None = None, body: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.body = body


@dataclasses.dataclass
class _Reply:
    status: int
    body: bytes
    seconds: float
    value: Any = None


_HINTS = {
    401: "the endpoint wants credentials: check the API key",
    403: "the endpoint refused the credentials: check the API key",
    404: "no such path here: check the base URL (a gateway prefix?) and the runtime/KAITO version",
    405: "method not allowed: check the runtime/KAITO version",
}


FORWARD_FAILURE = "no connection through the port-forward: "   # infra.pod_transport's reason (why no pod yet)


def _describe_exception(e: BaseException) -> str:
    text = str(e)
    if FORWARD_FAILURE in text:
        return excerpt(text.split(FORWARD_FAILURE, 1)[1].split("'))", 1)[0], 160)
    if isinstance(e, requests.exceptions.ConnectTimeout):
        return "connect timed out"
    if isinstance(e, (requests.exceptions.ReadTimeout, TimeoutError)):
        return "read timed out"
    for needle, short in (("Connection refused", "connection refused"),
                          ("Name or service not known", "DNS lookup failed"),
                          ("nodename nor servname", "DNS lookup failed"), ("Connection reset", "connection reset"),
                          ("IncompleteRead", "response body truncated"),
                          ("RemoteDisconnected", "server closed the connection"),
                          ("Connection aborted", "connection aborted"), ("No route to host", "no route to host"),
                          ("timed out", "read timed out")):
        if needle in text:
            return short
    return f"{type(e).__name__}: {excerpt(text, 120)}"


# What the HTTP library raises for a request it cannot even send: an argument problem, never worth a retry.
_UNSENDABLE = (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader, requests.exceptions.InvalidSchema,
               requests.exceptions.MissingSchema, requests.exceptions.URLRequired, requests.exceptions.InvalidJSONError)


def _unsendable_reason(e: BaseException) -> str:
    """Names the problem without quoting the library's message (InvalidHeader's quotes the header: the key)."""
    if isinstance(e, (requests.exceptions.InvalidHeader, UnicodeEncodeError)):
        return "a request header is not a valid HTTP header value (check the API key)"
    if isinstance(e, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                      requests.exceptions.MissingSchema, requests.exceptions.URLRequired)):
        return "the URL is not one the HTTP client can use (check --url: host, port, characters)"
    if isinstance(e, OverflowError):
        return "a timeout is too large for this platform"
    return f"the HTTP client refused the request ({type(e).__name__})"


class _Checker:
    """One run of the check: the deadline, the session, the scrubber and the log live here."""

    def __init__(self, root: str, *, api_key: str | None, timeout_s: float, request_timeout_s: float,
                 session: requests.Session | None, log: Callable[[str], None] | None,
                 clock: Callable[[], float], sleep: Callable[[float], None], rng: random.Random) -> None:
        self.root = root
        self.scrub = Scrubber(api_key)
        self.shown_url = self.scrub(redact_url(root))
        self.step = "ready"              # the step running now (named by an unexpected error)
        self.request_timeout_s = request_timeout_s
        self.clock = clock
        self.sleep = sleep
        self.rng = rng
        self.start = clock()
        self.deadline = self.start + timeout_s
        self.timeout_s = timeout_s
        self._log = log
        self.headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.own_session = session is None
        self.session = session or self._new_session()

    @staticmethod
    def _new_session() -> requests.Session:
        s = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64, max_retries=0)
        s.mount("http://", adapter)
        s.mount("https://", adapter)
        return s

    def close(self) -> None:
        if self.own_session:
            self.session.close()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def clean(self, text: Any, limit: int) -> str:
        """Text that leaves the check: scrubbed, one escaped line, at most ``limit`` characters."""
        return self.scrub.bounded(text, limit)

    def log(self, message: str) -> None:
        message = self.clean(message, MAX_LINE_CHARS)
        logger.info("%s", message)
        if self._log is not None:
            self._log(message)

    def error(self, step: str, reason: str, status: int | None = None, body: str = "") -> EndpointCheckError:
        return EndpointCheckError(self.shown_url, step, self.clean(reason, MAX_REASON_CHARS), status=status,
                                  body_excerpt=self.clean(body, EXCERPT_CHARS) if body else "",
                                  elapsed_s=self.elapsed())

    # -- one HTTP exchange, retried ----------------------------------------------------------------------
    def call(self, step: str, method: str, path: str, body: dict[str, Any] | None = None,
             consume: Callable[[requests.Response, float, float], Any] | None = None) -> _Reply:
        """Send until a 2xx arrives and ``consume`` accepts it, retrying transient failures until the deadline."""
        url = self.root + path
        self.step = step
        attempt = 0
        last: _TransientError | None = None
        last_logged = -math.inf
        while True:
            remaining = self.deadline - self.clock()
            if remaining <= 0 or (remaining < MIN_ATTEMPT_S and last is not None):
                # a last attempt squeezed into a few ms would only report "timed out" instead of the real problem
                raise self._deadline_error(step, path, last)
            per_request = min(self.request_timeout_s, remaining)
            sent = self.clock()
            try:
                return self._once(method, url, body, per_request, sent, consume)
            except _FatalError as f:
                raise self.error(step, f"{method} {path}: {f.reason}", f.status, f.body) from None
            except InvalidRequestError as e:  # a request that can't be sent: an argument problem, never retried
                raise InvalidRequestError(self.clean(f"{self.shown_url}: step '{step}': {e}", MAX_LINE_CHARS)) from None
            except _TransientError as t:
                last = t
            attempt += 1
            wait = backoff_delay(attempt - 1, self.rng) if last.wait_s is None else last.wait_s
            wait = max(0.0, min(wait, self.deadline - self.clock()))
            if self.clock() - last_logged >= 10 or attempt == 1:
                last_logged = self.clock()
                status = f" (HTTP {last.status})" if last.status is not None else ""
                self.log(f"{step}: {method} {self.shown_url}{path}: {last.problem}{status}; attempt {attempt}, "
                         f"{self.elapsed():.1f} s elapsed, retrying in {wait:.1f} s")
            self.sleep(wait)

    def _deadline_error(self, step: str, path: str, last: _TransientError | None) -> EndpointCheckError:
        what = last.problem if last else "no attempt fitted in the time left"
        reason = f"not answering after the {self.timeout_s:g} s deadline ({path}: {what})"
        return self.error(step, reason, last.status if last else None, last.body if last else "")

    def _once(self, method: str, url: str, body: dict[str, Any] | None, per_request: float, sent: float,
              consume: Callable[[requests.Response, float, float], Any] | None) -> _Reply:
        try:
            resp = self.session.request(method, url, json=body, headers=self.headers, stream=True,
                                        timeout=(per_request, per_request), allow_redirects=False)
        except _UNSENDABLE as e:
            raise InvalidRequestError(_unsendable_reason(e)) from None
        except requests.exceptions.RequestException as e:
            raise _TransientError(_describe_exception(e)) from None
        except (ValueError, TypeError, OverflowError) as e:  # urllib3/http.client refusing a URL, header or timeout
            raise InvalidRequestError(_unsendable_reason(e)) from None
        request_deadline = sent + per_request
        with resp:
            status = resp.status_code
            if status in RETRYABLE_STATUSES or not 200 <= status < 300:
                raw = self._read_body(resp, request_deadline, limit=4096, lenient=True)
                if status in RETRYABLE_STATUSES:
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    problem = f"HTTP {status}" + (f", Retry-After {retry_after:g} s" if retry_after is not None else "")
                    raise _TransientError(problem, status, raw.decode("utf-8", "replace"), retry_after)
                hint = _HINTS.get(status, "")
                if 300 <= status < 400:  # not followed: a redirect must not carry the API key elsewhere
                    hint = f"redirected to {redact_url(resp.headers.get('Location', '?'))}: check that URL instead"
                raise _FatalError(f"HTTP {status}" + (f" ({hint})" if hint else ""), status,
                                  raw.decode("utf-8", "replace"))
            if consume is not None:
                value = consume(resp, request_deadline, sent)
                return _Reply(status, b"", self.clock() - sent, value)
            raw = self._read_body(resp, request_deadline)
            return _Reply(status, raw, self.clock() - sent)

    def _read_body(self, resp: requests.Response, request_deadline: float, limit: int = MAX_BODY_BYTES,
                   lenient: bool = False) -> bytes:
        """Read the body with a total time bound (``read1`` returns what has arrived, so a trickling server
        can't stretch one request past ``request_deadline`` + one socket timeout)."""
        chunks = []
        size = 0
        try:
            for chunk in self.iter_raw(resp, request_deadline):
                chunks.append(chunk)
                size += len(chunk)
                if size >= limit:
                    if lenient:
                        break
                    raise _FatalError(f"response body larger than {limit} bytes", resp.status_code)
        except _TransientError as t:
            if not lenient:  # keep what did arrive: the excerpt shows where the body was cut
                raise _TransientError(t.problem, t.status, b"".join(chunks).decode("utf-8", "replace")) from None
        body = b"".join(chunks)
        declared = resp.headers.get("Content-Length")
        if not lenient and declared and declared.isdigit() and len(declared) <= 18 \
                and "Content-Encoding" not in resp.headers and len(body) < int(declared):
            raise _TransientError(f"response body truncated ({len(body)} of {declared} bytes)", resp.status_code,
                             body.decode("utf-8", "replace"))
        return body

    def iter_raw(self, resp: requests.Response, request_deadline: float) -> Iterable[bytes]:
        raw = resp.raw
        while True:
            if self.clock() > request_deadline:
                raise _TransientError(f"response not complete within {self.request_timeout_s:g} s", resp.status_code)
            try:
                chunk = raw.read1(65536, decode_content=True)  # gateways may gzip JSON
            except Exception as e:  # urllib3 ProtocolError/ReadTimeoutError, socket errors
                raise _TransientError(_describe_exception(e), resp.status_code) from None
            if not chunk:
                return
            yield chunk

    # -- JSON helpers ------------------------------------------------------------------------------------
    def json_call(self, step: str, method: str, path: str, body: dict[str, Any] | None,
                  validate: Callable[[Any], Any]) -> tuple[Any, _Reply]:
        reply = self.call(step, method, path, body)
        shown = lambda: reply.body[:16384].decode("utf-8", "replace")  # noqa: E731 (the excerpt needs the start)
        try:
            obj = loads_bounded(reply.body)
        except JsonTooDeepError as e:
            raise self.error(step, f"{method} {path}: {e}", reply.status, shown()) from None
        except ValueError:
            raise self.error(step, f"{method} {path}: the response is not valid JSON", reply.status, shown()) from None
        try:
            return validate(obj), reply
        except ShapeError as e:
            raise self.error(step, f"{method} {path}: {e}", reply.status, shown()) from None


# ---------------------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------------------
def _seconds_problem(value: Any, most: float) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number of seconds"
    if not (value > 0 and math.isfinite(value)):
        return "must be a positive number of seconds"
    if value > most:
        return f"must be at most {most:g} seconds"
    return None


def validate_arguments(*, runtime: str, kaito_version: str, timeout_s: float, request_timeout_s: float,
                       concurrency: int, expected_model: str | None = None) -> tuple[Runtime, ApiSurface]:
    """The runtime and its API surface, or ValueError (one bounded line) for an argument no retry can fix."""
    surface = api_surface(runtime, kaito_version)
    for what, value, most in (("timeout", timeout_s, MAX_TIMEOUT_S),
                              ("request timeout", request_timeout_s, MAX_REQUEST_TIMEOUT_S)):
        problem = _seconds_problem(value, most)
        if problem:
            raise ValueError(f"{what} {_printable(repr(value), 40)} {problem}")
    if (not isinstance(concurrency, int) or isinstance(concurrency, bool)
            or not MIN_CHECK_CONCURRENCY <= concurrency <= MAX_CHECK_CONCURRENCY):
        raise ValueError(f"concurrency {_printable(repr(concurrency), 40)} must be an integer from "
                         f"{MIN_CHECK_CONCURRENCY} to {MAX_CHECK_CONCURRENCY}")
    if expected_model is not None and not (
            isinstance(expected_model, str) and 0 < len(expected_model) <= 512 and expected_model.isprintable()):
        raise ValueError(f"expected model {_printable(repr(expected_model), 80)} must be 1 to 512 printable characters")
    return known_runtime(runtime), surface


def check_endpoint(
    base_url: str,
    *,
    runtime: str = "vllm",
    kaito_version: str = DEFAULT_KAITO_VERSION,
    expected_model: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 600.0,
    request_timeout_s: float = 30.0,
    concurrency: int = DEFAULT_CHECK_CONCURRENCY,
    session: requests.Session | None = None,
    log: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    seed: int | None = None,
) -> EndpointResult:
    """Check one endpoint; return what it found or raise :class:`EndpointCheckError`.

    ``base_url`` is the server root (``http://10.0.0.9``, or a gateway prefix ``http://gw/llama-8b``).
    ``timeout_s`` bounds the whole check, including the wait for the server to come up; each request is
    also bounded by ``request_timeout_s``. Bad arguments raise ``ValueError`` before any request.
    """
    key_text = api_key if isinstance(api_key, str) else None
    scrub = Scrubber(key_text, key_text.strip() if key_text else None)
    try:
        known, surface = validate_arguments(runtime=runtime, kaito_version=kaito_version, timeout_s=timeout_s,
                                     request_timeout_s=request_timeout_s, concurrency=concurrency,
                                     expected_model=expected_model)
        root, notes = normalize_base_url(base_url)
        if api_key is not None and api_key != "":
            validate_api_key(api_key)
    except ValueError as e:  # one bounded line, the key never in it (it could be inside a bad URL)
        raise ValueError(scrub.bounded(e, MAX_LINE_CHARS)) from None
    c = _Checker(root, api_key=api_key or None, timeout_s=timeout_s, request_timeout_s=request_timeout_s,
                 session=session, log=log, clock=clock, sleep=sleep, rng=random.Random(seed))
    try:
        return _run(c, surface, runtime=known, kaito_version=kaito_version, expected_model=expected_model,
                    concurrency=concurrency, notes=notes)
    except (EndpointCheckError, InvalidRequestError):
        raise
    except Exception as e:  # a bug, or an answer nobody foresaw: still one scrubbed line, never a traceback
        raise c.error(c.step, f"unexpected {type(e).__name__}: {e}") from None
    finally:
        c.close()


def _run(c: _Checker, surface: ApiSurface, *, runtime: Runtime, kaito_version: str, expected_model: str | None,
         concurrency: int, notes: list[str]) -> EndpointResult:
    checks: list[str] = []
    c.log(f"checking {c.shown_url} (runtime {runtime}, KAITO {kaito_version}, API {surface.name}, "
          f"deadline {c.timeout_s:g} s)")

    # 1. Ready + served model. The first good answer to the cheapest real call is "ready": a gateway or
    #    LB in front answers 502/503/504 (retried) until the pod serves, a bare Service refuses connections.
    model: str | None = None
    served: tuple[str, ...] = ()
    verified = False
    if surface.models:
        served, _ = c.json_call("ready", "GET", "/v1/models", None, validate_models)
        ready_after = c.elapsed()
        checks += ["ready", "models"]
        if expected_model is not None:
            if expected_model not in served:
                raise c.error("models", missing_model_reason(expected_model, served), 200,
                              ", ".join(served[:MAX_MODELS_SHOWN]))
            model, verified = expected_model, True
        else:
            model = served[0]
            if len(served) > 1:
                notes.append(f"several models served ({_shown_ids(served)}); checked {_printable(model, 80)!r}")
        if len(served) > MAX_MODELS_KEPT:
            notes.append(f"/v1/models listed {len(served)} models; the first {MAX_MODELS_KEPT} are kept")
    else:
        c.call("ready", "GET", "/health")
        ready_after = c.elapsed()
        checks.append("ready")
        notes.append("KAITO 0.6 transformers runtime lists no models: the served model is unknown"
                     + (f" and {_printable(expected_model, 80)!r} could not be verified" if expected_model else ""))
    c.log(f"ready after {ready_after:.1f} s; model {model or '(unknown)'}")

    # 2. Single requests (deterministic: temperature 0, few tokens).
    if surface.chat:
        (sample, _), reply = c.json_call("chat", "POST", "/v1/chat/completions", _chat_body(model, MAX_TOKENS),
                                         lambda o: validate_chat(o, MAX_TOKENS))
        checks.append("chat")
    else:
        sample, reply = c.json_call("chat", "POST", "/chat", _kaito_chat_body(MAX_TOKENS), validate_kaito_chat)
        checks.append("chat")
    latency_ms = reply.seconds * 1000
    if surface.completions:
        c.json_call("completions", "POST", "/v1/completions", _completion_body(model, MAX_TOKENS),
                    lambda o: validate_completion(o, MAX_TOKENS))
        checks.append("completions")
    ttft_ms: float | None = None
    if surface.stream:
        stream = _stream_check(c, model)
        checks.append("stream")
        first = stream.first_content_s if stream.first_content_s is not None else stream.first_chunk_s
        ttft_ms = None if first is None else first * 1000
        if stream.first_content_s is None:
            notes.append("the streamed answer had no content; TTFT is the time to the first chunk")
        if not stream.done:
            notes.append("the stream ended without data: [DONE]")

    # 3. Concurrency probe.
    p50, p95, tps = _concurrency_probe(c, surface, model, concurrency)
    checks.append("concurrency")
    if tps is None:
        notes.append("the server reports no token usage: tokens/s unknown")

    # Everything that leaves: scrubbed (what a server says may hold the key) and bounded.
    result = EndpointResult(
        url=c.shown_url, runtime=runtime, kaito_version=c.clean(kaito_version, 40), api=surface.name,
        model=None if model is None else c.clean(model, MAX_MODEL_ID_CHARS),
        models_served=tuple(c.clean(m, MAX_MODEL_ID_CHARS) for m in served[:MAX_MODELS_KEPT]),
        model_verified=verified, checks=tuple(checks), latency_ms=latency_ms,
        ttft_ms=ttft_ms, tokens_per_s=tps, p50_ms=p50, p95_ms=p95, concurrency=concurrency,
        sample_text=c.clean(sample, SAMPLE_CHARS), ready_after_s=ready_after, elapsed_s=c.elapsed(),
        checked_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        notes=tuple(c.clean(n, MAX_LINE_CHARS) for n in notes),
    )
    c.log(f"passed: {', '.join(checks)} in {result.elapsed_s:.1f} s")
    return result


def _chat_body(model: str | None, max_tokens: int, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": CHAT_PROMPT}],
                            "temperature": 0, "max_tokens": max_tokens}
    if model is not None:
        body["model"] = model
    if stream:
        body["stream"] = True
    return body


def _completion_body(model: str | None, max_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": COMPLETION_PROMPT, "temperature": 0, "max_tokens": max_tokens}
    if model is not None:
        body["model"] = model
    return body


def _kaito_chat_body(max_tokens: int) -> dict[str, Any]:
    # KAITO 0.6 transformers runtime: generate_kwargs go to the HF pipeline (greedy, few new tokens).
    return {"prompt": CHAT_PROMPT, "return_full_text": False,
            "generate_kwargs": {"max_new_tokens": max_tokens, "do_sample": False}}


def _stream_check(c: _Checker, model: str | None) -> StreamSummary:
    def consume(resp: requests.Response, request_deadline: float, sent: float) -> StreamSummary:
        ctype = resp.headers.get("Content-Type", "")
        if "text/event-stream" not in ctype:
            raise _FatalError(f"streamed chat answered Content-Type {ctype!r}, expected text/event-stream",
                         resp.status_code, "")
        try:  # TTFT is measured from when this attempt's request was sent
            return consume_chat_stream(c.iter_raw(resp, request_deadline), clock=c.clock, started=sent)
        except SSEError as e:
            raise _FatalError(f"malformed stream: {e}", resp.status_code, "") from None

    reply = c.call("stream", "POST", "/v1/chat/completions", _chat_body(model, MAX_TOKENS, stream=True),
                   consume=consume)
    return reply.value


def _concurrency_probe(c: _Checker, surface: ApiSurface, model: str | None,
                       n: int) -> tuple[float, float, float | None]:
    """N identical requests at once: (p50 ms, p95 ms, completion tokens per second or None)."""
    if surface.chat:
        path, body = "/v1/chat/completions", _chat_body(model, PROBE_MAX_TOKENS)
        validate: Callable[[Any], Any] = lambda o: validate_chat(o, PROBE_MAX_TOKENS)[1]
    else:
        path, body = "/chat", _kaito_chat_body(PROBE_MAX_TOKENS)
        validate = lambda o: (validate_kaito_chat(o), None)[1]

    def one(_: int) -> tuple[float, int | None]:
        tokens, reply = c.json_call("concurrency", "POST", path, body, validate)
        return reply.seconds, tokens

    began = c.clock()
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="endpoint-probe") as pool:
        results = list(pool.map(one, range(n)))  # re-raises the first EndpointCheckError
    wall = max(c.clock() - began, 1e-9)
    latencies = [s * 1000 for s, _ in results]
    token_counts = [t for _, t in results]
    tps = None if any(t is None for t in token_counts) else sum(t for t in token_counts if t) / wall
    return statistics.median(latencies), percentile(latencies, 95), tps


def summarize(result: EndpointResult) -> str:
    """Human summary for the CLI (a few lines)."""
    ms = lambda v: "n/a" if v is None else f"{v:.0f} ms"
    tps = "n/a" if result.tokens_per_s is None else f"{result.tokens_per_s:.1f} tokens/s"
    model = result.model or "(not listed by this runtime)"
    lines = [
        f"OK {result.url}: model {model}{' (as expected)' if result.model_verified else ''}, "
        f"runtime {result.runtime}, KAITO {result.kaito_version}, API {result.api}",
        f"  checks: {', '.join(result.checks)}",
        f"  latency {ms(result.latency_ms)}, TTFT {ms(result.ttft_ms)}; {result.concurrency} parallel: "
        f"p50 {ms(result.p50_ms)}, p95 {ms(result.p95_ms)}, {tps}",
        f"  sample: {result.sample_text!r}",
        f"  ready after {result.ready_after_s:.1f} s, check took {result.elapsed_s:.1f} s, at {result.checked_at}",
    ]
    lines += [f"  note: {n}" for n in result.notes]
    return "\n".join(lines)
