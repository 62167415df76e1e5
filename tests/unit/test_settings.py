"""infra.settings in process: every bound, default, validator and derived name, and how problems become lines.

The subprocess view (exit 2, stderr, no traceback) is tests/unit/test_settings_errors.py; hostile input is
test_settings_hostile_input.py. Here each rule is pinned at its edge: the largest accepted value and the first
refused one, the exact line a mistake produces, and that every line is counted (no extra, none missing).
"""
import pytest

from infra.errors import UserError, bounded_repr
from infra.settings import (
    KNOWN_KEYS,
    MAX_CONTEXT,
    MAX_RANGES,
    PROJECT_DIR,
    Settings,
    _fields_at,
    http_url_problem,
    load_stack_file,
    project_defaults,
    settings_from_config,
    settings_from_stack_config,
    stack_file,
    webhook_url_problem,
)

RANGES = {"access": {"sourceRanges": ["203.0.113.0/24"]}}
MODEL = {"name": "a", "model": "phi-3-mini-4k-instruct"}
GUID = "00000000-0000-0000-0000-00000000abcd"


def settings(stack="dev", secrets=(), location=None, **values) -> Settings:
    values = {**RANGES, "models": [MODEL], **values}
    return settings_from_config(stack, values, set(secrets), location)


def problems(stack="dev", secrets=(), **values) -> list[str]:
    with pytest.raises(UserError) as err:
        settings(stack, secrets, **values)
    return err.value.lines


def from_stack_file(extra: dict):
    """The settings of a dev stack file with one model and source ranges, plus ``extra`` config keys."""
    return settings_from_stack_config("dev", {"kaito-aks:models": [MODEL], "kaito-aks:access": RANGES["access"],
                                              **extra})


def only_problem(**values) -> str:
    lines = problems(**values)
    assert len(lines) == 1, lines
    return lines[0]


def nested(path: str, value) -> dict:
    """``nested("gateway.replicas", 3)`` -> ``{"gateway": {"replicas": 3}}`` (models[0] keys go into the model)."""
    head, _, rest = path.partition(".")
    if head == "models[0]":
        return {"models": [{**MODEL, **_dict(rest, value)}]}
    return {head: _dict(rest, value)} if rest else {head: value}


def _dict(path: str, value):
    out = value
    for part in reversed(path.split(".")):
        out = {part: out}
    return out


# ---------------------------------------------------------------------------------------------------------
# Bounds: the edge values are accepted, one step past them is refused with the key path

BOUNDS = [
    # path, lowest accepted, highest accepted, step
    ("cluster.systemPool.count", 1, 20, 1),
    ("cluster.maintenanceWindow.durationHours", 4, 24, 1),
    ("cluster.maintenanceWindow.intervalWeeks", 1, 4, 1),
    ("models[0].maxModelLen", 1, MAX_CONTEXT, 1),
    ("models[0].replicas", 1, 16, 1),
    ("gateway.replicas", 1, 10, 1),
    ("gateway.rateLimitPerMinute", 1, 1_000_000, 1),
    ("gateway.unauthenticatedPerMinute", 1, 100_000, 1),
    ("gateway.maxBodyKib", 1, 1024 * 1024, 1),
    ("gateway.readTimeoutSeconds", 1, 86_400, 1),
    ("endpointCheck.timeoutSeconds", 1, 86_400, 1),
    ("endpointCheck.concurrency", 1, 64, 1),
    ("observability.alerts.queueDepth", 1, 100_000, 1),
    ("observability.alerts.modelDownMinutes", 1, 1440, 1),
    ("observability.alerts.nodeNotReadyMinutes", 1, 1440, 1),
]


@pytest.mark.parametrize("path,low,high,step", BOUNDS, ids=[b[0] for b in BOUNDS])
def test_integer_settings_accept_their_range_and_refuse_one_past_it(path, low, high, step):
    settings(**nested(path, low))
    settings(**nested(path, high))
    key = path.replace("models[0]", "models[0]")
    assert only_problem(**nested(path, low - step)) == (
        f"kaito-aks:{key}: Input should be greater than or equal to {low} (got {low - step})")
    assert only_problem(**nested(path, high + step)) == (
        f"kaito-aks:{key}: Input should be less than or equal to {high} (got {high + step})")


FACTS = {"weightsGiB": 30, "layers": 48, "kvHeads": 8, "headDim": 128, "contextLimit": 32768}
FACT_BOUNDS = [("layers", 1, 1000), ("kvHeads", 1, 1024), ("headDim", 1, 4096), ("contextLimit", 1, MAX_CONTEXT)]


@pytest.mark.parametrize("key,low,high", FACT_BOUNDS, ids=[b[0] for b in FACT_BOUNDS])
def test_model_facts_accept_their_range_and_refuse_one_past_it(key, low, high):
    def with_fact(value):
        return {"models": [{"name": "x", "model": "acme/thing", "facts": {**FACTS, key: value}}]}

    settings(**with_fact(low))
    settings(**with_fact(high))
    assert only_problem(**with_fact(low - 1)) == (
        f"kaito-aks:models[0].facts.{key}: Input should be greater than or equal to {low} (got {low - 1})")
    assert only_problem(**with_fact(high + 1)) == (
        f"kaito-aks:models[0].facts.{key}: Input should be less than or equal to {high} (got {high + 1})")


FLOAT_BOUNDS = [
    # path, highest accepted, first refused above
    ("models[0].facts.weightsGiB", 10_000, 10_000.5),
    ("budget.maxUsdPerHour", 1_000_000, 1_000_000.5),
    ("observability.alerts.kvCacheUsage", 1, 1.01),
    ("observability.alerts.ttftP95Seconds", 3600, 3600.5),
    ("observability.alerts.gateway5xxRatio", 1, 1.01),
]


