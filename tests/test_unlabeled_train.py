"""Training with unlabelled pairs, end to end (`ablation --unlabeled_csv`): each KD student sees every
unlabelled pair every epoch (the masked BCE lets their NaN labels through), the bce control sees
none, and the control's epoch has exactly the KD students' number of optimizer steps, as its log
line says."""

from __future__ import annotations

import collections
import math

import pytest
import torch

from firekd.data.dataset import DrawSampler
from firekd.data.synthetic import SynthConfig
from firekd.engine import loop
from firekd.recipes.synth import write_synthetic

N_TRAIN, UNLABELED, BATCH, EPOCHS = 28, 36, 16, 2  # 64 pairs = 4 batches; 64 / 28 = 2.29 copies


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One ablation (two KD students in lockstep and the control), every optimizer step recorded."""
    from firekd.cli import main

    data = tmp_path_factory.mktemp("unlabeled_data")
    write_synthetic(SynthConfig(n=40, size=32, seed=6, unlabeled=UNLABELED), data)
    output = tmp_path_factory.mktemp("unlabeled_run")
    steps = collections.defaultdict(list)  # id(task) -> [(distils, labels, index) per step]
    original = loop.train_step

    def recording(task, batch, *args, targets=None, **kwargs):
        steps[id(task)].append((targets is not None, batch[2].clone(), batch[3].clone()))
        return original(task, batch, *args, targets=targets, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "train_step", recording)
        code = main([str(a) for a in ["ablation", "--csv", data / "data.csv", "--unlabeled_csv", data / "unlabeled.csv",
                     "--output", output, "--teachers", "resnet18", "--variants", "kl_bce", "kl_l2_bce", "bce",
                     "--seeds", "1", "--epochs_teacher", "1", "--epochs_student", str(EPOCHS),
                     "--patience_student", "10", "--no_pretrained", "--img_size", "32", "--batch_size",
                     str(BATCH), "--num_workers", "0", "--lr_teacher", "1e-3", "--max_embed_points", "0",
                     "--no_compress", "--latency_runs", "0", "--no_figures"]])
    assert code == 0
    return output, steps


def _by_kind(steps) -> tuple[list, list]:
    """The KD students' step records and the control's (the teacher's steps distil nothing and come
    first; the students are the last three tasks to train)."""
    students = list(steps.values())[-3:]
    kd = [s for s in students if all(distils for distils, _, _ in s)]
    control = [s for s in students if not any(distils for distils, _, _ in s)]
    assert len(kd) == 2 and len(control) == 1
    return kd, control[0]


def test_each_kd_student_sees_every_unlabelled_pair_every_epoch(run):
    _, steps = run
    kd, _ = _by_kind(steps)
    for student in kd:
        index = torch.cat([i for _, _, i in student])
        labels = torch.cat([lab for _, lab, _ in student])
        # 64 pairs in 4 full batches: every pair once per epoch, the unlabelled ones after the labelled
        assert sorted(index.tolist()) == sorted(list(range(N_TRAIN + UNLABELED)) * EPOCHS)
        unlabelled = torch.isnan(labels).all(dim=1)
        assert torch.equal(unlabelled, index >= N_TRAIN)
        assert int(unlabelled.sum()) == UNLABELED * EPOCHS


def test_the_control_sees_no_unlabelled_pair_and_takes_as_many_steps(run):
    _, steps = run
    kd, control = _by_kind(steps)
    assert len(control) == len(kd[0]) == len(kd[1]) == EPOCHS * (N_TRAIN + UNLABELED) // BATCH
    labels = torch.cat([lab for _, lab, _ in control])
    assert not torch.isnan(labels).any() and len(labels) == EPOCHS * (N_TRAIN + UNLABELED)
    # the labelled pairs, each 2 or 3 times an epoch, each time another copy (another view)
    index = torch.cat([i for _, _, i in control]).view(EPOCHS, -1)
    for epoch in index:
        assert len(set(epoch.tolist())) == len(epoch)  # no view twice in an epoch
        per_pair = collections.Counter((epoch % N_TRAIN).tolist())
        assert set(per_pair) == set(range(N_TRAIN)) and set(per_pair.values()) <= {2, 3}


def test_the_log_says_the_true_numbers(run):
    output, _ = run
    log = (output / "metrics/resnet18_bce/run.log").read_text()
    steps = (N_TRAIN + UNLABELED) // BATCH
    assert (f"bce control (seed 1): {N_TRAIN + UNLABELED} draws per epoch from its {N_TRAIN} labelled pairs "
            f"(each 2 or 3 times, in new views): {steps} optimizer steps per epoch, as the KD students' "
            f"{steps} on {N_TRAIN} labelled + {UNLABELED} unlabelled pairs") in log


@pytest.mark.parametrize(("n", "draws", "world"), [(51, 1551, 1), (28, 64, 1), (10, 30, 1), (28, 65, 2)])
def test_draw_sampler_draws_exactly_num_samples_balanced(n, draws, world):
    copies = math.ceil(draws / n)
    ranks = [DrawSampler(n, draws, seed=3, rank=r, world_size=world) for r in range(world)]
    for sampler in ranks:
        sampler.set_epoch(2)
    drawn = [list(s) for s in ranks]
    assert all(len(d) == len(s) == draws // world for d, s in zip(drawn, ranks, strict=True))
    flat = [i for d in drawn for i in d]
    assert len(set(flat)) == len(flat) and all(0 <= i < copies * n for i in flat)
    per_pair = collections.Counter(i % n for i in flat)
    assert max(per_pair.values()) - min(per_pair.values()) <= 1 + (world > 1)
    single = DrawSampler(n, draws, torch.Generator().manual_seed(0))
    assert len(list(single)) == draws


@pytest.mark.parametrize("labelled, unlabelled, steps", [(51, 1500, 24), (60, 1640, 26)])
def test_the_demo_settings_give_the_control_the_kd_students_steps(labelled, unlabelled, steps):
    """The previous make demo (51 labelled + 1,500 unlabelled training pairs, batch 64: the rounded
    repeat of 30 copies, 1,530 draws, gave the control 23 steps to the KD students' 24) and the
    current one (60 labelled, 140 + 1,500 unlabelled: 26 steps each, as its log says)."""
    from torch.utils.data import DataLoader, RandomSampler

    n = labelled + unlabelled
    kd = DataLoader(range(n), batch_size=64, sampler=RandomSampler(range(n)), drop_last=True)
    control = DataLoader(range(-(-n // labelled) * labelled), batch_size=64, sampler=DrawSampler(labelled, n),
                         drop_last=True)
    assert len(kd) == len(control) == len(list(control)) == steps
