"""Regional on-demand and spot prices of the catalog's Azure GPU sizes, offline, from a dated snapshot.

``infra/catalog/azure_prices.yaml`` holds, per size and region, the Linux pay-as-you-go and spot list prices (USD per
hour), and the snapshots they come from. Every region belongs to exactly one snapshot; a region that belongs to none
is *not in the snapshot*. :func:`quote` answers "what does this size cost in this region (on spot or not)":

- a region in the snapshot: that region's price; a size with no row there is not offered there (as of the snapshot)
  and gets :class:`Unpriced` with that reason;
- a spot price the snapshot doesn't know: priced at the on-demand price, the most a spot VM with ``spotMaxPrice -1``
  (what kaito-aks sets) is charged, with a note;
- a region not in the snapshot: priced at East US, with a note saying so and how to refresh.

:func:`refresh` rebuilds the data from Azure's public Retail Prices API (``python -m infra catalog refresh-prices``):
:func:`fetch_retail_items` is the only function here that touches the network; parsing (:func:`parse_retail_page`,
:func:`classify_item`, :func:`prices_from_items`) and merging are pure, and tested on the API's documented shape.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import math
import pathlib
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

PRICES_FILE = pathlib.Path(__file__).resolve().parent / "catalog" / "azure_prices.yaml"
DEFAULT_REGION = "eastus"                    # the fallback for regions not in the snapshot
RETAIL_PRICES_URL = "https://prices.azure.com/api/retail/prices"
RETAIL_API_VERSION = "2023-01-01-preview"    # filter values are case-sensitive from this version on
RETAIL_MAX_PAGES = 50                        # per query; a GPU size has a few hundred meters worldwide
REGION_RE = re.compile(r"^[a-z][a-z0-9]{1,39}$")


# ---------------------------------------------------------------------------------------------------------
# The data

@dataclass(frozen=True)
class Snapshot:
    """Where a set of regions' prices come from."""

    id: str                          # short label, e.g. "skypilot-098741e7" or "retail-api-2026-11-29"
    source: str                      # what was read
    retrieved: str                   # date (ISO) or a sentence saying why it isn't known
    regions: tuple[str, ...]         # the regions this snapshot covers (a size absent there is not offered there)
    commit: str = ""
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """One line for the plan: what the prices are and how old."""
        when = f"retrieved {self.retrieved}" if re.fullmatch(r"\d{4}-\d{2}-\d{2}", self.retrieved) else "date unknown"
        commit = f" @{self.commit[:8]}" if self.commit else ""
        return f"{self.source}{commit} ({when})"


@dataclass(frozen=True)
class RegionalPrice:
    usd_per_hour: float | None       # None: the source lists the size in the region without an on-demand price
    spot_usd_per_hour: float | None  # None: no (trustworthy) spot price


@dataclass(frozen=True)
class PriceTable:
    snapshots: tuple[Snapshot, ...]
    prices: Mapping[str, Mapping[str, RegionalPrice]]     # size -> region -> price
    currency: str = "USD"

    @functools.cached_property
    def _snapshot_by_region(self) -> dict[str, Snapshot]:
        return {region: snap for snap in self.snapshots for region in snap.regions}

    def snapshot_of(self, region: str) -> Snapshot | None:
        return self._snapshot_by_region.get(region)

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(sorted(self._snapshot_by_region))

    def price(self, size: str, region: str) -> RegionalPrice | None:
        return self.prices.get(size, {}).get(region)

    def offered_in(self, size: str) -> tuple[str, ...]:
        """The snapshot's regions that list ``size``."""
        return tuple(sorted(self.prices.get(size, {})))


@dataclass(frozen=True)
class PriceQuote:
    """A price the plan can use: ``region_priced`` is where it comes from; ``note`` says when that isn't exact."""

    usd_per_hour: float
    region_priced: str
    source: str                      # the snapshot's label
    note: str = ""                   # "" when the price is the region's own (and, for spot, its spot price)
    spot: bool = False


@dataclass(frozen=True)
class Unpriced:
    """No price: the size is not offered in the region (as of the snapshot), or the snapshot has no price for it."""

    reason: str


class PriceDataError(ValueError):
    """The price file is malformed or inconsistent (a bug in the data, not in the user's stack)."""


