"""The authenticated gateway in front of a stack's models: nginx configuration and its Kubernetes objects.

KAITO's inference endpoint has no authentication. The gateway gives a stack one address where each model is
served at ``/<model-name>/v1/...`` (so an OpenAI client uses ``base_url=http://<address>/<model-name>/v1``),
checks ``Authorization: Bearer <key>`` against the stack's API keys (the key byte for byte, the scheme in any
case), load-balances a model's replicas with passive health checks, streams responses unbuffered, limits request
size, the request rate per key and failed authentications per client address, answers every error of its own
in OpenAI's JSON shape, and logs without secrets (no request line, query string or client-chosen path text in
any log). ``GET /v1/models`` at the root lists the stack's models; ``/_replicas/<slot>/v1/...``
reaches one replica (for the post-deploy check and on-call).

Everything here is pure: ``render_nginx_conf`` is what the tests run under a real nginx.
"""
from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass
from typing import Any, Iterable

from infra.errors import UserError
from infra.plan import Plan

NAME = "kaito-gateway"
IMAGE = "nginx:1.28.0-alpine"          # the official image, pinned
LISTEN_PORT = 8080                     # API traffic (non-root: no port < 1024)
HEALTH_PORT = 8081                     # probes, unauthenticated, never exposed by the Service
CONF_DIR = "/etc/kaito-aks"
KEYS_FILE = "api-keys.map"
UID = 101                              # the nginx user of the official image
# Metrics (with observability on, README "Observability"): two sidecars in the gateway pod, on its loopback.
STATUS_PORT = 8082                     # nginx stub_status, 127.0.0.1 only: read by the exporter sidecar
SYSLOG_PORT = 5140                     # access-log datagrams (UDP), 127.0.0.1 only: read by mtail
EXPORTER_IMAGE = "nginx/nginx-prometheus-exporter:1.5.3"   # connections and requests from stub_status
EXPORTER_PORT = 9113
# per status / key id / route counts from the access log; 3.0.5 or later: older versions read one datagram per poll
# interval and drop the rest of a burst (google/mtail afd77e48, issue #685)
MTAIL_IMAGE = "ghcr.io/google/mtail:3.0.9"
MTAIL_PORT = 3903
MTAIL_PROGRAM_FILE = "gateway.mtail"
PID_PATH = "/tmp/nginx.pid"            # the root filesystem is read-only
# A gateway pod that is replaced (a config or key change rolls the pods) first leaves the Service's endpoints, then
# drains: it keeps serving for DRAIN_DELAY_SECONDS while kube-proxy and the Azure load balancer's health probe (5 s
# interval, 2 failures) stop sending it new connections, then quits gracefully (`nginx -s quit`: no new
# connections, in-flight requests and streams finish), and the kubelet waits up to the grace period before it kills.
DRAIN_DELAY_SECONDS = 15
REQUESTS_METRIC = "kaito_gateway_requests_total"         # mtail's counter: {status, key, route}


@dataclass(frozen=True)
class Route:
    """A path prefix and the upstream servers (host:port) behind it."""

    name: str                          # path segment: /<name>/v1/...
    servers: tuple[str, ...]
    served_model: str                  # what the upstream answers to (informational, in /v1/models)


@dataclass(frozen=True)
class GatewayLimits:
    rate_limit_per_minute: int = 600
    max_body_kib: int = 1024
    read_timeout_seconds: int = 600
    connect_timeout_seconds: int = 5
    max_fails: int = 1                 # passive health check: failures before a replica is skipped...
    fail_timeout_seconds: int = 10     # ...for this long
    unauthenticated_per_minute: int = 60   # failed authentications per client address


def model_prefix(model_name: str) -> str:
    """Where a model lives on the gateway: OpenAI clients use base_url = <gateway><prefix>/v1."""
    return f"/{model_name}"


def replica_prefix(slot: str) -> str:
    """One replica by its stable slot name, bypassing the load balancing (the post-deploy check, on-call)."""
    return f"/_replicas/{slot}"


def pod_labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": NAME, "app.kubernetes.io/managed-by": "kaito-aks"}


