"""archc export: each format's file reproduces the live model's outputs; bad paths exit 1."""

import pytest
import torch

import archc
from archc.cli import main

SPEC = """archc: 1
name: tiny
input: [3, 16, 16]
body:
  conv1: {conv: {out: 8, kernel: 3, padding: 1}}
  bn1: batchnorm
  relu: relu
  pool: {adaptive_avgpool: 1}
  flatten: flatten
  fc: {linear: {out: 2}}
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    return path


def live(spec):
    return archc.build(spec, seed=0).eval()


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
def test_torch_formats_match_live(spec, tmp_path, fmt):
    out = tmp_path / f"m.{fmt}"
    assert main(["export", str(spec), "--format", fmt, "-o", str(out)]) == 0
    x = torch.randn(1, 3, 16, 16)  # the exported program is specialised to batch 1
    loaded = torch.jit.load(str(out)) if fmt == "torchscript" else torch.export.load(str(out)).module()
    torch.testing.assert_close(loaded(x), live(spec)(x))


def test_onnx_matches_live(spec, tmp_path):
    for mod in ("onnx", "onnxruntime"):
        try:
            __import__(mod)
        except ImportError:
            print(f"skipping: {mod} is not installed")
            pytest.skip(f"{mod} is not installed")
    import onnxruntime

    out = tmp_path / "m.onnx"
    assert main(["export", str(spec), "--format", "onnx", "-o", str(out)]) == 0
    x = torch.randn(1, 3, 16, 16)
    got = onnxruntime.InferenceSession(str(out)).run(None, {"input": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), live(spec)(x), rtol=1e-4, atol=1e-5)


def test_unwritable_path_and_bad_format(spec, tmp_path, capsys):
    assert main(["export", str(spec), "--format", "onnx", "-o", str(tmp_path / "no" / "m.onnx")]) == 1
    assert "not a writable folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["export", str(spec), "--format", "tflite", "-o", str(tmp_path / "m")])
    assert exc.value.code != 0


def test_an_existing_file_is_replaced_only_with_force(spec, tmp_path, capsys):
    out = tmp_path / "m.pt"
    out.write_text("mine")
    assert main(["export", str(spec), "--format", "torchscript", "-o", str(out)]) == 1
    assert f"{out} exists and was not written by archc; use --force" in capsys.readouterr().err
    assert out.read_text() == "mine"
    assert main(["export", str(spec), "--format", "torchscript", "-o", str(out), "--force"]) == 0
    assert torch.jit.load(str(out)) is not None
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary file left
