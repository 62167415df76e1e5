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

A failure raises :class:`EndpointCheckError`: one line naming the URL, the step, the last HTTP status and body
excerpt, and the elapsed time. The API key never appears in messages, logs or results.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import email.utils
import json
import logging
import math
import random
import re
import statistics
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable

import requests

logger = logging.getLogger(__name__)

RUNTIMES = ("vllm", "transformers")
DEFAULT_KAITO_VERSION = "0.12.0"
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
BACKOFF_BASE_S = 0.25           # first retry delay (before jitter)
BACKOFF_CAP_S = 2.0             # longest delay between attempts: a ready server is noticed within ~2 s
                                # (bench: 0.5 GET/s while waiting is nothing for an LB or the gateway)
RETRY_AFTER_CAP_S = 60.0        # a Retry-After above this is treated as this (a wrong header must not stall us)
MAX_BODY_BYTES = 8 * 1024 * 1024
MIN_ATTEMPT_S = 0.05            # no new attempt in the last 50 ms before the deadline
EXCERPT_CHARS = 160
SAMPLE_CHARS = 200

# Deterministic generation: greedy, few tokens. Prompts any chat model can answer in a word or two.
CHAT_PROMPT = "What is the capital of France?"
COMPLETION_PROMPT = "The capital of France is"
MAX_TOKENS = 8                  # single requests
PROBE_MAX_TOKENS = 16           # concurrency probe: enough tokens for a tokens/s figure
USER_AGENT = "kaito-aks-endpoint-check/1"
_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?$")


# ---------------------------------------------------------------------------------------------------------
# Results and errors
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EndpointResult:
    """What a passing check found. All durations are wall-clock; ``*_ms`` are milliseconds."""

    url: str                         # the base URL checked (credentials in it, if any, redacted)
    runtime: str
    kaito_version: str
    api: str                         # "openai" | "openai-chat" | "kaito-chat" (see api_surface)
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
        self.url = url
        self.step = step
        self.reason = _one_line(reason)
        self.status = status
        self.body_excerpt = _one_line(body_excerpt)
        self.elapsed_s = elapsed_s
        super().__init__(self.message)

    @property
    def message(self) -> str:
        last = (f"last HTTP {self.status}" + (f" {self.body_excerpt!r}" if self.body_excerpt else " (empty body)")
                if self.status is not None else "no HTTP response")
        return f"{self.url}: step '{self.step}' failed after {self.elapsed_s:.1f} s: {self.reason}; {last}"

    def __reduce__(self):  # picklable (the provider host and multiprocessing may pickle it)
        return (_rebuild_error, (self.url, self.step, self.reason, self.status, self.body_excerpt, self.elapsed_s))


def _rebuild_error(url: str, step: str, reason: str, status: int | None, body: str, elapsed: float) -> EndpointCheckError:
    return EndpointCheckError(url, step, reason, status=status, body_excerpt=body, elapsed_s=elapsed)


# ---------------------------------------------------------------------------------------------------------
# API surface per runtime and KAITO version
# ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ApiSurface:
    name: str
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
        raise ValueError(f"KAITO version {version!r} is not of the form 0.12.0")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def api_surface(runtime: str, kaito_version: str) -> ApiSurface:
    """What the runtime serves in that KAITO version (FACTS.md addendum: inference_api.py at v0.6.0 and v0.12.0)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    major_minor = parse_kaito_version(kaito_version)[:2]
    if runtime == "vllm":
        return OPENAI  # vllm.entrypoints.openai.api_server in every KAITO release since 0.4
    if major_minor == (0, 6):
        return KAITO_CHAT
    if major_minor >= (0, 12):
        return OPENAI_CHAT
    raise ValueError(f"the transformers runtime's API is known for KAITO 0.6.x and 0.12+, not {kaito_version}")


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
        when = when.replace(tzinfo=_dt.timezone.utc)
    now_ts = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - now_ts), RETRY_AFTER_CAP_S)


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): always one of the measured values, deterministic for small N."""
    xs = sorted(values)
    if not xs:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(xs)))
    return xs[min(rank, len(xs)) - 1]


