"""The gateway's nginx configuration as text: pure functions of routes, limits and paths (no Plan).

KAITO's inference endpoint has no authentication. The gateway gives a stack one address where each model is
served at ``/<model-name>/v1/...`` (so an OpenAI client uses ``base_url=http://<address>/<model-name>/v1``),
checks ``Authorization: Bearer <key>`` against the stack's API keys (the key byte for byte, the scheme in any
case), load-balances a model's replicas with passive health checks, streams responses unbuffered, limits request
size, the request rate per key and failed authentications per client address, answers every error of its own
in OpenAI's JSON shape, and logs without secrets (no request line, query string or client-chosen path text in
any log). ``GET /v1/models`` at the root lists the stack's models; ``/_replicas/<slot>/v1/...`` reaches one
replica (for the post-deploy check and on-call).

``render_nginx_conf`` is exactly what the tests run under a real nginx.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from infra.api_keys import KEY_CHARS, KEY_CHARS_TEXT, SETTING, ApiKeysError, key_id, validate_api_keys

LISTEN_PORT = 8080                     # API traffic (non-root: no port < 1024)


HEALTH_PORT = 8081                     # probes, unauthenticated, never exposed by the Service


# Metrics (with observability on, README "Observability"): two sidecars in the gateway pod, on its loopback.
STATUS_PORT = 8082                     # nginx stub_status, 127.0.0.1 only: read by the exporter sidecar


SYSLOG_PORT = 5140                     # access-log datagrams (UDP), 127.0.0.1 only: read by mtail


PID_PATH = "/tmp/nginx.pid"            # the root filesystem is read-only


REQUESTS_METRIC = "kaito_gateway_requests_total"         # mtail's counter: {status, key, route}


@dataclass(frozen=True)
class Route:
    """A path prefix and the upstream servers (host:port) behind it."""

    name: str                          # path segment: /<name>/v1/...
    servers: tuple[str, ...]
    served_model: str                  # what the upstream answers to (informational, in /v1/models)


@dataclass(frozen=True, kw_only=True)
class GatewayLimits:
    """The first four are the stack's (``gateway.*`` settings, where their defaults live); the rest are fixed."""

    rate_limit_per_minute: int         # per API key
    unauthenticated_per_minute: int    # failed authentications per client address
    max_body_kib: int
    read_timeout_seconds: int
    connect_timeout_seconds: int = 5
    max_fails: int = 1                 # passive health check: failures before a replica is skipped...
    fail_timeout_seconds: int = 10     # ...for this long


def model_prefix(model_name: str) -> str:
    """Where a model lives on the gateway: OpenAI clients use base_url = <gateway><prefix>/v1."""
    return f"/{model_name}"


def replica_prefix(slot: str) -> str:
    """One replica by its stable slot name, bypassing the load balancing (the post-deploy check, on-call)."""
    return f"/_replicas/{slot}"


_BEARER = "[Bb][Ee][Aa][Rr][Ee][Rr]"    # the scheme is case-insensitive (RFC 7235); the key is not


def key_regex(key: str) -> str:
    """A PCRE that matches exactly ``key``. Of the characters a key may have (:data:`KEY_CHARS`) only ``.`` and ``+``
    are regex syntax outside a character class; each becomes a one-character class (``[.]``, ``[+]``), literal in
    any PCRE. No backslash or quote, so nginx's configuration parser passes it on unchanged."""
    if not key or not KEY_CHARS.issuperset(key):
        raise ApiKeysError(f"{SETTING}: a key contains a character other than {KEY_CHARS_TEXT}")
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
    limits: GatewayLimits,
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
    header = ("# Generated by kaito-aks (infra/render/gateway_objects.py). Do not edit: change the stack settings "
              "instead.")
    return f"""{header}
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
MTAIL_PROGRAM = r"""# Generated by kaito-aks (infra/render/nginx.py): the gateway's access log -> request counts.
counter kaito_gateway_requests_total by status, key, route

/"key":"(?P<key>[^"]*)","method":"[A-Z]+","path":"\/(?P<route>_replicas\/[^\/"]+|[^\/"]*)[^"]*","status":(?P<status>\d{3}),/ {
  $key == "" {
    kaito_gateway_requests_total[$status]["-"][$route]++
  } else {
    kaito_gateway_requests_total[$status][$key][$route]++
  }
}
"""  # noqa: E501 -- mtail's program text: the record's pattern is one regular expression, on one line


def _ident(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")
