"""`plan --manifests DIR`: `kubectl apply -f DIR` applies every file in DIR, so DIR holds exactly one plan.

A second run replaces what kaito-aks wrote there (its index, `.kaito-aks-manifests`); a file kaito-aks didn't write
makes the run refuse, so no stale Workspace or Secret of another stack is ever applied with the new plan.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from infra.errors import MAX_LINE_CHARS, UserError
from infra.plan import build_plan
from infra.render.stack_objects import MANIFEST_INDEX, write_manifests
from infra.settings import load_stack_file


def written_names(paths, root) -> set[str]:
    return {p.relative_to(root).as_posix() for p in paths}


def everything_under(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files}


@pytest.fixture(scope="module")
def plans():
    return {stack: build_plan(load_stack_file(stack)) for stack in ("dev", "prod")}


def test_a_new_directory_gets_the_plan_and_its_index(tmp_path, plans):
    out = tmp_path / "new" / "manifests"
    written = write_manifests(plans["dev"], out)
    assert everything_under(out) == written_names(written, out) | {MANIFEST_INDEX}
    assert (out / MANIFEST_INDEX).read_text().splitlines() == [p.relative_to(out).as_posix() for p in written]


def test_a_second_plan_replaces_the_first_and_leaves_nothing_of_it(tmp_path, plans):
    out = tmp_path / "manifests"
    prod = write_manifests(plans["prod"], out)
    dev = write_manifests(plans["dev"], out)
    assert len(prod) > len(dev)                       # prod has more objects: its extra files must go
    assert everything_under(out) == written_names(dev, out) | {MANIFEST_INDEX}
    assert not any("llama" in name for name in everything_under(out))   # prod's 70B Workspace is gone


def test_an_existing_empty_directory_is_used(tmp_path, plans):
    out = tmp_path / "empty"
    (out / "sub").mkdir(parents=True)                 # empty subdirectories hold nothing kubectl would apply
    written = write_manifests(plans["dev"], out)
    assert everything_under(out) == written_names(written, out) | {MANIFEST_INDEX}


@pytest.mark.parametrize("foreign", ["01-workspace-old.yaml", "notes.txt", "observability/extra.json", ".hidden"])
def test_a_file_kaito_aks_did_not_write_is_refused_and_nothing_is_touched(tmp_path, plans, foreign):
    out = tmp_path / "manifests"
    write_manifests(plans["dev"], out)
    (out / foreign).parent.mkdir(parents=True, exist_ok=True)
    (out / foreign).write_text("kind: Workspace\n")
    before = {name: (out / name).read_bytes() for name in everything_under(out)}
    with pytest.raises(UserError) as err:
        write_manifests(plans["prod"], out)
    assert len(err.value.lines) == 1
    assert foreign.rsplit("/", 1)[-1] in err.value.lines[0] and "new or empty directory" in err.value.lines[0]
    assert {name: (out / name).read_bytes() for name in everything_under(out)} == before


def test_a_directory_of_old_manifests_without_an_index_is_refused(tmp_path, plans):
    # e.g. written by kaito-aks before the index existed, or by hand: their owner can't be told, so nothing is deleted
    out = tmp_path / "manifests"
    write_manifests(plans["prod"], out)
    (out / MANIFEST_INDEX).unlink()
    before = everything_under(out)
    with pytest.raises(UserError, match="didn't write there"):
        write_manifests(plans["dev"], out)
    assert everything_under(out) == before


def test_a_symlink_in_the_directory_is_foreign_and_its_target_is_untouched(tmp_path, plans):
    out = tmp_path / "manifests"
    write_manifests(plans["dev"], out)
    target = tmp_path / "precious"
    target.mkdir()
    (target / "keep.yaml").write_text("x: 1\n")
    (out / "link").symlink_to(target, target_is_directory=True)
    with pytest.raises(UserError, match="'link'"):
        write_manifests(plans["dev"], out)
    assert (target / "keep.yaml").read_text() == "x: 1\n"


def test_an_index_naming_paths_outside_the_directory_deletes_nothing_outside(tmp_path, plans):
    out = tmp_path / "manifests"
    write_manifests(plans["dev"], out)
    outside = tmp_path / "outside.yaml"
    outside.write_text("x: 1\n")
    with (out / MANIFEST_INDEX).open("a") as index:
        index.write("../outside.yaml\n/etc/hostname\n")
    write_manifests(plans["dev"], out)
    assert outside.read_text() == "x: 1\n"


def test_the_cli_refuses_a_foreign_directory_in_one_line(tmp_path):
    out = tmp_path / "manifests\nwith a newline"
    out.mkdir()
    (out / "mine.yaml").write_text("kind: ConfigMap\n")
    result = subprocess.run([sys.executable, "-m", "infra", "plan", "--stack", "dev", "--manifests", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= MAX_LINE_CHARS, lines
    assert "'mine.yaml'" in lines[0] and "\\n" in lines[0]
    assert (out / "mine.yaml").read_text() == "kind: ConfigMap\n"