def key_id(key: str) -> str:
    """A non-secret name for a key (logs, rate-limit buckets): the first 12 hex digits of its SHA-256."""
    return "k" + hashlib.sha256(key.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------------------
# API keys: the `kaito-aks:apiKeys` setting, validated, and the nginx map that recognises them

SETTING = "kaito-aks:apiKeys"
KEY_MIN_LENGTH = 16                    # shorter is guessable, whatever the rate limit
KEY_MAX_LENGTH = 256
MAX_KEYS = 1000                        # each key is one regex the map tries in turn
KEY_PUNCTUATION = "-._~+/="            # RFC 6750's b64token characters, with letters and digits
KEY_CHARS = frozenset(string.ascii_letters + string.digits + KEY_PUNCTUATION)
MAX_SETTING_CHARS = MAX_KEYS * (KEY_MAX_LENGTH + 16)   # the longest list of the longest keys, with room for JSON
_ALLOWED = "letters, digits and - . _ ~ + / ="
_FORMATS = ("write a JSON list of strings, e.g. '[\"sk-...\",\"sk-...\"]', or the keys separated by commas or "
            "newlines")
_NEW_KEY = "e.g. python3 -c 'import secrets; print(\"sk-\" + secrets.token_urlsafe(32))'"


class ApiKeysError(UserError, ValueError):
    """The ``kaito-aks:apiKeys`` setting is malformed. ``.lines``: one line per problem, each naming the setting
    and the entry by index, never a key or part of one (these lines reach terminals, CI logs and Pulumi)."""


def _kind(value: Any) -> str:
    """What a non-string entry is, in JSON's words (never its value: it could be a key)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def _key_problem(key: str) -> str | None:
    """Why ``key`` can't be an API key, without quoting it; None when it can."""
    if not key:
        return "is empty"
    if len(key) > KEY_MAX_LENGTH:
        return f"is longer than {KEY_MAX_LENGTH} characters"
    if any(c.isspace() for c in key):
        return f"contains whitespace; a key is one word of {_ALLOWED}"
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in key):
        return f"contains a control character; a key is one word of {_ALLOWED}"
    if not KEY_CHARS.issuperset(key):
        return f"contains a character other than {_ALLOWED} (no quotes, backslashes or non-ASCII)"
    if len(key) < KEY_MIN_LENGTH:
        return f"is shorter than {KEY_MIN_LENGTH} characters: too easy to guess; use a random key, {_NEW_KEY}"
    return None


def validate_api_keys(keys: Any) -> list[str]:
    """``keys`` if it is a valid list of API keys, else :class:`ApiKeysError` naming every bad entry by index.

    A key is a string of :data:`KEY_MIN_LENGTH`..:data:`KEY_MAX_LENGTH` characters from :data:`KEY_CHARS` (RFC 6750
    bearer-token characters: no whitespace, quotes, backslashes or control characters, so it is one word on the
    wire and in the nginx configuration); at most :data:`MAX_KEYS` keys, no duplicates.
    """
    if not isinstance(keys, (list, tuple)):
        raise ApiKeysError(f"{SETTING}: {_kind(keys)}, not a list of keys; {_FORMATS}")
    if not keys:
        raise ApiKeysError(f"{SETTING} is empty; set at least one key ({_NEW_KEY})")
    if len(keys) > MAX_KEYS:
        raise ApiKeysError(f"{SETTING}: {len(keys)} keys; at most {MAX_KEYS}")
    problems, first_index = [], {}
    for index, key in enumerate(keys):
        where = f"{SETTING}[{index}]"
        if not isinstance(key, str):
            problems.append(f"{where}: {_kind(key)}, not a string; every key is a string")
        elif (problem := _key_problem(key)) is not None:
            problems.append(f"{where}: {problem}")
        elif key in first_index:
            problems.append(f"{where}: the same key as {SETTING}[{first_index[key]}]; remove the duplicate")
        else:
            first_index[key] = index
    if problems:
        raise ApiKeysError(problems)
    return list(keys)


def parse_api_keys(raw: Any) -> list[str]:
    """The ``kaito-aks:apiKeys`` setting -> the keys, validated (:func:`validate_api_keys`).

    Accepted, and nothing else: a JSON list of strings (``'["sk-...","sk-..."]'``, what ``pulumi config set --secret
    apiKeys`` stores), the same list already decoded (YAML/structured config), or a string of keys separated by
    commas and/or newlines (blank entries and the spaces around a key are ignored). Anything else -- JSON that is
    not a list of strings, nested lists, numbers, oversized input -- raises :class:`ApiKeysError` (one line per
    problem, never a key, never a traceback).
    """
    if isinstance(raw, (list, tuple)):
        return validate_api_keys(list(raw))
    if not isinstance(raw, str):
        raise ApiKeysError(f"{SETTING}: {_kind(raw)}, not a list of keys; {_FORMATS}")
    if len(raw) > MAX_SETTING_CHARS:
        raise ApiKeysError(f"{SETTING}: {len(raw)} characters, more than {MAX_KEYS} keys of up to "
                           f"{KEY_MAX_LENGTH} characters can take; {_FORMATS}")
    text = raw.strip()
    if not text:
        raise ApiKeysError(f"{SETTING} is empty; set at least one key ({_NEW_KEY})")
    if text[0] in '[{"':
        # JSON (a key can't start with these characters). json's errors name a position, never the text.
        try:
            value = json.loads(text)
        except RecursionError:
            raise ApiKeysError(f"{SETTING}: JSON nested too deeply; {_FORMATS}") from None
        except ValueError as err:       # JSONDecodeError, or an integer too long to convert
            where = f" (line {err.lineno}, column {err.colno}: {err.msg})" if isinstance(err, json.JSONDecodeError) \
                else ""
            raise ApiKeysError(f"{SETTING}: not valid JSON{where}; {_FORMATS}") from None
        if not isinstance(value, list):
            raise ApiKeysError(f"{SETTING}: JSON {_kind(value)}, not a list of strings; {_FORMATS}")
        return validate_api_keys(value)
    return validate_api_keys([k.strip() for k in re.split(r"[,\n]", text) if k.strip()])