def redact_url(url: str) -> str:
    """Drop user:password@ from a URL (the only place a URL can carry a credential we'd print)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def normalize_base_url(url: str) -> tuple[str, list[str]]:
    """Validate a base URL and return (server root without trailing '/', notes).

    The root may carry a gateway prefix (``http://gw/llama-8b``). A trailing ``/v1`` (the OpenAI SDK's
    base_url convention) is dropped with a note, since the check appends ``/v1/...`` itself.
    """
    notes: list[str] = []
    if not isinstance(url, str) or not re.match(r"^https?://[^\s/?#]+", url):
        raise ValueError(f"URL {url!r} must start with http:// or https:// and name a host")
    parts = urllib.parse.urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError(f"URL {redact_url(url)!r} must not have a query or fragment")
    root = url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
        notes.append(f"the URL ended with /v1; checked {redact_url(root)} as the server root")
    return root, notes


class Scrubber:
    """Removes a secret (the API key) from any text before it is logged, raised or returned."""

    def __init__(self, *secrets: str | None) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip()


def excerpt(body: bytes | str, limit: int = EXCERPT_CHARS) -> str:
    """A body as a short printable one-liner for an error message (binary junk escaped, not printed raw)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return _printable(_one_line(text), limit)


def _printable(text: str, limit: int = SAMPLE_CHARS) -> str:
    """Text as a safe one-liner: control characters escaped, truncated."""
    out = "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode() for ch in text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


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

    def feed(self, chunk: bytes) -> list[str]:
        self._buf += chunk
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
            self._data = []
        return events

    def _line(self, raw: bytes, events: list[str]) -> None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SSEError(f"stream line is not UTF-8: {excerpt(raw)!r}") from e
        if line == "":
            if self._data:
                events.append("\n".join(self._data))
                self._data = []
            return
        if line.startswith(":"):
            return
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)


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
            obj = json.loads(data)
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
        raise SSEError(f"the stream ended after {s.chunks} chunk(s) without a finish_reason or data: [DONE] (truncated)")
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
    reason = f"expected model {expected!r} is not served; served: {', '.join(repr(s) for s in served)}"
    guess = expected.rsplit("/", 1)[-1].lower()
    if guess in served and guess != expected:
        reason += f" (KAITO serves the lower-cased last segment of the HF id: use {guess!r})"
    return reason


# ---------------------------------------------------------------------------------------------------------
# HTTP with a deadline
# ---------------------------------------------------------------------------------------------------------
class _Transient(Exception):
    """A failure worth retrying until the deadline (network, truncation, 429/502/503/504)."""

    def __init__(self, problem: str, status: int | None = None, body: str = "", wait_s: float | None = None):
        super().__init__(problem)
        self.problem = problem
        self.status = status
        self.body = body
        self.wait_s = wait_s


class _Fatal(Exception):
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


def _describe_exception(e: BaseException) -> str:
    text = str(e)
    if isinstance(e, requests.exceptions.ConnectTimeout):
        return "connect timed out"
    if isinstance(e, (requests.exceptions.ReadTimeout, TimeoutError)):
        return "read timed out"
    for needle, short in (("Connection refused", "connection refused"), ("Name or service not known", "DNS lookup failed"),
                          ("nodename nor servname", "DNS lookup failed"), ("Connection reset", "connection reset"),
                          ("IncompleteRead", "response body truncated"), ("RemoteDisconnected", "server closed the connection"),
                          ("Connection aborted", "connection aborted"), ("No route to host", "no route to host"),
                          ("timed out", "read timed out")):
        if needle in text:
            return short
    return f"{type(e).__name__}: {excerpt(text, 120)}"


