"""Regional and spot prices: the checked-in snapshot is consistent, quotes say where a price comes from, and the
Retail Prices API is parsed from its documented shape (tests/data/azure/retail_prices_doc_item.json)."""
import copy
import datetime as dt
import http.server
import json
import pathlib
import socket
import subprocess
import sys
import threading
import urllib.parse

import pytest
import yaml

from infra import prices
from infra.catalog import load_catalog
from infra.catalog_report import TABLES

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC_ITEM = json.loads((ROOT / "tests" / "data" / "azure" / "retail_prices_doc_item.json").read_text())
TABLE = prices.load_prices()
CAT = load_catalog()
US_REGIONS = ("centralus", "eastus", "eastus2", "northcentralus", "southcentralus", "westcentralus", "westus",
              "westus2", "westus3")


# ---------------------------------------------------------------------------------------------------------
# The snapshot

def test_every_size_the_plan_may_choose_has_an_east_us_price_equal_to_the_catalogs():
    choosable = [s for s in CAT.sizes.values() if s.usd_per_hour is not None]
    assert len(choosable) >= 20
    for size in choosable:
        q = prices.quote(size.name, "eastus")
        assert isinstance(q, prices.PriceQuote), (size.name, q)
        assert q.usd_per_hour == size.usd_per_hour and q.region_priced == "eastus" and q.note == "", size.name


def test_spot_is_below_on_demand_wherever_both_are_known():
    pairs = 0
    for size, rows in TABLE.prices.items():
        for region, row in rows.items():
            if row.usd_per_hour is not None and row.spot_usd_per_hour is not None:
                assert 0 < row.spot_usd_per_hour < row.usd_per_hour, (size, region)
                pairs += 1
            od, spot = prices.quote(size, region), prices.quote(size, region, spot=True)
            if isinstance(od, prices.PriceQuote):
                assert spot.usd_per_hour <= od.usd_per_hour, (size, region)
    assert pairs >= 100


def test_every_priced_size_is_a_catalog_size_and_every_region_is_in_a_snapshot():
    for size, rows in TABLE.prices.items():
        assert size in CAT.sizes, size
        assert set(rows) <= set(TABLE.regions), size


def test_the_snapshot_names_its_source_commit_and_only_the_us_regions_it_covers():
    (snap,) = TABLE.snapshots
    assert snap.source == "skypilot-org/skypilot-catalog catalogs/v6/azure/vms.csv"
    assert snap.commit == "098741e70562f65d7af1cceb81e33b284f742604"
    assert snap.regions == US_REGIONS
    assert any("only the 9 US regions" in n for n in snap.notes)
    assert snap.label == "skypilot-org/skypilot-catalog catalogs/v6/azure/vms.csv @098741e7 (date unknown)"


def test_the_file_is_exactly_what_the_renderer_writes():
    text = prices.PRICES_FILE.read_text()
    assert prices.render_table(prices.parse_table(yaml.safe_load(text))) == text, (
        "infra/catalog/azure_prices.yaml was edited by hand: regenerate it with `python -m infra catalog refresh-prices`")


def test_the_h100_spot_prices_the_source_equals_to_on_demand_are_unknown():
    for size in ("Standard_NC40ads_H100_v5", "Standard_NC80adis_H100_v5", "Standard_ND96isr_H100_v5"):
        assert TABLE.price(size, "eastus").spot_usd_per_hour is None


@pytest.mark.parametrize("doc,problem", [
    ({"snapshots": {"a": {"source": "s", "regions": ["eastus"]}, "b": {"source": "s", "regions": ["eastus"]}}},
     "region eastus is in two snapshots"),
    ({"snapshots": {"a": {"source": "s", "regions": ["eastus"]}}, "prices": {"X": {"westus": {"usd": 1}}}},
     "region westus is in no snapshot"),
    ({"snapshots": {"a": {"source": "s", "regions": ["eastus"]}}, "prices": {"X": {"eastus": {"usd": 1, "spot": 1}}}},
     "spot 1.0 is not below on-demand 1.0"),
    ({"snapshots": {"a": {"source": "s", "regions": ["eastus"]}}, "prices": {"X": {"eastus": {"usd": -1}}}},
     "is not a positive price"),
])
def test_inconsistent_price_data_is_refused(doc, problem):
    with pytest.raises(prices.PriceDataError, match=problem):
        prices.parse_table(doc)


# ---------------------------------------------------------------------------------------------------------
# Quotes

def test_a_region_in_the_snapshot_is_priced_at_its_own_price():
    q = prices.quote("Standard_NC24ads_A100_v4", "westus")
    assert (q.usd_per_hour, q.region_priced, q.note, q.spot) == (4.775, "westus", "", False)
    assert q.source.startswith("skypilot-org/skypilot-catalog")