@pytest.mark.parametrize("path,high,over", FLOAT_BOUNDS, ids=[b[0] for b in FLOAT_BOUNDS])
def test_positive_settings_refuse_zero_and_accept_a_sliver_up_to_their_maximum(path, high, over):
    def at(value):
        if path.startswith("models[0].facts."):
            key = path.rsplit(".", 1)[1]
            return {"models": [{"name": "x", "model": "acme/thing", "facts": {**FACTS, key: value}}]}
        return nested(path, value)

    settings(**at(0.001))
    settings(**at(high))
    assert only_problem(**at(0)) == f"kaito-aks:{path}: Input should be greater than 0 (got 0)"
    assert only_problem(**at(over)) == f"kaito-aks:{path}: Input should be less than or equal to {high} (got {over})"


def test_an_empty_model_list_is_refused():
    assert problems(models=[]) == ["kaito-aks:models: Tuple should have at least 1 item after validation, not 0"]


def test_up_to_100_models_are_accepted_and_101_refused():
    many = [{"name": f"m{i}", "model": "phi-3-mini-4k-instruct"} for i in range(101)]
    assert len(settings(models=many[:100]).models) == 100
    assert problems(models=many) == ["kaito-aks:models: Tuple should have at most 100 items after validation, not 101"]


def test_up_to_20_alert_emails_are_accepted_and_21_refused():
    emails = [f"ops{i}@example.com" for i in range(21)]
    settings(observability={"alerts": {"actionGroupEmails": emails[:20]}})
    assert only_problem(observability={"alerts": {"actionGroupEmails": emails}}).startswith(
        "kaito-aks:observability.alerts.actionGroupEmails: Tuple should have at most 20 items after validation, not 21")


def test_up_to_200_ranges_are_accepted_and_201_refused():
    ranges = [f"10.0.{i}.0/24" for i in range(MAX_RANGES + 1)]
    assert len(settings(access={"sourceRanges": ranges[:MAX_RANGES]}).access.source_ranges) == 200
    assert only_problem(access={"sourceRanges": ranges}) == (
        "kaito-aks:access.sourceRanges: 201 ranges; at most 200 (Azure's limit): summarize them")
    assert only_problem(cluster={"apiServerAuthorizedIpRanges": ranges}) == (
        "kaito-aks:cluster.apiServerAuthorizedIpRanges: 201 ranges; at most 200 (Azure's limit): summarize them")


def test_ranges_are_normalized_and_non_strings_refused():
    s = settings(access={"sourceRanges": ["203.0.113.7/24"]}, cluster={"apiServerAuthorizedIpRanges": ["198.51.100.1"]})
    assert s.access.source_ranges == ("203.0.113.0/24",)
    assert s.cluster.api_server_authorized_ip_ranges == ("198.51.100.1/32",)
    assert only_problem(access={"sourceRanges": [42]}) == (
        "kaito-aks:access.sourceRanges: 42 is not an IP range; write it as CIDR, e.g. 203.0.113.0/24")


# ---------------------------------------------------------------------------------------------------------
# Defaults: what a stack gets without saying (the README's settings tables)

def test_defaults_are_the_documented_ones():
    s = settings()
    c = s.cluster
    assert (c.name, c.resource_group, c.location, c.kubernetes_version) == (None, None, "eastus", None)
    assert (c.system_pool.vm_size, c.system_pool.count) == ("Standard_D4ds_v5", 2)
    assert (c.api_server_authorized_ip_ranges, c.network_policy, c.azure_rbac, c.admin_group_object_ids) == (
        (), "cilium", False, ())
    w = c.maintenance_window
    assert (w.enabled, w.day_of_week, w.start_time, w.duration_hours, w.utc_offset, w.interval_weeks) == (
        None, "Sunday", "00:00", 4, "+00:00", 1)
    assert (s.kaito.mode, s.kaito.version) == ("addon", None)
    m = s.models[0]
    assert (m.runtime, m.instance_type, m.max_model_len, m.dtype, m.replicas, m.spot, m.rollout, m.facts) == (
        "vllm", "auto", None, None, 1, False, None, None)
    assert s.budget.max_usd_per_hour is None
    assert (s.namespace, s.production) == ("llm", None)
    assert (s.access.allow_any_source, s.access.internal, s.access.dns_label) == (False, False, None)
    g = s.gateway
    assert (g.enabled, g.replicas, g.rate_limit_per_minute, g.unauthenticated_per_minute, g.max_body_kib,
            g.read_timeout_seconds) == (None, 2, 600, 60, 1024, 600)
    e = s.endpoint_check
    assert (e.enabled, e.url, e.timeout_seconds, e.concurrency) == (True, None, 2400, 4)
    o = s.observability
    assert (o.enabled, o.grafana.enabled, o.grafana.admin_group_object_ids, o.grafana.deployer_principal_type) == (
        None, True, None, "User")
    a = o.alerts
    assert (a.enabled, a.action_group_emails, a.webhook_url, a.queue_depth, a.kv_cache_usage, a.ttft_p95_seconds,
            a.gateway_5xx_ratio, a.model_down_minutes, a.node_not_ready_minutes) == (
        True, (), None, 10, 0.9, 5.0, 0.05, 5, 10)
    assert s.secrets_set == frozenset()


