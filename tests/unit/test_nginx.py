"""The gateway's API-key handling and generated nginx configuration, as text: no nginx needed.

What nginx does with this configuration is tested under a real nginx in tests/integration/test_gateway_nginx.py;
these tests pin the properties that must hold for every stack (every proxied location limited and stripping the
key, no client text in the log format, the key check before any route, ...) and the `kaito-aks:apiKeys` rules.
"""
from __future__ import annotations

import json
import re

import pytest

from infra import api_keys
from infra.api_keys import (
    KEY_CHARS,
    KEY_MAX_LENGTH,
    KEY_MIN_LENGTH,
    MAX_KEYS,
    ApiKeysError,
    key_id,
    parse_api_keys,
    validate_api_keys,
)
from infra.errors import UserError
from infra.plan import build_plan
from infra.render import gateway_objects, nginx
from infra.render.gateway_objects import keys_secret_from_setting
from infra.render.nginx import Route, key_regex, render_keys_map, render_nginx_conf
from infra.settings import load_stack_file
from tests.servers.nginx import stack_limits

MARK = "SeCrEtMaRk"           # in every key below: an error message must never contain it, in any case
KEY_A = f"sk-{MARK}-0123456789"
KEY_B = f"sk-{MARK}-abcdefghij"


def problems(raw) -> list[str]:
    with pytest.raises(ApiKeysError) as err:
        parse_api_keys(raw)
    lines = err.value.lines
    assert lines and all(isinstance(line, str) and "\n" not in line for line in lines)
    assert all(line.startswith("kaito-aks:apiKeys") for line in lines), lines
    assert MARK.lower() not in str(err.value).lower(), "an error message quotes a key"
    return lines


# ---------------------------------------------------------------------------------------------------------
# kaito-aks:apiKeys: the documented formats, and nothing else

@pytest.mark.parametrize("raw", [
    json.dumps([KEY_A, KEY_B]),
    f' [\n  "{KEY_A}",\n  "{KEY_B}"\n] \n',
    f"{KEY_A},{KEY_B}",
    f"{KEY_A}, {KEY_B},",
    f"{KEY_A}\n{KEY_B}\n",
    f"{KEY_A}\r\n{KEY_B}\r\n",
    f"\n {KEY_A} ,\n\n{KEY_B}\n",
    [KEY_A, KEY_B],
    (KEY_A, KEY_B),
])
def test_documented_formats(raw):
    assert parse_api_keys(raw) == [KEY_A, KEY_B]


def test_every_allowed_character_and_the_length_bounds():
    every = "".join(sorted(KEY_CHARS))
    keys = [every, "x" * KEY_MIN_LENGTH, "y" * KEY_MAX_LENGTH]
    assert parse_api_keys(json.dumps(keys)) == keys
    assert parse_api_keys(["k" * KEY_MIN_LENGTH + str(i) for i in range(MAX_KEYS)])[-1].endswith("999")