def test_a_size_not_offered_in_a_covered_region_is_unpriced_with_the_reason():
    q = prices.quote("Standard_ND96asr_v4", "westus")
    assert isinstance(q, prices.Unpriced)
    assert q.reason == ("not offered in westus (not listed there in skypilot-org/skypilot-catalog "
                        "catalogs/v6/azure/vms.csv @098741e7 (date unknown), which lists it in eastus, southcentralus, "
                        "westus2)")
    assert isinstance(prices.quote("Standard_NV36ads_A10_v5", "westcentralus"), prices.Unpriced)


def test_a_region_not_in_the_snapshot_is_priced_at_east_us_and_says_so():
    q = prices.quote("Standard_NV36ads_A10_v5", "westeurope")
    assert (q.usd_per_hour, q.region_priced) == (3.2, "eastus")
    assert q.note.startswith("westeurope is not in the price snapshot (it covers centralus, eastus, ")
    assert q.note.endswith("priced at eastus; run python -m infra catalog refresh-prices --region westeurope for "
                           "westeurope's own prices")


def test_spot_replicas_are_priced_at_spot_prices():
    q = prices.quote("Standard_NV36ads_A10_v5", "eastus", spot=True)
    assert (q.usd_per_hour, q.spot, q.note) == (0.8, True, "")
    q = prices.quote("Standard_NC24ads_A100_v4", "westeurope", spot=True)
    assert q.usd_per_hour == 0.444433 and "not in the price snapshot" in q.note


def test_an_unknown_spot_price_is_planned_at_the_on_demand_price_with_a_note():
    q = prices.quote("Standard_NC40ads_H100_v5", "eastus", spot=True)
    assert (q.usd_per_hour, q.spot) == (6.98, True)
    assert "priced at the on-demand price, the most a spot VM with spotMaxPrice -1 is charged" in q.note


def test_a_listed_size_without_a_price_is_unpriced():
    q = prices.quote("Standard_NV32as_v4", "westus")
    assert isinstance(q, prices.Unpriced) and q.reason.startswith("no westus price in ")
    # absent from the whole snapshot (SkyPilot's older fetcher didn't know it): unknown, not "not offered"
    q = prices.quote("Standard_ND96isr_H200_v5", "eastus")
    assert q.reason.startswith("no eastus price in skypilot-org/") and "lists the size in no region" in q.reason


def test_the_plan_says_once_which_region_and_snapshot_it_priced_with():
    assert prices.basis("westus2") == prices.PriceBasis("westus2", "westus2", TABLE.snapshots[0].label)
    b = prices.basis("westeurope")
    assert (b.region_priced, b.summary) == ("eastus", f"eastus list prices from {TABLE.snapshots[0].label}")
    assert b.note.startswith("westeurope is not in the price snapshot")


# ---------------------------------------------------------------------------------------------------------
# The Retail Prices API, on its documented shape

def item(**changes):
    """The documented item, changed: by default a Linux on-demand meter of a GPU size in eastus."""
    row = copy.deepcopy(DOC_ITEM)
    row.update(type="Consumption", productName="Virtual Machines NVadsA10v5 Series", skuName="NV36ads A10 v5",
               meterName="NV36ads A10 v5", armSkuName="Standard_NV36ads_A10_v5", armRegionName="eastus",
               unitPrice=3.2, retailPrice=3.2)
    row.update(changes)
    return row


def test_the_documented_item_is_a_windows_dev_test_meter_and_is_not_used():
    assert prices.classify_item(DOC_ITEM) is None                                  # DevTestConsumption
    assert prices.classify_item({**DOC_ITEM, "type": "Consumption"}) is None       # "... Series Windows"
    linux = {**DOC_ITEM, "type": "Consumption", "productName": "Virtual Machines FS Series"}
    assert prices.classify_item(linux) == "spot"                                   # skuName "F16s Spot"


@pytest.mark.parametrize("changes,kind", [
    ({}, "on-demand"),
    ({"skuName": "NV36ads A10 v5 Spot", "meterName": "NV36ads A10 v5 Spot", "unitPrice": 0.8}, "spot"),
    ({"skuName": "NV36ads A10 v5 Low Priority", "meterName": "NV36ads A10 v5 Low Priority"}, None),
    ({"productName": "Virtual Machines NCCadsv5 Srs Win"}, None),
    ({"productName": "Cloud Services NVadsA10v5 Series"}, None),
    ({"type": "Reservation", "reservationTerm": "1 Year"}, None),
    ({"unitOfMeasure": "1/Month"}, None),
    ({"unitPrice": 0}, None),
    ({"currencyCode": "EUR"}, None),
])
def test_meters_are_classified(changes, kind):
    assert prices.classify_item(item(**changes)) == kind