def test_model_facts_default_to_a_2048_token_ungated_model():
    s = settings(models=[{"name": "x", "model": "acme/thing",
                          "facts": {"weightsGiB": 1, "layers": 1, "kvHeads": 1, "headDim": 1}}])
    assert (s.models[0].facts.context_limit, s.models[0].facts.gated) == (2048, False)


def test_model_facts_need_weights_and_geometry():
    lines = problems(models=[{"name": "x", "model": "acme/thing", "facts": {}}])
    assert lines == [f"kaito-aks:models[0].facts.{k}: required, but not set"
                     for k in ("weightsGiB", "layers", "kvHeads", "headDim")]


# ---------------------------------------------------------------------------------------------------------
# Derived values

@pytest.mark.parametrize("stack,production,expected", [
    ("prod", None, True), ("production-eu", None, True), ("dev", None, False), ("preprod", None, False),
    ("prod", False, False), ("dev", True, True),
    ("Prod", None, True), ("PRODUCTION", None, True),    # a capital letter must not drop the hardening
])
def test_production_is_said_or_follows_the_stack_name(stack, production, expected):
    extra = {"cluster": {"apiServerAuthorizedIpRanges": ["203.0.113.0/24"]}}
    s = settings(stack, **extra, **({} if production is None else {"production": production}))
    assert s.is_production is expected
    assert s.gateway_enabled is expected
    assert s.rollout_of(s.models[0]) == ("surge" if expected else "recreate")
    assert (s.maintenance_window is not None) is expected


def test_explicit_gateway_rollout_and_window_settings_win_over_production():
    s = settings("prod", gateway={"enabled": False}, cluster={"maintenanceWindow": {"enabled": False}},
                 models=[{**MODEL, "rollout": "recreate"}])
    assert s.is_production and not s.gateway_enabled and s.maintenance_window is None
    assert s.rollout_of(s.models[0]) == "recreate"
    d = settings("dev", gateway={"enabled": True}, cluster={"maintenanceWindow": {"enabled": True, "dayOfWeek": "Monday"}},
                 models=[{**MODEL, "rollout": "surge"}])
    assert d.gateway_enabled and d.maintenance_window.day_of_week == "Monday"
    assert d.rollout_of(d.models[0]) == "surge"


def test_cluster_and_resource_group_names_default_from_the_stack():
    s = settings("dev")
    assert (s.cluster_name, s.resource_group) == ("kaito-dev", "rg-kaito-dev")
    named = settings("dev", cluster={"name": "my-aks"})
    assert (named.cluster_name, named.resource_group) == ("my-aks", "rg-my-aks")
    both = settings("dev", cluster={"name": "my-aks", "resourceGroup": "shared.rg(1)"})
    assert (both.cluster_name, both.resource_group) == ("my-aks", "shared.rg(1)")


def test_a_long_stack_name_is_cut_to_a_63_character_cluster_name_that_still_tells_it_apart():
    s = settings("s" * 70)
    assert len(s.cluster_name) == 63 and s.cluster_name.startswith("kaito-" + "s" * 48 + "-")
    assert s.resource_group == "rg-" + s.cluster_name
    # two stacks that differ only past the cut get two clusters and two resource groups, not one shared pair
    a, b = settings("s" * 60 + "a"), settings("s" * 60 + "b")
    assert a.cluster_name != b.cluster_name and a.resource_group != b.resource_group
    assert settings("s" * 57).cluster_name == "kaito-" + "s" * 57      # 63 characters: kept whole


def test_a_stack_name_that_makes_no_valid_names_asks_for_them():
    assert problems("a.b") == [
        "kaito-aks:cluster.name: the default, 'kaito-a.b' (from the stack name), is not a valid AKS name (ASCII "
        "letters, digits, '-', '_'); set cluster.name explicitly"]
    assert settings("a.b", cluster={"name": "ab"}).resource_group == "rg-ab"


def test_a_cluster_name_that_makes_no_valid_resource_group_asks_for_one():
    # a valid AKS name of 63 characters makes 'rg-' + 63 = 66 characters: still a valid resource group (90 max);
    # the resource group check fires for a default built from an invalid name only when cluster.name is given
    s = settings("dev", cluster={"name": "a" * 63})
    assert s.resource_group == "rg-" + "a" * 63


# ---------------------------------------------------------------------------------------------------------
# Validators: the line each mistake gives, and the edge of what passes

@pytest.mark.parametrize("name", ["a", "my_aks-1", "A" * 63, "x9"])
def test_cluster_names_aks_accepts(name):
    assert settings(cluster={"name": name}).cluster_name == name


@pytest.mark.parametrize("name", ["-x", "x-", "has space", "a" * 64, "é", "_x"])
def test_cluster_names_aks_refuses(name):
    assert only_problem(cluster={"name": name}).endswith(
        ": AKS names are 1-63 ASCII letters, digits, '-' or '_', starting and ending with a letter or digit")


@pytest.mark.parametrize("group,ok", [("rg", True), ("a.b(c)_-", True), ("x" * 90, True), ("rg.", False),
                                      ("x" * 91, False), ("has space", False)])
def test_resource_group_names(group, ok):
    if ok:
        assert settings(cluster={"resourceGroup": group}).resource_group == group
    else:
        assert only_problem(cluster={"resourceGroup": group}).endswith(
            ": resource group names are 1-90 ASCII letters, digits, '-', '_', '.', '(' or ')', not ending with '.'")


@pytest.mark.parametrize("label,ok", [("api", True), ("a-1", True), ("a" * 63, True), ("Api", False),
                                      ("a" * 64, False), ("-a", False), ("a_b", False)])
