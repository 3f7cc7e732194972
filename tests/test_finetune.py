"""The seed's fine-tune flow end to end: a saved torchvision resnet18 checkpoint, `archc train`
of the ResNet spec with `--weights`, a two-class head and the stem plus layer1-3 frozen, on a
generated two-class ImageFolder set. The frozen tensors (batch-norm statistics included) come
out bit for bit as they went in; layer4 and the new head learn the set."""

from __future__ import annotations

import json
import time

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import archc  # noqa: E402
from archc.cli import main  # noqa: E402

SIZE = 32  # pixels: resnet18's layer4 sees 1x1, so a CPU epoch takes a fraction of a second
PER_CLASS = 40
FROZEN = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")


def stripes(root, size: int = SIZE, per_class: int = PER_CLASS, seed: int = 0):
    """Horizontal vs vertical stripes (period 8 px) with random phase, contrast and noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label in ("horizontal", "vertical"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            phase, lo = rng.integers(0, 8), rng.integers(0, 80)
            line = (((np.arange(size) + phase) // 4) % 2) * (255 - lo) + lo
            img = np.repeat(line[:, None], size, 1) if label == "horizontal" else np.repeat(line[None, :], size, 0)
            img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255)
            Image.fromarray(np.stack([img] * 3, -1).astype("uint8")).save(root / label / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """torchvision's resnet18 (randomly initialised: nothing can be downloaded here), with
    non-trivial batch-norm statistics so a moved statistic shows, saved as a training script
    saves it."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith(("running_mean", "running_var")):
                tensor.copy_(torch.rand_like(tensor) * 0.2 + (0.9 if name.endswith("var") else -0.1))
            elif name.endswith("num_batches_tracked"):
                tensor.fill_(1000)
    path = tmp_path_factory.mktemp("ckpt") / "resnet18.pth"
    torch.save({"model": model.state_dict(), "epoch": 90}, path)
    return path, model.state_dict()


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared, busy CPU two threads make each step several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_finetune_resnet18_frozen_stem_and_layer1_3(checkpoint, tmp_path, capsys, one_thread):
    path, original = checkpoint
    data = stripes(tmp_path / "stripes")
    out = tmp_path / "run"
    start = time.perf_counter()
    overrides = ["params.num_classes=2", f"input=[3,{SIZE},{SIZE}]"]
    code = main([
        "train", "resnet18", "--weights", str(path), "--set", overrides[0],
        "--set", overrides[1], "--freeze", "conv1", "--freeze", "bn1",
        "--freeze", "layer[1-3]", "--data", str(data), "-o", str(out), "--epochs", "4",
        "--optimizer", "adamw", "--lr", "0.001", "--batch-size", "16",
    ])  # fmt: skip
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 0, err
    # the load report: everything loaded but the head, which the spec's init rules start
    assert f"weights: {path} (under 'model'): loaded 120 tensors" in err, err
    assert "fc.weight: checkpoint [1000, 512], model [2, 512]" in err
    assert "fc.bias: checkpoint [1000], model [2]" in err
    assert "frozen: conv1, bn1, layer1, layer2, layer3" in err
    trained = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    frozen = [k for k in original if k.startswith(FROZEN)]
    assert any(k.endswith("running_mean") for k in frozen) and any(k.endswith("num_batches_tracked") for k in frozen)
    for key in frozen:  # weights, biases, running statistics and their counters
        assert torch.equal(trained[key], original[key]), key
    layer4 = [k for k in original if k.startswith("layer4.")]
    for key in layer4:  # trained: weights, and batch-norm statistics in train mode
        assert not torch.equal(trained[key], original[key]), key
    start = archc.build("resnet18", weights=path, seed=0, overrides=overrides).state_dict()
    for key in ("fc.weight", "fc.bias"):  # the new head, from the spec's init (seed 0), learned
        assert trained[key].shape == start[key].shape and not torch.equal(trained[key], start[key])
    history = json.loads((out / "metrics.json").read_text())
    print(f"fine-tune: val_acc {[round(r['val_acc'], 3) for r in history]}, {seconds:.1f} s")
    assert history[-1]["val_acc"] >= 0.95, history
    assert f"val_acc {history[-1]['val_acc']:.3f}" in err  # the accuracy is reported
