"""Reuse keys come from the stage records' fields: every field either enters a key or is declared
execution-only (or data-locating, or figure-only), a changed teacher field means a new teacher, the
control is the same under every teacher, execution settings change no key, compression and figure
settings change no trained model's key."""

from __future__ import annotations

import dataclasses

import pytest

from firekd.config import STAGES, CompressConfig, DataConfig, RunConfig
from firekd.data.csv import ColumnNames
from firekd.keys import (
    RECIPE_VERSION,
    Lineage,
    compression_settings,
    data_fingerprint,
    run_settings,
    seed_key,
    stable_hash,
    student_key,
    teacher_key,
    teacher_settings,
)
from firekd.options import DATA, EXEC, FIGURE, KEY, kind_of

FP = "data-fingerprint"
L1 = Lineage(data=FP, seed=1, unlabeled="pool", unlabeled_count=10)
SPECIAL = {  # values for fields whose default has no obvious "other value"
    "base_path": "/elsewhere", "ir_range": (0.0, 1.0), "split_file": "split.csv", "weights": "w.pth",
    "cache_dir": "/cache", "ray_address": "ray://x", "loss_weights": {"kl": 0.55, "bce": 0.45},
    "columns": ColumnNames(rgb="rgb_file"), "gpus": (0,), "split_ratios": (0.6, 0.2, 0.2),
    "unlabeled_csv": "unlabeled.csv", "steps": 100, "n_labelled": 10, "label_fraction": 0.5, "slice_cols": ("site",),
}