def test_access_dns_labels(label, ok):
    if ok:
        assert settings(access={**RANGES["access"], "dnsLabel": label}).access.dns_label == label
    else:
        assert only_problem(access={**RANGES["access"], "dnsLabel": label}) == (
            f"kaito-aks:access.dnsLabel: {bounded_repr(label)} must be a DNS label (lower-case letters, digits, '-', at most 63)")


def test_admin_group_object_ids_must_be_guids():
    assert settings(cluster={"adminGroupObjectIds": [GUID]}).cluster.admin_group_object_ids == (GUID,)
    assert only_problem(cluster={"adminGroupObjectIds": [GUID, "admins"]}) == (
        "kaito-aks:cluster.adminGroupObjectIds: 'admins' is not an Entra ID object id (a GUID)")


def test_grafana_admin_groups_must_be_guids_and_false_means_off():
    s = settings(observability={"grafana": {"adminGroupObjectIds": [GUID]}})
    assert s.observability.grafana.admin_group_object_ids == (GUID,)
    assert only_problem(observability={"grafana": {"adminGroupObjectIds": ["nope"]}}) == (
        "kaito-aks:observability.grafana.adminGroupObjectIds: 'nope' is not an Entra ID object id (a GUID)")
    assert settings(observability={"grafana": False}).observability.grafana.enabled is False
    assert settings(observability={"grafana": True}).observability.grafana.enabled is True


@pytest.mark.parametrize("value,ok", [("00:00", True), ("23:59", True), ("09:30", True), ("24:00", False),
                                      ("2:00", False), ("12:60", False), ("12:00 ", False)])
def test_maintenance_start_time_is_hh_mm(value, ok):
    if ok:
        assert settings(cluster={"maintenanceWindow": {"startTime": value}}).cluster.maintenance_window.start_time == value
    else:
        assert only_problem(cluster={"maintenanceWindow": {"startTime": value}}).startswith(
            "kaito-aks:cluster.maintenanceWindow.startTime: ")


def test_maintenance_start_time_message():
    assert only_problem(cluster={"maintenanceWindow": {"startTime": "25:00"}}) == (
        "kaito-aks:cluster.maintenanceWindow.startTime: '25:00' is not a time of day as HH:MM, e.g. 02:00")


@pytest.mark.parametrize("value,ok", [("+00:00", True), ("-05:30", True), ("+14:00", True), ("+15:00", False),
                                      ("01:00", False), ("+1:00", False), ("+01:60", False)])
def test_maintenance_utc_offset_is_signed_hh_mm(value, ok):
    if ok:
        assert settings(cluster={"maintenanceWindow": {"utcOffset": value}}).cluster.maintenance_window.utc_offset == value
    else:
        assert only_problem(cluster={"maintenanceWindow": {"utcOffset": value}}) == (
            f"kaito-aks:cluster.maintenanceWindow.utcOffset: {value!r} is not a UTC offset as +HH:MM or -HH:MM, "
            "e.g. +01:00")


@pytest.mark.parametrize("version,ok", [("0.12.0", True), ("100.200.300", True), ("0.12", False),
                                        ("v0.12.0", False), ("1000.0.0", False), ("0.12.007", False),
                                        ("00.12.0", False), ("0.012.0", False)])
def test_kaito_version_is_major_minor_patch(version, ok):
    if ok:
        assert settings(kaito={"version": version}).kaito.version == version
    else:   # the text is the chart version and image tag: 0.12.007 would pass as a newer 0.12.7 and then not exist
        assert only_problem(kaito={"version": version}) == (
            f"kaito-aks:kaito.version: {version!r} is not a KAITO release version (MAJOR.MINOR.PATCH without "
            "leading zeros, e.g. 0.12.0)")


@pytest.mark.parametrize("version", [0.12, 1, 0.1])
def test_a_kaito_version_yaml_read_as_a_number_asks_for_text(version):
    assert only_problem(kaito={"version": version}) == (
        f"kaito-aks:kaito.version: {version!r} is a number; write the release as text with its patch, e.g. "
        'version: "0.12.0"')


@pytest.mark.parametrize("value", [True, False])
def test_the_removed_provisioner_identity_setting_is_refused_with_why(value):
    assert only_problem(kaito={"provisionerIdentity": value}).startswith(
        "kaito-aks:kaito.provisionerIdentity: no longer exists: since July 2025 the AKS add-on's gpu-provisioner "
        "runs in the AKS control plane")


def test_model_names_are_dns_labels():
    assert only_problem(models=[{**MODEL, "name": "Big"}]) == (
        "kaito-aks:models[0].name: 'Big' must be a DNS label (lower-case letters, digits, '-', starting and ending "
        "with a letter or digit, at most 63 characters): KAITO names the Workspace after it")


@pytest.mark.parametrize("model,ok", [
    ("phi-3-mini-4k-instruct", True), ("org/model.v1_x", True), ("Qwen2.5", True),
    ("org/", False), ("a/b/c", False), ("org/mo..del", False), ("org/mo--del", False), ("-x", False),
])
def test_model_references_are_preset_names_or_hugging_face_ids(model, ok):
    if ok:
        assert settings(models=[{"name": "a", "model": model}]).models[0].model == model
    elif "/" in model:
        assert only_problem(models=[{"name": "a", "model": model}]) == (
            f"kaito-aks:models[0].model: {model!r} is not a Hugging Face id; write it as org/model with ASCII letters, "
            "digits, '-', '_' or '.', e.g. microsoft/Phi-3-mini-4k-instruct")
    else:
        assert only_problem(models=[{"name": "a", "model": model}]) == (
            f"kaito-aks:models[0].model: {model!r} is not a KAITO preset name (ASCII letters, digits, '-', '_', '.'); "
            "e.g. phi-3-mini-4k-instruct, or a Hugging Face id org/model")


