"""Freezing: `freeze:` in a spec, `--freeze` on the command line, `archc.build(freeze=)`.

Frozen modules get no gradients and stay in eval mode in the model's train mode, so their batch
norms keep (and use) their running statistics; the summary counts trainable and frozen
parameters; generated code freezes the same modules the same way; a pattern that matches
nothing is an error at its line (or, on the command line, a usage error naming it). Also the
training loop's own pieces that came with it: the progress bar, atomic checkpoints, resuming
with the same freeze.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")

import archc  # noqa: E402
from archc.cli import main  # noqa: E402
from archc.outputs import written_by_archc  # noqa: E402
from conftest import assert_spec_error  # noqa: E402

SPEC = """archc: 1
name: tiny
input: [3, 8, 8]
freeze: [stem, "block[1-2]", block1.conv]
body:
  stem: {conv: {out: 4, kernel: 3, padding: 1}}
  bn: batchnorm
  block1: {seq: {conv: {conv: {out: 4, kernel: 3, padding: 1}}, bn: batchnorm, drop: {dropout: 0.5}}}
  block2: {seq: {conv: {conv: {out: 4, kernel: 3, padding: 1}}, bn: batchnorm}}
  block3: {seq: {conv: {conv: {out: 4, kernel: 3, padding: 1}}, bn: batchnorm}}
  pool: {adaptive_avgpool: 1}
  flatten: flatten
  fc: {linear: {out: 2}}