_BEARER = "[Bb][Ee][Aa][Rr][Ee][Rr]"    # the scheme is case-insensitive (RFC 7235); the key is not


def key_regex(key: str) -> str:
    """A PCRE that matches exactly ``key``. Of the characters a key may have (:data:`KEY_CHARS`) only ``.`` and ``+``
    are regex syntax outside a character class; each becomes a one-character class (``[.]``, ``[+]``), literal in
    any PCRE. No backslash or quote, so nginx's configuration parser passes it on unchanged."""
    if not key or not KEY_CHARS.issuperset(key):
        raise ApiKeysError(f"{SETTING}: a key contains a character other than {_ALLOWED}")
    return "".join(f"[{c}]" if c in ".+" else c for c in key)


def render_keys_map(keys: Iterable[str]) -> str:
    """The `map` entries that turn a valid Authorization header into the key's id. Secret: mount from a Secret.

    One case-sensitive regex per key (``~``): nginx compares plain `map` strings case-insensitively, which would
    let ``bearer SK-LIVE-...`` in as ``sk-live-...``. ``Bearer`` in any case, one or more spaces, then exactly the
    key (nginx strips spaces around a header value; a second Authorization header is a 400 before this runs).
    """
    keys = validate_api_keys(list(keys))
    return "".join(f'"~^{_BEARER} +{key_regex(key)}$" {key_id(key)};\n' for key in keys)


def keys_map_checksum(keys_map: str) -> str:
    """The pod-template annotation that rolls the gateway when the keys change (not secret: a hash prefix)."""
    return hashlib.sha256(keys_map.encode()).hexdigest()[:16]


def models_document(routes: Iterable[Route]) -> str:
    return json.dumps({
        "object": "list",
        "data": [{"id": r.name, "object": "model", "owned_by": "kaito-aks", "served_model": r.served_model}
                 for r in routes],
    })


def _error_body(message: str, type_: str, code: str) -> str:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