def test_an_empty_model_reference_names_both_kinds():
    assert only_problem(models=[{"name": "a", "model": ""}]) == (
        "kaito-aks:models[0].model: empty; name a KAITO preset (e.g. phi-3-mini-4k-instruct) or a Hugging Face id")


@pytest.mark.parametrize("value,ok", [("auto", True), ("Standard_NC24ads_A100_v4", True), ("standard_x", True),
                                      ("Auto", False), ("Standard_", False), ("Standard_" + "x" * 61, False),
                                      ("NC24ads", False)])
def test_instance_types_are_auto_or_azure_size_names(value, ok):
    if ok:
        assert settings(models=[{**MODEL, "instanceType": value}]).models[0].instance_type == value
    else:
        assert only_problem(models=[{**MODEL, "instanceType": value}]) == (
            f"kaito-aks:models[0].instanceType: {bounded_repr(value)} is neither 'auto' nor an Azure VM size name like "
            "Standard_NC24ads_A100_v4")


@pytest.mark.parametrize("namespace,ok", [("llm", True), ("kube", True), ("my-kube-ns", True), ("kube-llm", False),
                                          ("LLM", False), ("a" * 64, False)])
def test_the_namespace_is_a_dns_label_outside_kube_(namespace, ok):
    if ok:
        assert settings(namespace=namespace).namespace == namespace
    else:
        assert only_problem(namespace=namespace) == (
            f"kaito-aks:namespace: {bounded_repr(namespace)} must be a DNS label (lower-case letters, digits, '-', at most 63) "
            "not starting with 'kube-'")


def test_model_names_must_be_unique():
    assert problems(models=[MODEL, {**MODEL, "model": "phi-2"}, MODEL]) == [
        "kaito-aks:models[1].name: 'a' is already used by models[0]; names become Workspace names and must be unique"]
    assert len(settings(models=[MODEL, {**MODEL, "name": "b"}]).models) == 2


@pytest.mark.parametrize("email,ok", [("ops@example.com", True), ("a.b+c@sub.example.org", True),
                                      ("ops@localhost", False), ("@example.com", False), ("ops example.com", False)])
def test_alert_emails(email, ok):
    values = {"observability": {"alerts": {"actionGroupEmails": [email]}}}
    if ok:
        assert settings(**values).observability.alerts.action_group_emails == (email,)
    else:
        assert only_problem(**values) == (
            f"kaito-aks:observability.alerts.actionGroupEmails: {email!r} is not an email address")


def test_a_plain_alert_webhook_is_refused_without_being_echoed():
    line = only_problem(observability={"alerts": {"webhookUrl": "https://hooks.example.com/t0ken"}})
    assert line == ("kaito-aks:observability.alerts.webhookUrl: a webhook URL is a credential; remove it here and run "
                    "`pulumi config set --secret alertWebhookUrl https://...` so it is encrypted")
    assert settings().observability.alerts.webhook_url is None


@pytest.mark.parametrize("url,problem", [
    ("https://hooks.example.com/alert?sig=1", None),
    ("https://h:8443/x", None),
    ("https://" + "a" * 2040, None),                                   # 2048 characters
    ("https://" + "a" * 2041, "must be an https URL of at most 2048 characters without spaces"),
    ("https://a b", "must be an https URL of at most 2048 characters without spaces"),
    ("", "must be an https URL (a string)"),
    (None, "must be an https URL (a string)"),
    ("https://h:x", "must be an https URL with a numeric port"),
    ("http://h", "must be an https URL with a host (Azure Monitor calls it over TLS)"),
    ("https://", "must be an https URL with a host (Azure Monitor calls it over TLS)"),
    ("https://u:p@h", "must be an https URL without user:password@ or a #fragment"),
    ("https://u@h", "must be an https URL without user:password@ or a #fragment"),
    ("https://h/#x", "must be an https URL without user:password@ or a #fragment"),
])
def test_the_secret_alert_webhook_must_be_a_plain_https_url(url, problem):
    assert webhook_url_problem(url) == problem


def test_a_set_alert_webhook_secret_is_known_but_never_read():
    s = settings(secrets={"alertWebhookUrl"}, alertWebhookUrl="[secret]")
    assert s.alert_webhook_set and "alertWebhookUrl" in KNOWN_KEYS
    assert not settings().alert_webhook_set


def test_the_endpoint_check_url_must_be_a_plain_http_base_url():
    assert settings(endpointCheck={"url": "http://10.0.0.9:8080"}).endpoint_check.url == "http://10.0.0.9:8080"
    assert only_problem(endpointCheck={"url": "ftp://x"}) == (
        "kaito-aks:endpointCheck.url: must be an http(s) URL with a host, e.g. http://10.0.0.9")


@pytest.mark.parametrize("url", ["http://admin:sk-SECRET-1@10.0.0.9", "http://10.0.0.9/?api_key=sk-SECRET-1",
                                 "http://10.0.0.9/#sk-SECRET-1", "ftp://10.0.0.9/sk-SECRET-1",
                                 "http://10.0.0.9:99999/sk-SECRET-1", "http://10.0.0.9/sk-SECRET-1 x"])
def test_a_refused_endpoint_check_url_is_never_quoted(url):
    # a URL can hold a password, a key in its query or a token in its path: the error names the rule, not the URL
    line = only_problem(endpointCheck={"url": url})
    assert line.startswith("kaito-aks:endpointCheck.url: must ") and "SECRET" not in line


