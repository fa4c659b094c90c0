"""The report's details: integer counts and "n/a" (not 15.0 and nan), every result-changing setting
in the configuration table (a teacher from --teacher_weights is not 'pretrained: false'), and the
uncompiled int8 student marked as such in the F1-vs-latency figure."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from firekd.recipes.report import SHOWN_SETTINGS, _config_section, _shown, counts_display
from firekd.reporting.plots import f1_latency


def test_counts_read_back_from_csv_print_as_integers_and_n_a():
    text = "split,none,fire,smoke,both,total\ntrain,10,5,5,3,23\nunlabeled,,,,,15\n"
    shown = counts_display(pd.read_csv(io.StringIO(text)))
    assert shown.loc[0, "none"] == "10" and shown.loc[1, "total"] == "15"
    assert shown.loc[1, "fire"] == "n/a"
    assert "nan" not in shown.to_csv() and ".0" not in shown.to_csv()


def test_every_result_changing_setting_is_in_the_configuration_table():
    for flag in ("teacher_weights", "unlabeled_csv", "pretrained", "resample_split", "n_labelled",
                 "label_fraction", "steps_teacher", "teacher_modalities", "kd_temperature"):
        assert flag in SHOWN_SETTINGS
    assert "num_workers" not in SHOWN_SETTINGS and "slice_col" not in SHOWN_SETTINGS  # execution only
    shown = _shown({"pretrained": False, "teacher_weights": "/somewhere/backbone.pth"})
    assert shown["pretrained"] == "from --teacher_weights (backbone.pth)"
    assert _shown({"pretrained": False, "teacher_weights": None})["pretrained"] is False


def test_the_configuration_table_shows_the_teacher_weights_and_unlabelled_pairs(tiny_run):
    from firekd.recipes.compare import compare

    blocks = _config_section(compare(tiny_run).runs)
    table = blocks[1].frame
    settings = dict(zip(table["setting"], table["value"], strict=True))
    assert settings["teacher_weights"] == "none" and settings["unlabeled_csv"] == "none"
    assert settings["pretrained"] == "false"


def test_an_uncompiled_int8_student_is_marked_in_the_latency_figure():
    rows = pd.DataFrame({"run": ["r_kl_bce"] * 3, "teacher": ["r"] * 3, "variant": ["kl_bce"] * 3,
                         "model": ["student", "student_quantized", "student_pruned"],
                         "f1_macro_mean": [0.7, 0.69, 0.68], "f1_macro_ci_low": [np.nan] * 3,
                         "f1_macro_ci_high": [np.nan] * 3, "latency_ms_b1": [0.8, 4.5, 0.6],
                         "uncompiled_int8": [np.nan, True, np.nan]})
    fig = f1_latency(rows, "t")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts == ["int8 uncompiled"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "student_quantized (uncompiled int8)" in labels
    compiled = rows.assign(uncompiled_int8=[np.nan, False, np.nan])
    assert not [t for ax in f1_latency(compiled, "t").axes for t in ax.texts]
