"""The no-teacher semi-supervised baseline ``self_kd``: a fresh student distilled (kl_bce) from its
seed's ``bce`` control, trained once per seed on the labelled + unlabelled pairs, keyed on the
control (never on a teacher), and shown under every teacher like the control."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from cli_helpers import log_lines

from firekd.checkpoints import load_payload
from firekd.kd.distiller import Distiller, RgbTeacher
from firekd.kd.variants import distills, split_run_name, uses_teacher, variant_weights
from firekd.models import build_student
from firekd.recipes.context import Loaders

TINY = ["--epochs_teacher", "1", "--epochs_student", "1", "--no_pretrained", "--img_size", "32",
        "--num_workers", "0", "--batch_size", "32", "--lr_teacher", "1e-3", "--max_embed_points", "0",
        "--no_compress", "--latency_runs", "0", "--no_figures"]
TEACHERS = ("resnet18", "resnet10t")


def test_self_kd_distils_like_kl_bce_from_no_teacher():
    assert not uses_teacher("self_kd") and distills("self_kd")
    assert variant_weights("self_kd") == variant_weights("kl_bce")
    assert variant_weights("self_kd", {"kl": 0.5}) == {"kl": 0.5, "bce": 0.3}
    assert split_run_name("resnet18_self_kd") == ("resnet18", "self_kd")
    # like the KD students, it trains on the labelled + unlabelled pairs; the control on labels alone
    loaders = Loaders(train="labelled", train_kd="labelled+unlabelled", train_control="repeated",
                      val=None, test=None, shuffle=None, augment=None, seed=1)
    assert loaders.train_for("self_kd") == loaders.train_for("kl_bce") == "labelled+unlabelled"
    assert loaders.train_for("bce") == "repeated"


def test_the_control_as_a_teacher_takes_rgb_and_ignores_ir():
    torch.manual_seed(0)
    control, student = build_student("firekd_student"), build_student("firekd_student")
    teacher = RgbTeacher(control)
    task = Distiller(student, teacher, set(variant_weights("self_kd")))
    rgb, labels = torch.randn(4, 3, 32, 32), torch.tensor([[1.0, 0.0], [0.0, 1.0], [float("nan")] * 2, [1.0, 1.0]])
    t_logits, _ = task.teacher_targets(rgb, torch.randn(4, 5, 7, 7))  # an IR of any shape: never read
    assert torch.equal(t_logits, control.eval()(rgb)[0])
    logits, terms = task(rgb, None, labels)
    assert set(terms) == {"kl", "bce"} and logits.shape == (4, 2)
    terms["kl"].backward()
    assert not any(p.requires_grad for p in control.parameters())
    assert all(p.grad is None for p in control.parameters())
    assert any(p.grad is not None for p in student.parameters())


@pytest.fixture(scope="module")
def two_teachers(tmp_path_factory):
    """resnet18 and resnet10t, kl_bce, the control and self_kd, one seed, unlabelled pairs."""
    from firekd.cli import main

    root = tmp_path_factory.mktemp("self_kd")
    assert main(["synth", "--out", str(root / "d"), "--n", "80", "--size", "32", "--seed", "0",
                 "--unlabeled", "32"]) == 0
    with log_lines() as records:
        code = main(["ablation", "--csv", str(root / "d/data.csv"), "--unlabeled_csv",
                     str(root / "d/unlabeled.csv"), "--output", str(root / "out"), "--teachers", *TEACHERS,
                     "--variants", "kl_bce", "bce", "self_kd", "--seeds", "1", *TINY])
    assert code == 0
    return root / "out", "\n".join(records)


@pytest.mark.slow
def test_self_kd_is_trained_once_from_the_control_and_shown_under_every_teacher(two_teachers):
    out, log = two_teachers
    for variant in ("bce", "self_kd"):
        assert len(re.findall(rf"\[student {variant} \(seed 1\)\] epoch 1/1", log)) == 1, variant
    controls = out / "controls" / "firekd_student"
    [control] = controls.glob("seed_1-*")
    [self_kd] = controls.glob("self_kd-seed_1-*")
    control_student = json.loads((control / "models/student.store.json").read_text())
    # its store and its student's store record the control's build; its key builds on the control's
    assert json.loads((self_kd / "self_kd.store.json").read_text())["control_build"] == control_student["build"]
    assert json.loads((self_kd / "models/student.store.json").read_text())["teacher_build"] == control_student["build"]
    meta = load_payload(self_kd / "models/student_best.pth")["meta"]
    assert meta["settings"]["upstream"] == [control_student["key"]]
    assert meta["settings"]["variant"] == "self_kd" and meta["teacher_build"] == control_student["build"]
    teacher_keys = {p.name.split("-")[1] for t in TEACHERS for p in (out / "teachers" / t).glob("seed_1-*")}
    assert teacher_keys and not teacher_keys & set(meta["settings"]["upstream"])  # no multimodal teacher
    assert not list(self_kd.rglob("teacher*"))
    finals = [json.loads((out / f"metrics/{t}_self_kd/seed_1/final_evaluation.json").read_text()) for t in TEACHERS]
    assert [f["run"]["name"] for f in finals] == [f"{t}_self_kd" for t in TEACHERS]
    assert finals[0]["student"] == finals[1]["student"] and "teacher" not in finals[0]
    assert finals[0]["run"]["control_key"] == control_student["key"]
    assert finals[0]["run"]["control_build"] == control_student["build"]
    for teacher in TEACHERS:
        assert (out / f"models/{teacher}_self_kd/seed_1/student_best.pth").is_file()
        agg = json.loads((out / f"metrics/{teacher}_self_kd/aggregated_results.json").read_text())
        assert agg["seeds"] == [1]


def _epochs(lines: list[str]) -> list[str]:
    return [line for line in lines if re.search(r"\] epoch \d+/", line)]


@pytest.mark.slow
def test_self_kd_alone_reuses_the_stored_control_and_trains_nothing_again(two_teachers, caplog):
    from firekd.cli import main

    out, _ = two_teachers
    data = out.parent / "d"
    with caplog.at_level(logging.INFO):
        assert main(["ablation", "--csv", str(data / "data.csv"), "--unlabeled_csv", str(data / "unlabeled.csv"),
                     "--output", str(out), "--teachers", *TEACHERS, "--variants", "self_kd", "--seeds", "1",
                     *TINY]) == 0
    assert _epochs(caplog.messages) == []
    assert Path(out / "metrics/resnet10t_self_kd/seed_1/final_evaluation.json").is_file()


def test_the_report_answers_against_the_best_no_teacher_baseline_paired_by_seed(tmp_path, monkeypatch):
    import numpy as np
    import test_compare_report as fab
    from scipy import stats

    from firekd.metrics.stats import holm
    from firekd.recipes.compare import compare
    from firekd.recipes.report import write_report

    self_kd = [0.79, 0.80, 0.78, 0.80]  # mean 0.7925, above bce's 0.7475: the baseline to beat
    monkeypatch.setitem(fab.STUDENT, "self_kd", self_kd)
    output = fab.fabricate(tmp_path / "out", variants=("kl_bce", "kl_l2_bce", "bce", "self_kd"))
    tests = compare(output).tests.query("model == 'student' and metric == 'f1_macro'")
    # 2 KD + self_kd against bce, 2 KD against self_kd, 1 between KD variants: one Holm family of 6
    assert sorted(zip(tests["a"], tests["b"], tests["kind"], strict=True)) == [
        ("kl_bce", "bce", "vs control"), ("kl_bce", "kl_l2_bce", "between variants"),
        ("kl_bce", "self_kd", "vs self_kd"), ("kl_l2_bce", "bce", "vs control"),
        ("kl_l2_bce", "self_kd", "vs self_kd"), ("self_kd", "bce", "vs control")]
    s = fab.STUDENT
    p = {(a, b): stats.ttest_rel(s[a], s[b]).pvalue for a, b in zip(tests["a"], tests["b"], strict=True)}
    adjusted = dict(zip(p, holm(list(p.values())), strict=True))[("kl_l2_bce", "self_kd")]
    diffs = np.subtract(s["kl_l2_bce"], self_kd)
    answer = fab._section(write_report(output)["markdown"].read_text(), "What distillation buys")
    assert (f"resnet152: best KD student `kl_l2_bce`, F1 macro 0.8175 (n = 4) against 0.7925 for the "
            f"`self_kd` baseline: difference {diffs.mean():+.4f}") in answer
    assert f"paired t-test p = {p[('kl_l2_bce', 'self_kd')]:.3g} (Holm {adjusted:.3g}), 4 seeds" in answer
    assert "`bce` control" in answer and "self_kd" in answer