@pytest.mark.parametrize("raw,phrase", [
    (json.dumps([KEY_A, None]), "kaito-aks:apiKeys[1]: null, not a string"),
    (json.dumps([KEY_A, True]), "kaito-aks:apiKeys[1]: true/false, not a string"),
    (json.dumps([KEY_A, 12345678901234567890]), "kaito-aks:apiKeys[1]: a number, not a string"),
    (json.dumps([[KEY_A]]), "kaito-aks:apiKeys[0]: a list, not a string"),
    (json.dumps([{"key": KEY_A}]), "kaito-aks:apiKeys[0]: an object, not a string"),
    (json.dumps({"key": KEY_A}), "kaito-aks:apiKeys: JSON an object, not a list of strings"),
    (json.dumps(KEY_A), "kaito-aks:apiKeys: JSON a string, not a list of strings"),
    (f'["{KEY_A}", "{KEY_B}"', "kaito-aks:apiKeys: not valid JSON (line 1"),
    ("[" + "7" * 5000 + "]", "kaito-aks:apiKeys: not valid JSON;"),
    ("[" * 100_000, "kaito-aks:apiKeys: JSON nested too deeply"),
    ("[" * 400_000, "characters, more than 1000 keys"),
    (MARK * 40_000, "characters, more than 1000 keys"),
    ("", "kaito-aks:apiKeys is empty"),
    (" \n ", "kaito-aks:apiKeys is empty"),
    (",\n,", "kaito-aks:apiKeys is empty"),
    ("[]", "kaito-aks:apiKeys is empty"),
    (None, "kaito-aks:apiKeys: null, not a list of keys"),
    (42, "kaito-aks:apiKeys: a number, not a list of keys"),
    ({"key": KEY_A}, "kaito-aks:apiKeys: an object, not a list of keys"),
    (KEY_A.encode(), "kaito-aks:apiKeys: a bytes, not a list of keys"),
    ("sk-1", "kaito-aks:apiKeys[0]: is shorter than 16 characters"),
    (json.dumps([KEY_A, f"sk-{MARK}"]), "kaito-aks:apiKeys[1]: is shorter than 16 characters"),
    (json.dumps([f"sk-{MARK}-" + "x" * 250]), "kaito-aks:apiKeys[0]: is longer than 256 characters"),
    (json.dumps([f"sk-{MARK} 0123456789"]), "kaito-aks:apiKeys[0]: contains whitespace"),
    (json.dumps([f" {KEY_A}"]), "kaito-aks:apiKeys[0]: contains whitespace"),
    (json.dumps([f"{KEY_A}\n"]), "kaito-aks:apiKeys[0]: contains whitespace"),
    (json.dumps([f"{KEY_A}\t"]), "kaito-aks:apiKeys[0]: contains whitespace"),
    (json.dumps([f"{KEY_A}\u00a0"]), "kaito-aks:apiKeys[0]: contains whitespace"),
    (f"{KEY_A} {KEY_B}", "kaito-aks:apiKeys[0]: contains whitespace"),
    (json.dumps([f"{KEY_A}\x00"]), "kaito-aks:apiKeys[0]: contains a control character"),
    (json.dumps([f"{KEY_A}\x7f"]), "kaito-aks:apiKeys[0]: contains a control character"),
    (f"{KEY_A}\x1b[0m", "kaito-aks:apiKeys[0]: contains a control character"),
    *[(json.dumps([f"{KEY_A}{c}x"]), "kaito-aks:apiKeys[0]: contains a character other than")
      for c in "\"'\\;{}$#%&*()[]<>!?@^`|:,é\u00df\uff10\u0130"],
    (json.dumps([KEY_A, KEY_B, KEY_A]), "kaito-aks:apiKeys[2]: the same key as kaito-aks:apiKeys[0]"),
    (json.dumps([f"k{MARK}{i:06}" for i in range(MAX_KEYS + 1)]), "kaito-aks:apiKeys: 1001 keys; at most 1000"),
])
def test_anything_else_is_one_line_naming_the_entry_never_the_key(raw, phrase):
    lines = problems(raw)
    assert any(phrase in line for line in lines), lines


def test_every_bad_entry_is_named():
    lines = problems(json.dumps([KEY_A, None, "short", KEY_B, KEY_A, f"{MARK} x" * 3]))
    assert [line.split(":")[1].split("]")[0] for line in lines] == ["apiKeys[1", "apiKeys[2", "apiKeys[4", "apiKeys[5"]


def test_the_error_is_a_value_error_and_a_user_error():
    with pytest.raises(ApiKeysError) as err:
        validate_api_keys(["short"])
    assert isinstance(err.value, ValueError) and isinstance(err.value, UserError) and err.value.exit_code == 2
    assert err.value.lines == [f"kaito-aks:apiKeys[0]: is shorter than {KEY_MIN_LENGTH} characters: too easy to "
                               f"guess; use a random key, {api_keys._NEW_KEY}"]


