"""`python -m infra catalog versions|seeds|refresh-prices`: the catalog's tables, as the README shows them, and the
refresh of the regional price snapshot."""
from __future__ import annotations

import argparse
import sys

from infra import prices
from infra.catalog import load_catalog
from infra.catalog_report import TABLES
from infra.errors import UserError, bounded_repr
from infra.settings import http_url_problem


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("catalog", help="print what the catalog knows (KAITO releases, what each accepts), or refresh "
                                       "its regional GPU prices",
                       description="Print a table generated from the catalog (the README embeds these), or rebuild "
                                   "the regional price snapshot from Azure's Retail Prices API.")
    actions = p.add_subparsers(dest="table", metavar="ACTION", required=True)
    for name, text in (("versions", "each KAITO release's rules"),
                       ("seeds", "what the README's models become in each mode")):
        t = actions.add_parser(name, help=text, description=f"Print {text} (Markdown).")
        t.set_defaults(handler=run)
    r = actions.add_parser(
        "refresh-prices", help="rebuild infra/catalog/azure_prices.yaml from Azure's public Retail Prices API",
        description="Rebuild the regional on-demand and spot prices of every catalog GPU size from Azure's public "
                    "Retail Prices API (no credentials), for every region or one (--region), and rewrite the price "
                    "file. Needs network access to the API; without it, fails with one line and changes nothing. "
                    "Exit 0 = written, 1 = the API couldn't be read, 2 = usage.")
    r.add_argument("--region", help="refresh only this region (e.g. westeurope); the other regions keep their "
                                    "snapshot")
    r.add_argument("--output", metavar="FILE", help="write here instead of infra/catalog/azure_prices.yaml")
    r.add_argument("--api-url", metavar="URL", help="the Retail Prices API endpoint (default: Azure's public one)")
    r.set_defaults(handler=run_refresh)


def run(args: argparse.Namespace) -> int:
    print(TABLES[args.table](load_catalog()))
    return 0


def run_refresh(args: argparse.Namespace) -> int:

    region = args.region
    if region is not None and not prices.REGION_RE.match(region):
        raise UserError(f"--region: {bounded_repr(region)} is not an Azure region name (lowercase, e.g. westeurope)")
    base = args.api_url or prices.RETAIL_PRICES_URL
    problem = http_url_problem(base)
    if problem:                 # never quoted: a URL can carry a password or a token
        raise UserError(f"--api-url: {problem}")
    output = args.output or prices.PRICES_FILE
    try:
        result = prices.refresh(prices.load_prices(), load_catalog().sizes, prices.http_get_json(), region=region,
                                base=base)
    except prices.PriceFetchError as err:
        raise UserError(f"refresh-prices: {err}; the price file is unchanged (run it where the API is reachable)"
                        if "unchanged" not in str(err) else f"refresh-prices: {err}", exit_code=1) from None
    try:
        prices.write_table(result.table, output)
    except OSError as err:
        raise UserError(f"--output {output}: can't write there ({err.strerror or err})") from None
    where = f"region {region}" if region else f"{len(result.regions)} regions"
    print(f"refreshed {where}: {result.rows} prices of {result.sizes_priced} sizes written to {output}",
          file=sys.stderr)
    return 0
