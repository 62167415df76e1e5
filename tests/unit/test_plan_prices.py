"""The plan prices each stack in its own region (and spot replicas at spot prices), from the dated snapshot in
infra/catalog/azure_prices.yaml, says which region and snapshot it used, and excludes sizes the region doesn't offer."""

import pytest

from infra import prices
from infra.cli_plan import render_table
from infra.errors import UserError
from infra.plan import build_plan
from infra.settings import settings_from_config

OPEN = {"access": {"sourceRanges": ["203.0.113.0/24"]}}
HELM = {"mode": "helm"}
LLAMA = {"name": "m", "model": "llama-3.1-8b-instruct"}


def plan_in(region, models=(LLAMA,), **extra):
    values = {**OPEN, "kaito": HELM, "models": list(models), "cluster": {"location": region}, **extra}
    return build_plan(settings_from_config("dev", values, secret_keys={"hfToken"}))


def test_a_stack_in_a_snapshot_region_is_priced_there_and_says_so():
    east, west = plan_in("eastus"), plan_in("westus")
    assert east.replicas[0].instance_type == west.replicas[0].instance_type == "Standard_NV36ads_A10_v5"
    assert (east.usd_per_hour, west.usd_per_hour) == (3.2, 4.16)
    assert west.price_region == "westus" and west.price_notes == ()
    assert west.to_json()["price_source"] == ("westus list prices from skypilot-org/skypilot-catalog "
                                              "catalogs/v6/azure/vms.csv @098741e7 (date unknown)")
    assert "Prices: westus list prices from skypilot-org/skypilot-catalog" in render_table(west)


def test_a_region_not_in_the_snapshot_is_priced_at_east_us_with_a_warning():
    plan = plan_in("westeurope")
    assert plan.usd_per_hour == 3.2 and plan.price_region == "eastus"
    doc = plan.to_json()
    assert doc["price_region"] == "eastus"
    assert doc["price_notes"][0].startswith("westeurope is not in the price snapshot")
    assert "  note: westeurope is not in the price snapshot" in render_table(plan)


def test_sizes_not_offered_in_the_region_are_excluded_with_the_reason():
    plan = plan_in("westus", [{"name": "big", "model": "llama-3.3-70b-instruct"}])
    alternatives = {a.instance_type for a in plan.replicas[0].alternatives}
    assert "Standard_NC80adis_H100_v5" not in alternatives and "Standard_NC40ads_H100_v5" not in alternatives
    with pytest.raises(UserError) as err:
        plan_in("westus", [{"name": "big", "model": "llama-3.3-70b-instruct",
                            "instanceType": "Standard_NC80adis_H100_v5"}])
    assert "Standard_NC80adis_H100_v5: not offered in westus (not listed there in " in err.value.lines[0]


def test_spot_replicas_are_sized_on_spot_prices():
    plan = plan_in("eastus", [{**LLAMA, "spot": True}])
    r = plan.replicas[0]
    # on spot the A100 (0.444433) undercuts the A10 (0.8) that wins on demand (3.673 vs 3.2)
    assert (r.spot, r.instance_type) == (True, "Standard_NC24ads_A100_v4")
    assert r.usd_per_hour == pytest.approx(prices.quote(r.instance_type, "eastus", spot=True).usd_per_hour, abs=1e-4)
    assert "spot replicas at spot prices" in render_table(plan)


def test_an_unknown_spot_price_is_planned_at_on_demand_and_noted():
    plan = plan_in("eastus", [{"name": "h", "model": "llama-3.3-70b-instruct", "spot": True,
                               "instanceType": "Standard_NC80adis_H100_v5"}])
    assert plan.usd_per_hour == 13.96
    assert any("no eastus spot price in the snapshot" in n for n in plan.price_notes)
