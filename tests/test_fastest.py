"""`firekd export --fastest` picks what the measurement says; tables mark uncompiled int8."""

from __future__ import annotations

import json
import math

import pytest
from cli_helpers import run_cli
from deploy_helpers import toy_detector

from firekd.deploy.card import card_paths, file_digest
from firekd.errors import ConfigError
from firekd.recipes import fastest
from firekd.recipes.fastest import choose_fastest
from firekd.reporting.tables import display_table, summary_frame


def test_fastest_within_tolerance_wins():
    measured = {"student": {"latency_ms": 2.0, "val_f1_macro": 0.80},
                "student_quantized": {"latency_ms": 0.5, "val_f1_macro": 0.75},  # fastest, too lossy
                "student_onnx": {"latency_ms": 1.5, "val_f1_macro": 0.80},
                "student_onnx_int8": {"latency_ms": 0.9, "val_f1_macro": 0.795}}
    best, verdicts = choose_fastest(measured, tolerance=0.01)
    assert best == "student_onnx_int8"
    assert verdicts["student_quantized"].startswith("dropped")
    assert choose_fastest(measured, tolerance=0.06)[0] == "student_quantized"
    assert choose_fastest(measured, tolerance=0.0)[0] == "student_onnx"  # equal F1 is no drop


def test_fp32_wins_when_nothing_is_faster_and_is_always_kept():
    measured = {"student": {"latency_ms": 1.0, "val_f1_macro": 0.5},
                "student_onnx": {"latency_ms": 3.0, "val_f1_macro": 0.9}}
    assert choose_fastest(measured, tolerance=0.0) == ("student", {"student": "fastest within tolerance",
                                                                   "student_onnx": "within tolerance"})
    with pytest.raises(ConfigError):
        choose_fastest({"student_onnx": {"latency_ms": 1.0, "val_f1_macro": 0.5}}, tolerance=0.0)


def test_export_fastest_writes_the_measured_winner(synth_small, tmp_path, capsys, monkeypatch):
    checkpoint = toy_detector(tmp_path / "student_best.pth")
    calls = []

    def injected(forward, size, batch, threads, runs):  # here ONNX int8 measures fastest
        calls.append((size, batch, threads))
        path = getattr(forward, "path", None)
        return 0.3 if path is not None and "int8" in path.name else 5.0 + len(calls)

    monkeypatch.setattr(fastest, "measure_latency", injected)
    code, out, err = run_cli(["export", "--checkpoint", checkpoint, "--csv", synth_small / "data.csv",
                              "--fastest", "--deploy_batch", "4", "--threads", "1", "--f1_tolerance", "1",
                              "--no_quant_compile", "--calibration_batches", "1", "--batch_size", "32",
                              "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    assert set(calls) == {(32, 4, 1)} and len(calls) == 4
    record = json.loads((tmp_path / "out" / "student_best_fastest.json").read_text())
    assert set(record["forms"]) == {"student", "student_quantized", "student_onnx", "student_onnx_int8"}
    assert record["fastest"] == "student_onnx_int8"
    assert record["forms"]["student_onnx_int8"]["latency_ms"] == 0.3
    assert record["forms"]["student_quantized"]["runtime"] == "torch int8 (uncompiled)"
    written = tmp_path / "out" / "student_best_fastest.onnx"
    assert file_digest(written) == file_digest(tmp_path / "out" / "student_best_int8.onnx")
    card = json.loads(card_paths(written)[0].read_text())
    assert card["artefact"]["kind"] == "student_onnx_int8"
    assert card["latency"]["ms_per_batch"] == 0.3 and card["latency"]["batch"] == 4
    assert "fastest: student_onnx_int8" in out and "int8 (uncompiled)" in out


def test_tables_mark_uncompiled_int8():
    nan = {"mean": 0.7, "std": math.nan, "n": 1, "ci95_low": math.nan, "ci95_high": math.nan}
    agg = {"seeds": [1], "student": {"f1_macro": nan},
           "student_quantized": {"f1_macro": nan, "compiled_int8": {"mean": 0.0}}}
    shown = display_table(summary_frame({"resnet18_kl_bce": agg}, ("f1_macro",)), ("f1_macro",))
    assert shown["model"].tolist() == ["student", "student_quantized (uncompiled int8)"]
    agg["student_quantized"]["compiled_int8"] = {"mean": 1.0}
    shown = display_table(summary_frame({"resnet18_kl_bce": agg}, ("f1_macro",)), ("f1_macro",))
    assert shown["model"].tolist() == ["student", "student_quantized"]