def _nginx_str(text: str) -> str:
    """Quote a string for an nginx directive argument."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# OpenAI (and KAITO runtime) API paths the access log may name; any other path is logged as "/-": a path is
# client-controlled text, and a client may put a key in it.
LOGGED_API_PATHS = ("/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
                    "/v1/rerank", "/v1/score", "/tokenize", "/detokenize", "/health", "/version", "/metrics",
                    "/chat")
LOGGED_METHODS = ("GET", "POST", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass(frozen=True)
class ErrorPage:
    """An error status nginx itself produces, and the OpenAI-style JSON the gateway answers with instead."""

    codes: tuple[int, ...]             # statuses nginx raises (error_page)
    status: int                        # status sent
    message: str
    type: str
    code: str

    @property
    def body(self) -> str:
        return _error_body(self.message, self.type, self.code)

    @property
    def uri(self) -> str:
        return f"{ERROR_PAGE_PREFIX}{self.status}"


ERROR_PAGE_PREFIX = "/_kaito_error/"
UNAUTHENTICATED_LOCATION = "/_kaito_unauthenticated"
NOT_FOUND = ErrorPage((404,), 404, "Unknown path. Models are served at /<model>/v1/...; GET /v1/models lists them.",
                      "invalid_request_error", "model_not_found")


def error_pages(limits: GatewayLimits) -> tuple[ErrorPage, ...]:
    """Every error nginx can raise itself, as OpenAI-style JSON. 403 only ever comes from the unauthenticated
    location's ``deny`` (sent as 401); 494 is nginx's "request header too large" (sent as 431); 408 is listed for
    completeness (nginx closes the connection instead of answering a timed-out request)."""
    return (
        ErrorPage((400,), 400, "Malformed HTTP request.", "invalid_request_error", "bad_request"),
        ErrorPage((403,), 401, "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
                  "invalid_request_error", "invalid_api_key"),
        NOT_FOUND,
        ErrorPage((405,), 405, "Method not allowed.", "invalid_request_error", "method_not_allowed"),
        ErrorPage((408,), 408, "The request was not received in time.", "invalid_request_error", "request_timeout"),
        ErrorPage((411,), 411, "A request body needs Content-Length or chunked encoding.", "invalid_request_error",
                  "length_required"),
        ErrorPage((413,), 413, f"Request body larger than {limits.max_body_kib} KiB.", "invalid_request_error",
                  "request_too_large"),
        ErrorPage((414,), 414, "Request URI too long.", "invalid_request_error", "uri_too_long"),
        ErrorPage((429,), 429, "Rate limit exceeded (per API key; per client address for failed authentication); "
                  "retry later.", "rate_limit_exceeded", "rate_limit_exceeded"),
        ErrorPage((494,), 431, "Request headers too large.", "invalid_request_error", "request_header_too_large"),
        ErrorPage((500,), 500, "Internal gateway error; retry later.", "server_error", "internal_error"),
        ErrorPage((501,), 501, "Not implemented (an unsupported Transfer-Encoding?).", "invalid_request_error",
                  "not_implemented"),
        ErrorPage((502, 503, 504), 503, "The model is not reachable right now; retry later.", "server_error",
                  "model_unavailable"),
        ErrorPage((505,), 505, "HTTP version not supported; use HTTP/1.1.", "invalid_request_error",
                  "http_version_not_supported"),
    )


def render_nginx_conf(
    routes: list[Route],
    replica_routes: list[Route],
    keys_map_path: str,
    limits: GatewayLimits = GatewayLimits(),
    listen: str = str(LISTEN_PORT),
    health_listen: str = str(HEALTH_PORT),
    temp_dir: str = "/tmp",
    pid_path: str = PID_PATH,
    access_log: str = "/dev/stdout",
    error_log: str = "/dev/stderr",
    status_listen: str | None = None,
    syslog_server: str | None = None,
) -> str:
    """nginx.conf for the gateway. Works on nginx 1.22 (Debian 12, the tests) and 1.28 (the image).

    A request goes through nginx's phases in this order: server rewrite (a request without a valid key is sent to
    one internal location, whatever its URI), find location, location rewrite, preaccess (``limit_req``: per key,
    or per client address for failed authentication), access (``deny`` there: the 401 comes *after* the rate
    limit), content (the proxy). Errors nginx raises itself are internal redirects to ``/_kaito_error/<status>``,
    which answer with OpenAI-style JSON.

    Metrics (both off unless given): ``status_listen`` adds a server with only ``stub_status`` (connections and
    request totals for nginx-prometheus-exporter; give it a loopback address), ``syslog_server`` sends every access
    log record also as a UDP syslog datagram to that address (mtail counts them, :data:`MTAIL_PROGRAM`). The datagram
    format is the access log's, ending in a newline: mtail splits datagrams on newlines, and nginx sends none itself.
    """
    burst = max(1, limits.rate_limit_per_minute // 6)
    unauth_burst = max(1, limits.unauthenticated_per_minute // 6)
    pages = error_pages(limits)

    def upstream(prefix: str, route: Route) -> str:
        servers = "\n".join(
            f"        server {s} max_fails={limits.max_fails} fail_timeout={limits.fail_timeout_seconds}s;"
            for s in route.servers)
        return f"    upstream {prefix}_{_ident(route.name)} {{\n{servers}\n        keepalive 16;\n    }}\n"

    def location(prefix: str, upstream_name: str) -> str:
        # `= <prefix>`: without it nginx answers `<prefix>` (no slash) with its own 301 HTML to `<prefix>/`.
        # $kaito_path is what the access log shows: the route, then the API path if it is a known one.
        return f"""        location = {prefix} {{
            return 404 {_nginx_str(NOT_FOUND.body)};
        }}
        location {prefix}/ {{
            set $kaito_path '{prefix}$kaito_api';
            limit_req zone=per_key burst={burst} nodelay;
            proxy_pass http://{upstream_name}/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $proxy_host;
            proxy_set_header Authorization "";
            proxy_set_header X-Request-Id $request_id;
            proxy_buffering off;
            proxy_cache off;
            proxy_connect_timeout {limits.connect_timeout_seconds}s;
            proxy_send_timeout {limits.read_timeout_seconds}s;
            proxy_read_timeout {limits.read_timeout_seconds}s;
            proxy_next_upstream error timeout http_502 http_503 http_504;
            proxy_next_upstream_tries 3;
        }}
