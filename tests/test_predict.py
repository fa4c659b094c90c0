"""`firekd predict`: the alarm rule, a synthetic video with a known fire segment, damaged input,
labelled input scored as `firekd evaluate` scores it, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from cli_helpers import assert_one_line_error, run_cli
from deploy_helpers import corrupt_mjpeg_frame, toy_detector
from PIL import Image
from test_evaluation import assert_png_with_content

from firekd.checkpoints import save_model
from firekd.deploy.alarms import AlarmRule, alarm_events, alarm_states, window_counts
from firekd.deploy.synth_video import write_video
from firekd.errors import ConfigError
from firekd.models import create_teacher

FIRE = slice(30, 60)  # the fire segment of the test video (frames)
SPIKE = 75  # one flame frame on its own


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    return toy_detector(tmp_path_factory.mktemp("model") / "student_best.pth")


@pytest.fixture(scope="module")
def fire_video(tmp_path_factory):
    fire = np.zeros(90, dtype=bool)
    fire[FIRE] = True
    fire[SPIKE] = True
    return write_video(tmp_path_factory.mktemp("video") / "camera.mp4", fire, fps=10, quality=3)


# --- the alarm rule ---------------------------------------------------------------------------

def test_window_counts_count_the_last_n():
    above = np.array([1, 0, 1, 1, 0, 0, 0, 1], dtype=bool)
    assert window_counts(above, 3).tolist() == [1, 1, 2, 2, 2, 1, 0, 1]


def test_single_frame_spike_raises_no_alarm():
    probs = np.zeros(50)
    probs[20] = 0.99
    assert not alarm_states(probs >= 0.5, AlarmRule()).any()
    assert alarm_events(probs, 0.5, AlarmRule(), "fire") == []
    # the same spike raises one with a 1-of-n rule: the default is what suppresses it
    assert len(alarm_events(probs, 0.5, AlarmRule(k=1, n=5), "fire")) == 1


def test_segment_gives_one_alarm_covering_it_despite_a_dip():
    probs = np.full(100, 0.1)
    probs[40:70] = 0.9
    probs[55] = 0.2  # one missed frame inside the fire: hysteresis holds the alarm
    probs[62] = 0.97
    (event,) = alarm_events(probs, 0.5, AlarmRule(k=3, n=5), "fire")
    assert event.onset == 40 and event.start == 42  # raised on the 3rd frame above
    assert 69 <= event.end <= 69 + 5  # released once the window is clear
    assert event.peak == 62 and event.peak_prob == pytest.approx(0.97)


def test_two_separate_fires_are_two_alarms():
    probs = np.zeros(60)
    probs[5:15] = probs[35:45] = 0.8
    events = alarm_events(probs, 0.5, AlarmRule(), "smoke")
    assert [(e.onset, e.label) for e in events] == [(5, "smoke"), (35, "smoke")]


def test_bad_rule_is_a_config_error():
    with pytest.raises(ConfigError, match="--alarm_k"):
        AlarmRule(k=6, n=5)
    with pytest.raises(ConfigError, match="--alarm_release"):
        AlarmRule(k=3, n=5, release=3)


# --- video ------------------------------------------------------------------------------------

def test_video_fire_segment_gives_one_alarm_covering_it(detector, fire_video, tmp_path, capsys):
    out = tmp_path / "pred"
    code, stdout, err = run_cli(["predict", "--model", detector, "--input", fire_video, "--out", out], capsys)
    assert code == 0, err
    table = pd.read_csv(out / "predictions.csv")
    assert len(table) == 90 and table["frame"].tolist() == list(range(90))
    assert table["time_s"].iloc[10] == pytest.approx(1.0)
    # the detector really fires on the spike frame: it is the rule that keeps it quiet
    assert table.loc[SPIKE, "fire_pred"] == 1
    alarms = json.loads((out / "events.json").read_text())["alarms"]
    assert [a["label"] for a in alarms] == ["fire"]
    (alarm,) = alarms
    assert FIRE.start <= alarm["start_frame"] <= FIRE.start + 3
    assert FIRE.stop - 1 <= alarm["end_frame"] <= FIRE.stop + 5
    assert alarm["peak_prob"] > 0.9 and FIRE.start <= alarm["peak_frame"] < FIRE.stop
    assert table["fire_alarm"].iloc[FIRE.stop + 8:].sum() == 0
    for name in ("timeline.png", "contact_sheet.png"):
        assert_png_with_content(out / name)
    assert json.loads((out / "summary.json").read_text())["throughput"]["frames"] == 90
    assert "1 alarm(s): frames" in stdout and "decode" in stdout and "model" in stdout


def test_fps_subsamples_video_time(detector, fire_video, tmp_path, capsys):
    out = tmp_path / "pred"
    code, _, err = run_cli(["predict", "--model", detector, "--input", fire_video, "--out", out,
                            "--fps", "2"], capsys)
    assert code == 0, err
    table = pd.read_csv(out / "predictions.csv")
    assert table["frame"].tolist() == list(range(0, 90, 5))
    assert table["time_s"].tolist() == pytest.approx([k * 0.5 for k in range(18)])


def test_corrupt_frame_is_skipped_and_counted(detector, tmp_path, capsys):
    video = write_video(tmp_path / "cam.avi", np.zeros(20, dtype=bool), codec="mjpeg", quality=3)
    corrupt_mjpeg_frame(video, 10)
    out = tmp_path / "pred"
    code, stdout, err = run_cli(["predict", "--model", detector, "--input", video, "--out", out], capsys)
    assert code == 0, err
    table = pd.read_csv(out / "predictions.csv")
    assert 10 not in table["frame"].tolist() and len(table) == 19
    summary = json.loads((out / "summary.json").read_text())
    assert summary["throughput"]["skipped"] == 1 and len(summary["skipped"]) == 1
    assert "1 skipped (unreadable)" in stdout


def test_unreadable_video_fails_in_one_line(detector, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    code, _, err = run_cli(["predict", "--model", detector, "--input", bad, "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, r"broken\.mp4: cannot read the video")
    assert not (tmp_path / "o" / "predictions.csv").exists()


# --- images and CSVs --------------------------------------------------------------------------

def test_image_folder_skips_an_unreadable_file(detector, synth_small, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for path in sorted((synth_small / "rgb").iterdir())[:5]:
        Image.open(path).save(folder / path.name)
    (folder / "zz_damaged.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    code, stdout, err = run_cli(["predict", "--model", detector, "--input", folder, "--out", tmp_path / "o"],
                                capsys)
    assert code == 0, err
    table = pd.read_csv(tmp_path / "o" / "predictions.csv")
    assert len(table) == 5 and not table["file"].str.contains("zz_damaged").any()
    assert "zz_damaged.png" in err and "1 skipped" in stdout
    assert not (tmp_path / "o" / "events.json").exists()  # alarms are for video only


def test_labelled_csv_gets_the_metrics_evaluate_computes(detector, synth_small, tmp_path, capsys):
    csv = synth_small / "data.csv"
    code, _, err = run_cli(["predict", "--model", detector, "--input", csv, "--out", tmp_path / "p"], capsys)
    assert code == 0, err
    ours = json.loads((tmp_path / "p" / "metrics.json").read_text())
    code, _, err = run_cli(["evaluate", "--checkpoint", detector, "--csv", csv, "--out", tmp_path / "e"],
                           capsys)
    assert code == 0, err
    (evaluated,) = (tmp_path / "e").glob("*.json")
    theirs = json.loads(evaluated.read_text())["metrics"]
    assert ours["n"] == 96
    for key in ("f1_macro", "f1_fire", "f1_smoke", "auroc_fire", "accuracy"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key


def test_unlabelled_csv_has_no_metrics(detector, synth_small, tmp_path, capsys):
    table = pd.read_csv(synth_small / "data.csv")
    (tmp_path / "list.csv").write_text("rgb_path\n" + "\n".join(str(synth_small / p) for p in table["rgb_path"][:4]))
    code, _, err = run_cli(["predict", "--model", detector, "--input", tmp_path / "list.csv",
                            "--out", tmp_path / "p"], capsys)
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "p" / "predictions.csv")) == 4
    assert not (tmp_path / "p" / "metrics.json").exists()


def test_ir_teacher_needs_pairs(synth_small, fire_video, tmp_path, capsys):
    teacher = create_teacher("resnet18", modalities="rgb+ir", ir_channels=1, pretrained=False)
    path = tmp_path / "teacher_best.pth"
    save_model(path, teacher, kind="teacher", meta={"data": {"img_size": 32, "ir_kind": "8bit", "ir_channels": 1}})
    code, _, err = run_cli(["predict", "--model", path, "--input", fire_video, "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, r"RGB\+IR teacher; give a CSV of RGB/IR pairs")
    rgb_only = tmp_path / "rgb.csv"
    pd.read_csv(synth_small / "data.csv")[["rgb_path", "fire", "smoke"]].to_csv(rgb_only, index=False)
    code, _, err = run_cli(["predict", "--model", path, "--input", rgb_only, "--base_path", synth_small,
                            "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, r"rgb\.csv.*no IR column")
    pairs = tmp_path / "pairs.csv"
    pd.read_csv(synth_small / "data.csv").head(16).to_csv(pairs, index=False)
    code, _, err = run_cli(["predict", "--model", path, "--input", pairs, "--base_path", synth_small,
                            "--out", tmp_path / "pairs"], capsys)
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "pairs" / "predictions.csv")) == 16