# ---------------------------------------------------------------------------------------------------------
# The keys map: one exact, case-sensitive regex per key

def map_entries(keys) -> list[tuple[str, str]]:
    text = render_keys_map(keys)
    entries = re.findall(r'^"~(.*)" (k[0-9a-f]{12});$', text, re.M)
    assert len(entries) == len(text.splitlines()) == len(keys), text
    return entries


def matches(regex: str, header: str) -> bool:
    # The map's regexes use only what PCRE and Python's re read alike: literals, one-character classes, ^ $ +.
    return re.search(regex, header) is not None


def test_the_map_accepts_the_exact_key_with_any_case_of_bearer():
    keys = [KEY_A, "".join(sorted(KEY_CHARS))]
    for (regex, kid), key in zip(map_entries(keys), keys, strict=True):
        assert kid == key_id(key)
        for header in (f"Bearer {key}", f"bearer {key}", f"BEARER {key}", f"bEaReR   {key}"):
            assert matches(regex, header), header


def test_no_key_matches_another_string():
    """Escaping is complete: for a key holding every allowed character, no other string of one edit away (a
    substitution by any allowed character, a deletion, an insertion, a case change) matches its regex."""
    key = "".join(sorted(KEY_CHARS))
    ((regex, _),) = map_entries([key])
    alphabet = sorted(KEY_CHARS) + [" ", "\t", "\n"]
    variants = {key.upper(), key.lower(), key.swapcase(), key + "\n" + key}
    for i in range(len(key) + 1):
        variants.add(key[:i] + key[i + 1:])
        for c in alphabet:
            variants.add(key[:i] + c + key[i + 1:])
            variants.add(key[:i] + c + key[i:])
    variants.discard(key)
    assert len(variants) > 9_000
    # accepted by design: more spaces after the scheme; a final newline, which PCRE's `$` allows before but an
    # HTTP header value can't hold (LF ends the header line)
    allowed = {v for v in variants if v.startswith(" ") or v.endswith("\n")}
    assert not [v for v in variants - allowed if matches(regex, f"Bearer {v}")]
    for header in (key, f"Basic {key}", f"Bearer{key}", f"Bearer\t{key}", f"Bearer {key} {key}", "Bearer ",
                   f"Bearer {key},Bearer {key}", f"X Bearer {key}"):
        assert not matches(regex, header), header


def test_key_regex_holds_no_regex_or_nginx_syntax():
    regex = key_regex("".join(sorted(KEY_CHARS)))
    assert re.fullmatch(r"(?:[A-Za-z0-9_~/=-]|\[[.+]\])+", regex), regex
    with pytest.raises(ApiKeysError) as err:
        key_regex("sk-live-0123456789.*")
    # the one line names the setting and the characters a key may have, and never the key
    assert str(err.value) == f"kaito-aks:apiKeys: a key contains a character other than {api_keys.KEY_CHARS_TEXT}"


def test_the_keys_checksum_annotation_is_a_short_hash_that_follows_the_keys():
    # not secret (a 64-bit prefix of a hash of the map) and short enough to read in `kubectl describe`
    one, two = render_keys_map([KEY_A]), render_keys_map([KEY_A + "x"])
    a, b = nginx.keys_map_checksum(one), nginx.keys_map_checksum(two)
    assert re.fullmatch(r"[0-9a-f]{16}", a) and re.fullmatch(r"[0-9a-f]{16}", b)
    assert a != b and a == nginx.keys_map_checksum(one)


@pytest.mark.parametrize("keys", [["short"], [KEY_A, KEY_A], [KEY_A, None], [f"{KEY_A} x"], [], [f'{KEY_A}"']])
def test_render_keys_map_validates(keys):
    with pytest.raises(ApiKeysError) as err:
        render_keys_map(keys)
    assert MARK.lower() not in str(err.value).lower()


# ---------------------------------------------------------------------------------------------------------
# The nginx configuration