def test_prices_from_items_pick_the_primary_newest_meter_and_drop_a_spot_price_not_below_on_demand():
    items = [
        item(),
        item(unitPrice=9.9, isPrimaryMeterRegion=False),                           # not the primary meter
        item(unitPrice=3.0, effectiveStartDate="2019-01-01T00:00:00Z"),            # an older price
        item(skuName="NV36ads A10 v5 Spot", unitPrice=0.8),
        item(productName="Virtual Machines NVadsA10v5 Series Windows", unitPrice=4.0),
        item(armRegionName="westus", unitPrice=4.16, armSkuName="standard_nv36ads_a10_v5"),  # case-insensitive
        item(armRegionName="westus", skuName="NV36ads A10 v5 Spot", unitPrice=4.16),          # not below: dropped
        item(armSkuName="Standard_F16s"),                                           # not a catalog size
    ]
    got = prices.prices_from_items(items, ["Standard_NV36ads_A10_v5"])
    assert got == {"Standard_NV36ads_A10_v5": {"eastus": prices.RegionalPrice(3.2, 0.8),
                                               "westus": prices.RegionalPrice(4.16, None)}}


def test_pages_follow_next_page_link_and_a_wrong_envelope_is_one_line():
    page, link = prices.parse_retail_page({"BillingCurrency": "USD", "CustomerEntityId": "Default",
                                           "CustomerEntityType": "Retail", "Items": [item()],
                                           "NextPageLink": "https://prices.azure.com:443/api/retail/prices?$skip=100",
                                           "Count": 1})
    assert page == [item()] and link.endswith("$skip=100")
    assert prices.parse_retail_page({"Items": [], "NextPageLink": None}) == ([], None)
    with pytest.raises(prices.PriceFetchError, match="without an `Items` list"):
        prices.parse_retail_page({"error": "x"})


def test_the_query_is_the_documented_filter_url_encoded():
    url = prices.retail_url(prices.RETAIL_PRICES_URL, prices.retail_filter("Standard_NC24ads_A100_v4", "eastus"))
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["api-version"] == ["2023-01-01-preview"]
    assert query["$filter"] == ["serviceName eq 'Virtual Machines' and priceType eq 'Consumption' and armSkuName eq "
                                "'Standard_NC24ads_A100_v4' and armRegionName eq 'eastus'"]
    assert " " not in url


def fake_api(pages_by_size):
    """A get() answering each size's query with its pages (the second via NextPageLink)."""
    def get(url):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        if "page" in query:
            size, n = query["page"][0].split(":")
            n = int(n)
        else:
            size = query["$filter"][0].split("armSkuName eq '")[1].split("'")[0]
            n = 0
        pages = pages_by_size.get(size, [[]])
        nxt = f"http://api.test/?page={size}:{n + 1}" if n + 1 < len(pages) else None
        return {"BillingCurrency": "USD", "Items": pages[n], "NextPageLink": nxt}
    return get


def test_refreshing_one_region_replaces_only_its_rows_and_moves_it_to_a_new_snapshot():
    api = fake_api({"Standard_NV36ads_A10_v5": [[item(armRegionName="westeurope", unitPrice=3.5)],
                                                [item(armRegionName="westeurope", skuName="NV36ads A10 v5 Spot",
                                                      unitPrice=0.9)]]})
    result = prices.refresh(TABLE, CAT.sizes, api, region="westeurope", today=dt.date(2026, 11, 29))
    new = result.table
    assert [s.id for s in new.snapshots] == ["skypilot-098741e7", "retail-api-2026-11-29"]
    assert new.snapshot_of("westeurope").retrieved == "2026-11-29"
    assert new.price("Standard_NV36ads_A10_v5", "westeurope") == prices.RegionalPrice(3.5, 0.9)
    assert new.price("Standard_NV36ads_A10_v5", "eastus") == TABLE.price("Standard_NV36ads_A10_v5", "eastus")
    q = prices.quote("Standard_NV36ads_A10_v5", "westeurope", table=new)
    assert (q.usd_per_hour, q.region_priced, q.note) == (3.5, "westeurope", "")
    assert isinstance(prices.quote("Standard_NC24ads_A100_v4", "westeurope", table=new), prices.Unpriced)
    assert prices.parse_table(yaml.safe_load(prices.render_table(new))) == new   # renders and re-validates

    again = prices.refresh(new, CAT.sizes, fake_api({"Standard_NV36ads_A10_v5": [[item(unitPrice=3.3)]]}),
                           region="eastus", today=dt.date(2026, 11, 29))
    snaps = {s.id: s for s in again.table.snapshots}
    assert "eastus" not in snaps["skypilot-098741e7"].regions
    assert snaps["retail-api-2026-11-29"].regions == ("eastus", "westeurope")
    assert again.table.price("Standard_NC24ads_A100_v4", "eastus") is None     # no longer listed there


