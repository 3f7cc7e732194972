"""`--weights` / `weights=`: checkpoints from torchvision's builders load into archc models.

Weights cannot be downloaded here, so the checkpoints are torchvision's randomly initialised
resnet18, written with `torch.save` in the layouts training scripts use.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import archc  # noqa: E402
from archc.weights import LoadReport, WeightsError  # noqa: E402
from conftest import run_archc  # noqa: E402

INPUT = (2, 3, 64, 64)  # small: the network is fully convolutional up to the pooled head


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(1234)
    model = torchvision.models.resnet18(weights=None).eval()
    # non-trivial batch-norm statistics and biases, so a missed tensor shows in the outputs
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith(("running_mean", "running_var", "bn1.bias", "bn2.bias")):
                tensor.copy_(torch.rand_like(tensor) + (0.5 if name.endswith("var") else 0))
    return model


LAYOUTS = {
    "plain": lambda sd: sd,
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 3},
    "model": lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
    "ddp": lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
    "ddp_plain": lambda sd: {f"module.{k}": v for k, v in sd.items()},
}


@pytest.fixture(scope="module")
def checkpoints(reference, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for layout, wrap in LAYOUTS.items():
        paths[layout] = folder / f"{layout}.pt"
        torch.save(wrap(reference.state_dict()), paths[layout])
    return paths


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_checkpoint_layouts_load_with_equal_outputs(layout, checkpoints, reference):
    model = archc.build("resnet18", weights=checkpoints[layout], seed=0).eval()
    report = model.load_report
    assert isinstance(report, LoadReport)
    assert len(report.loaded) == len(reference.state_dict())
    assert not (report.reinitialised or report.missing or report.unexpected)
    assert report.stripped_prefix == ("module." if layout.startswith("ddp") else "")
    x = torch.randn(*INPUT)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    for key, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], tensor), key


def test_a_state_dict_object_loads_too(reference):
    model = archc.build("resnet18", weights=reference.state_dict()).eval()
    x = torch.randn(*INPUT)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_new_head_is_initialised_by_the_spec_and_the_rest_loaded(checkpoints, reference):
    model = archc.build(
        "resnet18", weights=checkpoints["ddp"], seed=7, overrides=["params.num_classes=2"]
    )
    report = model.load_report
    assert report.reinitialised == [
        ("fc.weight", (1000, 512), (2, 512)),
        ("fc.bias", (1000,), (2,)),
    ]
    assert "fc.weight: checkpoint [1000, 512], model [2, 512]" in report.format()
    fresh = archc.build("resnet18", seed=7, overrides=["params.num_classes=2"]).state_dict()
    for key, tensor in model.state_dict().items():
        expected = fresh[key] if key.startswith("fc.") else reference.state_dict()[key]
        assert torch.equal(tensor, expected), key


def test_load_weights_reinitialises_mismatched_tensors_of_a_used_model(checkpoints, reference):
    """On an existing model the differing tensors are re-initialised, not left as they were:
    here a conv the spec's rule (kaiming_normal, fan_out) covers, and the linear head."""
    spec = archc.load("resnet18", overrides=["params.num_classes=2"])
    model = archc.build(spec, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    sd = dict(reference.state_dict())
    sd["conv1.weight"] = torch.zeros(64, 3, 5, 5)  # another stem: shapes differ
    report = archc.load_weights(model, spec, sd)
    assert {k for k, _, _ in report.reinitialised} == {"conv1.weight", "fc.weight", "fc.bias"}
    w = model.conv1.weight
    assert abs(w.std().item() - (2 / (64 * 49)) ** 0.5) < 0.01  # kaiming_normal, fan_out
    bound = 1 / 512**0.5  # nn.Linear's own init (the spec has no rule for linear)
    assert model.fc.weight.abs().max() <= bound and model.fc.weight.std() > bound / 4
    for key, tensor in model.state_dict().items():
        if key not in {"conv1.weight", "fc.weight", "fc.bias"}:
            assert torch.equal(tensor, sd[key]), key


def test_strict_errors_name_keys_and_no_strict_loads_the_rest(checkpoints, reference):
    sd = {k: v for k, v in reference.state_dict().items() if not k.startswith("layer4.1.")}
    sd["extra.weight"] = torch.zeros(3)
    with pytest.raises(WeightsError) as err:
        archc.build("resnet18", weights=sd)
    text = err.value.format()
    assert "layer4.1.conv1.weight [512, 512, 3, 3]" in text and "extra.weight [3]" in text
    assert "strict=False" in text
    model = archc.build("resnet18", weights=sd, strict=False)
    report = model.load_report
    assert ("extra.weight", (3,)) in report.unexpected
    assert {k for k, _ in report.missing} == {
        k for k in reference.state_dict() if k.startswith("layer4.1.")
    }
    assert torch.equal(model.layer4[0].conv1.weight, reference.layer4[0].conv1.weight)


def _no_traceback(result) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout


def test_cli_new_head_prints_the_report(checkpoints):
    result = run_archc(
        "build",
        "resnet18",
        "--weights",
        str(checkpoints["model"]),
        "--set",
        "params.num_classes=2",
        "--depth",
        "1",
    )
    assert result.returncode == 0, result.stderr
    assert "(under 'model'): loaded 120 tensors" in result.stdout
    assert "fc.weight: checkpoint [1000, 512], model [2, 512]" in result.stdout
    assert "fc.bias: checkpoint [1000], model [2]" in result.stdout


def test_cli_strict_error_and_no_strict(checkpoints, tmp_path):
    result = run_archc("build", "resnet34", "--weights", str(checkpoints["plain"]), "--depth", "1")
    assert result.returncode == 1
    _no_traceback(result)
    assert f"{checkpoints['plain']}: error: the checkpoint does not fit the spec" in result.stderr
    assert (
        "layer1.2.conv1.weight [64, 64, 3, 3]" in result.stderr and "--no-strict" in result.stderr
    )
    result = run_archc(
        "build", "resnet34", "--weights", str(checkpoints["plain"]), "--no-strict", "--depth", "1"
    )
    assert result.returncode == 0, result.stderr
    assert "missing from the checkpoint, left as initialised (96)" in result.stdout


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "no such weights file"),
        (b"not a checkpoint\n", "not a PyTorch checkpoint"),
        ("list", "not a state_dict: the file holds a list"),
        ("empty", "no tensors found"),
        ("model", "the checkpoint holds pickled objects"),  # torch.save(model), never unpickled
    ],
)
def test_cli_bad_weights_files(content, words, tmp_path):
    path = tmp_path / "w.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "list":
        torch.save([torch.zeros(1)], path)
    elif content == "empty":
        torch.save({"epoch": 1}, path)
    elif content == "model":
        torch.save(torch.nn.Linear(2, 2), path)
    result = run_archc("build", "resnet18", "--weights", str(path))
    assert result.returncode == 1
    _no_traceback(result)
    assert f"{path}: error: {words}" in result.stderr
