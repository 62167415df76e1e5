"""infra.render.azure_args: what AKS is asked for (GPU pools, upgrades, maintenance windows, KAITO's chart values)."""
from __future__ import annotations

import pytest

from infra.errors import UserError
from infra.plan import build_plan
from infra.render import azure_args
from infra.settings import settings_from_config

ACCESS = {"sourceRanges": ["203.0.113.0/24"]}


def plan_of(models, stack="dev", **values):
    data = {"models": models, "access": ACCESS, **values}
    if stack.startswith("prod"):
        data.setdefault("cluster", {})["apiServerAuthorizedIpRanges"] = ["203.0.113.0/24"]
    s = settings_from_config(stack, data, {"hfToken", "apiKeys"})
    # apiKeys only where the gateway checks them (the plan refuses keys that nothing checks)
    return build_plan(s if s.gateway_enabled else settings_from_config(stack, data, {"hfToken"}))


def test_spot_pools_keep_their_count_through_evictions_with_the_autoscaler_pinned():
    plan = plan_of([{"name": "s", "model": "phi-3-mini-4k-instruct", "spot": True}], kaito={"mode": "helm"})
    (r,) = plan.replicas
    args = azure_args.gpu_pool_args(r)
    assert (args["scale_set_priority"], args["scale_set_eviction_policy"]) == ("Spot", "Delete")
    assert args["enable_auto_scaling"] is True and args["min_count"] == args["max_count"] == args["count"] == r.nodes
    assert "upgrade_settings" not in args          # Azure refuses surge settings on spot pools


def test_on_demand_gpu_pools_upgrade_without_a_surge_node_and_without_the_autoscaler():
    (r,) = plan_of([{"name": "a", "model": "phi-3-mini-4k-instruct"}]).replicas
    args = azure_args.gpu_pool_args(r)
    assert args["upgrade_settings"] == {"max_surge": "0", "max_unavailable": "1"}
    assert args["enable_auto_scaling"] is False and "min_count" not in args


def test_production_gets_a_weekly_maintenance_window_for_both_upgrade_channels():
    plan = plan_of([{"name": "a", "model": "phi-3-mini-4k-instruct"}], stack="prod", gateway={"enabled": False})
    configs = azure_args.maintenance_configuration_args(plan)
    assert [c["config_name"] for c in configs] == ["aksManagedAutoUpgradeSchedule", "aksManagedNodeOSUpgradeSchedule"]
    for c in configs:
        assert c["maintenance_window"] == {"schedule": {"weekly": {"day_of_week": "Sunday", "interval_weeks": 1}},
                                           "duration_hours": 4, "start_time": "00:00", "utc_offset": "+00:00"}
    up = plan.to_json()["upgrades"]
    assert up["gpu_pool_max_surge"] == "0" and up["extra_quota_vcpus"] == {}
    assert up["maintenance_window"]["day_of_week"] == "Sunday"


def test_other_stacks_have_no_window_unless_they_set_one():
    plain = plan_of([{"name": "a", "model": "phi-3-mini-4k-instruct"}])
    assert azure_args.maintenance_configuration_args(plain) == []
    assert plain.to_json()["upgrades"]["maintenance_window"] is None
    window = {"enabled": True, "dayOfWeek": "Tuesday", "startTime": "02:30", "durationHours": 6, "utcOffset": "+01:00"}
    custom = plan_of([{"name": "a", "model": "phi-3-mini-4k-instruct"}], cluster={"maintenanceWindow": window})
    (auto, _) = azure_args.maintenance_configuration_args(custom)
    assert auto["maintenance_window"]["start_time"] == "02:30"
    assert auto["maintenance_window"]["schedule"]["weekly"]["day_of_week"] == "Tuesday"


@pytest.mark.parametrize("window,key", [
    ({"durationHours": 3}, "durationHours"), ({"startTime": "25:00"}, "startTime"), ({"utcOffset": "1"}, "utcOffset"),
    ({"dayOfWeek": "Funday"}, "dayOfWeek"), ({"intervalWeeks": 5}, "intervalWeeks"),
])
def test_invalid_maintenance_windows_are_one_line_each(window, key):
    with pytest.raises(UserError) as err:
        plan_of([{"name": "a", "model": "phi-3-mini-4k-instruct"}], cluster={"maintenanceWindow": window})
    (line,) = err.value.lines
    assert line.startswith(f"kaito-aks:cluster.maintenanceWindow.{key}: ")


def test_kaito_chart_under_byo_skips_the_local_nvme_csi_driver():
    plan = plan_of([{"name": "a", "model": "phi-3-mini-4k-instruct"}], kaito={"mode": "helm"})
    values = azure_args.kaito_chart_values(plan)
    assert values["nodeProvisioner"] == "byo"
    assert values["localCSIDriver"] == {"useLocalCSIDriver": False}


def test_the_removed_provisioner_identity_setting_is_refused_with_why_and_what_to_delete():
    with pytest.raises(UserError) as err:
        plan_of([{"name": "a", "model": "phi-3-mini-4k-instruct"}], kaito={"provisionerIdentity": True})
    (line,) = err.value.lines
    assert line.startswith("kaito-aks:kaito.provisionerIdentity: no longer exists: since July 2025 the AKS add-on's "
                           "gpu-provisioner runs in the AKS control plane")
    assert line.endswith("delete kaito.provisionerIdentity from the stack file")