class _Checker:
    """One run of the check: the deadline, the session, the scrubber and the log live here."""

    def __init__(self, root: str, *, api_key: str | None, timeout_s: float, request_timeout_s: float,
                 session: requests.Session | None, log: Callable[[str], None] | None,
                 clock: Callable[[], float], sleep: Callable[[float], None], rng: random.Random) -> None:
        self.root = root
        self.shown_url = redact_url(root)
        self.scrub = Scrubber(api_key)
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

    def log(self, message: str) -> None:
        message = self.scrub(message)
        logger.info("%s", message)
        if self._log is not None:
            self._log(message)

    def error(self, step: str, reason: str, status: int | None = None, body: str = "") -> EndpointCheckError:
        return EndpointCheckError(self.shown_url, step, self.scrub(reason), status=status,
                                  body_excerpt=excerpt(self.scrub(body)) if body else "", elapsed_s=self.elapsed())

    # -- one HTTP exchange, retried ----------------------------------------------------------------------
    def call(self, step: str, method: str, path: str, body: dict[str, Any] | None = None,
             consume: Callable[[requests.Response, float, float], Any] | None = None) -> _Reply:
        """Send until a 2xx arrives and ``consume`` accepts it, retrying transient failures until the deadline."""
        url = self.root + path
        attempt = 0
        last: _Transient | None = None
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
            except _Fatal as f:
                raise self.error(step, f"{method} {path}: {f.reason}", f.status, f.body) from None
            except _Transient as t:
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

    def _deadline_error(self, step: str, path: str, last: _Transient | None) -> EndpointCheckError:
        what = last.problem if last else "no attempt fitted in the time left"
        reason = f"not answering after the {self.timeout_s:g} s deadline ({path}: {what})"
        return self.error(step, reason, last.status if last else None, last.body if last else "")

    def _once(self, method: str, url: str, body: dict[str, Any] | None, per_request: float, sent: float,
              consume: Callable[[requests.Response, float, float], Any] | None) -> _Reply:
        try:
            resp = self.session.request(method, url, json=body, headers=self.headers, stream=True,
                                        timeout=(per_request, per_request), allow_redirects=False)
        except requests.exceptions.RequestException as e:
            raise _Transient(_describe_exception(e)) from None
        request_deadline = sent + per_request
        with resp:
            status = resp.status_code
            if status in RETRYABLE_STATUSES or not 200 <= status < 300:
                raw = self._read_body(resp, request_deadline, limit=4096, lenient=True)
                if status in RETRYABLE_STATUSES:
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    problem = f"HTTP {status}" + (f", Retry-After {retry_after:g} s" if retry_after is not None else "")
                    raise _Transient(problem, status, raw.decode("utf-8", "replace"), retry_after)
                hint = _HINTS.get(status, "")
                if 300 <= status < 400:  # not followed: a redirect must not carry the API key elsewhere
                    hint = f"redirected to {redact_url(resp.headers.get('Location', '?'))}: check that URL instead"
                raise _Fatal(f"HTTP {status}" + (f" ({hint})" if hint else ""), status, raw.decode("utf-8", "replace"))
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
                    raise _Fatal(f"response body larger than {limit} bytes", resp.status_code)
        except _Transient as t:
            if not lenient:  # keep what did arrive: the excerpt shows where the body was cut
                raise _Transient(t.problem, t.status, b"".join(chunks).decode("utf-8", "replace")) from None
        body = b"".join(chunks)
        declared = resp.headers.get("Content-Length")
        if not lenient and declared and declared.isdigit() and "Content-Encoding" not in resp.headers \
                and len(body) < int(declared):
            raise _Transient(f"response body truncated ({len(body)} of {declared} bytes)", resp.status_code,
                             body.decode("utf-8", "replace"))
        return body

    def iter_raw(self, resp: requests.Response, request_deadline: float) -> Iterable[bytes]:
        raw = resp.raw
        while True:
            if self.clock() > request_deadline:
                raise _Transient(f"response not complete within {self.request_timeout_s:g} s", resp.status_code)
            try:
                chunk = raw.read1(65536, decode_content=True)  # gateways may gzip JSON
            except Exception as e:  # urllib3 ProtocolError/ReadTimeoutError, socket errors
                raise _Transient(_describe_exception(e), resp.status_code) from None
            if not chunk:
                return
            yield chunk

    # -- JSON helpers ------------------------------------------------------------------------------------
    def json_call(self, step: str, method: str, path: str, body: dict[str, Any] | None,
                  validate: Callable[[Any], Any]) -> tuple[Any, _Reply]:
        reply = self.call(step, method, path, body)
        try:
            obj = json.loads(reply.body)
        except ValueError:
            raise self.error(step, f"{method} {path}: the response is not valid JSON", reply.status,
                             reply.body.decode("utf-8", "replace")) from None
        try:
            return validate(obj), reply
        except ShapeError as e:
            raise self.error(step, f"{method} {path}: {e}", reply.status,
                             reply.body.decode("utf-8", "replace")) from None