ROUTES = [Route("tiny", ("10.0.0.1:80", "10.0.0.2:80"), "tiny-llama"), Route("m.2", ("10.0.0.3:80",), "m2")]
REPLICAS = [Route("tiny", ("10.0.0.1:80",), "tiny-llama"), Route("tiny-r1", ("10.0.0.2:80",), "tiny-llama"),
            Route("m.2", ("10.0.0.3:80",), "m2")]
CONF = render_nginx_conf(ROUTES, REPLICAS, "/keys/api-keys.map", stack_limits(rate_limit_per_minute=120,
                                                                             unauthenticated_per_minute=30))


def blocks(conf: str, header: str) -> dict[str, str]:
    """Bodies of the blocks ``<header> <args> { ... }``, by args; braces inside quoted strings don't count."""
    found = {}
    for m in re.finditer(rf"(?:^|[;{{]|\n)\s*{header} ([^{{;\n]+?) \{{", conf):
        depth, i, quote = 1, m.end(), None
        while depth:
            c = conf[i]
            if quote:
                if c == "\\":
                    i += 1
                elif c == quote:
                    quote = None
            elif c in "'\"":
                quote = c
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            i += 1
        found[m.group(1)] = conf[m.end():i - 1]
    return found


def server_block(conf: str) -> str:
    start = conf.index("    server {")
    return conf[start:conf.index("    server {", start + 1)]


def test_every_proxied_location_limits_per_key_and_strips_the_key():
    locations = {k: v for k, v in blocks(CONF, "location").items() if "proxy_pass" in v}
    expected = {f"/{r.name}/" for r in ROUTES} | {f"/_replicas/{r.name}/" for r in REPLICAS}
    assert set(locations) == expected
    for path, body in locations.items():
        assert "limit_req zone=per_key burst=20 nodelay;" in body, path
        assert 'proxy_set_header Authorization "";' in body, path
    assert "limit_req_zone $api_key_id zone=per_key:10m rate=120r/m;" in CONF


@pytest.mark.parametrize("per_minute", [1, 5])
def test_a_rate_below_six_a_minute_still_lets_one_request_through_at_once(per_minute):
    # the burst is a sixth of a minute's requests; below 6 a minute that rounds to 0, which would refuse a second
    # request inside the same interval outright, so it is at least 1
    conf = render_nginx_conf(ROUTES, REPLICAS, "/keys/api-keys.map",
                             stack_limits(rate_limit_per_minute=per_minute, unauthenticated_per_minute=per_minute))
    assert "limit_req zone=per_key burst=1 nodelay;" in conf
    assert "limit_req zone=unauthenticated burst=1 nodelay;" in conf


def test_requests_without_a_valid_key_are_rate_limited_per_client_then_401():
    server = server_block(CONF)
    # the key check runs at the server level, before any location: no route can forget it
    check, first_location = server.index('if ($api_key_id = "")'), server.index("\n        location ")
    assert check < first_location
    assert "rewrite ^ /_kaito_unauthenticated? last;" in server[check:first_location]
    unauth = blocks(CONF, "location")["= /_kaito_unauthenticated"]
    assert re.findall(r"\S[^;]*;", unauth) == ["internal;", "limit_req zone=unauthenticated burst=5 nodelay;",
                                               "deny all;"]
    assert "limit_req_zone $binary_remote_addr zone=unauthenticated:10m rate=30r/m;" in CONF
    assert "error_page 403 = /_kaito_error/401;" in server
    # the 401 is sent from the error page only, after limit_req: never from the rewrite phase
    code = re.sub(r"#.*", "", CONF)
    assert len(re.findall(r"return 401", code)) == 1
    assert [k for k, v in blocks(code, "location").items() if "return 401" in v] == ["= /_kaito_error/401"]


def test_the_key_map_is_included_from_the_secret_and_defaults_to_no_key():
    (body,) = [v for k, v in blocks(CONF, "map").items() if k == "$http_authorization $api_key_id"]
    assert re.findall(r"\S[^;]*;", body) == ['default "";', "include /keys/api-keys.map;"]


