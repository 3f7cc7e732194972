"""Static memory estimates (archc/resources.py) and the guard in `archc.build` / `archc build`.

Exactness against torch for random specs is a property in test_properties.py; here: units,
the limit, the message, and that nothing is allocated when a model is refused.
"""

from __future__ import annotations

import pytest

import archc
from archc import resources
from archc.resources import ResourceError, check, estimate, human, parse_size
from conftest import SPECS

HUGE = (
    "archc: 1\nname: huge\ninput: [3, 64, 64]\nbody:\n  stem: {conv: {out: 64, kernel: 3}}\n"
    "  big: {conv: {out: 1048576, kernel: 512, padding: 256}}\n  pool: {adaptive_avgpool: 1}\n"
)


@pytest.mark.parametrize(
    "text, size",
    [
        ("8GiB", 8 << 30), ("8gib", 8 << 30), ("8G", 8 << 30), ("8GB", 8 * 10**9), ("512MiB", 512 << 20),
        ("512M", 512 << 20), ("1.5GiB", 3 << 29), ("2 TiB", 2 << 40), ("100000", 100000), ("4096B", 4096),
        ("1k", 1024), ("1KB", 1000), (".5GiB", 1 << 29),
    ],
)  # fmt: skip
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["none", "unlimited", "off", "NONE", "inf"])
def test_parse_size_unlimited(text):
    assert parse_size(text) is None


@pytest.mark.parametrize("text", ["", "GiB", "8XB", "-1GiB", "0", "0.1", "1e9", "8 G i B", "nan", "1,000"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    "n, text",
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (3 << 29, "1.5 GiB"), (123 << 20, "123 MiB"), (64 << 40, "64.0 TiB"),
     (10**20, "9.09e7 TiB")],
)  # fmt: skip
def test_human(n, text):
    assert human(n) == text


def test_estimate_of_resnet18_matches_the_built_module():
    spec = archc.load(SPECS / "resnet18.yaml")
    found = estimate(spec)
    model = archc.build(spec)
    assert found.param_bytes == 4 * sum(p.numel() for p in model.parameters())
    assert found.buffer_bytes == sum(b.numel() * b.element_size() for b in model.buffers())
    assert found.activation_bytes > found.param_bytes / 10  # 224x224 feature maps are not small
    assert estimate(spec, batch=8).activation_bytes == 8 * found.activation_bytes


@pytest.mark.parametrize("name", ["efficientnet_b0", "googlenet", "squeezenet1_0", "convnext_tiny", "densenet121"])
def test_estimate_sums_every_node_and_takes_the_largest_working_memory(name):
    """`estimate` walks the tree once; its figures are the per-node definitions summed over the
    tree (node_cost of the root) and the largest layer's temporaries."""
    spec = archc.load(name)
    found = estimate(spec)
    params, buffers, activations = resources.node_cost(spec.tree)
    assert (found.params, found.buffer_bytes) == (params, buffers) == (spec.param_count, buffers)
    assert found.activations == activations + resources._elements(spec.input_shape)
    assert found.working == max(resources.working_elements(n) for n in spec.tree.walk())


def test_estimate_counts_dense_concatenations():
    spec = archc.loads(
        "archc: 1\nname: d\ninput: [2, 4, 4]\nbody:\n"
        "  d: {dense: {block: dense_layer, depth: 2, growth_rate: 3, bn_size: 1}}\n"
    )
    found = estimate(spec)
    # input 2x4x4; each layer: bn, relu, conv1x1 (3), bn, relu, conv3x3 (3) on its input; cats 5, 8
    layer1 = 2 * 2 * 16 + 3 * 16 + 2 * 3 * 16 + 3 * 16
    layer2 = 2 * 5 * 16 + 3 * 16 + 2 * 3 * 16 + 3 * 16
    assert found.activations == 2 * 16 + layer1 + layer2 + (5 + 8) * 16


def test_a_model_over_the_limit_is_refused_at_its_largest_layer():
    spec = archc.loads(HUGE, "huge.yaml")
    with pytest.raises(ResourceError) as info:
        check(spec, "8GiB")
    error = info.value
    assert error.location.line == 6 and error.field == "body.big"
    assert "64.0 TiB" in error.message and "8.0 GiB limit (the limit you set)" in error.message
    assert "its largest layer is big" in error.message


def test_no_limit_and_a_generous_limit_pass():
    spec = archc.loads(HUGE)
    assert check(spec, None).total_bytes > 64 << 40
    assert check(spec, 1 << 50).total_bytes < 1 << 50


def test_the_default_limit_is_half_of_this_machine():
    memory = resources.machine_memory()
    if memory is None:
        assert resources.default_limit() == resources.FALLBACK_MEMORY
    else:
        assert resources.default_limit() == memory // 2
        assert "half of this machine's" in resources.default_limit_reason()


def test_default_limit_without_sysconf(monkeypatch):
    def broken(_name):
        raise ValueError("unknown")

    monkeypatch.setattr(resources.os, "sysconf", broken)
    monkeypatch.setattr(resources, "_cgroup_limit", lambda: None)
    assert resources.machine_memory() is None
    assert resources.default_limit() == resources.FALLBACK_MEMORY


def test_a_cgroup_limit_below_physical_memory_wins(monkeypatch):
    monkeypatch.setattr(resources, "_cgroup_limit", lambda: 1 << 30)
    assert resources.machine_memory() == 1 << 30
    assert resources.default_limit() == 1 << 29


def test_api_build_refuses_before_torch_allocates(monkeypatch):
    from archc.backends import torch_backend

    def must_not_run(*args, **kwargs):
        raise AssertionError("the module was built")

    monkeypatch.setattr(torch_backend, "build", must_not_run)
    with pytest.raises(ResourceError):
        archc.build(archc.loads(HUGE))  # default: half of this machine's memory
    with pytest.raises(ResourceError):
        archc.build(archc.loads(HUGE), max_memory="1TiB")


def test_api_build_limit_can_be_set_or_lifted():
    spec = archc.loads("archc: 1\nname: t\ninput: [3, 8, 8]\nbody:\n  c: {conv: {out: 4, kernel: 3}}\n")
    with pytest.raises(ResourceError):
        archc.build(spec, max_memory=100)
    assert archc.build(spec, max_memory=None) is not None
    assert archc.build(spec, max_memory="1MiB") is not None


def test_save_writes_a_loadable_state_dict(tmp_path):
    import torch

    from conftest import run_archc

    spec = tmp_path / "t.yaml"
    spec.write_text("archc: 1\nname: t\ninput: [3, 8, 8]\nbody:\n  c: {conv: {out: 4, kernel: 3}}\n")
    weights = tmp_path / "w.pt"
    result = run_archc("build", str(spec), "--seed", "0", "--save", str(weights))
    assert result.returncode == 0, result.stderr
    state = torch.load(weights, weights_only=True)
    assert list(state) == ["c.weight", "c.bias"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