"""
RESNET = ["params.num_classes=2", "input=[3,32,32]"]
STEM_AND_LAYER1_3 = ["conv1", "bn1", "layer[1-3]"]


def test_spec_freeze_names_the_outermost_modules_in_order():
    spec = archc.loads(SPEC)
    assert spec.frozen == ("stem", "block1", "block2")  # block1.conv is inside block1
    model = archc.build(spec, seed=0)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {f"{m}.{t}" for m in ("stem", "block1.conv", "block1.bn", "block2.conv", "block2.bn")
                      for t in ("weight", "bias")}  # fmt: skip


def test_build_freeze_adds_to_the_spec_and_globs_are_init_selectors():
    spec = archc.load("resnet18", overrides=RESNET)
    model = archc.build(spec, freeze=["**.bn?", "bn1"])  # every batch norm inside the blocks, and the stem's
    frozen = {n.rsplit(".", 1)[0] for n, p in model.named_parameters() if not p.requires_grad}
    bns = {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and "downsample" not in n}
    assert frozen == bns
    with pytest.raises(archc.UsageError, match="'layer5' matches no module; did you mean 'layer4'"):
        archc.build(spec, freeze=["layer5"])
    with pytest.raises(archc.UsageError, match="not one string"):
        archc.build(spec, freeze="layer1")


def test_a_spec_pattern_matching_nothing_is_an_error_at_its_line(write_spec, capsys):
    path = write_spec(SPEC.replace("block1.conv]", "block1.cnv]"))
    assert_spec_error(path, 4, "freeze pattern 'block1.cnv' matches no module; did you mean 'block1.conv'", capsys)
    path = write_spec(SPEC.replace('"block[1-2]"', "head"))
    assert_spec_error(path, 4, "the top-level layers are stem, bn, block1, block2, block3, pool, flatten, fc", capsys)
    path = write_spec(SPEC.replace('"block[1-2]"', '"block 1"'))
    assert_spec_error(path, 4, "a freeze pattern is a module path or glob pattern without spaces", capsys)
    assert main(["validate", str(path)]) == 1
    assert capsys.readouterr().err.startswith(f"{path}:4:16: error:")  # at the item, freeze[1]


@pytest.mark.parametrize("command", ["build", "summary", "train"])
def test_a_command_line_pattern_matching_nothing_is_a_usage_error(command, capsys, tmp_path):
    extra = ["--data", "synthetic", "-o", str(tmp_path)] if command == "train" else []
    assert main([command, "resnet18", "--freeze", "conv1", "--freeze", "layer5", *extra]) == 2
    err = capsys.readouterr().err
    assert "error: freeze pattern 'layer5' matches no module; did you mean 'layer4'" in err
    assert "Traceback" not in err and not list(tmp_path.iterdir())


def test_summary_counts_trainable_and_frozen_parameters_as_the_live_model_has_them(capsys):
    assert main(["summary", "resnet18", "--json", *(f"--freeze={p}" for p in STEM_AND_LAYER1_3)]) == 0
    summary = json.loads(capsys.readouterr().out)
    model = archc.build("resnet18", freeze=STEM_AND_LAYER1_3)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert summary["frozen"] == ["conv1", "bn1", "layer1", "layer2", "layer3"]
    assert summary["frozen_params"] == frozen == 2_782_784
    assert summary["trainable_params"] == summary["params"] - frozen
    rows = {r["name"]: r for r in summary["layers"]}
    assert rows["layer2.0"]["frozen"] and rows["layer3"]["frozen"] and not rows["layer4.0"]["frozen"]
    assert main(["build", "resnet18", *(f"--freeze={p}" for p in STEM_AND_LAYER1_3)]) == 0
    out = capsys.readouterr().out
    assert "trainable params: 8,906,728\nfrozen params: 2,782,784 (in conv1, bn1, layer1, layer2, layer3)" in out
    assert "built Network with 11,689,512 parameters (8,906,728 trainable, 2,782,784 frozen)" in out
    assert re.search(r"^layer1 +stage: basic ×2 \(frozen\) ", out, re.M)
    assert re.search(r"^layer4 +stage: basic ×2 +512", out, re.M)


def test_frozen_batch_norms_keep_their_statistics_in_train_mode():
    model = archc.build("resnet18", overrides=RESNET, freeze=STEM_AND_LAYER1_3, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.eval()
    model.train()  # a training loop's usual call: the frozen part stays in eval
    assert not model.layer1.training and not model.layer1[0].bn1.training and not model.bn1.training
    assert model.training and model.layer4.training and model.layer4[0].bn1.training
    for _ in range(2):
        loss = model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
    after = model.state_dict()
    for key, value in before.items():
        frozen = key.startswith(("conv1.", "bn1.", "layer1.", "layer2.", "layer3."))
        assert torch.equal(after[key], value) == frozen, key  # stats and counters too
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("layer3."))


def test_generated_code_freezes_like_the_live_build(tmp_path):
    spec = archc.loads(SPEC)
    file = tmp_path / "tiny_frozen.py"
    file.write_text(archc.codegen(spec))
    loader = importlib.util.spec_from_file_location("tiny_frozen", file)
    mod = importlib.util.module_from_spec(loader)
    sys.modules["tiny_frozen"] = mod
    loader.loader.exec_module(mod)
    generated, live = mod.Tiny(), archc.build(spec, seed=0)
    generated.load_state_dict(live.state_dict())
    assert [(n, p.requires_grad) for n, p in generated.named_parameters()] == [
        (n, p.requires_grad) for n, p in live.named_parameters()
    ]
    for model in (generated, live):
        model.eval()
        model.train()
    assert [(n, m.training) for n, m in generated.named_modules()] == [(n, m.training) for n, m in live.named_modules()]
    assert not generated.block1.drop.training and generated.block3.bn.training
    x = torch.randn(4, 3, 8, 8)
    torch.manual_seed(1)
    out = generated(x)
    torch.manual_seed(1)
    assert torch.equal(out, live(x))  # train mode: batch statistics in block3, running ones in block1-2
    assert torch.equal(generated.block2.bn.running_mean, torch.zeros(4))
    assert not torch.equal(generated.block3.bn.running_mean, torch.zeros(4))


TINY = """archc: 1
name: tiny
input: [3, 8, 8]
body:
  conv1: {conv: {out: 4, kernel: 3, padding: 1}}
  bn1: batchnorm
  relu: relu
  pool: {adaptive_avgpool: 1}
  flatten: flatten
  fc: {linear: {out: 2}}
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def train(spec, out, *extra) -> int:
    return main(["train", str(spec), "--data", "synthetic", "-o", str(out), "--batch-size", "64",
                 "--epochs", "2", *extra])  # fmt: skip


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_plain_epoch_lines_otherwise(tiny, tmp_path, capsys, monkeypatch):
    assert train(tiny, tmp_path / "plain") == 0
    plain = capsys.readouterr().err
    assert "\r" not in plain
    assert [line.split(":")[0] for line in plain.splitlines() if line.startswith("epoch")] == ["epoch 1/2", "epoch 2/2"]
    assert "img/s" in plain and "val_acc" in plain
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert train(tiny, tmp_path / "tty") == 0
    drawn = terminal.getvalue()
    bars = [part for part in drawn.split("\r") if "[" in part]
    assert bars and all("loss" in b and "acc" in b and "img/s" in b for b in bars), drawn
    assert any(b.startswith("epoch 1/2 [") and "] 4/4 " in b for b in bars), drawn  # 205 images, 64 a step
    assert "epoch 2/2: loss" in drawn  # the epoch's line follows the cleared bar


