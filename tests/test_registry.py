"""Shipped models by name: `archc list`, and a name wherever a spec path goes."""

from __future__ import annotations

import json

import pytest

import archc
from archc.errors import SpecError, UsageError
from archc.registry import family, shipped
from conftest import ALL_SPECS, SPECS, run_archc


def test_every_shipped_model_is_listed_with_its_real_figures():
    done = run_archc("list", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    expected = set()  # a file per model, or a family file's variants
    for path in ALL_SPECS:
        name = path.relative_to(SPECS).with_suffix("").as_posix()
        spec = archc.load(path)
        folder = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
        for variant in spec.variants or (None,):
            one = archc.load(path, variant=variant)
            row = rows[folder + variant if variant else name]
            assert (row["params"], row["macs"], row["input"]) == (one.param_count, one.macs, list(one.input_shape))
            assert row["family"] == (name if variant else family(name))
            expected.add(row["name"])
    assert set(rows) == expected


def test_a_family_spec_ships_one_model_per_variant():
    resnet = SPECS / "resnet.yaml"
    names = archc.load(resnet).variants
    assert {"resnet18", "resnet152", "resnext101_64x4d", "wide_resnet101_2"} <= set(names)
    for name in names:
        by_name = archc.load(name)
        assert (by_name.file, by_name.variant) == (str(resnet), name)
        assert by_name.tree == archc.load(resnet, variant=name).tree
    assert archc.load("resnet").variant is None  # the file's own name: its base values
    # the path each model had before the family was one file still names it
    assert archc.load(SPECS / "resnet101.yaml").variant == "resnet101"
    with pytest.raises(UsageError, match="'resnet18' is itself a variant of resnet.yaml"):
        archc.load("resnet18", variant="resnet34")


def test_the_table_names_each_family():
    done = run_archc("list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["name", "family", "params", "GMACs", "input"]
    assert any(line.split()[:2] == ["wide_resnet50_2", "resnet"] for line in lines)  # its file
    assert any(line.split()[:2] == ["vgg16_bn", "vgg"] for line in lines)
    assert [family(n) for n in ("resnet50", "resnext50_32x4d", "vgg16_bn", "densenet121", "d2l/nin")] == [
        "resnet", "resnext", "vgg", "densenet", "d2l",
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["resnet50", "d2l/nin"])
def test_a_name_works_where_a_path_does(name):
    assert archc.load(name).tree == archc.load(shipped()[name]).tree
    done = run_archc("summary", name, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["params"] == archc.load(shipped()[name]).param_count


def test_codegen_takes_a_name(tmp_path):
    done = run_archc("codegen", "resnet18", "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "resnet18.py").read_text() == (SPECS.parent / "generated" / "resnet18.py").read_text()


def test_an_existing_path_wins_over_a_name(tmp_path, monkeypatch):
    (tmp_path / "resnet50").write_text("archc: 1\nname: mine\ninput: [4]\nbody:\n  fc: {linear: 2}\n")
    monkeypatch.chdir(tmp_path)
    assert archc.load("resnet50").name == "mine"


def test_an_unknown_name_suggests_shipped_ones():
    with pytest.raises(SpecError, match=r"no shipped model named 'resnt50'; did you mean 'resnet50'"):
        archc.load("resnt50")
    done = run_archc("validate", "resnt50")
    assert done.returncode == 1 and "did you mean 'resnet50'" in done.stderr and "Traceback" not in done.stderr


def test_a_missing_path_is_still_a_missing_file(tmp_path):
    for missing in (tmp_path / "nope", "specs/nope.yaml", "elsewhere/resnet50"):
        with pytest.raises(SpecError, match=r"error: no such file$"):
            archc.load(missing)


def test_a_wheel_carries_every_package_and_the_shipped_specs():
    """pyproject.toml lists archc's packages by hand (to map specs/ in as archc/specs, once):
    a new package folder left off the list would be missing from every wheel."""
    tomllib = pytest.importorskip("tomllib")
    root = SPECS.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {
        ".".join(p.parent.relative_to(root).parts) for p in (root / "archc").rglob("__init__.py")
    }
    spec_folders = {"archc.specs"} | {
        "archc.specs." + ".".join(d.relative_to(SPECS).parts) for d in SPECS.rglob("*") if d.is_dir()
    }
    assert set(config["packages"]) == packages | spec_folders
    assert config["package-dir"] == {"archc.specs": "specs"}
    for folder in spec_folders:
        assert config["package-data"][folder] == ["*.yaml"]


def test_installed_without_a_checkout_the_packaged_specs_are_used(tmp_path, monkeypatch):
    """In a wheel, archc/specs (package data) holds the shipped specs; it is looked for first."""
    from archc import registry

    package = tmp_path / "archc"
    assert registry.specs_dir(package) == tmp_path / "specs"  # no package data: the checkout's
    (package / "specs" / "d2l").mkdir(parents=True)
    (package / "specs" / "d2l" / "tiny.yaml").write_text("archc: 1\nname: tiny\ninput: [4]\nbody:\n  fc: {linear: 2}\n")
    assert registry.specs_dir(package) == package / "specs"
    monkeypatch.setattr(registry, "SPECS_DIR", registry.specs_dir(package))
    assert list(registry.shipped()) == ["d2l/tiny"]
    assert archc.load("d2l/tiny").param_count == 10
    assert registry.specs_dir() == SPECS.resolve()  # this checkout


def test_list_without_shipped_specs_says_so(tmp_path, monkeypatch, capsys):
    from archc import registry
    from archc.cli import main

    monkeypatch.setattr(registry, "SPECS_DIR", tmp_path / "specs")
    assert main(["list"]) == 1
    assert f"error: no shipped specs in {tmp_path / 'specs'}" in capsys.readouterr().err