@pytest.mark.parametrize("url,problem", [
    ("http://10.0.0.9", None),
    ("https://api.example.com:443/base", None),
    ("http://x:65535", None),
    ("http://" + "a" * 2041, None),                                  # 2048 characters
    ("http://" + "a" * 2042, "must be an http(s) URL without spaces"),
    ("http://a b", "must be an http(s) URL without spaces"),
    ("http://a\tb", "must be an http(s) URL without spaces"),
    ("http://x:99999", "must be an http(s) URL with a numeric port from 1 to 65535"),
    ("http://x:port", "must be an http(s) URL with a numeric port from 1 to 65535"),
    ("http://x:0", "must be an http(s) URL with a numeric port from 1 to 65535"),
    ("ftp://x", "must be an http(s) URL with a host, e.g. http://10.0.0.9"),
    ("http://", "must be an http(s) URL with a host, e.g. http://10.0.0.9"),
    ("http://user@x", "must not carry credentials (user:password@); URLs are shown in logs and outputs"),
    ("http://:pw@x", "must not carry credentials (user:password@); URLs are shown in logs and outputs"),
    ("http://x/?a=1", "must be a base URL without '?query' or '#fragment'"),
    ("http://x/#top", "must be a base URL without '?query' or '#fragment'"),
])
def test_http_url_problems(url, problem):
    assert http_url_problem(url) == problem


@pytest.mark.parametrize("text,why", [
    ("a\n", "contains a control character (a stray newline or tab?); write it on one line"),
    (" a", "starts or ends with whitespace; remove it"),
    ("a ", "starts or ends with whitespace; remove it"),
])
def test_strings_at_any_depth_are_used_whole(text, why):
    assert only_problem(models=[{**MODEL, "name": text}]) == f"kaito-aks:models[0].name: {text!r} {why}"
    assert only_problem(cluster={"adminGroupObjectIds": [GUID, text]}) == (
        f"kaito-aks:cluster.adminGroupObjectIds: {text!r} {why}")
    assert only_problem(kaito={"version": text}) == f"kaito-aks:kaito.version: {text!r} {why}"


def test_strings_in_lists_are_checked_whole_up_to_the_201st():
    ids = [GUID] * MAX_RANGES + ["x\n"]                       # the 201st
    assert only_problem(cluster={"adminGroupObjectIds": ids}) == (
        "kaito-aks:cluster.adminGroupObjectIds: 'x\\n' contains a control character (a stray newline or tab?); write "
        "it on one line")
    nested_list = {"observability": {"alerts": {"actionGroupEmails": [["ops@example.com", " x"]]}}}
    assert "starts or ends with whitespace" in problems(**nested_list)[0]


def test_the_world_is_refused_unless_said():
    assert only_problem(access={"sourceRanges": ["0.0.0.0/0"]}) == (
        "kaito-aks:access.sourceRanges: together the ranges admit every IPv4 address (the same as 0.0.0.0/0); list "
        "your client ranges, or set access.allowAnySource: true to mean it")
    s = settings(access={"sourceRanges": ["0.0.0.0/0"], "allowAnySource": True})
    assert s.access.source_ranges == ("0.0.0.0/0",)
    assert only_problem(cluster={"apiServerAuthorizedIpRanges": ["0.0.0.0/0"]}).endswith(
        "; list the CIDRs of your admins and CI runners")


# ---------------------------------------------------------------------------------------------------------
# From config to lines: unknown keys, secrets, the location fallback, and how pydantic's errors are worded

def test_every_problem_is_one_line_and_all_are_reported():
    lines = problems(modls=[], hfToken="hf_plain", models=[{"name": "Bad", "model": "x", "replicas": 0}],
                     gateway={"replicaz": 1})
    assert lines == [
        f"kaito-aks:modls: unknown setting; did you mean 'models'? (known: {', '.join(KNOWN_KEYS)})",
        "kaito-aks:hfToken: is stored in plain text; remove it and run `pulumi config set --secret hfToken <value>` "
        "so it is encrypted",
        "kaito-aks:models[0].name: 'Bad' must be a DNS label (lower-case letters, digits, '-', starting and ending "
        "with a letter or digit, at most 63 characters): KAITO names the Workspace after it",
        "kaito-aks:models[0].replicas: Input should be greater than or equal to 1 (got 0)",
        "kaito-aks:gateway.replicaz: unknown setting; did you mean 'replicas'? (known: enabled, replicas, "
        "rateLimitPerMinute, unauthenticatedPerMinute, maxBodyKib, readTimeoutSeconds)",
    ]


def test_an_unknown_key_far_from_any_known_one_lists_the_known_ones_only():
    assert only_problem(budget={"zzz": 1}) == "kaito-aks:budget.zzz: unknown setting (known: maxUsdPerHour)"


def test_secret_keys_are_known_and_a_secret_value_is_never_read():
    assert {"hfToken", "apiKeys", "alertWebhookUrl"} <= set(KNOWN_KEYS)
    assert {"access", "budget", "cluster", "endpointCheck", "gateway", "kaito", "models", "namespace",
            "observability", "production"} <= set(KNOWN_KEYS) and list(KNOWN_KEYS) == sorted(KNOWN_KEYS)
    s = settings(secrets={"hfToken", "apiKeys"}, hfToken="[secret]", apiKeys="[secret]")
    assert s.secrets_set == {"hfToken", "apiKeys"}
    assert only_problem(apiKeys="k1,k2").startswith("kaito-aks:apiKeys: is stored in plain text")


