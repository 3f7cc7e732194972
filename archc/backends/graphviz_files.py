"""From DOT text to the bytes of the file asked for, carrying archc's no-clobber marker.

The format comes from the file extension. DOT needs nothing but Python; SVG, PNG and PDF are
rendered by Graphviz's `dot` program. Each format carries outputs.MARKER near its start, so
outputs.write_atomic can tell archc's drawings from a person's files:
DOT and SVG as a comment (the graph's `comment` attribute, which dot copies into SVG),
PNG as a tEXt chunk right after the header, PDF as a `%` comment line after the header
(the cross-reference offsets are shifted to match). A PDF whose layout is not the classic
one this expects is written unmarked, and replacing it later then needs --force.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import zlib
from pathlib import Path

from archc.errors import ArchcError, UsageError

FORMATS = ("dot", "svg", "png", "pdf")
INSTALL_HINT = (
    "install Graphviz (https://graphviz.org/download/; e.g. `apt-get install graphviz`, "
    "`brew install graphviz` or `conda install graphviz`), or write DOT with `-o FILE.dot`"
)
DOT_TIMEOUT_S = 300
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class GraphvizError(ArchcError):
    """The dot program is missing or failed (exit status 1)."""


def output_format(path: Path) -> str:
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UsageError(
            f"cannot tell the format of {path}: use a .dot, .svg, .png or .pdf file name"
        )
    return fmt


def encode(source: str, fmt: str, marker: str) -> bytes:
    """The file's bytes: DOT as is, other formats rendered by dot and then marked."""
    if fmt == "dot":
        return source.encode()
    return MARK[fmt](run_dot(source, fmt), marker.encode("ascii", "replace"))


def run_dot(source: str, fmt: str) -> bytes:
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizError(
            f"writing .{fmt} needs Graphviz's `dot` program, which is not on PATH; {INSTALL_HINT}"
        )
    try:
        done = subprocess.run(
            [exe, f"-T{fmt}"],
            input=source.encode(),
            capture_output=True,
            timeout=DOT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GraphvizError(f"could not run {exe}: {exc}") from None
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        raise GraphvizError(
            f"dot -T{fmt} failed: {detail[-1] if detail else f'exit status {done.returncode}'}"
        )
    return done.stdout


def _as_is(data: bytes, marker: bytes) -> bytes:
    return data


def _mark_png(data: bytes, marker: bytes) -> bytes:
    """Insert a tEXt chunk ("Software": marker) after IHDR, the first chunk."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise GraphvizError("dot -Tpng did not produce a PNG file")
    at = 8 + 8 + int.from_bytes(data[8:12], "big") + 4  # signature, IHDR length+type, data, CRC
    payload = b"tEXt" + b"Software\0" + marker
    chunk = len(payload[4:]).to_bytes(4, "big") + payload + zlib.crc32(payload).to_bytes(4, "big")
    return data[:at] + chunk + data[at:]


_STARTXREF = re.compile(rb"startxref\s+(\d+)\s+%%EOF\s*$")
_XREF_ENTRY = re.compile(rb"(\d{10}) (\d{5}) n")
_OBJECT = re.compile(rb"\d+ \d+ obj")


def _mark_pdf(data: bytes, marker: bytes) -> bytes:
    """A `% marker` line after the header; cross-reference offsets shifted; creation date blanked.

    Blanking /CreationDate (spaces of the same length) makes the bytes the same run after run.
    """
    end = _STARTXREF.search(data)
    head = data.find(b"\n") + 1
    if data[head : head + 1] == b"%":  # the binary-marker comment line belongs to the header
        head = data.find(b"\n", head) + 1
    if not data.startswith(b"%PDF-") or end is None or head <= 0:
        return data
    xref = int(end.group(1))
    trailer = data.find(b"trailer", xref)
    if not data.startswith(b"xref", xref) or trailer < 0:
        return data  # a cross-reference stream: leave the file as dot wrote it
    line = b"% " + marker.replace(b"\n", b" ").replace(b"\r", b" ") + b"\n"
    shift = len(line)
    table = _XREF_ENTRY.sub(
        lambda m: b"%010d %s n" % (int(m.group(1)) + shift, m.group(2)), data[xref:trailer]
    )
    cut = max(
        data.rfind(b"endstream", head, xref), head
    )  # the info dictionary comes after the streams
    info = re.sub(rb"/CreationDate \(D:[^)]*\)", lambda m: b" " * len(m.group(0)), data[cut:xref])
    out = (
        data[:head] + line + data[head:cut] + info + table + data[trailer : end.start(1)]
        + str(xref + shift).encode() + data[end.end(1) :]
    )  # fmt: skip
    offsets = [int(m.group(1)) for m in _XREF_ENTRY.finditer(table)]
    if not all(_OBJECT.match(out, offset) for offset in offsets):
        return data
    return out


MARK = {"svg": _as_is, "png": _mark_png, "pdf": _mark_pdf}
