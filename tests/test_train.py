"""archc train: learns a generated two-class image set; resume equals an uninterrupted run;
under torchrun (gloo, 2 ranks) the ranks' parameters agree and accuracy matches."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from archc.cli import main

pytest.importorskip("torchvision")

SPEC = """archc: 1
name: tiny
input: [3, 16, 16]
body:
  conv1: {conv: {out: 8, kernel: 3, padding: 1}}
  relu: relu
  pool: {adaptive_avgpool: 1}
  flatten: flatten
  fc: {linear: {out: 2}}
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Horizontal vs vertical stripes, 40 images each, with random phase and contrast."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("stripes")
    rng = np.random.default_rng(0)
    for label in ("horizontal", "vertical"):
        (root / label).mkdir()
        for i in range(40):
            phase, lo = rng.integers(0, 4), rng.integers(0, 80)
            rows = (((np.arange(16) + phase) // 2) % 2) * (255 - lo) + lo
            img = np.repeat(rows[:, None], 16, 1) if label == "horizontal" else np.repeat(rows[None, :], 16, 0)
            Image.fromarray(np.stack([img] * 3, -1).astype("uint8")).save(root / label / f"{i}.png")
    spec = root.parent / "tiny.yaml"
    spec.write_text(SPEC)
    return root, spec


def run(spec, data, out, *extra):
    assert main(["train", str(spec), "--data", str(data), "-o", str(out), "--optimizer", "adamw",
                 "--lr", "0.02", "--batch-size", "16", *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_learns_stripes(data, tmp_path):
    root, spec = data
    history = run(spec, root, tmp_path / "run", "--epochs", "6")
    assert history[-1]["val_acc"] >= 0.95, history
    assert (tmp_path / "run" / "metrics.csv").read_text().startswith("epoch,train_loss")


def test_resume_gives_the_same_losses(data, tmp_path):
    root, spec = data
    full = run(spec, root, tmp_path / "full", "--epochs", "4")
    # the schedule depends on --epochs: the interrupted run is the 4-epoch run, stopped after 2
    run(spec, root, tmp_path / "part", "--epochs", "4", "--stop-after", "2")
    resumed = run(spec, root, tmp_path / "part", "--epochs", "4", "--resume")
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in full]
    assert [r["val_acc"] for r in resumed] == [r["val_acc"] for r in full]


def test_torchrun_two_ranks_agree(data, tmp_path):
    root, spec = data
    single = run(spec, root, tmp_path / "one", "--epochs", "6")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "archc",
         "train", str(spec), "--data", str(root), "-o", str(tmp_path / "ddp"), "--optimizer",
         "adamw", "--lr", "0.02", "--batch-size", "16", "--epochs", "6"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the number as train prints it (.10e): the other rank's output may follow it on the same line
    sums = re.findall(r"rank (\d): param checksum (-?\d\.\d{10}e[+-]\d+)", proc.stderr)
    print(sums)
    assert len(sums) == 2 and sums[0][1] == sums[1][1]
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp[-1]["val_acc"] >= 0.95 and abs(ddp[-1]["val_acc"] - single[-1]["val_acc"]) <= 0.05


def test_weights_start_training_from_a_checkpoint(data, tmp_path):
    """--weights loads a checkpoint (here a previous run's, its state_dict under "model"): with
    the learning rate at 0 the first epoch already scores what the trained model scores."""
    root, spec = data
    trained = run(spec, root, tmp_path / "first", "--epochs", "6")
    assert trained[-1]["val_acc"] >= 0.95
    frozen = ["--epochs", "1", "--lr", "0"]
    loaded = run(spec, root, tmp_path / "loaded", *frozen, "--weights", str(tmp_path / "first" / "checkpoint.pt"))
    fresh = run(spec, root, tmp_path / "fresh", *frozen)
    assert loaded[0]["val_acc"] == trained[-1]["val_acc"]
    assert fresh[0]["val_acc"] < 0.9  # an untrained model does not separate the stripes


AUX_SPEC = SPEC.replace("  pool:", "  aux: {seq: [{adaptive_avgpool: 1}, flatten, {linear: {out: 2}}], head: {from: relu, output: aux_logits}}\n  pool:", 1)


def test_auxiliary_heads_are_trained_with_the_main_output(data, tmp_path):
    """A model with heads returns (logits, aux...) in train mode: each head's loss is added
    (weighted by --aux-weight), so the head learns too; evaluation scores the main output."""
    import torch

    import archc

    root, _ = data
    spec = tmp_path / "aux.yaml"
    spec.write_text(AUX_SPEC)
    history = run(spec, root, tmp_path / "run", "--epochs", "6")
    assert history[-1]["val_acc"] >= 0.95, history
    trained = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    initial = archc.build(str(spec), seed=0).state_dict()
    assert not torch.equal(trained["aux.2.weight"], initial["aux.2.weight"])


def test_a_model_with_feature_taps_is_refused_before_training(data, tmp_path, capsys):
    root, spec = data
    code = main(["train", str(spec), "--data", str(root), "-o", str(tmp_path / "run"),
                 "--set", "outputs=[conv1]", "--epochs", "1"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "feature taps (conv1" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