def test_no_models_at_all_is_one_line():
    with pytest.raises(UserError) as err:
        settings_from_config("dev", dict(RANGES), set())
    assert err.value.lines == ["kaito-aks:models: no models; add at least one, e.g. "
                               "`kaito-aks:models: [{name: phi3, model: phi-3-mini-4k-instruct}]`"]


def test_a_bad_model_entry_is_reported_alone_not_also_as_a_short_list():
    assert problems(models=[{"name": "a"}]) == ["kaito-aks:models[0].model: required, but not set"]
    assert problems(models=[1]) == [
        "kaito-aks:models[0]: must be a mapping of settings (`key: value` lines under it), not a single value (got 1)"]


def test_values_of_structured_type_are_not_echoed():
    assert problems(models={"name": "a"}) == ["kaito-aks:models: must be a list, e.g. [a, b] (or one `- item` line each)"]
    assert problems(models="phi") == ["kaito-aks:models: must be a list, e.g. [a, b] (or one `- item` line each) (got 'phi')"]


def test_the_location_falls_back_to_azure_native_location_only_when_not_set():
    assert settings(location="westus3").cluster.location == "westus3"
    assert settings(location="westus3", cluster={"location": "eastus2"}).cluster.location == "eastus2"
    assert settings(location="westus3", cluster={"name": "c"}).cluster.location == "westus3"
    assert settings().cluster.location == "eastus"


def test_stack_files_are_found_by_stack_name_or_path(tmp_path):
    assert stack_file("dev") == PROJECT_DIR / "Pulumi.dev.yaml"
    assert stack_file("dev", tmp_path / "x.yaml") == tmp_path / "x.yaml"


@pytest.mark.parametrize("stack", [".", "..", "a/b", "", "x" * 101, "a b"])
def test_stack_names_are_checked_before_any_file_is_read(stack):
    with pytest.raises(UserError) as err:
        load_stack_file(stack)
    assert err.value.lines == [f"--stack: {bounded_repr(stack)} is not a stack name (ASCII letters, digits, '-', '_', '.')"]


def test_a_missing_stack_file_lists_the_projects_stacks(tmp_path):
    with pytest.raises(UserError) as err:
        load_stack_file("nope")
    line, = err.value.lines
    assert line.endswith("Pulumi.nope.yaml: no such stack file; create it with `pulumi stack init nope`, or use one of: "
                         "dev, prod")


def test_a_stack_file_whose_config_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "Pulumi.t.yaml"
    path.write_text("config: [1]\n")
    with pytest.raises(UserError) as err:
        load_stack_file("t", path)
    assert err.value.lines == [f"{path}: `config:` must be a mapping of settings"]


def test_a_stack_file_without_config_has_no_models(tmp_path):
    path = tmp_path / "Pulumi.t.yaml"
    path.write_text("config:\n")
    with pytest.raises(UserError) as err:
        load_stack_file("t", path)
    assert err.value.lines[0].startswith("kaito-aks:models: no models")


def test_stack_config_reads_only_the_projects_namespace_and_secure_values_as_set_secrets():
    s = settings_from_stack_config("dev", {
        "kaito-aks:models": [MODEL], "kaito-aks:access": RANGES["access"], "azure-native:location": "westus2",
        "other:models": "ignored", "kaito-aks:hfToken": {"secure": "v1:abc"}})
    assert s.secrets_set == {"hfToken"} and s.cluster.location == "westus2" and s.models[0].name == "a"


@pytest.mark.parametrize("key,line", [
    ("hfToken", "'hfToken': config keys are `namespace:name` (Pulumi refuses others); write `kaito-aks:hfToken`"),
    ("kaito-aks", "'kaito-aks': config keys are `namespace:name` (Pulumi refuses others); write `kaito-aks:kaito-aks`"),
    ("kaito-aks:", "'kaito-aks:': config keys are `namespace:name` (Pulumi refuses others); write `kaito-aks:kaito-aks`"),
    (":budget", "':budget': config keys are `namespace:name` (Pulumi refuses others); write `kaito-aks:budget`"),
    ("kaito_aks:budget", "'kaito_aks:budget': settings are read under `kaito-aks:` only; write `kaito-aks:budget`"),
    ("kaito-ask:budget", "'kaito-ask:budget': settings are read under `kaito-aks:` only; write `kaito-aks:budget`"),
    (" kaito-aks:budget", "' kaito-aks:budget': settings are read under `kaito-aks:` only; write `kaito-aks:budget`"),
    ("Kaito-AKS:budget", "'Kaito-AKS:budget': settings are read under `kaito-aks:` only; write `kaito-aks:budget`"),
])
def test_a_key_outside_the_projects_namespace_that_was_meant_for_it_is_refused(key, line):
    # silently ignored, a misspelled namespace would drop a budget guard or leave a token in plain text unflagged
    with pytest.raises(UserError) as err:
        from_stack_file({key: {"maxUsdPerHour": 1}})
    assert err.value.lines == [line]


@pytest.mark.parametrize("namespace", ["azure-native", "azure", "kubernetes", "pulumi", "kaito", "aks"])
def test_other_providers_namespaces_are_left_to_them(namespace):
    s = from_stack_file({f"{namespace}:setting": "x"})
    assert s.models[0].name == "a"


