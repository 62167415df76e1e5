"""Preflight with the real Azure SDK: azure-mgmt-compute's clients and azure-identity's credential chain, against a
local HTTP server that replays Azure Resource Manager's responses.

No Azure endpoint can run locally, so the server answers the three read-only calls preflight makes with bodies in
the exact shape of the REST API's published examples (tests/data/azure/README.md has the repository, commit and path
of each):

- usages:        Compute/stable/2026-04-01/examples/computeRPCommonExamples/Usage_List_MaximumSet_Gen.json
- resource SKUs: Skus/stable/2021-07-01/examples/skus/ListAvailableResourceSkusForARegion.json
- scale sets:    Compute/stable/2026-04-01/examples/virtualMachineScaleSetExamples/VirtualMachineScaleSet_List_MinimumSet_Gen.json

Each row the tests add is a copy of the example's own entry with names and numbers changed. The credential is
azure-identity's DefaultAzureCredential (what `python -m infra preflight` uses), whose Azure CLI step runs a stand-in
`az` on PATH: it prints a token like `az account get-access-token` does, or the error of an expired login.
"""
from __future__ import annotations

import copy
import http.server
import json
import pathlib
import threading
import urllib.parse

import pytest

from infra.cli_preflight import default_credential, preflight
from infra.errors import UserError
from infra.plan import build_plan
from infra.settings import load_stack_file

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "azure"
SUB = "00000000-0000-0000-0000-000000000000"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL21hbmFnZW1lbnQuYXp1cmUuY29tIn0.c2lnbmF0dXJl"


def example(name):
    return json.loads((DATA / name).read_text())["responses"]["200"]["body"]


USAGES = example("Usage_List_MaximumSet_Gen.json")
SKUS = example("ListAvailableResourceSkusForARegion.json")
SCALE_SETS = example("VirtualMachineScaleSet_List_MinimumSet_Gen.json")


def usage(name, current, limit, localized=None):
    row = copy.deepcopy(USAGES["value"][0])
    row.update(currentValue=current, limit=limit, name={"value": name, "localizedValue": localized or name})
    return row


def sku(name, family, vcpus, restrictions=()):
    row = copy.deepcopy(SKUS["value"][0])
    row.update(name=name, size=name.removeprefix("Standard_"), family=family, locations=["eastus"],
               locationInfo=[{"location": "eastus", "zones": ["1", "2", "3"]}])
    if restrictions:
        row["restrictions"] = list(restrictions)
    caps = {c["name"]: c for c in row["capabilities"]}
    caps["vCPUs"]["value"] = str(vcpus)
    caps["LowPriorityCapable"]["value"] = "True"
    return row


def scale_set(pool_name, size, capacity):
    row = copy.deepcopy(SCALE_SETS["value"][0])
    name = f"aks-{pool_name}-12345678-vmss"
    row.update(id=row["id"].replace("{virtualMachineScaleSetName}", name), name=name,
               tags={"aks-managed-poolName": pool_name}, sku={"name": size, "tier": "Standard", "capacity": capacity},
               properties={"virtualMachineProfile": {"priority": "Regular"}})
    return row


A10, H100, A100, DDS = ("StandardNVADSA10v5Family", "StandardNCadsH100v5Family", "standardNCADSA100v4Family",
                        "standardDDSv5Family")


def offered(*exclude, restricted=()):
    rows = [sku("Standard_NV36ads_A10_v5", "standardNVADSA10v5Family", 36),
            sku("Standard_NC80adis_H100_v5", H100, 80), sku("Standard_NC40ads_H100_v5", H100, 40),
            sku("Standard_NC24ads_A100_v4", "StandardNCADSA100v4Family", 24),
            sku("Standard_NC48ads_A100_v4", "StandardNCADSA100v4Family", 48),
            sku("Standard_NV72ads_A10_v5", "standardNVADSA10v5Family", 72), sku("Standard_D4ds_v5", DDS, 4)]
    out = []
    for row in rows:
        if row["name"] in exclude:
            continue
        if row["name"] in restricted:
            row["restrictions"] = [{"type": "Location", "values": ["eastus"],
                                    "restrictionInfo": {"locations": ["eastus"]},
                                    "reasonCode": "NotAvailableForSubscription"}]
        out.append(row)
    return [*SKUS["value"], *out]          # the example's own westus rows too: other regions are ignored


def quota(**limits):
    """usages rows: family=(current, limit); split over two pages (nextLink) like Azure does."""
    rows = [usage("cores", *limits.pop("cores", (0, 1000)), localized="Total Regional vCPUs"),
            usage("lowPriorityCores", 0, 100, localized="Total Regional Low-priority vCPUs")]
    rows += [usage(name, *value, localized=f"{name} vCPUs") for name, value in limits.items()]
    return rows