# ---------------------------------------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------------------------------------
def validate_arguments(*, runtime: str, kaito_version: str, timeout_s: float, request_timeout_s: float,
                       concurrency: int) -> ApiSurface:
    surface = api_surface(runtime, kaito_version)
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0 and math.isfinite(timeout_s)):
        raise ValueError(f"timeout {timeout_s!r} must be a positive number of seconds")
    if not (isinstance(request_timeout_s, (int, float)) and request_timeout_s > 0 and math.isfinite(request_timeout_s)):
        raise ValueError(f"request timeout {request_timeout_s!r} must be a positive number of seconds")
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or not 1 <= concurrency <= 64:
        raise ValueError(f"concurrency {concurrency!r} must be an integer from 1 to 64")
    return surface


def check_endpoint(
    base_url: str,
    *,
    runtime: str = "vllm",
    kaito_version: str = DEFAULT_KAITO_VERSION,
    expected_model: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 600.0,
    request_timeout_s: float = 30.0,
    concurrency: int = 4,
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
    surface = validate_arguments(runtime=runtime, kaito_version=kaito_version, timeout_s=timeout_s,
                                 request_timeout_s=request_timeout_s, concurrency=concurrency)
    root, notes = normalize_base_url(base_url)
    c = _Checker(root, api_key=api_key, timeout_s=timeout_s, request_timeout_s=request_timeout_s,
                 session=session, log=log, clock=clock, sleep=sleep, rng=random.Random(seed))
    try:
        return _run(c, surface, runtime=runtime, kaito_version=kaito_version, expected_model=expected_model,
                    concurrency=concurrency, notes=notes)
    finally:
        c.close()


def _run(c: _Checker, surface: ApiSurface, *, runtime: str, kaito_version: str, expected_model: str | None,
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
                raise c.error("models", missing_model_reason(expected_model, served), 200, ", ".join(served))
            model, verified = expected_model, True
        else:
            model = served[0]
            if len(served) > 1:
                notes.append(f"several models served ({', '.join(served)}); checked {model}")
    else:
        c.call("ready", "GET", "/health")
        ready_after = c.elapsed()
        checks.append("ready")
        notes.append("KAITO 0.6 transformers runtime lists no models: the served model is unknown"
                     + (f" and {expected_model!r} could not be verified" if expected_model else ""))
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

    result = EndpointResult(
        url=c.shown_url, runtime=runtime, kaito_version=kaito_version, api=surface.name, model=model,
        models_served=served, model_verified=verified, checks=tuple(checks), latency_ms=latency_ms,
        ttft_ms=ttft_ms, tokens_per_s=tps, p50_ms=p50, p95_ms=p95, concurrency=concurrency,
        sample_text=c.scrub(_printable(sample)), ready_after_s=ready_after, elapsed_s=c.elapsed(),
        checked_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        notes=tuple(c.scrub(n) for n in notes),
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
            raise _Fatal(f"streamed chat answered Content-Type {ctype!r}, expected text/event-stream",
                         resp.status_code, "")
        try:  # TTFT is measured from when this attempt's request was sent
            return consume_chat_stream(c.iter_raw(resp, request_deadline), clock=c.clock, started=sent)
        except SSEError as e:
            raise _Fatal(f"malformed stream: {e}", resp.status_code, "") from None

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
