"""`python -m infra catalog versions|seeds`: the catalog's tables, as the README shows them."""
from __future__ import annotations

import argparse

from infra.catalog import load_catalog
from infra.catalog_report import TABLES


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("catalog", help="print what the catalog knows (KAITO releases, what each accepts)",
                       description="Print a table generated from the catalog (the README embeds these).")
    p.add_argument("table", choices=sorted(TABLES), help="versions: each KAITO release's rules; seeds: what the "
                                                         "README's models become in each mode")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print(TABLES[args.table](load_catalog()))
    return 0
