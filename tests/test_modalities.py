"""RGB+IR and RGB-only teachers in one study (--teacher_modalities rgb+ir rgb): each teacher is trained
once per seed with each input, the RGB-only runs are named {teacher}-rgb_{variant} beside the spec's
tree, the control is shared, the students pair by seed, and compare/report say what IR adds."""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_cli

from firekd.checkpoints import build_from_payload, load_payload
from firekd.config import DataConfig, RunConfig, TeacherConfig
from firekd.models import create_teacher, teacher_arch, teacher_label


def test_one_grid_per_teacher_input_with_labelled_teachers():
    cfg = RunConfig(data=DataConfig(csv="d.csv"), teachers=("resnet18",), modalities=("rgb+ir", "rgb"))
    grids = cfg.per_modality()
    assert [(g.teacher.modalities, g.teachers) for g in grids] == [("rgb+ir", ("resnet18",)),
                                                                   ("rgb", ("resnet18-rgb",))]
    single = RunConfig(data=DataConfig(csv="d.csv"), teacher=TeacherConfig(modalities="rgb"), modalities=("rgb",))
    assert single.per_modality() == [single]  # one input: the spec's names, unchanged
    assert teacher_label("resnet18", "rgb+ir") == "resnet18" and teacher_arch("resnet18-rgb") == "resnet18"
    assert create_teacher("resnet18-rgb", modalities="rgb", pretrained=False).modalities == "rgb"


@pytest.mark.slow
def test_both_teacher_inputs_in_one_ablation_pair_their_students_by_seed(synth_small, tmp_path, capsys):
    out = tmp_path / "out"
    code, text, err = run_cli(
        ["ablation", "--csv", synth_small / "data.csv", "--output", out, "--teachers", "resnet18",
         "--teacher_modalities", "rgb+ir", "rgb", "--variants", "kl_bce", "bce", "--seeds", "1", "2",
         "--slice_col", "hidden_in_rgb", "--epochs_teacher", "1", "--epochs_student", "1", "--no_pretrained",
         "--img_size", "32", "--num_workers", "0", "--batch_size", "32", "--max_embed_points", "0",
         "--no_compress", "--latency_runs", "0", "--no_figures"], capsys)  # no assertion looks at a seed's figures
    assert code == 0, err
    for label, inputs in (("resnet18", "rgb+ir"), ("resnet18-rgb", "rgb")):
        for seed in (1, 2):  # one teacher per input and seed
            stores = list((out / "teachers" / label).glob(f"seed_{seed}-*"))
            assert len(stores) == 1
            model = build_from_payload(load_payload(stores[0] / "teacher_best.pth"))
            assert model.modalities == inputs
        config = json.loads((out / f"metrics/{label}_kl_bce/config.json").read_text())
        assert config["flags"]["teacher_modalities"] == inputs
        agg = json.loads((out / f"metrics/{label}_kl_bce/aggregated_results.json").read_text())
        assert agg["seeds"] == [1, 2]
    for seed in (1, 2):  # the control: trained once, shown under both teachers
        assert len(list((out / "controls/firekd_student").glob(f"seed_{seed}-*"))) == 1
        finals = [json.loads((out / f"metrics/{t}_bce/seed_{seed}/final_evaluation.json").read_text())
                  for t in ("resnet18", "resnet18-rgb")]
        assert finals[0]["student"] == finals[1]["student"]
    assert run_cli(["compare", out], capsys)[0] == 0
    import pandas as pd

    tests = pd.read_csv(out / "comparison/all/tests.csv")
    ir = tests[tests["kind"] == "what IR adds"]
    overall = ir[(ir["metric"] == "f1_macro") & (ir["model"] == "student")]
    assert len(overall) == 1 and overall["n"].iloc[0] == 2 and overall["seeds"].iloc[0] == "1 2"
    a = json.loads((out / "metrics/resnet18_kl_bce/aggregated_results.json").read_text())["student"]["f1_macro"]
    b = json.loads((out / "metrics/resnet18-rgb_kl_bce/aggregated_results.json").read_text())["student"]["f1_macro"]
    assert overall["mean_diff"].iloc[0] == pytest.approx(a["mean"] - b["mean"], abs=1e-9)
    assert (ir["metric"] == "recall_fire[hidden_in_rgb=1]").any()
    code, text, err = run_cli(["report", out], capsys)
    assert code == 0, err
    assert "What IR adds" in text and "resnet18, `kl_bce`: F1 macro" in text
    assert "recall fire [hidden_in_rgb = 1]" in (out / "report/all/report.md").read_text()