"""

    def error_location(page: ErrorPage) -> str:
        extra = ("add_header WWW-Authenticate 'Bearer realm=\"kaito-aks\"' always; " if page.status == 401 else "")
        return (f"        location = {page.uri} {{ internal; {extra}"
                f"return {page.status} {_nginx_str(page.body)}; }}\n")

    upstreams = "".join(upstream("model", r) for r in routes) + "".join(upstream("replica", r) for r in replica_routes)
    locations = "".join(location(model_prefix(r.name), f"model_{_ident(r.name)}") for r in routes)
    locations += "".join(location(replica_prefix(r.name), f"replica_{_ident(r.name)}") for r in replica_routes)
    error_page_lines = "".join(f"        error_page {' '.join(map(str, p.codes))} = {p.uri};\n" for p in pages)
    error_locations = "".join(error_location(p) for p in pages)
    api_paths = "".join(f'        "~^(?:/_replicas)?(?:/[^/]+)?{re.escape(p)}$" {p};\n' for p in LOGGED_API_PATHS)
    methods = "".join(f"        {m} {m};\n" for m in LOGGED_METHODS)
    syslog_log = ""
    if syslog_server:
        # the same fields, plus the newline mtail needs; a datagram to a closed port is dropped (error_log is crit)
        syslog_log = (
            "    log_format kaito_aks_dgram escape=json "
            "'{\"time\":\"$time_iso8601\",\"client\":\"$remote_addr\",\"key\":\"$api_key_id\",'\n"
            "        '\"method\":\"$kaito_method\",\"path\":\"$kaito_logged_path\",\"status\":$status,"
            "\"bytes\":$body_bytes_sent,'\n"
            "        '\"seconds\":$request_time,\"upstream\":\"$upstream_addr\","
            "\"upstream_status\":\"$upstream_status\",'\n"
            "        '\"request_id\":\"$request_id\"}\\n';\n"
            f"    access_log syslog:server={syslog_server},tag=kaito_gateway,nohostname kaito_aks_dgram;\n")
    status_server = ""
    if status_listen:
        status_server = f"""
    server {{
        listen {status_listen};
        access_log off;
        location = /stub_status {{
            stub_status;
        }}
        location / {{
            return 404 {_nginx_str(NOT_FOUND.body)};
        }}
    }}
"""
    return f"""# Generated by kaito-aks (infra/gateway.py). Do not edit: change the stack settings instead.
worker_processes auto;
pid {pid_path};
# a graceful quit or reload lets in-flight requests (long streams too) finish, but never longer than one may last
worker_shutdown_timeout {limits.read_timeout_seconds + limits.connect_timeout_seconds}s;
# crit: nginx's own failures only. Every request-scoped message (limit_req, 413, upstream errors: error/warn;
# malformed requests, duplicate headers: info) carries the request line or a header, where a key can be.
error_log {error_log} crit;

events {{
    worker_connections 2048;
}}

