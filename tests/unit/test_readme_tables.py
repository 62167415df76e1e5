"""The README's tables of KAITO releases and of what each mode accepts are generated from the catalog, not typed."""
import pathlib
import re

import pytest

from infra.catalog import load_catalog
from infra.catalog_report import TABLES

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("table", sorted(TABLES))
def test_readme_table_is_the_catalogs_output(table):
    text = README.read_text()
    found = re.search(rf"<!-- generated: python -m infra catalog {table} -->\n(.*?)\n<!-- end generated -->", text, re.S)
    assert found, f"README has no generated {table} table"
    assert found.group(1) == TABLES[table](load_catalog()), (
        f"README's {table} table is stale: replace it with the output of `python -m infra catalog {table}`")


def test_the_seed_table_shows_a_model_one_release_accepts_and_another_refuses():
    table = TABLES["seeds"](load_catalog())
    row = next(line for line in table.splitlines() if "meta-llama/Meta-Llama-3-8B-Instruct" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].startswith("refused: use the preset 'llama-3.1-8b-instruct'")          # add-on 0.6.0
    assert cells[2].startswith("`meta-llama/Meta-Llama-3-8B-Instruct`: 1 x NV36ads_A10_v5")  # add-on 0.11.0
