"""Azure facts for the driver's preflight tests: the SDK's own model classes (azure-mgmt-compute) built from the REST
API's published examples (tests/data/azure/README.md), as tests/unit/test_preflight.py builds them, and a fake of
:func:`infra.preflight.read_azure` that returns them and records what it was asked.
"""
from __future__ import annotations

import copy
import json
import pathlib
from typing import Any

from azure.mgmt.compute import models

from infra.preflight import AzureFacts, Needs

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "azure"
SUB = "00000000-0000-0000-0000-000000000000"
A10 = "StandardNVADSA10v5Family"
A100 = "StandardNCADSA100v4Family"
H100 = "StandardNCadsH100v5Family"
DDS = "standardDDSv5Family"


def example(name: str) -> dict:
    return json.loads((DATA / name).read_text())["responses"]["200"]["body"]


USAGE_ROW = example("Usage_List_MaximumSet_Gen.json")["value"][0]
SKU_ROW = example("ListAvailableResourceSkusForARegion.json")["value"][0]


def usage(name: str, current: int, limit: int, localized: str | None = None) -> models.Usage:
    row = copy.deepcopy(USAGE_ROW)
    row.update(currentValue=current, limit=limit, name={"value": name, "localizedValue": localized or name})
    return models.Usage(row)


def sku(name: str, family: str, vcpus: int, region: str = "eastus") -> models.ResourceSku:
    row = copy.deepcopy(SKU_ROW)
    row.update(name=name, size=name.removeprefix("Standard_"), family=family, locations=[region],
               locationInfo=[{"location": region, "zones": ["1", "2", "3"]}], restrictions=[])
    caps = {c["name"]: c for c in row["capabilities"]}
    caps["vCPUs"]["value"] = str(vcpus)
    caps["LowPriorityCapable"]["value"] = "True"
    return models.ResourceSku(row)


# every size the dev and prod stacks use or list as alternatives, as eastus offers them
SKUS = [sku("Standard_NV36ads_A10_v5", A10, 36), sku("Standard_NV72ads_A10_v5", A10, 72),
        sku("Standard_NC24ads_A100_v4", A100, 24), sku("Standard_NC48ads_A100_v4", A100, 48),
        sku("Standard_NC96ads_A100_v4", A100, 96), sku("Standard_NC40ads_H100_v5", H100, 40),
        sku("Standard_NC80adis_H100_v5", H100, 80), sku("Standard_D4ds_v5", DDS, 4)]


def usages(**families: tuple[int, int]) -> list[models.Usage]:
    """Usage rows: ``cores`` and ``spot`` (regional totals) default to (0, 1000); families given as (current, limit)."""
    rows = [usage("cores", *families.pop("cores", (0, 1000)), localized="Total Regional vCPUs"),
            usage("lowPriorityCores", *families.pop("spot", (0, 1000)), localized="Total Regional Low-priority vCPUs")]
    return rows + [usage(name, current, limit) for name, (current, limit) in families.items()]


AMPLE = {A10: (0, 200), A100: (0, 200), H100: (0, 200), DDS: (0, 100)}


class FakeAzure:
    """Stands in for :func:`infra.preflight.read_azure`: the facts given (ample quota by default), and each call's
    (region, subscription, credential) recorded."""

    def __init__(self, quota: dict[str, tuple[int, int]] | None = None, skus: list | None = None):
        self.quota = AMPLE if quota is None else quota
        self.skus = SKUS if skus is None else skus
        self.calls: list[tuple[str, str, Any]] = []

    def __call__(self, needs: Needs, subscription_id: str, credential: Any, **_: Any) -> AzureFacts:
        self.calls.append((needs.region, subscription_id, credential))
        return AzureFacts(usages(**dict(self.quota)), list(self.skus), [])
