"""The int8 student on disk: ``student_quantized.pth``.

Format: a PT2 archive (zip) written by ``torch.export.save``: the converted PT2E program as
serialized graph JSON plus its tensors as raw bytes: int8 convolution/linear weights (BatchNorm
folded in), fp32 biases, per-channel weight scales and zero points; activation scales are
constants in the graph. The unused fp32 weights are not in it. A ``firekd.json`` entry holds the
metadata (format tag, the fp32 architecture's config, input size, validation thresholds,
calibration). Load it with ``load_quantized`` (or ``torch.export.load(path).module()`` after
``import torchao.quantization.pt2e``, which registers the quantized ops); the loaded program takes
a normalised RGB batch (B,3,H,W) at the recorded size and returns (logits, embedding).
``load_quantized`` refuses archives holding pickled tensors, so loading never unpickles objects.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch
from torch import nn

from firekd.compress.quantize import batch_dim, eval_mode_only, export_example
from firekd.errors import ModelError, first_line
from firekd.io import atomic_path

QUANTIZED_FORMAT = "firekd-int8-pt2e/1"
META_ENTRY = "firekd.json"


def save_quantized(path: str | Path, module: torch.fx.GraphModule, example: torch.Tensor,
                   meta: dict) -> None:
    """Export the quantized graph module again (dynamic batch) and write it atomically."""
    program = torch.export.export(module, (export_example(example.cpu()),), dynamic_shapes=(batch_dim(),))
    program.example_inputs = None  # would store a batch of images in the file
    extra = {META_ENTRY: json.dumps({"format": QUANTIZED_FORMAT, **meta})}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: torch wants a .pt2 name
        torch.export.save(program, fh, extra_files=extra)


def load_quantized(path: str | Path) -> tuple[nn.Module, dict]:
    """(int8 module, metadata) from a ``save_quantized`` file; ModelError for anything else."""
    import torchao.quantization.pt2e  # noqa: F401  (registers the int8 ops)

    path = Path(path)
    meta = read_quantized_meta(path)
    _refuse_pickles(path)
    try:
        with open(path, "rb") as fh:
            program = torch.export.load(fh)
    except Exception as exc:  # deserialisation errors come in many types
        raise ModelError(f"{path}: cannot load the int8 program ({first_line(exc)})") from None
    return eval_mode_only(program.module()), meta


def read_quantized_meta(path: str | Path) -> dict:
    """The metadata of a quantized student, without loading the program."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: file not found")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: not a firekd int8 student (expected a torch.export archive)")
    with zipfile.ZipFile(path) as archive:
        entries = [n for n in archive.namelist() if n.endswith(f"extra/{META_ENTRY}")]
        if not entries:
            raise ModelError(f"{path}: not a firekd int8 student (no {META_ENTRY} inside); "
                             "fp32 checkpoints load with firekd.checkpoints.load_model")
        meta = json.loads(archive.read(entries[0]))
    if meta.get("format") != QUANTIZED_FORMAT:
        raise ModelError(f"{path}: unknown int8 student format {meta.get('format')!r}")
    return meta


def _refuse_pickles(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith("_config.json") and '"use_pickle": true' in archive.read(name).decode():
                raise ModelError(f"{path}: refused to load, the archive holds pickled tensors")


def is_quantized_file(path: str | Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith(f"extra/{META_ENTRY}") for n in archive.namelist())
