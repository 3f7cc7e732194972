"""archc.cache: values derived from files are reused until one of the files changes."""

from __future__ import annotations

import json
import os

import pytest

from archc import cache, registry


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("ARCHC_CACHE_DIR", str(folder))
    return folder


def counting(value):
    calls = []

    def compute():
        calls.append(1)
        return value

    return compute, calls


def test_a_value_is_computed_once_until_a_file_it_depends_on_changes(tmp_path, cache_dir):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.yaml").write_text("one")
    roots = [(data, (".yaml",))]
    compute, calls = counting({"x": [1, 2]})
    assert cache.cached("thing", roots, compute) == {"x": [1, 2]}
    assert cache.cached("thing", roots, compute) == {"x": [1, 2]}
    assert len(calls) == 1
    (data / "a.yaml").write_text("three")  # another size
    assert cache.cached("thing", roots, compute) == {"x": [1, 2]}
    assert len(calls) == 2
    (data / "b.yaml").write_text("new file")
    cache.cached("thing", roots, compute)
    assert len(calls) == 3
    stat = os.stat(data / "a.yaml")
    os.utime(data / "a.yaml", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same size, touched
    cache.cached("thing", roots, compute)
    assert len(calls) == 4
    (data / "notes.txt").write_text("not a suffix it depends on")
    cache.cached("thing", roots, compute)
    assert len(calls) == 4


def test_off_unreadable_or_unwritable_means_computed(tmp_path, monkeypatch, cache_dir):
    roots = [(tmp_path, (".yaml",))]
    compute, calls = counting([1])
    cache.cached("thing", roots, compute)
    (stored,) = cache_dir.iterdir()
    stored.write_text("{not json")
    assert cache.cached("thing", roots, compute) == [1]
    assert json.loads(stored.read_text())["value"] == [1]  # rewritten
    stored.write_text(json.dumps(["not", "ours"]))
    assert cache.cached("thing", roots, compute) == [1]
    monkeypatch.setenv("ARCHC_CACHE_DIR", "none")
    assert cache.folder() is None
    assert cache.cached("thing", roots, compute) == [1]
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder would be")
    monkeypatch.setenv("ARCHC_CACHE_DIR", str(blocked / "cache"))
    assert cache.cached("thing", roots, compute) == [1]
    assert len(calls) == 5


def test_the_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("ARCHC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.folder() == tmp_path / "archc"


def test_the_model_table_is_read_back_without_compiling_anything(cache_dir, monkeypatch):
    registry._models.cache_clear()
    first = registry.catalogue()
    names = list(registry.models())
    assert [row["name"] for row in first] == names
    stored = [p for p in cache_dir.iterdir() if not p.name.startswith("blocks-")]  # the library: maybe
    assert len(stored) == 2  # the models and their table

    def refuse(*args, **kwargs):
        raise AssertionError("compiled a spec although the cache holds the table")

    monkeypatch.setattr("archc.compiler.load", refuse)
    monkeypatch.setattr(registry, "variants_of", refuse)
    registry._models.cache_clear()
    try:
        assert registry.catalogue() == first
        assert list(registry.models()) == names
        assert registry.models()["resnet50"] == registry.Model(
            "resnet50", registry.SPECS_DIR / "resnet.yaml", "resnet50", "resnet"
        )
    finally:
        registry._models.cache_clear()


def test_schema_from_a_warm_cache_imports_no_pydantic(tmp_path):
    """`archc schema` is written once from the models, then read back (it follows archc's source)."""
    import subprocess
    import sys

    from archc.jsonschema import dumps
    from conftest import ROOT

    probe = (
        "import sys; from archc.cli import main; rc = main(['schema']); "
        "print('PYDANTIC', 'pydantic' in sys.modules, file=sys.stderr); sys.exit(rc)"
    )
    env = {**os.environ, "ARCHC_CACHE_DIR": str(tmp_path / "cache")}
    runs = [
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, env=env)
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    assert runs[0].stdout == runs[1].stdout == dumps()
    assert "PYDANTIC True" in runs[0].stderr  # computed
    assert "PYDANTIC False" in runs[1].stderr  # read back


def test_the_block_library_read_from_the_cache_equals_the_parsed_yaml(cache_dir):
    from archc.compiler import LIBRARY_DIR
    from archc.spec.loader import load_file, load_shipped

    files = sorted(LIBRARY_DIR.glob("*.yaml"))
    parsed = [load_file(f) for f in files]
    for _ in range(2):  # computed and stored, then read back
        docs = load_shipped(files, "blocks")
        assert [(d.data, d.source, d.text) for d in docs] == [(d.data, d.source, d.text) for d in parsed]
        assert [list(d.source.values) for d in docs] == [list(d.source.values) for d in parsed]
    (stored,) = cache_dir.iterdir()
    entry = json.loads(stored.read_text())
    entry["value"] = [{"data": 1}]  # valid JSON of the wrong shape: parsed again
    stored.write_text(json.dumps(entry))
    assert [d.data for d in load_shipped(files, "blocks")] == [d.data for d in parsed]