http {{
    server_tokens off;
    types {{ }}                          # no types by file extension: /x.html gets JSON too
    default_type application/json;
    absolute_redirect off;              # a redirect never names the pod's address or port
    uninitialized_variable_warn off;    # $kaito_path is unset for requests no route matched
    client_body_temp_path {temp_dir}/client_body;
    proxy_temp_path {temp_dir}/proxy;
    fastcgi_temp_path {temp_dir}/fastcgi;
    uwsgi_temp_path {temp_dir}/uwsgi;
    scgi_temp_path {temp_dir}/scgi;

    # Authorization header -> key id; empty when absent or unknown. The map file is mounted from a Secret.
    map $http_authorization $api_key_id {{
        default "";
        include {keys_map_path};
    }}

    # The access log holds no client text that could be a key: the key's id, a known method, the route the
    # location matched and a known API path (else "-"); never $request, $args, $request_uri or $uri.
    map $request_method $kaito_method {{
        default OTHER;
{methods}    }}
    map $uri $kaito_api {{
        default /-;
{api_paths}    }}
    map $kaito_path $kaito_logged_path {{
        "" /-;
        default $kaito_path;
    }}
    log_format kaito_aks escape=json '{{"time":"$time_iso8601","client":"$remote_addr","key":"$api_key_id",'
        '"method":"$kaito_method","path":"$kaito_logged_path","status":$status,"bytes":$body_bytes_sent,'
        '"seconds":$request_time,"upstream":"$upstream_addr","upstream_status":"$upstream_status",'
        '"request_id":"$request_id"}}';
    access_log {access_log} kaito_aks;
{syslog_log}
    limit_req_zone $api_key_id zone=per_key:10m rate={limits.rate_limit_per_minute}r/m;
    # Failed authentication, per client address (the Service keeps client addresses: externalTrafficPolicy Local).
    limit_req_zone $binary_remote_addr zone=unauthenticated:10m rate={limits.unauthenticated_per_minute}r/m;
    limit_req_status 429;
    limit_req_log_level info;
    client_max_body_size {limits.max_body_kib}k;
    client_body_buffer_size {limits.max_body_kib}k;

{upstreams}
    server {{
        listen {listen};

        # Errors nginx raises itself become JSON. URIs, not named locations: nginx can't redirect a request whose
        # URI it couldn't parse (400, 414) to a named location.
{error_page_lines}
        # No valid key: a `return 401` here would run before limit_req (rewrite phase < preaccess), so failed
        # attempts would never be rate limited; send them to one internal location instead, whatever the URI.
        # Error pages are exempt: their internal redirect runs this again, and a request that failed before its
        # headers were read (414) has no key yet. `set`, not `map`: nginx caches a map's value per request.
        set $kaito_unauthenticated "";
        if ($api_key_id = "") {{
            set $kaito_unauthenticated 1;
        }}
        if ($uri ~ ^{ERROR_PAGE_PREFIX}) {{
            set $kaito_unauthenticated "";
        }}
        if ($kaito_unauthenticated) {{
            rewrite ^ {UNAUTHENTICATED_LOCATION}? last;
        }}

        location = {UNAUTHENTICATED_LOCATION} {{
            internal;
            limit_req zone=unauthenticated burst={unauth_burst} nodelay;
            deny all;                   # access phase, after limit_req: 403, answered as 401
        }}

        location = /v1/models {{
            set $kaito_path /v1/models;
            return 200 {_nginx_str(models_document(routes))};
        }}

{locations}
        location / {{
            return 404 {_nginx_str(NOT_FOUND.body)};
        }}

{error_locations}    }}

    server {{
        listen {health_listen};
        access_log off;
        location = /healthz {{
            return 200 '{{"status":"ok"}}';
        }}
    }}
{status_server}}}
"""


# mtail (https://google.github.io/mtail/): one counter per status, key id and route from each access-log record.
# route: the model's name, `_replicas/<slot>`, `v1` (GET /v1/models) or `-` (no route: unknown path, no valid
# key). key: the key's id (a hash prefix, never the key), `-` without a valid key. Only counters: Debian's mtail
# (3.0.0~rc50, the tests) drops histogram observations below the first bucket (fixed upstream in 3.0.0-rc54);
# latency comes from vLLM's own histograms.
MTAIL_PROGRAM = r"""# Generated by kaito-aks (infra/gateway.py): the gateway's access log -> request counts.
counter kaito_gateway_requests_total by status, key, route

/"key":"(?P<key>[^"]*)","method":"[A-Z]+","path":"\/(?P<route>_replicas\/[^\/"]+|[^\/"]*)[^"]*","status":(?P<status>\d{3}),/ {
  $key == "" {
    kaito_gateway_requests_total[$status]["-"][$route]++
  } else {
    kaito_gateway_requests_total[$status][$key][$route]++
  }
}
"""


def metrics_enabled(plan: Plan) -> bool:
    """The gateway exports metrics (stub_status + exporter, syslog + mtail) when the stack's observability is on."""
    from infra.observability import enabled

    return enabled(plan.settings)


def _ident(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")


# ---------------------------------------------------------------------------------------------------------
# Kubernetes objects

def routes_for(plan: Plan) -> tuple[list[Route], list[Route]]:
    """Model routes (balanced over replicas) and per-replica routes, from the plan's endpoint Services."""
    from infra.manifests import SERVICE_PORT, endpoint_service_name

    ns = plan.settings.namespace
    host = lambda r: f"{endpoint_service_name(r)}.{ns}.svc.cluster.local:{SERVICE_PORT}"
    models = [Route(name, tuple(host(r) for r in plan.replicas_of(name)), plan.replicas_of(name)[0].served_model)
              for name in plan.model_names]
    # per-replica routes by the replica's stable name: a surge rollout moves the endpoint Service, not the route
    replicas = [Route(r.slot, (host(r),), r.served_model) for r in plan.replicas]
    return models, replicas


def limits_for(plan: Plan) -> GatewayLimits:
    g = plan.settings.gateway
    return GatewayLimits(rate_limit_per_minute=g.rate_limit_per_minute, max_body_kib=g.max_body_kib,
                         read_timeout_seconds=g.read_timeout_seconds,
                         unauthenticated_per_minute=g.unauthenticated_per_minute)


def nginx_conf_for(plan: Plan) -> str:
    models, replicas = routes_for(plan)
    metrics = metrics_enabled(plan)
    return render_nginx_conf(models, replicas, f"{CONF_DIR}/keys/{KEYS_FILE}", limits_for(plan),
                             status_listen=f"127.0.0.1:{STATUS_PORT}" if metrics else None,
                             syslog_server=f"127.0.0.1:{SYSLOG_PORT}" if metrics else None)


def config_map(plan: Plan) -> dict:
    """nginx.conf, and with metrics on the mtail program (one ConfigMap: the pod mounts each file where it's read)."""
    data = {"nginx.conf": nginx_conf_for(plan)}
    if metrics_enabled(plan):
        data[MTAIL_PROGRAM_FILE] = MTAIL_PROGRAM
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"{NAME}-conf", "namespace": plan.settings.namespace, "labels": pod_labels()},
        "data": data,
    }


