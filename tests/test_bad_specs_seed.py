"""Invariant 4 for the constructs the seed architectures brought in: parallel branches,
dense blocks, DenseNet / Inception / VGG / NiN library blocks and inline groups.

Each bad spec must fail `archc validate` with exit status 1, a `FILE:LINE:COL: error:` line
pointing at the node the user wrote, and no traceback.
"""

from __future__ import annotations

import pytest

from archc.cli import main
from conftest import assert_spec_error

HEAD = "archc: 1\nname: t\ninput: [3, 32, 32]\nbody:\n  stem: {conv: {out: 8, kernel: 3, padding: 1}}\n"
# the first body line after HEAD is line 6

# (id, body lines after the stem, line the error must point at, words the message must contain)
CASES = [
    ("parallel-branch-spatial-mismatch",
     "  mix:\n    parallel:\n      a: {conv: {out: 4, kernel: 1}}\n      b: {conv: {out: 4, kernel: 3}}\n",
     9, "parallel cannot concatenate 4×32×32 with 4×30×30"),
    ("parallel-flat-and-map",
     "  mix:\n    parallel:\n      a: {conv: {out: 4, kernel: 1}}\n      b: [{adaptive_avgpool: 1}, flatten]\n",
     9, "branch 'b'"),
    ("parallel-inline-names-collide",
     "  mix:\n    parallel:\n      a: {inline: true, seq: {c: {conv: {out: 4, kernel: 1}}}}\n"
     "      b: {inline: true, seq: {c: {conv: {out: 4, kernel: 1}}}}\n",
     9, "two layers are named 'c'"),
    ("inline-parallel-at-top-level",
     "  mix: {inline: true, parallel: {a: relu, b: relu}}\n",
     6, "the model's top level runs its layers one by one"),
    ("primitive-cannot-be-inline",
     "  r: {inline: true, relu: {}}\n",
     6, "can be inline"),
    ("dense-layer-changes-spatial-size",
     "  grow: {dense: {block: conv_bn_relu, depth: 2, out: 4, kernel: 3, stride: 2, padding: 1}}\n",
     6, "dense layer must keep the spatial size"),
    ("dense-layer-unpadded-conv",
     "  grow: {dense: {block: conv_bn_relu, depth: 2, out: 4, kernel: 3}}\n",
     6, "8×32×32 became 4×30×30"),
    ("dense-unknown-block",
     "  grow: {dense: {block: dense_layr, depth: 2, growth_rate: 4}}\n",
     6, "did you mean 'dense_layer'"),
    ("dense-depth-zero",
     "  grow: {dense: {block: dense_layer, depth: 0, growth_rate: 4}}\n",
     6, "greater than or equal to 1"),
    ("growth-rate-zero",
     "  grow:\n    dense_block: {layers: 2, growth_rate: 0}\n",
     7, "requires growth_rate > 0"),
    ("growth-rate-negative",
     "  grow: {dense: {block: dense_layer, depth: 3, growth_rate: -32}}\n",
     6, "requires growth_rate > 0"),
    ("dense-layer-missing-growth-rate",
     "  grow: {dense: {block: dense_layer, depth: 3}}\n",
     6, "needs parameter 'growth_rate'"),
    ("compression-above-one",
     "  trans: {transition: {compression: 1.5}}\n",
     6, "requires 0 < compression <= 1"),
    ("compression-zero",
     "  trans: {transition: {compression: 0}}\n",
     6, "requires 0 < compression <= 1"),
    ("compression-leaves-no-channels",
     "  trans: {transition: {compression: 0.01}}\n",
     6, "greater than or equal to 1"),
    ("inception-c2-not-a-list",
     "  inc: {inception: {c1: 4, c2: 8, c3: [2, 4], c4: 4}}\n",
     6, "only a list can be indexed"),
    ("inception-c3-too-short",
     "  inc: {inception: {c1: 4, c2: [4, 8], c3: [2], c4: 4}}\n",
     6, "index 1 is out of range"),
    ("inception-even-kernel",
     "  inc: {inception: {c1: 4, c2: [4, 8], c3: [2, 4], c4: 4, k3: 4}}\n",
     6, "requires k3 % 2 == 1"),
    ("inception-zero-width",
     "  inc: {inception: {c1: 0, c2: [4, 8], c3: [2, 4], c4: 4}}\n",
     6, "requires c1 > 0"),
    ("inception-fractional-width",
     "  inc: {inception: {c1: 4, c2: [4, 8.5], c3: [2, 4], c4: 4}}\n",
     6, "out should be a valid integer"),
    ("inception-missing-c4",
     "  inc: {inception: {c1: 4, c2: [4, 8], c3: [2, 4]}}\n",
     6, "needs parameter 'c4'"),
    ("inception-unknown-arg",
     "  inc: {inception: {c1: 4, c2: [4, 8], c3: [2, 4], c4: 4, c5: 1}}\n",
     6, "no parameter 'c5'"),
    ("inception-on-flat-features",
     "  pool: {adaptive_avgpool: 1}\n  flat: flatten\n  inc: {inception: {c1: 4, c2: [4, 8], c3: [2, 4], c4: 4}}\n",
     8, "needs a C×H×W feature map"),
    ("vgg-block-no-convs",
     "  feats:\n    - {vgg_block: {convs: 0, out: 64}, inline: true}\n",
     7, "requires convs >= 1"),
    ("vgg-block-batchnorm-not-bool",
     "  feats:\n    - {vgg_block: {convs: 2, out: 64, batchnorm: 'yes'}}\n",
     7, "'if' must be true or false"),
    ("vgg-block-too-many-pools",
     "  feats:\n" + "".join("    - {vgg_block: {convs: 1, out: 8}}\n" for _ in range(6)),
     12, "larger than the padded input"),
    ("nin-block-missing-kernel",
     "  nin: {nin_block: {out: 96, stride: 4}}\n",
     6, "needs parameter 'kernel'"),
    ("nin-block-kernel-too-big",
     "  nin: {nin_block: {out: 96, kernel: 33}}\n",
     6, "larger than the padded input"),
    ("lrn-on-flat-features",
     "  pool: {adaptive_avgpool: 1}\n  flat: flatten\n  norm: {lrn: 5}\n",
     8, "needs a C×H×W feature map"),
    ("ceil-mode-not-bool",
     "  pool: {maxpool: {kernel: 3, stride: 2, ceil_mode: 1}}\n",
     6, "ceil_mode"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_seed_spec_points_at_line(case, write_spec, capsys):
    _, body, line, words = case
    assert_spec_error(write_spec(HEAD + body), line, words, capsys)


def test_error_in_a_nested_library_block_names_the_blocks(write_spec, capsys):
    """dense_block → dense_layer: the error is at the user's line and says where it arose."""
    path = write_spec(HEAD + "  grow:\n    dense_block: {layers: 2, growth_rate: 0}\n")
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "block 'dense_layer'" in err and "(in block 'dense_block')" in err


def test_good_seed_constructs_validate(write_spec, capsys):
    """The same constructs, used correctly, pass (so the cases above fail for their reason)."""
    path = write_spec(HEAD + (
        "  inc: {inception: {c1: 4, c2: [4, 8], c3: [2, 4], c4: 4, k3: 5}}\n"
        "  grow: {dense_block: {layers: 2, growth_rate: 4, drop_rate: 0.2}}\n"
        "  trans: {transition: {compression: 0.5}}\n"
        "  feats: [{vgg_block: {convs: 2, out: 8, batchnorm: true}, inline: true}]\n"
        "  nin: {nin_block: {out: 8, kernel: 3, padding: 1}}\n"
        "  mix:\n    parallel:\n      a: {conv: {out: 4, kernel: 1}}\n      b: {conv: {out: 4, kernel: 3, padding: 1}}\n"
    ))  # fmt: skip
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    assert "ok (t: " in capsys.readouterr().out