class Arm(http.server.BaseHTTPRequestHandler):
    """Replays the scenario's bodies at the paths and api-versions azure-mgmt-compute 39.0.0 uses."""

    scenario: dict = {}
    seen: list = []

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        Arm.seen.append({"path": url.path, "query": query, "auth": self.headers.get("Authorization", "")})
        s = Arm.scenario
        if "status" in s:
            return self._send(s["status"], s["body"], s.get("headers", {}))
        prefix = f"/subscriptions/{SUB}"
        if url.path == f"{prefix}/providers/Microsoft.Compute/locations/eastus/usages":
            rows = s["usages"]
            if query.get("page") == ["2"]:
                return self._send(200, {"value": rows[2:], "nextLink": None})
            base = f"http://{self.headers['Host']}{url.path}?api-version={query['api-version'][0]}&page=2"
            return self._send(200, {"value": rows[:2], "nextLink": base})
        if url.path == f"{prefix}/providers/Microsoft.Compute/skus":
            return self._send(200, {"value": s["skus"], "nextLink": None})
        if url.path.endswith("/providers/Microsoft.Compute/virtualMachineScaleSets"):
            if s.get("scale_sets") is None:
                rg = url.path.split("/resourceGroups/")[1].split("/")[0]
                return self._send(404, {"error": {"code": "ResourceGroupNotFound",
                                                  "message": f"Resource group '{rg}' could not be found."}})
            return self._send(200, {"value": s["scale_sets"]})
        return self._send(404, {"error": {"code": "NotFound", "message": url.path}})

    def _send(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def arm():
    Arm.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Arm)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


FAKE_AZ_OK = f"""#!/bin/sh
echo '{{"accessToken": "{TOKEN}", "expiresOn": "2099-01-01 00:00:00.000000", "expires_on": 4070908800, "subscription": "{SUB}", "tenant": "11111111-1111-1111-1111-111111111111", "tokenType": "Bearer"}}'
"""
FAKE_AZ_EXPIRED = """#!/bin/sh
echo "ERROR: AADSTS700082: The refresh token has expired due to inactivity. The token was issued on 2026-01-01T00:00:00Z and was inactive for 90.00:00:00. Trace ID: 0 Correlation ID: 0 Timestamp: 2026-11-29 00:00:00Z. Interactive authentication is needed. Please run: az login --scope https://management.azure.com/.default" >&2
exit 1
"""