def _other(f: dataclasses.Field, value):
    """A different valid value for field ``f``."""
    if f.name in SPECIAL:
        return SPECIAL[f.name]
    choices = f.metadata.get("argparse", {}).get("choices")
    if choices:
        return next(c for c in choices if c != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2
    if isinstance(value, str):
        return value + "_other"
    raise AssertionError(f"no other value for {f.name}={value!r}")


def _cfg(**stages) -> RunConfig:
    return RunConfig(data=DataConfig(csv="data.csv"), **stages)


def _keys(cfg: RunConfig) -> dict[str, str]:
    """Every key a result depends on, for a KD variant and for the control."""
    return {"data": data_fingerprint(cfg.data, ir=["8bit", 1, None], rows=[["a", "b", 1, 0, "train"]]),
            "teacher": teacher_key(cfg, "resnet18", L1, "kl_bce"),
            "kd student": student_key(cfg, "resnet18", "kl_bce", L1),
            "control": student_key(cfg, "resnet18", "bce", L1),
            "kd outputs": seed_key(cfg, "resnet18", "kl_bce", L1),
            "control outputs": seed_key(cfg, "resnet18", "bce", L1),
            "compression": stable_hash(compression_settings(cfg))}


TRAINED = {"data", "teacher", "kd student", "control"}


def _stage_fields():
    yield "data", DataConfig, DataConfig(csv="data.csv")
    for name, cls in STAGES.items():
        yield name, cls, cls()


@pytest.mark.parametrize("stage,cls,record", list(_stage_fields()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_field_is_in_a_key_or_declared_execution_only(stage, cls, record):
    base = _keys(_cfg())
    for f in dataclasses.fields(cls):
        kind = kind_of(f)
        assert kind in (KEY, EXEC, DATA, FIGURE), f"{cls.__name__}.{f.name}: unknown kind {kind}"
        changed_record = dataclasses.replace(record, **{f.name: _other(f, getattr(record, f.name))})
        cfg = dataclasses.replace(_cfg(), **{stage: changed_record})
        changed = {k for k, v in _keys(cfg).items() if v != base[k]}
        if kind == KEY:
            assert changed, f"{cls.__name__}.{f.name} is a KEY field but changes no key"
        elif kind == FIGURE:  # the figures of a seed (its outputs), never a trained model
            assert changed == {"kd outputs", "control outputs"}, f"{cls.__name__}.{f.name} changes {changed}"
        else:  # EXEC: in no key; DATA: counts through the data it selects (the fingerprint's rows)
            assert not changed, f"{cls.__name__}.{f.name} is {kind} but changes {changed}"


def test_compression_settings_key_no_trained_model_and_no_run():
    cfg = _cfg()
    other = _cfg(compress=dataclasses.replace(cfg.compress, quant_compile=False, prune_sparsity=0.2))
    assert {k for k, v in _keys(other).items() if v != _keys(cfg)[k]} == {
        "kd outputs", "control outputs", "compression"}
    assert run_settings(cfg, "resnet18", "kl_bce", L1) == run_settings(other, "resnet18", "kl_bce", L1)


def test_the_recipe_version_enters_every_trained_key(monkeypatch):
    import firekd.keys as keys

    base = _keys(_cfg())
    monkeypatch.setattr(keys, "RECIPE_VERSION", RECIPE_VERSION + 1)
    changed = {k for k, v in _keys(_cfg()).items() if v != base[k]}
    assert TRAINED - {"data"} <= changed


def test_the_control_keys_the_unlabelled_pool_by_size_the_kd_students_by_content():
    cfg = _cfg()
    same_size = dataclasses.replace(L1, unlabeled="other pool")
    assert student_key(cfg, "resnet18", "bce", same_size) == student_key(cfg, "resnet18", "bce", L1)
    assert student_key(cfg, "resnet18", "kl_bce", same_size) != student_key(cfg, "resnet18", "kl_bce", L1)
    bigger = dataclasses.replace(L1, unlabeled_count=11)
    assert student_key(cfg, "resnet18", "bce", bigger) != student_key(cfg, "resnet18", "bce", L1)
    assert teacher_key(cfg, "resnet18", same_size, "kl_bce") == teacher_key(cfg, "resnet18", L1, "kl_bce")


@pytest.mark.parametrize("stage", ["teacher", "optim"])
def test_changing_any_teacher_field_makes_a_new_teacher(stage):
    record = getattr(_cfg(), stage)
    for f in dataclasses.fields(record):
        if kind_of(f) != KEY:
            continue
        cfg = dataclasses.replace(_cfg(), **{stage: dataclasses.replace(
            record, **{f.name: _other(f, getattr(record, f.name))})})
        assert teacher_key(cfg, "resnet18", L1, "kl_bce") != teacher_key(_cfg(), "resnet18", L1, "kl_bce"), f.name


def test_world_size_seed_data_and_teacher_name_enter_the_teacher_key():
    cfg = _cfg()
    ref = stable_hash(teacher_settings(cfg, "resnet18", L1))
    other = lambda **kw: stable_hash(teacher_settings(cfg, "resnet18", dataclasses.replace(L1, **kw)))  # noqa: E731
    assert other(world_size=2) != ref  # batch size is per process
    assert other(seed=2) != ref
    assert other(data="other") != ref
    assert stable_hash(teacher_settings(cfg, "resnet50", L1)) != ref


def test_the_control_is_the_same_under_every_teacher_and_ignores_teacher_and_kd_fields():
    cfg = _cfg()
    control = seed_key(cfg, "resnet18", "bce", L1)
    assert seed_key(cfg, "vit_b_16", "bce", L1) == control
    other = dataclasses.replace(cfg, teacher=dataclasses.replace(cfg.teacher, lr=1.0, epochs=3),
                                student=dataclasses.replace(cfg.student, kd_temperature=9.0,
                                                            loss_weights={"kl": 0.1, "l2": 0.9}))
    assert seed_key(other, "resnet18", "bce", L1) == control
    assert seed_key(other, "resnet18", "kl_bce", L1) != seed_key(cfg, "resnet18", "kl_bce", L1)


def test_a_loss_weight_enters_only_the_keys_of_variants_that_have_the_term():
    cfg = _cfg()
    l2 = dataclasses.replace(cfg, student=dataclasses.replace(cfg.student, loss_weights={"l2": 0.9}))
    assert seed_key(l2, "resnet18", "kl_bce", L1) == seed_key(cfg, "resnet18", "kl_bce", L1)
    assert seed_key(l2, "resnet18", "kl_l2_bce", L1) != seed_key(cfg, "resnet18", "kl_l2_bce", L1)


def test_without_teacher_reuse_every_variant_trains_its_own_copy_of_the_same_teacher(tmp_path):
    from firekd.rundir import teacher_store

    cfg = _cfg()
    key = teacher_key(cfg, "resnet18", L1, "kl_bce")
    assert key == teacher_key(cfg, "resnet18", L1, "kl_l2_bce")  # same settings, same results
    stores = {teacher_store(tmp_path, "resnet18", 1, key, v) for v in ("kl_bce", "kl_l2_bce")}
    assert len(stores) == 2 and teacher_store(tmp_path, "resnet18", 1, key) not in stores


def test_the_fingerprint_counts_samples_by_content_labels_and_split_in_order():
    fp = lambda rows: data_fingerprint(DataConfig(csv="a.csv"), ir=[], rows=rows)  # noqa: E731
    ref = fp([["d1", None, 1, 0, "train"], ["d2", None, 0, 0, "val"]])
    assert fp([["d1", None, 1, 0, "train"], ["d2", None, 0, 0, "val"]]) == ref
    for rows in ([["dX", None, 1, 0, "train"], ["d2", None, 0, 0, "val"]],  # other image bytes
                 [["d1", None, 0, 0, "train"], ["d2", None, 0, 0, "val"]],  # other label
                 [["d1", None, 1, 0, "val"], ["d2", None, 0, 0, "val"]],  # other split
                 [["d2", None, 0, 0, "val"], ["d1", None, 1, 0, "train"]]):  # other order
        assert fp(rows) != ref
    assert data_fingerprint(DataConfig(csv="b.csv", base_path="/x"), ir=[],
                            rows=[["d1", None, 1, 0, "train"], ["d2", None, 0, 0, "val"]]) == ref


def test_turning_compression_off_leaves_its_other_fields_out():
    off = CompressConfig(compress=False)
    cfg = _cfg(compress=off)
    other = _cfg(compress=dataclasses.replace(off, prune_sparsity=0.2))
    assert compression_settings(cfg) == compression_settings(other) == {"compress": False}
