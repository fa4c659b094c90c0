"""ONNX export of a student (fp32) and its onnxruntime static int8 version (QDQ format).

Both files take ``rgb`` (B,3,H,W float32, normalised like training) with a dynamic batch and
return ``logits`` (B,2) and ``embedding`` (B,D). The int8 file has QuantizeLinear/DequantizeLinear
pairs around int8 weights (per channel) and activations (per tensor, ranges from calibration on
training images), which onnxruntime's CPU provider runs as int8 kernels.
"""

from __future__ import annotations

import copy
import itertools
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from firekd.compress.quantize import batch_dim, export_example
from firekd.errors import ModelError, first_line
from firekd.io import atomic_path

INPUT, OUTPUTS = "rgb", ("logits", "embedding")


def export_onnx(model: nn.Module, path: str | Path, example: torch.Tensor) -> None:
    """Write ``model`` (an fp32 student) as ONNX with a dynamic batch dimension."""
    source = copy.deepcopy(model).cpu().eval()
    try:
        program = torch.onnx.export(source, (export_example(example.cpu()),), input_names=[INPUT],
                                    output_names=list(OUTPUTS), dynamic_shapes=(batch_dim(),),
                                    dynamo=True, external_data=False, verbose=False)
    except Exception as exc:  # the exporter raises many types
        raise ModelError(f"cannot export the student to ONNX ({first_line(exc, 200)})") from None
    with atomic_path(path) as tmp:
        program.save(str(tmp), external_data=False)


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over batches of normalised RGB."""

    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> dict | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT: batch}


def quantize_onnx_int8(fp32_path: str | Path, int8_path: str | Path, batches: Iterable[np.ndarray]) -> None:
    """Static int8 QDQ copy of an ONNX model: per-channel int8 weights, int8 activations with
    MinMax ranges from ``batches`` (float32 (B,3,H,W) arrays, read once, one at a time)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        raise ModelError("ONNX int8 calibration needs at least one training batch")
    batches = itertools.chain([first], batches)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        with atomic_path(int8_path) as out:
            quantize_static(str(prepared), str(out), _Calibration(batches),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)


class OnnxStudent:
    """An ONNX file behind the student interface: ``model(rgb) -> (logits, embedding)`` tensors,
    so ``firekd.engine.loop.predict`` evaluates it like a torch model."""

    modalities = "rgb"

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's default (all cores)
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{path}: onnxruntime cannot load it ({first_line(exc)})") from None
        self.path = Path(path)

    def eval(self) -> OnnxStudent:
        return self

    def __call__(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, embedding = self.session.run(list(OUTPUTS), {INPUT: rgb.detach().cpu().float().numpy()})
        return torch.from_numpy(logits), torch.from_numpy(embedding)