def _num(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise PriceDataError(f"{where}: {value!r} is not a positive price")
    return float(value)


def parse_table(doc: Mapping[str, Any]) -> PriceTable:
    """The price table from the YAML document's data (validated: one snapshot per region, rows only in covered
    regions, positive prices, spot below on-demand)."""
    snapshots = []
    for sid, raw in (doc.get("snapshots") or {}).items():
        snapshots.append(Snapshot(
            id=str(sid), source=str(raw["source"]), retrieved=str(raw.get("retrieved") or "unknown"),
            regions=tuple(str(r) for r in raw.get("regions") or ()), commit=str(raw.get("commit") or ""),
            notes=tuple(str(n) for n in raw.get("notes") or ())))
    seen: dict[str, str] = {}
    for snap in snapshots:
        for region in snap.regions:
            if region in seen:
                raise PriceDataError(f"region {region} is in two snapshots ({seen[region]}, {snap.id})")
            seen[region] = snap.id
    prices: dict[str, dict[str, RegionalPrice]] = {}
    for size, regions in (doc.get("prices") or {}).items():
        rows = {}
        for region, row in (regions or {}).items():
            where = f"prices.{size}.{region}"
            if region not in seen:
                raise PriceDataError(f"{where}: region {region} is in no snapshot")
            on_demand, spot = _num(row.get("usd"), where), _num(row.get("spot"), where + ".spot")
            if on_demand is not None and spot is not None and spot >= on_demand:
                raise PriceDataError(f"{where}: spot {spot} is not below on-demand {on_demand}")
            rows[str(region)] = RegionalPrice(on_demand, spot)
        prices[str(size)] = rows
    return PriceTable(tuple(snapshots), prices, currency=str(doc.get("currency") or "USD"))


@functools.lru_cache(maxsize=4)
def _load(path: str) -> PriceTable:
    return parse_table(yaml.safe_load(pathlib.Path(path).read_text()))


def load_prices(path: str | pathlib.Path | None = None) -> PriceTable:
    """The checked-in price table (parsed once per process)."""
    return _load(str(path or PRICES_FILE))


# ---------------------------------------------------------------------------------------------------------
# Quoting

def refresh_hint(region: str) -> str:
    return f"python -m infra catalog refresh-prices --region {region}"


def quote(size: str, region: str, spot: bool = False, table: PriceTable | None = None) -> PriceQuote | Unpriced:
    """What ``size`` costs per hour in ``region`` (on spot when ``spot``), from the price snapshot."""
    table = table or load_prices()
    snap = table.snapshot_of(region)
    note = ""
    priced_in = region
    if snap is None:
        base = table.snapshot_of(DEFAULT_REGION)
        if base is None:
            return Unpriced(f"{region} is not in the price snapshot, nor is {DEFAULT_REGION}; "
                            f"run {refresh_hint(region)}")
        covered = ", ".join(table.regions)
        note = (f"{region} is not in the price snapshot (it covers {covered}): priced at {DEFAULT_REGION}; "
                f"run {refresh_hint(region)} for {region}'s own prices")
        snap, priced_in = base, DEFAULT_REGION
    row = table.price(size, priced_in)
    if row is None:
        listed = [r for r in table.offered_in(size) if r in snap.regions]
        if not listed:        # absent from the whole snapshot: unknown to it, not known to be missing from the region
            return Unpriced(f"no {priced_in} price in {snap.label} (it lists the size in no region), so its cost "
                            "can't be planned")
        if priced_in == region:
            return Unpriced(f"not offered in {region} (not listed there in {snap.label}, which lists it in "
                            f"{', '.join(listed)})")
        return Unpriced(f"{region} is not in the price snapshot and {size} has no {DEFAULT_REGION} price; "
                        f"run {refresh_hint(region)}")
    if row.usd_per_hour is None:
        return Unpriced(f"no {priced_in} price in {snap.label}, so its cost can't be planned")
    if not spot:
        return PriceQuote(row.usd_per_hour, priced_in, snap.label, note)
    if row.spot_usd_per_hour is None:
        spot_note = (f"no {priced_in} spot price in the snapshot: priced at the on-demand price, the most a spot VM "
                     "with spotMaxPrice -1 is charged")
        return PriceQuote(row.usd_per_hour, priced_in, snap.label, "; ".join(n for n in (note, spot_note) if n), True)
    return PriceQuote(row.spot_usd_per_hour, priced_in, snap.label, note, True)


@dataclass(frozen=True)
class PriceBasis:
    """What a plan in ``region`` is priced with: the plan says it once (README "Plan JSON": ``price_source``)."""

    region: str                      # the stack's region
    region_priced: str               # where the prices come from: the region, or eastus when it isn't in the snapshot
    source: str                      # the snapshot's label
    note: str = ""                   # why region_priced differs from region, and how to fix that

    @property
    def summary(self) -> str:
        return f"{self.region_priced} list prices from {self.source}"


def basis(region: str, table: PriceTable | None = None) -> PriceBasis:
    table = table or load_prices()
    snap = table.snapshot_of(region)
    if snap is not None:
        return PriceBasis(region, region, snap.label)
    base = table.snapshot_of(DEFAULT_REGION)
    return PriceBasis(region, DEFAULT_REGION, base.label if base else "no snapshot",
                      f"{region} is not in the price snapshot (it covers {', '.join(table.regions)}): priced at "
                      f"{DEFAULT_REGION}; run {refresh_hint(region)} for {region}'s own prices")


# ---------------------------------------------------------------------------------------------------------
# Writing the file (the checked-in file is exactly render_table(load_prices()))

HEADER = """\
# Regional prices of the Azure GPU sizes in azure_gpu_skus.yaml: USD per hour, Linux, pay-as-you-go (`usd`) and
# spot (`spot`) list prices. GENERATED: `python -m infra catalog refresh-prices [--region R]` rewrites this file
# from Azure's public Retail Prices API; don't edit it by hand (infra/prices.py reads and writes it).
#
# snapshots  where each region's prices come from, and when. Every region belongs to exactly one snapshot. A region
#            in no snapshot is "not in the snapshot": the plan prices it at eastus and says so.
# prices     size -> region -> {usd, spot}. In a region a snapshot covers, a size without a row is not offered
#            there (as of the snapshot), and the plan excludes it there with that reason. null: the source lists
#            the size there without that price (a null spot price is planned at the on-demand price, the most a
#            spot VM with spotMaxPrice -1 is charged).
"""


def _fmt_price(value: float | None) -> str:
    return "null" if value is None else repr(round(value, 6))


def render_table(table: PriceTable) -> str:
    """The YAML text of ``table``, stable (sizes and regions sorted) so a refresh diff shows only what changed."""
    out = [HEADER, f"currency: {table.currency}", "snapshots:"]
    for snap in table.snapshots:
        out.append(f"  {snap.id}:")
        out.append(f"    source: {_yaml_str(snap.source)}")
        if snap.commit:
            out.append(f"    commit: {_yaml_str(snap.commit)}")
        out.append(f"    retrieved: {_yaml_str(snap.retrieved)}")
        out.append(f"    regions: [{', '.join(snap.regions)}]")
        if snap.notes:
            out.append("    notes:")
            out.extend(f"      - {_yaml_str(n)}" for n in snap.notes)
    out.append("prices:")
    for size in sorted(table.prices):
        rows = table.prices[size]
        if not rows:
            continue
        out.append(f"  {size}:")
        for region in sorted(rows):
            row = rows[region]
            usd, spot = _fmt_price(row.usd_per_hour), _fmt_price(row.spot_usd_per_hour)
            out.append(f"    {region}: {{usd: {usd}, spot: {spot}}}")
    return "\n".join(out) + "\n"


def _yaml_str(text: str) -> str:
    dumped = yaml.safe_dump(text, default_flow_style=True, width=10_000).strip()
    return dumped.removesuffix("\n...").removesuffix("...").strip()


def write_table(table: PriceTable, path: str | pathlib.Path = PRICES_FILE) -> None:
    text = render_table(table)
    parse_table(yaml.safe_load(text))            # never write a file the plan can't read
    target = pathlib.Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(target)
    _load.cache_clear()


# ---------------------------------------------------------------------------------------------------------
# The Retail Prices API (https://learn.microsoft.com/rest/api/cost-management/retail-prices/azure-retail-prices)

class PriceFetchError(RuntimeError):
    """The API couldn't be read; the message is one line saying why and what to do."""


def retail_filter(size: str, region: str | None = None) -> str:
    """The OData ``$filter`` for one size's VM consumption meters, in one region or all."""
    parts = ["serviceName eq 'Virtual Machines'", "priceType eq 'Consumption'", f"armSkuName eq '{size}'"]
    if region:
        parts.append(f"armRegionName eq '{region}'")
    return " and ".join(parts)


def retail_url(base: str, odata_filter: str) -> str:
    query = urllib.parse.urlencode({"api-version": RETAIL_API_VERSION, "$filter": odata_filter},
                                   quote_via=urllib.parse.quote)
    return f"{base}?{query}"


def parse_retail_page(doc: Any) -> tuple[list[dict], str | None]:
    """(items, next page link) of one response page; PriceFetchError when it isn't the documented envelope."""
    if not isinstance(doc, dict) or not isinstance(doc.get("Items"), list):
        raise PriceFetchError("the Retail Prices API answered without an `Items` list (not the documented response)")
    currency = doc.get("BillingCurrency", "USD")
    if currency != "USD":
        raise PriceFetchError(f"the Retail Prices API answered in {currency}, not USD")
    items = [item for item in doc["Items"] if isinstance(item, dict)]
    link = doc.get("NextPageLink")
    return items, (link if isinstance(link, str) and link else None)


_WINDOWS = re.compile(r"\bWin(dows)?\b")


def classify_item(item: Mapping[str, Any]) -> str | None:
    """"on-demand" or "spot" for a Linux hourly consumption meter of a VM; None for anything else (Windows, low
    priority, dev/test, reservations, savings plans, zero prices, other currencies)."""
    if item.get("type") != "Consumption" or item.get("serviceName") != "Virtual Machines":
        return None
    if item.get("unitOfMeasure") != "1 Hour" or item.get("currencyCode", "USD") != "USD":
        return None
    price = item.get("unitPrice", item.get("retailPrice"))
    if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price <= 0:
        return None
    product = str(item.get("productName", ""))
    if _WINDOWS.search(product) or "Cloud Services" in product:
        return None
    names = f"{item.get('skuName', '')} {item.get('meterName', '')}"
    if "Low Priority" in names:
        return None
    if not item.get("armRegionName") or not item.get("armSkuName"):
        return None
    return "spot" if re.search(r"\bSpot\b", names) else "on-demand"


def _preference(item: Mapping[str, Any]) -> tuple:
    """Among several meters of one kind: the primary meter region, the newest price, then the lowest."""
    return (0 if item.get("isPrimaryMeterRegion", True) else 1, _neg_date(item),
            float(item.get("unitPrice", item.get("retailPrice", 0))))


def _neg_date(item: Mapping[str, Any]) -> float:
    try:
        when = _dt.datetime.fromisoformat(str(item.get("effectiveStartDate", "")).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return -when.timestamp()


def prices_from_items(items: Iterable[Mapping[str, Any]], sizes: Iterable[str]) -> dict[str, dict[str, RegionalPrice]]:
    """size -> region -> price from API items. Sizes are matched case-insensitively and keyed by the catalog's
    spelling; a spot price not below the on-demand one is dropped (not trustworthy)."""
    canonical = {s.lower(): s for s in sizes}
    best: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for item in items:
        kind = classify_item(item)
        size = canonical.get(str(item.get("armSkuName", "")).lower())
        if kind is None or size is None:
            continue
        key = (size, str(item["armRegionName"]).lower(), kind)
        if key not in best or _preference(item) < _preference(best[key]):
            best[key] = item
    out: dict[str, dict[str, RegionalPrice]] = {}
    for (size, region) in sorted({(s, r) for s, r, _ in best}):
        od = best.get((size, region, "on-demand"))
        sp = best.get((size, region, "spot"))
        on_demand = float(od.get("unitPrice", od.get("retailPrice"))) if od else None
        spot = float(sp.get("unitPrice", sp.get("retailPrice"))) if sp else None
        if on_demand is not None and spot is not None and spot >= on_demand:
            spot = None
        out.setdefault(size, {})[region] = RegionalPrice(on_demand, spot)
    return out


GetJson = Callable[[str], Any]


def http_get_json(retries: int = 3, backoff: float = 0.5, timeout: float = 30.0) -> GetJson:
    """A GET-JSON function on a requests Session that retries connection errors, 429 and 5xx (urllib3 Retry,
    honouring Retry-After)."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    retry = Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=backoff,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods=frozenset({"GET"}),
                  respect_retry_after_header=True, raise_on_status=False)
    session.mount("https://", HTTPAdapter(max_retries=retry))
    session.mount("http://", HTTPAdapter(max_retries=retry))

    def get(url: str) -> Any:
        shown = url.split("?", 1)[0]
        try:
            response = session.get(url, timeout=timeout, headers={"Accept": "application/json"})
        except requests.exceptions.RequestException as err:
            raise PriceFetchError(f"can't reach {shown} ({type(err).__name__} after {retries} retries)") from None
        if response.status_code != 200:
            raise PriceFetchError(f"{shown} answered HTTP {response.status_code} (after {retries} retries)")
        try:
            return response.json()
        except ValueError:
            raise PriceFetchError(f"{shown} answered with a body that isn't JSON") from None

    return get


def fetch_retail_items(get: GetJson, base: str, odata_filter: str) -> list[dict]:
    """Every item of one query, following NextPageLink."""
    items: list[dict] = []
    url: str | None = retail_url(base, odata_filter)
    pages = 0
    while url:
        pages += 1
        if pages > RETAIL_MAX_PAGES:
            raise PriceFetchError(f"more than {RETAIL_MAX_PAGES} pages for {odata_filter!r}; the API looks broken")
        page, url = parse_retail_page(get(url))
        items.extend(page)
    return items


@dataclass
class RefreshResult:
    table: PriceTable
    regions: tuple[str, ...]
    sizes_priced: int
    rows: int
    notes: list[str] = field(default_factory=list)


def refresh(table: PriceTable, sizes: Iterable[str], get: GetJson, *, region: str | None = None,
            today: _dt.date | None = None, base: str = RETAIL_PRICES_URL) -> RefreshResult:
    """A new price table from the Retail Prices API: every region (``region`` None) or one region's rows replaced.

    Raises PriceFetchError (nothing written) when the API can't be read or the region has no price for any size.
    """
    sizes = sorted(set(sizes))
    today = today or _dt.datetime.now(_dt.UTC).date()
    items: list[dict] = []
    for size in sizes:
        items.extend(fetch_retail_items(get, base, retail_filter(size, region)))
    fetched = prices_from_items(items, sizes)
    regions = sorted({r for rows in fetched.values() for r in rows})
    if region:
        if region not in regions:
            raise PriceFetchError(
                f"the Retail Prices API has no Linux price for any catalog GPU size in '{region}': check the region "
                "name (`az account list-locations --query '[].name' -o tsv`); the price file is unchanged")
        regions = [region]
    elif not regions:
        raise PriceFetchError("the Retail Prices API returned no Linux price for any catalog GPU size; the price "
                              "file is unchanged")
    snap_id = f"retail-api-{today.isoformat()}"
    new_snap = Snapshot(
        id=snap_id, source=f"Azure Retail Prices API ({RETAIL_PRICES_URL}, api-version {RETAIL_API_VERSION}), "
                           "Linux Consumption meters, unitPrice",
        retrieved=today.isoformat(), regions=tuple(regions),
        notes=("a size without a row in a region had no Linux consumption meter there on that date",))
    snapshots: tuple[Snapshot, ...]
    if region is None:
        snapshots = (new_snap,)
        prices = fetched
    else:
        snapshots_list = []
        for snap in table.snapshots:
            kept = tuple(r for r in snap.regions if r != region)
            if snap.id == snap_id:
                new_snap = dataclasses.replace(snap, regions=tuple(sorted(set(kept) | {region})))
                continue
            if kept:
                snapshots_list.append(dataclasses.replace(snap, regions=kept))
        snapshots = (*snapshots_list, new_snap)
        prices = {s: {r: p for r, p in by_region.items() if r != region} for s, by_region in table.prices.items()}
        for size, by_region in fetched.items():
            prices.setdefault(size, {})[region] = by_region[region]
        prices = {s: by_region for s, by_region in prices.items() if by_region}
    new = PriceTable(snapshots, prices, table.currency)
    count = sum(len(by_region) for by_region in fetched.values())
    return RefreshResult(new, tuple(regions), len(fetched), count)