def test_logs_hold_no_client_text():
    (log_format,) = re.findall(r"log_format kaito_aks escape=json (.*?);\n", CONF, re.S)
    variables = set(re.findall(r"\$(\w+)", log_format))
    assert variables == {"time_iso8601", "remote_addr", "api_key_id", "kaito_method", "kaito_logged_path", "status",
                         "body_bytes_sent", "request_time", "upstream_addr", "upstream_status", "request_id"}
    # the logged path is built from the route (a constant per location) and a fixed list of API paths
    assert all(re.fullmatch(r"\s*\"~\^\(\?:/_replicas\)\?\(\?:/\[\^/\]\+\)\?(\S+)\$\" (\S+);", line)
               for line in blocks(CONF, "map")["$uri $kaito_api"].strip().splitlines()[1:])
    assert re.search(r"^error_log \S+ crit;$", CONF, re.M)
    assert "limit_req_log_level info;" in CONF


def test_every_error_nginx_raises_is_json_and_nothing_redirects():
    server = server_block(CONF)
    handled = {int(c) for line in re.findall(r"error_page ([\d ]+) = ", server) for c in line.split()}
    assert handled >= {400, 403, 404, 405, 408, 411, 413, 414, 429, 494, 500, 501, 502, 503, 504, 505}
    locations = blocks(CONF, "location")
    for target in set(re.findall(r"error_page [\d ]+ = (\S+);", server)):
        (ret,) = re.findall(r"return (\d+) '(.*)';", locations[f"= {target}"])
        assert "internal;" in locations[f"= {target}"]
        assert set(json.loads(ret[1].replace("\\'", "'"))["error"]) == {"message", "type", "param", "code"}
    assert "absolute_redirect off;" in CONF and "types { }" in CONF and "default_type application/json;" in CONF
    for prefix in [f"/{r.name}" for r in ROUTES] + [f"/_replicas/{r.name}" for r in REPLICAS]:
        assert "return 404" in locations[f"= {prefix}"], prefix     # no implicit 301 to <prefix>/


# ---------------------------------------------------------------------------------------------------------
# The keys Secret for --manifests users, from the setting's own format

@pytest.fixture(scope="module")
def prod_plan():
    return build_plan(load_stack_file("prod"))


@pytest.mark.parametrize("raw", [json.dumps([KEY_A, KEY_B]), f"{KEY_A},{KEY_B}", f"{KEY_A}\n{KEY_B}\n"])
def test_keys_secret_from_the_setting(prod_plan, raw):
    secret = keys_secret_from_setting(prod_plan, raw)
    assert secret["kind"] == "Secret" and secret["metadata"]["namespace"] == prod_plan.settings.namespace
    assert secret["metadata"]["name"] == "kaito-gateway-keys"
    assert secret["stringData"] == {"api-keys.map": render_keys_map([KEY_A, KEY_B])}


@pytest.mark.parametrize("raw", ["${API_KEYS}", "sk-1", "[]", json.dumps(["sk-live-0123456789", None]),
                                 render_keys_map([KEY_A])])
def test_keys_secret_refuses_anything_but_real_keys(prod_plan, raw):
    with pytest.raises(ApiKeysError) as err:
        keys_secret_from_setting(prod_plan, raw)
    assert MARK.lower() not in str(err.value).lower()


def test_gateway_objects_carry_the_keys_secret_only_when_given(prod_plan):
    kinds = [o["kind"] for o in gateway_objects.objects(prod_plan)]
    assert "Secret" not in kinds and kinds[0] == "ConfigMap" and "Deployment" in kinds
    with_keys = gateway_objects.objects(prod_plan, render_keys_map([KEY_A]))
    assert [o["kind"] for o in with_keys].count("Secret") == 1
    annotations = [gateway_objects.rollout_annotations(render_keys_map([k])) for k in (KEY_A, KEY_B)]
    assert annotations[0] != annotations[1] and MARK.lower() not in json.dumps(annotations).lower()


