"""A teacher worth distilling from: its validation F1 is compared with the bce control's before the
students train (or as soon as the control is), a weaker teacher is named in one warning line and in
the report's answer; the teacher's schedule can be set in optimizer steps."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from cli_helpers import run_cli

from firekd.config import TeacherConfig
from firekd.recipes.checks import check_teacher, weak_teacher
from firekd.recipes.compare import compare
from firekd.recipes.report import teacher_check_lines


def test_a_teacher_not_better_than_the_control_is_named_in_one_warning_line(caplog):
    caplog.set_level(logging.INFO)
    assert check_teacher("resnet18", 3, {"best_val_f1_macro": 0.51}, {"best_val_f1_macro": 0.62}) is True
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "0.5100 is not above the bce control's 0.6200" in warnings[0] and "--steps_teacher" in warnings[0]
    caplog.clear()
    assert check_teacher("resnet18", 3, {"best_val_f1_macro": 0.7}, {"best_val_f1_macro": 0.62}) is False
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert weak_teacher(None, 0.5) is None and weak_teacher(0.5, 0.5) is True  # equal is not better


def test_teacher_steps_become_whole_epochs():
    assert TeacherConfig(epochs=7).epochs_for(3) == 7
    assert TeacherConfig(steps=10).epochs_for(3) == 4 and TeacherConfig(steps=9).epochs_for(3) == 3
    assert TeacherConfig(steps=10).epochs_for(100) == 1


def test_the_report_answer_states_a_weak_teacher(tiny_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(tiny_run, out, symlinks=False)
    teacher_log = out / "metrics/resnet18_kl_bce/seed_1/teacher_train_log.json"
    control_log = json.loads((out / "metrics/resnet18_bce/seed_1/student_train_log.json").read_text())
    log = json.loads(teacher_log.read_text())
    teacher_log.unlink()  # a link to the teacher store: replace it, not the store's file
    teacher_log.write_text(json.dumps({**log, "best_val_f1_macro": control_log["best_val_f1_macro"] - 0.1}))
    lines = teacher_check_lines(compare(out))
    assert len(lines) == 1 and "not better than the `bce` control on validation in 1 of 1 seed" in lines[0]
    teacher_log.write_text(json.dumps({**log, "best_val_f1_macro": control_log["best_val_f1_macro"] + 0.1}))
    assert "better than the `bce` control on validation in every seed" in teacher_check_lines(compare(out))[0]


@pytest.mark.slow
def test_steps_teacher_sets_the_schedule_and_the_check_runs_before_the_report(synth_small, tmp_path, capsys,
                                                                            caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "out"
    code, _, err = run_cli(["ablation", "--csv", synth_small / "data.csv", "--output", out, "--teachers",
                            "resnet18", "--variants", "kl_bce", "bce", "--seeds", "1", "--steps_teacher", "4",
                            "--epochs_student", "1", "--no_pretrained", "--img_size", "32", "--num_workers",
                            "0", "--batch_size", "32", "--max_embed_points", "0", "--no_compress",
                            "--latency_runs", "0", "--patience_teacher", "5", "--no_figures"], capsys)
    assert code == 0, err
    log = json.loads((out / "metrics/resnet18_kl_bce/seed_1/teacher_train_log.json").read_text())
    assert len(log["epochs"]) == 2  # 67 train pairs in batches of 32: 3 steps an epoch, 4 steps -> 2 epochs
    checks = [r.getMessage() for r in caplog.records if "the bce control's" in r.getMessage()]
    assert len(checks) == 1 and checks[0].startswith("teacher resnet18 seed 1: validation F1 macro")