def test_a_full_refresh_replaces_every_snapshot_and_a_region_without_prices_changes_nothing():
    api = fake_api({"Standard_NC24ads_A100_v4": [[item(armSkuName="Standard_NC24ads_A100_v4", armRegionName=r,
                                                       unitPrice=3.673) for r in ("eastus", "japaneast")]]})
    result = prices.refresh(TABLE, CAT.sizes, api, today=dt.date(2026, 11, 29))
    (snap,) = result.table.snapshots
    assert snap.regions == ("eastus", "japaneast") and result.rows == 2
    with pytest.raises(prices.PriceFetchError, match="no Linux price for any catalog GPU size in 'narnia'"):
        prices.refresh(TABLE, CAT.sizes, fake_api({}), region="narnia")


# ---------------------------------------------------------------------------------------------------------
# HTTP: retries, and one line when the API can't be reached

class _Api(http.server.BaseHTTPRequestHandler):
    fail_first = 0
    calls = 0

    def do_GET(self):
        type(self).calls += 1
        if type(self).calls <= type(self).fail_first:
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        size = query["$filter"][0].split("armSkuName eq '")[1].split("'")[0]
        region = query["$filter"][0].split("armRegionName eq '")[1].split("'")[0]
        items = [item(armSkuName=size, armRegionName=region, unitPrice=2.0),
                 item(armSkuName=size, armRegionName=region, skuName="X Spot", unitPrice=0.5)]
        body = json.dumps({"BillingCurrency": "USD", "Items": items, "NextPageLink": None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    _Api.calls, _Api.fail_first = 0, 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}/api/retail/prices"
    server.shutdown()
    server.server_close()


def test_http_get_retries_a_503_then_reads_json(api):
    _, url = api
    _Api.fail_first = 2
    get = prices.http_get_json(retries=3, backoff=0)
    doc = get(prices.retail_url(url, prices.retail_filter("Standard_NC24ads_A100_v4", "eastus")))
    assert len(doc["Items"]) == 2 and _Api.calls == 3


def test_http_get_gives_one_line_when_nothing_answers():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(prices.PriceFetchError) as err:
        prices.http_get_json(retries=1, backoff=0)(f"http://127.0.0.1:{port}/api/retail/prices?x=1")
    assert str(err.value) == f"can't reach http://127.0.0.1:{port}/api/retail/prices (ConnectionError after 1 retries)"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "infra", "catalog", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_the_refresh_command_writes_the_region_from_the_api(api, tmp_path):
    _, url = api
    out = tmp_path / "prices.yaml"
    done = cli("refresh-prices", "--region", "westeurope", "--api-url", url, "--output", str(out))
    assert done.returncode == 0, done.stderr
    table = prices.parse_table(yaml.safe_load(out.read_text()))
    assert table.price("Standard_NC24ads_A100_v4", "westeurope") == prices.RegionalPrice(2.0, 0.5)
    assert table.price("Standard_NC24ads_A100_v4", "eastus") == TABLE.price("Standard_NC24ads_A100_v4", "eastus")
    assert done.stderr.startswith("refreshed region westeurope: ")


def test_the_refresh_command_fails_with_one_line_where_the_api_cannot_be_reached(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "prices.yaml"
    done = cli("refresh-prices", "--api-url", f"http://127.0.0.1:{port}/api", "--output", str(out))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"refresh-prices: can't reach http://127.0.0.1:{port}/api ")
    assert "the price file is unchanged" in lines[0] and not out.exists()
    done = cli("refresh-prices", "--region", "West Europe")
    assert done.returncode == 2 and "is not an Azure region name" in done.stderr


@pytest.mark.parametrize("url,problem", [
    ("http://user:sk-SECRET-1@127.0.0.1:9/", "must not carry credentials"),
    ("http://127.0.0.1:9/?key=sk-SECRET-1", "must be a base URL without '?query'"),
    ("http://127.0.0.1:99999/sk-SECRET-1", "with a numeric port from 1 to 65535"),
    ("ftp://127.0.0.1/sk-SECRET-1", "with a host"),
])
def test_a_refused_api_url_is_a_usage_error_that_never_quotes_it(url, problem):
    done = cli("refresh-prices", "--region", "eastus", "--api-url", url)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("--api-url: must ") and problem in lines[0], lines
    assert "SECRET" not in done.stderr


@pytest.mark.parametrize("table", sorted(TABLES))
def test_the_catalog_tables_still_print_as_before(table):
    done = cli(table)
    assert done.returncode == 0 and done.stdout == TABLES[table](CAT) + "\n"