# ---------------------------------------------------------------------------------------------------------
# A gateway pod that is replaced drains first (a config change must not cut streams in flight)

def test_a_replaced_gateway_pod_leaves_the_load_balancer_then_quits_gracefully(prod_plan):
    deployment = gateway_objects.deployment(prod_plan)
    pod = deployment["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "nginx")
    hook = container["lifecycle"]["preStop"]["exec"]["command"]
    assert hook == gateway_objects.drain_command(f"{gateway_objects.CONF_DIR}/nginx.conf", nginx.PID_PATH)
    script = hook[-1]
    # serve on while the endpoint removal propagates, then `nginx -s quit` (graceful), and wait for the exit
    assert script.startswith(f"sleep {gateway_objects.DRAIN_DELAY_SECONDS}; ") and gateway_objects.DRAIN_DELAY_SECONDS >= 10
    assert "-s quit" in script and "-s stop" not in script and script.endswith("do sleep 1; done")
    read_timeout = prod_plan.settings.gateway.read_timeout_seconds
    assert pod["terminationGracePeriodSeconds"] >= gateway_objects.DRAIN_DELAY_SECONDS + read_timeout
    # the roll adds a pod before it removes one, and the budget keeps one serving through voluntary disruptions
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert gateway_objects.disruption_budget(prod_plan)["spec"]["minAvailable"] == 1


def test_graceful_quits_and_reloads_are_bounded_by_the_read_timeout():
    conf = render_nginx_conf([Route("m", ("u:80",), "m")], [], "/k", stack_limits(read_timeout_seconds=120))
    assert re.search(r"^worker_shutdown_timeout 125s;$", conf, re.M)
    assert gateway_objects.termination_grace_seconds(120) >= gateway_objects.DRAIN_DELAY_SECONDS + 125   # delay, then the quit


def test_a_replica_that_fails_once_is_skipped_for_ten_seconds_and_connects_are_bounded_at_five():
    """Passive health checking: one failed attempt takes a replica out of its model's rotation for 10 s (the other
    replicas answer meanwhile), and a connect that takes more than 5 s counts as that failure."""
    conf = render_nginx_conf([Route("m", ("a:80", "b:80"), "m")], [], "/k", stack_limits())
    assert re.findall(r"server (\S+) max_fails=(\d+) fail_timeout=(\d+)s;", conf) == [("a:80", "1", "10"),
                                                                                       ("b:80", "1", "10")]
    assert set(re.findall(r"proxy_connect_timeout (\d+)s;", conf)) == {"5"}


def test_every_port_in_the_gateway_pod_is_its_own_and_the_probes_reach_the_health_server(prod_plan):
    """nginx's API, health and stub_status servers, its syslog feed and the two metrics sidecars share one network
    namespace: two of them on one port and the pod never starts (observability is on in prod)."""
    assert prod_plan.settings.observability_enabled
    conf = gateway_objects.nginx_conf_for(prod_plan)
    listens = [int(port) for port in re.findall(r"^\s*listen (?:[\d.]+:)?(\d+);", conf, re.M)]
    syslog = [int(port) for port in re.findall(r"syslog:server=[\d.]+:(\d+)", conf)]
    pod = gateway_objects.deployment(prod_plan)["spec"]["template"]["spec"]
    nginx_container = next(c for c in pod["containers"] if c["name"] == "nginx")
    sidecars = [p["containerPort"] for c in pod["containers"] if c is not nginx_container for p in c.get("ports", [])]
    every = listens + syslog + sidecars
    assert (len(listens), len(syslog), len(sidecars)) == (3, 1, 2) and len(set(every)) == len(every), every
    assert {p["containerPort"] for p in nginx_container["ports"]} <= set(listens)
    health_port = int(re.search(r"listen (\d+);\n\s*access_log off;\n\s*location = /healthz", conf).group(1))
    for probe in ("readinessProbe", "livenessProbe"):
        assert nginx_container[probe]["httpGet"] == {"path": "/healthz", "port": health_port}


def test_nginx_writes_only_where_its_read_only_pod_has_an_empty_dir(prod_plan):
    """The root filesystem is read-only: the pid file and nginx's temp files must be on the pod's emptyDir."""
    conf = gateway_objects.nginx_conf_for(prod_plan)
    pod = gateway_objects.deployment(prod_plan)["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "nginx")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    writable = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty_dirs]
    (pid,) = re.findall(r"^pid (\S+);$", conf, re.M)
    temp_paths = re.findall(r"_temp_path (\S+);", conf)
    assert temp_paths and pid == nginx.PID_PATH
    for path in [pid, *temp_paths]:
        assert any(path.startswith(f"{w}/") for w in writable), path


def test_every_error_the_gateway_sends_is_a_complete_openai_error_with_its_own_code():
    """What clients see for each status nginx raises: the status sent (403 from the unauthenticated location is a 401;
    nginx's 494 is the standard 431; a gateway-side 502/504 is a 503 to retry), and a body with a sentence for a
    message, one of OpenAI's error types and a code of its own."""
    sent = {}
    for error in nginx.error_pages(stack_limits(max_body_kib=2)):
        body = json.loads(error.body)["error"]
        for raised in error.codes:
            sent[raised] = (error.status, body["type"])
        assert re.fullmatch(r"[A-Z].{10,}[.;)]", body["message"]) or body["message"].endswith("later."), body
        assert re.fullmatch(r"[a-z]+(_[a-z]+)+", body["code"]) and body["param"] is None
    assert sent == {
        400: (400, "invalid_request_error"), 403: (401, "invalid_request_error"), 404: (404, "invalid_request_error"),
        405: (405, "invalid_request_error"), 408: (408, "invalid_request_error"), 411: (411, "invalid_request_error"),
        413: (413, "invalid_request_error"), 414: (414, "invalid_request_error"), 429: (429, "rate_limit_exceeded"),
        494: (431, "invalid_request_error"), 500: (500, "server_error"), 501: (501, "invalid_request_error"),
        502: (503, "server_error"), 503: (503, "server_error"), 504: (503, "server_error"),
        505: (505, "invalid_request_error")}
    codes = [json.loads(e.body)["error"]["code"] for e in nginx.error_pages(stack_limits())]
    assert len(set(codes)) == len(codes)
    by_status = {e.status: json.loads(e.body)["error"]["message"] for e in nginx.error_pages(stack_limits(max_body_kib=2))}
    assert by_status[401] == "Missing or invalid API key: send 'Authorization: Bearer <key>'."
    assert by_status[413] == "Request body larger than 2 KiB."


def test_the_gateway_lists_its_models_as_openai_does():
    """GET /v1/models at the gateway: OpenAI's list object, one model object per route, id = the route's name."""
    doc = json.loads(nginx.models_document([Route("chat", ("a:80",), "meta-llama/Llama-3.1-8B-Instruct"),
                                            Route("small", ("b:80",), "phi-3")]))
    assert doc == {"object": "list", "data": [
        {"id": "chat", "object": "model", "owned_by": "kaito-aks", "served_model": "meta-llama/Llama-3.1-8B-Instruct"},
        {"id": "small", "object": "model", "owned_by": "kaito-aks", "served_model": "phi-3"}]}


def test_the_generated_configuration_says_where_it_comes_from(prod_plan):
    """An operator who opens the ConfigMap learns not to edit it by hand (the next `pulumi up` would undo it)."""
    first = gateway_objects.nginx_conf_for(prod_plan).splitlines()[0]
    assert first == ("# Generated by kaito-aks (infra/render/gateway_objects.py). Do not edit: change the stack "
                     "settings instead.")