def keys_secret(plan: Plan, keys_map: Any) -> dict:
    """The Secret holding the rendered keys map (``render_keys_map``; a Pulumi secret Output in the program)."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": f"{NAME}-keys", "namespace": plan.settings.namespace, "labels": pod_labels()},
        "stringData": {KEYS_FILE: keys_map},
    }


def keys_secret_from_setting(plan: Plan, raw_setting_value: Any) -> dict:
    """The keys Secret from a value in the ``kaito-aks:apiKeys`` format (a JSON list, or comma/newline-separated
    keys), validated by :func:`parse_api_keys` (:class:`ApiKeysError` otherwise). For ``--manifests`` users:
    the Secret is only ever rendered from real keys, never from a placeholder for an internal format."""
    return keys_secret(plan, render_keys_map(parse_api_keys(raw_setting_value)))


def rollout_annotations(keys_map: str) -> dict[str, str]:
    """Pod-template annotations that change when the keys do (``kubectl patch`` them to roll the gateway)."""
    return {"kaito-aks/keys-sha256": keys_map_checksum(keys_map)}


def deployment(plan: Plan, keys_checksum: Any = "") -> dict:
    """2+ nginx replicas, non-root, read-only root FS; a key or config change rolls them one at a time."""
    g = plan.settings.gateway
    # nginx.conf (and the mtail program): a change rolls the pods. Without metrics, exactly nginx.conf's hash.
    conf_sha = hashlib.sha256("".join(config_map(plan)["data"].values()).encode()).hexdigest()[:16]
    probe = {"httpGet": {"path": "/healthz", "port": HEALTH_PORT}, "periodSeconds": 5}
    containers = [{
        "name": "nginx",
        "image": IMAGE,
        "command": ["nginx", "-c", f"{CONF_DIR}/nginx.conf", "-g", "daemon off;"],
        "ports": [{"name": "http", "containerPort": LISTEN_PORT},
                  {"name": "health", "containerPort": HEALTH_PORT}],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "failureThreshold": 3},
        "lifecycle": {"preStop": {"exec": {"command": drain_command(f"{CONF_DIR}/nginx.conf", PID_PATH)}}},
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                      "limits": {"cpu": "1", "memory": "256Mi"}},
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "conf", "mountPath": CONF_DIR, "readOnly": True},
                         {"name": "keys", "mountPath": f"{CONF_DIR}/keys", "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }]
    volumes: list[dict[str, Any]] = [{"name": "conf", "configMap": {"name": f"{NAME}-conf"}},
                                     {"name": "keys", "secret": {"secretName": f"{NAME}-keys"}},
                                     {"name": "tmp", "emptyDir": {}}]
    if metrics_enabled(plan):
        containers.extend(metrics_containers())
        volumes.append({"name": "mtail", "configMap": {"name": f"{NAME}-conf", "items": [
            {"key": MTAIL_PROGRAM_FILE, "path": MTAIL_PROGRAM_FILE}]}})
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": plan.settings.namespace, "labels": pod_labels()},
        "spec": {
            "replicas": g.replicas,
            "selector": {"matchLabels": pod_labels()},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": pod_labels(),
                             "annotations": {"kaito-aks/conf-sha256": conf_sha, "kaito-aks/keys-sha256": keys_checksum}},
                "spec": {
                    "terminationGracePeriodSeconds": termination_grace_seconds(g.read_timeout_seconds),
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                                   "whenUnsatisfiable": "ScheduleAnyway",
                                                   "labelSelector": {"matchLabels": pod_labels()}}],
                    "containers": containers,
                    "volumes": volumes,
                },
            },
        },
    }


def drain_command(conf_path: str, pid_path: str, delay_seconds: int = DRAIN_DELAY_SECONDS) -> list[str]:
    """The nginx container's preStop hook: keep serving until the pod is out of the load balancer, quit gracefully,
    and return only once nginx has exited (the kubelet sends SIGTERM, nginx's *fast* shutdown, when the hook
    returns; by then there is nothing left to cut)."""
    return ["/bin/sh", "-c",
            f"sleep {delay_seconds}; nginx -c {conf_path} -s quit; while [ -e {pid_path} ]; do sleep 1; done"]


def termination_grace_seconds(read_timeout_seconds: int) -> int:
    """Long enough for the drain delay and the longest request the gateway lets run (its read timeout)."""
    return DRAIN_DELAY_SECONDS + read_timeout_seconds + 15


def _container_security() -> dict:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def metrics_containers() -> list[dict]:
    """The gateway pod's metrics sidecars: nginx-prometheus-exporter reads stub_status, mtail counts the access log
    (sent to it as syslog datagrams over the pod's loopback). Scraped by managed Prometheus (a PodMonitor, infra/
    observability.py) on their named ports, which a NetworkPolicy opens to the scraper only."""
    small = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}
    return [
        {"name": "nginx-exporter", "image": EXPORTER_IMAGE,
         "args": [f"--nginx.scrape-uri=http://127.0.0.1:{STATUS_PORT}/stub_status",
                  f"--web.listen-address=:{EXPORTER_PORT}"],
         "ports": [{"name": "nginx-metrics", "containerPort": EXPORTER_PORT}],
         "resources": small, "securityContext": _container_security()},
        {"name": "mtail", "image": MTAIL_IMAGE,
         "args": ["-progs", "/etc/mtail", "-logs", f"udp://127.0.0.1:{SYSLOG_PORT}", "-port", str(MTAIL_PORT),
                  "-logtostderr"],
         "ports": [{"name": "log-metrics", "containerPort": MTAIL_PORT}],
         "resources": small, "securityContext": _container_security(),
         "volumeMounts": [{"name": "mtail", "mountPath": "/etc/mtail", "readOnly": True}]},
    ]


def service(plan: Plan) -> dict:
    from infra.manifests import load_balancer_annotations, load_balancer_spec

    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": plan.settings.namespace, "labels": pod_labels(),
                     "annotations": {"pulumi.com/timeoutSeconds": "1200", **load_balancer_annotations(plan, suffix="")}},
        "spec": {**load_balancer_spec(plan), "selector": pod_labels(),
                 "ports": [{"name": "http", "port": 80, "targetPort": LISTEN_PORT, "protocol": "TCP"}]},
    }


def network_policy(plan: Plan) -> dict:
    from infra.manifests import allowed_source_ranges

    ranges = allowed_source_ranges(plan) or ("0.0.0.0/0",)
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": f"{NAME}-ingress", "namespace": plan.settings.namespace, "labels": pod_labels()},
        "spec": {"podSelector": {"matchLabels": pod_labels()}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"ipBlock": {"cidr": c}} for c in ranges],
                              "ports": [{"protocol": "TCP", "port": LISTEN_PORT}]}]},
    }


def disruption_budget(plan: Plan) -> dict:
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": NAME, "namespace": plan.settings.namespace, "labels": pod_labels()},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": pod_labels()}},
    }


def objects(plan: Plan, keys_map: Any = None) -> list[dict]:
    """The gateway's objects in apply order; without ``keys_map`` no keys Secret (``keys_secret_from_setting``
    renders it separately, from the real keys)."""
    secret = [keys_secret(plan, keys_map)] if keys_map is not None else []
    return [config_map(plan), *secret, deployment(plan), disruption_budget(plan), service(plan), network_policy(plan)]


def namespace_guardrails(plan: Plan) -> list[dict]:
    """The seed's "resource quotas": GPUs capped at what the plan deploys, load balancers at what it exposes,
    and default requests for containers that set none (requests only: a default *limit* could OOM-kill vLLM)."""
    ns = plan.settings.namespace
    gpus = sum(r.nodes * r.gpus_per_node for r in plan.replicas)
    lbs = 1 if plan.settings.gateway_enabled else len(plan.replicas)
    return [
        {"apiVersion": "v1", "kind": "ResourceQuota",
         "metadata": {"name": "kaito-aks-quota", "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "kaito-aks"}},
         "spec": {"hard": {"requests.nvidia.com/gpu": str(gpus), "services.loadbalancers": str(lbs),
                           "pods": str(20 + 4 * len(plan.replicas))}}},
        {"apiVersion": "v1", "kind": "LimitRange",
         "metadata": {"name": "kaito-aks-defaults", "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "kaito-aks"}},
         "spec": {"limits": [{"type": "Container", "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}]}},
    ]
