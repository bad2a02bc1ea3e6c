"""A killed int8 export leaves its quantization temp folder (the unquantized graph); the next
export removes the folders of dead processes and leaves live ones alone."""

from __future__ import annotations

import os
import tempfile

from test_export import tiny_model
from tinydata import run_child

from edge_tl.deploy.export import QUANT_PREFIX, to_onnx_bytes


def test_the_next_int8_export_removes_a_dead_exports_temp_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = int(run_child(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout)
    left = tmp_path / f"{QUANT_PREFIX}{dead}-abc"
    left.mkdir()
    (left / "fp32.onnx").write_bytes(b"weights of a killed export")
    live = tmp_path / f"{QUANT_PREFIX}1-def"  # pid 1 is alive: not ours to touch
    live.mkdir()
    mine = tmp_path / f"{QUANT_PREFIX}{os.getpid()}-ghi"
    mine.mkdir()
    to_onnx_bytes(tiny_model(), quantize="int8", vocab="full")
    assert not left.exists() and live.is_dir() and mine.is_dir()
    assert not [p for p in tmp_path.iterdir() if p not in (live, mine)]  # its own is gone too