def test_checkpoints_are_written_atomically_and_marked(tiny, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert train(tiny, out, "--stop-after", "1") == 0
    assert written_by_archc(out / "checkpoint.pt")
    first = (out / "checkpoint.pt").read_bytes()
    import archc.outputs

    def crash(fd):  # the disk fails while the next checkpoint is being written
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(archc.outputs.os, "fsync", crash)
    assert train(tiny, out, "--resume") == 1
    assert "No space left on device" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == first  # the last good one, whole
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.csv", "metrics.json"]


def test_a_strangers_checkpoint_is_refused_before_training(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_text("my own notes")
    assert train(tiny, out) == 1
    assert "checkpoint.pt exists and was not written by archc; use --force" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_text() == "my own notes"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]
    assert train(tiny, out, "--force") == 0
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2


def test_resume_needs_the_same_freeze(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(tiny, out, "--freeze", "conv1", "--stop-after", "1") == 0
    assert train(tiny, out, "--resume") == 1
    assert "trained with conv1 frozen, this run freezes nothing" in capsys.readouterr().err
    assert train(tiny, out, "--resume", "--freeze", "conv1") == 0


def test_random_specs_freeze_the_same_in_summary_live_build_and_generated_code(tmp_path):
    """Random valid specs (tests/strategies.py) with random modules frozen by their exact paths:
    the summary's frozen count is the live model's, and generated code freezes the same
    parameters and keeps the same modules in eval mode after `train()`."""
    strategies = pytest.importorskip("strategies")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from archc.freeze import frozen_params, modules, with_frozen

    @settings(max_examples=20, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(gen=strategies.valid_specs(), data=st.data())
    def check(gen, data):
        path = tmp_path / "random.yaml"
        path.write_text(gen.text)
        spec = archc.load(path)
        paths = [n.path for n in modules(spec.tree)]
        picked = data.draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3))
        spec = with_frozen(spec, picked)
        assert all(any(p == f or p.startswith(f + ".") for f in spec.frozen) for p in picked)
        live = archc.build(spec, seed=0)
        assert frozen_params(spec) == sum(p.numel() for p in live.parameters() if not p.requires_grad)
        file = tmp_path / f"gen_{abs(hash(gen.text))}.py"
        file.write_text(archc.codegen(spec))
        loader = importlib.util.spec_from_file_location(file.stem, file)
        mod = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(mod)
        generated = [v for v in vars(mod).values() if callable(v) and getattr(v, "__module__", "") == file.stem
                     and not isinstance(v, type)][-1]()  # fmt: skip
        assert [(n, p.requires_grad) for n, p in generated.named_parameters()] == [
            (n, p.requires_grad) for n, p in live.named_parameters()
        ], gen.text
        generated.train()
        live.train()
        assert [(n, m.training) for n, m in generated.named_modules()] == [
            (n, m.training) for n, m in live.named_modules()
        ], gen.text

    check()


def test_a_frozen_model_scripts_and_exports():
    """TorchScript reads the model class's annotations: the frozen paths must not trip it."""
    model = archc.build(archc.loads(SPEC), seed=0).eval()
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, still used
        scripted = torch.jit.script(model)
    assert torch.equal(scripted(x), model(x))
    exported = torch.export.export(model, (x,))
    assert torch.equal(exported.module()(x), model(x))