@pytest.mark.parametrize("ciphertext,problem", [
    ("", "holds no ciphertext"), (None, "holds no ciphertext"), ([1, 2], "holds no ciphertext"),
    ("hf_abcdefghijklmnopqrstuvwxyz", "holds text Pulumi didn't encrypt"),
    ("sk-abcdefghijklmnop", "holds text Pulumi didn't encrypt"),
    ("not encrypted at all", "holds text Pulumi didn't encrypt"),
])
def test_a_secure_value_must_hold_a_ciphertext(ciphertext, problem):
    with pytest.raises(UserError) as err:
        from_stack_file({"kaito-aks:hfToken": {"secure": ciphertext}})
    assert len(err.value.lines) == 1 and err.value.lines[0].startswith(f"kaito-aks:hfToken: `secure:` {problem}")
    assert "abcdefghij" not in err.value.lines[0]


@pytest.mark.parametrize("ciphertext", ["v1:ZXhhbXBsZQ==:AAAAhfEncrypted", "AAABAKpIy0P4+/Zq3WvDm8cdIgw="])
def test_pulumi_ciphertexts_are_accepted(ciphertext):
    s = from_stack_file({"kaito-aks:hfToken": {"secure": ciphertext}})
    assert s.secrets_set == {"hfToken"}


def test_a_secret_written_as_a_mapping_with_more_than_secure_is_plain_text():
    with pytest.raises(UserError) as err:
        from_stack_file({"kaito-aks:hfToken": {"secure": "x", "other": 1}})
    assert err.value.lines[0].startswith("kaito-aks:hfToken: is stored in plain text")


def test_project_defaults_are_the_scalar_defaults_pulumi_yaml_declares():
    assert project_defaults() == {"namespace": "llm"}


def test_a_stack_value_overrides_a_project_default():
    s = from_stack_file({"kaito-aks:namespace": "serving"})
    assert s.namespace == "serving"


def test_project_defaults_may_name_the_project_and_skip_other_namespaces(tmp_path, monkeypatch):
    """Pulumi.yaml may spell a key `namespace` or `kaito-aks:namespace`; another provider's keys aren't ours."""
    (tmp_path / "Pulumi.yaml").write_text(
        "name: kaito-aks\nconfig:\n  kaito-aks:namespace: {type: string, default: serving}\n"
        "  azure-native:location: {default: westus3}\n  production: {type: boolean}\n")
    monkeypatch.setattr("infra.settings.PROJECT_DIR", tmp_path)
    assert project_defaults() == {"namespace": "serving"}


def test_a_cluster_that_is_not_a_mapping_is_one_line_even_with_a_location_fallback():
    with pytest.raises(UserError) as err:
        settings(location="westus2", cluster="aks-prod")
    assert err.value.lines == ["kaito-aks:cluster: must be a mapping of settings (`key: value` lines under it), not a "
                               "single value (got 'aks-prod')"]


def test_did_you_mean_draws_on_the_settings_at_the_typo_and_nothing_internal():
    """_fields_at: the candidates an "unknown setting" line suggests from."""
    assert "instanceType" in _fields_at(["models", 0]) and "location" in _fields_at(["cluster"])
    assert {"stack", "secretsSet"}.isdisjoint(_fields_at([])) and "models" in _fields_at([])
    assert _fields_at(["namespace"]) == () and _fields_at(["production"]) == ()   # scalars have no sub-settings
    assert only_problem(secretsSet=["hfToken"]).startswith("kaito-aks:secretsSet: unknown setting")


@pytest.mark.parametrize("namespace", ["default", "kaito-workspace", "gatekeeper-system", "app-routing-system",
                                       "calico-system", "tigera-operator", "aks-istio-system"])
def test_namespaces_others_run_in_are_refused(namespace):
    # the stack's namespace gets a default-deny NetworkPolicy and quotas: on KAITO's own namespace (Helm) they would
    # cut off its webhook, and on `default` they would hit everything else in the cluster
    line = only_problem(namespace=namespace)
    assert line.startswith(f"kaito-aks:namespace: {namespace!r} is a namespace Kubernetes, AKS or KAITO itself uses")
    assert line.endswith("choose the stack's own, e.g. 'llm'")


def test_kaitos_helm_namespace_is_the_one_the_cluster_installs_it_in():
    from components import cluster
    assert cluster.KAITO_HELM_NAMESPACE == "kaito-workspace"


@pytest.mark.parametrize("models,line", [
    ([{**MODEL, "replicas": True}], "kaito-aks:models[0].replicas: must be a whole number, written without quotes, "
                                    "e.g. 2 (got True)"),
    ([{**MODEL, "replicas": "2"}], "kaito-aks:models[0].replicas: must be a whole number, written without quotes, "
                                   "e.g. 2 (got '2')"),
    ([{**MODEL, "spot": 1}], "kaito-aks:models[0].spot: must be true or false, written without quotes (got 1)"),
    ([{**MODEL, "spot": "yes"}], "kaito-aks:models[0].spot: must be true or false, written without quotes (got 'yes')"),
])
def test_numbers_and_booleans_are_not_guessed_from_other_types(models, line):
    # `replicas: true` meaning 1 and `spot: 1` meaning true hide a mistake; Pulumi hands nested values over as JSON,
    # so the program sees the same types as this reader
    assert problems(models=models) == [line]


def test_a_stack_file_read_outside_a_project_has_no_project_defaults(tmp_path, monkeypatch):
    # e.g. `plan --file` on a copy of a stack file: without Pulumi.yaml there is nothing to inject
    import infra.settings as settings_module
    monkeypatch.setattr(settings_module, "PROJECT_DIR", tmp_path)
    assert project_defaults() == {}
    assert from_stack_file({}).namespace == "llm"      # the model's own default, the same value
