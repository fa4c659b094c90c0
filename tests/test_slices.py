"""Per-slice metrics (--slice_col): recall, precision and F1 per label on each value of a categorical
column, equal to scikit-learn and to hand-computed values; a bad slice column fails with one line;
the metrics reach final_evaluation.json, aggregated_results.json, compare (with paired tests), the
report and `firekd evaluate`, and are added to seeds that finished without them."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from cli_helpers import assert_one_line_error, run_cli
from sklearn.metrics import f1_score, precision_score, recall_score

from firekd.data.csv import read_slices
from firekd.errors import DataError
from firekd.metrics.slices import parse_slice_key, slice_key, slice_scores
from firekd.recipes.slices import slice_metrics


def test_slice_scores_equal_sklearn_on_each_slice():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 2, (200, 2)), rng.integers(0, 2, (200, 2))
    groups = rng.choice(["day", "night", "dusk"], 200)
    out = slice_scores(y_true, y_pred, groups, "time")
    for value in ("day", "night", "dusk"):
        rows = groups == value
        assert out[slice_key("n", "time", value)] == rows.sum()
        for k, label in enumerate(("fire", "smoke")):
            for name, fn in (("recall", recall_score), ("precision", precision_score), ("f1", f1_score)):
                expected = fn(y_true[rows, k], y_pred[rows, k])
                assert out[slice_key(f"{name}_{label}", "time", value)] == pytest.approx(expected)


def test_slice_scores_on_a_small_table_by_hand():
    # hidden_in_rgb = 1: 3 fires, 2 found, 1 false alarm; hidden_in_rgb = 0: 1 fire found, no smoke at all
    table = pd.DataFrame({"row": [2, 3, 4, 5, 6, 7],
                          "fire_true": [1, 1, 1, 0, 1, 0], "fire_pred": [1, 1, 0, 1, 1, 0],
                          "smoke_true": [1, 1, 1, 1, 0, 0], "smoke_pred": [1, 0, 1, 1, 0, 0]})
    slices = pd.DataFrame({"hidden_in_rgb": ["1", "1", "1", "1", "0", "0"]}, index=pd.Index(range(2, 8), name="row"))
    out = slice_metrics(table, slices)
    assert out["n[hidden_in_rgb=1]"] == 4 and out["n[hidden_in_rgb=0]"] == 2
    assert out["recall_fire[hidden_in_rgb=1]"] == pytest.approx(2 / 3)
    assert out["precision_fire[hidden_in_rgb=1]"] == pytest.approx(2 / 3)
    assert out["f1_fire[hidden_in_rgb=1]"] == pytest.approx(2 / 3)
    assert out["recall_smoke[hidden_in_rgb=1]"] == pytest.approx(3 / 4)
    assert out["precision_smoke[hidden_in_rgb=1]"] == pytest.approx(1.0)
    assert out["recall_fire[hidden_in_rgb=0]"] == 1.0 and out["precision_fire[hidden_in_rgb=0]"] == 1.0
    assert out["positives_smoke[hidden_in_rgb=0]"] == 0
    assert math.isnan(out["recall_smoke[hidden_in_rgb=0]"])  # no smoke in the slice: undefined, not 0
    assert parse_slice_key("recall_fire[hidden_in_rgb=1]") == ("recall_fire", "hidden_in_rgb", "1")
    assert parse_slice_key("recall_fire@0.5") is None


@pytest.mark.parametrize("values,message", [
    (["a", "", "b", "a"], r"line 3: column 'site' \(--slice_col\) has no value"),
    (["1", "0.37", "0", "1"], r"line 3: column 'site' \(--slice_col\) has the value '0.37'.*categorical"),
])
def test_a_slice_column_with_a_missing_or_non_categorical_value_fails_with_one_line(tmp_path, values, message):
    csv = tmp_path / "data.csv"
    pd.DataFrame({"rgb_path": list("wxyz"), "site": values}).to_csv(csv, index=False)
    with pytest.raises(DataError, match=message):
        read_slices(csv, ("site",))


def test_slice_columns_read_as_categories(tmp_path):
    csv = tmp_path / "data.csv"
    pd.DataFrame({"rgb_path": list("wxyz"), "hidden": ["1", "1.0", "0", " 0"], "site": list("aabb")}).to_csv(
        csv, index=False)
    table = read_slices(csv, ("hidden", "site"))
    assert table.index.tolist() == [2, 3, 4, 5]
    assert table["hidden"].tolist() == ["1", "1", "0", "0"] and table["site"].tolist() == list("aabb")
    with pytest.raises(DataError, match="no column 'nope'"):
        read_slices(csv, ("nope",))
    pd.DataFrame({"rgb_path": [str(i) for i in range(30)], "id": range(30)}).to_csv(csv, index=False)
    with pytest.raises(DataError, match="30 distinct values"):
        read_slices(csv, ("id",))


def test_a_bad_slice_column_stops_the_ablation_before_any_training(synth_small, tmp_path, capsys):
    table = pd.read_csv(synth_small / "data.csv")
    table["weather"] = np.where(np.arange(len(table)) == 5, "", "sun")
    table.to_csv(tmp_path / "data.csv", index=False)
    for name in ("rgb", "ir"):
        (tmp_path / name).symlink_to(synth_small / name)
    code, _, err = run_cli(["ablation", "--csv", tmp_path / "data.csv", "--output", tmp_path / "out",
                            "--teachers", "resnet18", "--slice_col", "weather"], capsys)
    assert_one_line_error(code, err, r"data.csv: line 7: column 'weather' \(--slice_col\) has no value")
    assert not (tmp_path / "out" / "metrics").exists()


@pytest.mark.slow
def test_slice_metrics_reach_every_output_and_are_added_to_finished_seeds(synth_small, tmp_path, capsys):
    out, csv = tmp_path / "out", synth_small / "data.csv"
    args = ["ablation", "--csv", csv, "--output", out, "--teachers", "resnet18", "--variants", "kl_bce",
            "bce", "--seeds", "1", "2", "--epochs_teacher", "1", "--epochs_student", "1", "--no_pretrained",
            "--img_size", "32", "--num_workers", "0", "--batch_size", "32", "--max_embed_points", "0",
            "--no_compress", "--latency_runs", "0", "--no_figures"]  # the seeds' figures: test_evaluation
    assert run_cli(args, capsys)[0] == 0
    final = json.loads((out / "metrics/resnet18_kl_bce/seed_1/final_evaluation.json").read_text())
    assert not any(parse_slice_key(k) for k in final["student"])
    code, _, err = run_cli([*args, "--slice_col", "hidden_in_rgb"], capsys)  # every seed done: added
    assert code == 0, err
    truth = pd.read_csv(csv)
    for run in ("resnet18_kl_bce", "resnet18_bce"):
        for seed in (1, 2):
            folder = out / f"metrics/{run}/seed_{seed}"
            final = json.loads((folder / "final_evaluation.json").read_text())
            for model in [m for m in final if m != "run"]:
                preds = pd.read_csv(folder / f"predictions_{model}.csv")
                hidden = truth["hidden_in_rgb"].to_numpy()[preds["row"] - 2] == 1
                expected = recall_score(preds.loc[hidden, "fire_true"], preds.loc[hidden, "fire_pred"])
                assert final[model]["recall_fire[hidden_in_rgb=1]"] == pytest.approx(expected)
                assert final[model]["n[hidden_in_rgb=1]"] == hidden.sum()
    agg = json.loads((out / "metrics/resnet18_kl_bce/aggregated_results.json").read_text())
    assert agg["student"]["recall_fire[hidden_in_rgb=1]"]["n"] == 2
    code, text, err = run_cli(["compare", out], capsys)
    assert code == 0, err
    tests = pd.read_csv(out / "comparison/all/tests.csv")
    sliced = tests[tests["metric"] == "recall_fire[hidden_in_rgb=1]"]
    assert set(zip(sliced["a"], sliced["b"], strict=True)) == {("kl_bce", "bce")} and sliced["n"].eq(2).all()
    slices = pd.read_csv(out / "comparison/all/slices.csv")
    assert {"1", "0"} <= set(slices["value"].astype(str)) and "recall_fire_mean" in slices
    assert run_cli(["report", out], capsys)[0] == 0
    report = (out / "report/all/report.md").read_text()
    assert "## Slices" in report and "hidden_in_rgb = 1" in report
    code, text, err = run_cli(["evaluate", "--checkpoint", out / "models/resnet18_kl_bce/seed_1/student_best.pth",
                               "--csv", csv, "--split", "test", "--slice_col", "hidden_in_rgb",
                               "--out", tmp_path / "eval"], capsys)
    assert code == 0, err
    assert "hidden_in_rgb = 1: n " in text
    metrics = json.loads(next((tmp_path / "eval").glob("*.json")).read_text())["metrics"]
    final = json.loads((out / "metrics/resnet18_kl_bce/seed_1/final_evaluation.json").read_text())["student"]
    assert metrics["recall_fire[hidden_in_rgb=1]"] == pytest.approx(final["recall_fire[hidden_in_rgb=1]"])