@pytest.fixture
def az(tmp_path, monkeypatch):
    """A stand-in Azure CLI on PATH (and nothing else of the credential chain configured)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
                 "AZURE_USERNAME", "IDENTITY_ENDPOINT", "MSI_ENDPOINT", "ARM_CLIENT_ID", "ARM_TENANT_ID",
                 "ARM_CLIENT_SECRET", "ARM_USE_OIDC", "ARM_USE_MSI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("HOME", str(tmp_path))

    def install(script):
        path = bin_dir / "az"
        path.write_text(script)
        path.chmod(0o755)
    return install


PLAN = build_plan(load_stack_file("prod"))   # 2 x NV36ads_A10_v5, 1 x NC80adis_H100_v5, system 3 x D4ds_v5


def run(arm_url, **scenario):
    Arm.scenario = scenario
    return preflight(PLAN, SUB, default_credential(), base_url=arm_url, enforce_https=False)


ENOUGH = dict(**{A10: (0, 100), H100: (0, 100), A100: (0, 100), DDS: (0, 100)})


def test_enough_quota_passes_through_the_real_clients(arm, az):
    az(FAKE_AZ_OK)
    report = run(arm, usages=quota(**ENOUGH), skus=offered())
    assert report.ok, report.problems
    # the SKUs API says standardNVADSA10v5Family, the usages API StandardNVADSA10v5Family: matched, usages' spelling
    assert f"quota {A10} in eastus: the plan needs 72 vCPUs, 100 of 100 free" in report.lines
    assert f"quota {H100} in eastus: the plan needs 80 vCPUs, 100 of 100 free" in report.lines
    assert f"quota {DDS} in eastus: the plan needs 16 vCPUs (12 for the pools + 4 upgrade surge), 100 of 100 free" \
        in report.lines
    paths = [(s["path"].rsplit("/", 1)[-1], s["query"]["api-version"][0]) for s in Arm.seen]
    assert paths == [("usages", "2026-04-01"), ("usages", "2026-04-01"), ("skus", "2021-07-01"),
                     ("virtualMachineScaleSets", "2026-04-01")]                    # the second usages page followed
    assert Arm.seen[2]["query"]["$filter"] == ["location eq 'eastus'"]
    assert "/resourceGroups/MC_rg-kaito-prod_kaito-prod_eastus/" in Arm.seen[3]["path"]
    assert all(s["auth"] == f"Bearer {TOKEN}" for s in Arm.seen)


def test_too_little_quota_names_the_family_the_request_and_an_alternative(arm, az):
    az(FAKE_AZ_OK)
    report = run(arm, usages=quota(**{**ENOUGH, H100: (40, 100)}), skus=offered())
    assert report.problems == [
        f"quota: {H100} in eastus has 60 of 100 vCPUs free, the plan needs 80: request 20 more vCPUs for {H100} in "
        "eastus (a new limit of 120; Azure portal > Quotas > Compute), or set kaito-aks:models[1].instanceType: "
        "Standard_NC24ads_A100_v4 (3 x, $11.019/h, the plan's next alternative with quota free)"]


def test_a_restricted_size_names_the_next_available_alternative(arm, az):
    az(FAKE_AZ_OK)
    report = run(arm, usages=quota(**ENOUGH), skus=offered(restricted=("Standard_NV36ads_A10_v5",)))
    (problem,) = report.problems
    workspaces = ", ".join(r.workspace for r in PLAN.replicas_of("llama-8b"))
    assert problem == (
        f"size: Standard_NV36ads_A10_v5 ({workspaces}) is not available to this subscription in eastus (restriction: "
        "NotAvailableForSubscription): set kaito-aks:models[0].instanceType: Standard_NC24ads_A100_v4 (1 x, "
        "$3.673/h, the plan's next alternative available there), or ask Azure support to enable "
        "Standard_NV36ads_A10_v5 in eastus for the subscription")


def test_a_region_without_the_size(arm, az):
    az(FAKE_AZ_OK)
    report = run(arm, usages=quota(**ENOUGH), skus=offered("Standard_NC80adis_H100_v5"))
    (problem,) = report.problems
    assert problem.startswith(f"size: Standard_NC80adis_H100_v5 ({PLAN.replicas_of('llama-70b')[0].workspace}) is "
                              "not offered in eastus (the resource SKUs API doesn't list it there): set "
                              "kaito-aks:models[1].instanceType: Standard_NC24ads_A100_v4 (3 x, $11.019/h")


def test_the_stacks_running_pools_are_not_counted_twice(arm, az):
    az(FAKE_AZ_OK)
    running = [scale_set(r.pool_name, r.instance_type, r.nodes) for r in PLAN.replicas]
    running.append(scale_set("system", "Standard_D4ds_v5", 3))
    exact = {A10: (72, 72), H100: (80, 80), DDS: (12, 16), "cores": (164, 168)}   # all in use, by this stack
    report = run(arm, usages=quota(**exact), skus=offered(), scale_sets=running)
    assert report.ok, report.problems
    report = run(arm, usages=quota(**exact), skus=offered(), scale_sets=None)    # none of it is ours
    assert len(report.problems) == 4


def test_expired_credentials_are_one_line_exit_2_without_the_token(arm, az):
    az(FAKE_AZ_EXPIRED)                                    # the CLI's refresh token expired
    with pytest.raises(UserError) as err:
        run(arm, usages=quota(**ENOUGH), skus=offered())
    assert err.value.exit_code == 2
    assert err.value.lines == ["Azure credentials: expired (AADSTS700082); run `az login` again, or renew the "
                               "service principal's secret or federated token"]
    assert Arm.seen == []                                  # nothing was sent without a token

    az(FAKE_AZ_OK)                                         # ARM refuses a token that has expired
    expired = {"error": {"code": "ExpiredAuthenticationToken",
                         "message": "The access token expiry UTC time '11/29/2026 8:22:51 AM' is earlier than current "
                                    "UTC time '11/29/2026 9:27:25 AM'."}}
    with pytest.raises(UserError) as err:
        run(arm, status=401, body=expired, headers={
            "WWW-Authenticate": 'Bearer authorization_uri="https://login.windows.net/", error="invalid_token", '
                                'error_description="The access token expiry UTC time is earlier than current UTC time."'})
    assert err.value.exit_code == 2 and len(err.value.lines) == 1
    assert err.value.lines[0].startswith("Azure credentials: expired (ExpiredAuthenticationToken); run `az login` again")
    assert TOKEN not in err.value.lines[0] and "eyJ" not in err.value.lines[0]


def test_no_credentials_is_one_line_exit_2_with_the_fix(arm, az):
    with pytest.raises(UserError) as err:                  # no az on PATH, nothing else configured
        run(arm, usages=quota(**ENOUGH), skus=offered())
    assert err.value.exit_code == 2
    assert err.value.lines == [
        "Azure credentials: none usable (no credential of the chain could get a token); run `az login` (and `az "
        "account set --subscription ID`), or set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET (service "
        "principal) or AZURE_FEDERATED_TOKEN_FILE (workload identity)"]


def test_no_permission_is_one_line_exit_2(arm, az):
    az(FAKE_AZ_OK)
    with pytest.raises(UserError) as err:
        run(arm, status=403, body={"error": {"code": "AuthorizationFailed", "message": "The client does not have "
                                             "authorization to perform action 'Microsoft.Compute/locations/usages/read'"}})
    assert err.value.exit_code == 2
    assert err.value.lines[0].startswith(f"Azure: the signed-in identity may not read compute usages, SKUs or scale "
                                         f"sets in subscription {SUB} (HTTP 403 AuthorizationFailed)")
