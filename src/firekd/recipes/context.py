"""What the stages of one seed share: the seed-run context, its loaders and the file checkpointer."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from firekd.checkpoints import load_payload, save_model
from firekd.config import RunConfig
from firekd.data.dataset import DrawSampler, make_loader
from firekd.data.transforms import PairedTransform
from firekd.engine import distributed
from firekd.engine.evaluation import Evaluation
from firekd.engine.loop import FitResult, Member, epoch_seed, fit_many
from firekd.engine.runtime import Runtime, resolve_device
from firekd.errors import TrainingError
from firekd.io import Writer
from firekd.kd.variants import distills
from firekd.keys import Lineage
from firekd.recipes.data import DataBundle
from firekd.rundir import PROJECTOR

log = logging.getLogger(__name__)


@dataclass
class Loaders:
    train: torch.utils.data.DataLoader  # the labelled training pairs
    train_kd: torch.utils.data.DataLoader  # and the unlabelled ones: the KD students' training set
    # the control's: the labelled pairs repeated (in new views) to as many steps per epoch as train_kd
    train_control: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader
    test: torch.utils.data.DataLoader
    shuffle: torch.Generator  # the train samplers' own generator
    augment: PairedTransform  # the train transform (in the workers, or on the device)
    seed: int

    def train_for(self, variant: str) -> torch.utils.data.DataLoader:
        """The control trains on labelled pairs alone; every variant that distils (``self_kd``
        too) on the labelled + unlabelled pairs."""
        return self.train_kd if distills(variant) else self.train_control

    def start_epoch(self, epoch: int) -> None:
        """Epoch k's data: its shuffle order and augmented views depend on (seed, k) alone, not on
        a resume or on the number of loader workers."""
        self.shuffle.manual_seed(epoch_seed(self.seed, epoch, "shuffle"))
        self.augment.set_epoch(epoch)
        for loader in (self.train, self.train_kd, self.train_control):
            if hasattr(loader.sampler, "set_epoch"):  # DistributedSampler: reshuffle per epoch
                loader.sampler.set_epoch(epoch)


@dataclass
class SeedRun:
    """One seed of an invocation: the data, runtime and loaders every stage of the seed uses, and
    the writer through which they write (disabled on the non-zero ranks of a distributed run)."""

    cfg: RunConfig
    data: DataBundle
    seed: int
    rt: Runtime
    loaders: Loaders
    writer: Writer

    @property
    def output(self) -> Path:
        return Path(self.cfg.execution.output)

    @property
    def world_size(self) -> int:
        return distributed.info().world_size

    @property
    def lineage(self) -> Lineage:
        """What this seed's models come from (data, seed, processes), before any upstream model."""
        return self.data.lineage(self.seed, self.world_size)

    def fit_variants(self, members: dict[str, Member]) -> dict[str, FitResult]:
        """Train the members (one per loss variant) in lockstep, one pass per epoch over the same
        batches; the KD students apart from the control when they also train on unlabelled pairs."""
        groups: dict[int, list[str]] = {}
        for variant in members:
            groups.setdefault(id(self.loaders.train_for(variant)), []).append(variant)
        results = {}
        for variants in groups.values():
            if len(variants) > 1:
                log.info("%s (seed %d): trained in lockstep on the same batches", ", ".join(variants),
                         self.seed)
            loader = self.loaders.train_for(variants[0])
            fitted = fit_many([members[v] for v in variants], loader, self.loaders.val, self.rt,
                              self.loaders.start_epoch)
            results.update(zip(variants, fitted, strict=True))
        return {variant: results[variant] for variant in members}


def raise_failures(results: dict[str, FitResult], what: str) -> None:
    """One line for the members whose loss became non-finite (the others finished and were kept)."""
    failed = [r.error for r in results.values() if r.error]
    if failed:
        others = len(results) - len(failed)
        kept = f"; the other {others} {what} of the group finished and are kept" if others else ""
        raise TrainingError(f"{failed[0]}{kept}")


def seed_run(cfg: RunConfig, data: DataBundle, seed: int, writer: Writer) -> SeedRun:
    """Runtime and loaders for one seed. On CUDA the batch transform runs on the device."""
    device = resolve_device(cfg.execution.device)
    if distributed.info().enabled and device.type == "cuda":
        device = torch.device("cuda", distributed.info().local_rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    ir_max = data.ir_spec.max_value
    size = data.config.img_size
    train_tf = PairedTransform(size, train=True, ir_max=ir_max)
    eval_tf = PairedTransform(size, train=False, ir_max=ir_max)
    on_device = device.type == "cuda"
    rt = Runtime(device, amp=cfg.optim.amp, seed=seed,
                 device_transforms=(train_tf, eval_tf) if on_device else None)
    workers = min(cfg.execution.num_workers, os.cpu_count() or 1)
    common = {"batch_size": cfg.optim.batch_size, "num_workers": workers, "seed": seed,
              "pin_memory": on_device}
    shuffle = torch.Generator().manual_seed(seed)
    datasets = {split: data.dataset(split) for split in ("train", "val", "test")}
    if data.unlabeled_count:
        datasets["train_kd"] = data.dataset("train", with_unlabeled=True)
        labelled, draws = len(datasets["train"]), len(datasets["train_kd"])
        datasets["train_control"] = data.dataset("train", repeat=math.ceil(draws / max(1, labelled)))
    samplers = _distributed_samplers(datasets, seed)
    if data.unlabeled_count:  # exactly the KD students' number of draws, so of optimizer steps
        info = distributed.info()
        samplers["train_control"] = DrawSampler(
            labelled, draws, None if info.enabled else shuffle, seed=seed, rank=info.rank,
            world_size=info.world_size)
    train = {name: make_loader(datasets[name], train=True, generator=shuffle, sampler=samplers[name],
                               transform=None if on_device else train_tf,
                               draw=train_tf if on_device else None, **common)  # params: in the workers
             for name in datasets if name.startswith("train")}
    if data.unlabeled_count:
        times = f"{draws // labelled}" + (f" or {draws // labelled + 1}" if draws % labelled else "")
        log.info("bce control (seed %d): %d draws per epoch from its %d labelled pairs (each %s times, in "
                 "new views): %d optimizer steps per epoch, as the KD students' %d on %d labelled + %d "
                 "unlabelled pairs", seed, draws, labelled, times, len(train["train_control"]),
                 len(train["train_kd"]), labelled, draws - labelled)
    loaders = Loaders(
        train=train["train"], train_kd=train.get("train_kd", train["train"]),
        train_control=train.get("train_control", train["train"]),
        val=make_loader(datasets["val"], train=False, sampler=samplers["val"],
                        transform=None if on_device else eval_tf, **common),
        test=make_loader(datasets["test"], train=False, sampler=samplers["test"],
                         transform=None if on_device else eval_tf, **common),
        shuffle=shuffle, augment=train_tf, seed=seed,
    )
    return SeedRun(cfg, data, seed, rt, loaders, writer)


def _distributed_samplers(datasets: dict, seed: int) -> dict:
    """Under torchrun each rank reads its share: the train split reshuffled every epoch (the loop
    calls set_epoch), val/test in order and padded; predictions are gathered and de-duplicated."""
    info = distributed.info()
    if not info.enabled:
        return dict.fromkeys(datasets)
    from torch.utils.data import DistributedSampler

    return {split: DistributedSampler(ds, num_replicas=info.world_size, rank=info.rank,
                                      shuffle=split.startswith("train"), seed=seed,
                                      drop_last=split.startswith("train"))
            for split, ds in datasets.items()}


class FileCheckpointer:
    """Persists a stage: ``{prefix}_best.pth`` (the deployable checkpoint) and, for a distiller,
    ``student_projector.pth`` (its trained L2 projector) whenever validation improves, and
    ``{prefix}_state.pt`` (everything needed to resume) after every epoch. Writes go through
    ``writer``: a non-zero DDP rank serialises nothing."""

    def __init__(self, folder: Path, prefix: str, model: torch.nn.Module, kind: str, meta: dict,
                 writer: Writer) -> None:
        self.best_path = folder / f"{prefix}_best.pth"
        self.state_path = folder / f"{prefix}_state.pt"
        self.projector_path = folder / PROJECTOR
        self.model, self.kind, self.meta, self.writer = model, kind, meta, writer

    def load_last(self) -> dict | None:
        if not self.state_path.exists():
            return None
        payload = load_payload(self.state_path)
        # the settings (data by content, upstream builds), not where the data was read from: a run
        # resumed from another working directory or a moved data folder resumes
        same = all(payload.get("meta", {}).get(k) == self.meta.get(k) for k in ("settings", "teacher_build"))
        if not same:
            log.warning("%s was made with other settings; starting this stage afresh", self.state_path)
            return None
        return payload["state"]

    def save_last(self, state: dict) -> None:
        self.writer.payload(self.state_path, {"format": "firekd-state/1", "meta": self.meta, "state": state})

    def save_best(self, state: dict[str, dict], epoch: int, score: float) -> None:
        if not self.writer.enabled:
            return
        save_model(self.best_path, self.model, kind=self.kind, state_dict=state["model"],
                   meta={**self.meta, "best_epoch": epoch, "val_f1_macro": score})
        if "projector" in state:
            self.writer.payload(self.projector_path, {"format": "firekd-projector/1", "meta": self.meta,
                                                      "state_dict": state["projector"]})

    def load_best(self) -> dict[str, dict]:
        best = {"model": load_payload(self.best_path)["state_dict"]}
        if self.projector_path.exists():
            best["projector"] = load_payload(self.projector_path)["state_dict"]
        return best

    def finish(self, thresholds) -> None:
        """Record the validation thresholds in the best checkpoint; drop the resume state."""
        if not self.writer.enabled:
            return
        payload = load_payload(self.best_path)
        payload["meta"]["thresholds"] = [float(t) for t in thresholds]
        self.writer.payload(self.best_path, payload)
        self.writer.remove(self.state_path)


@dataclass
class ModelResult:
    """One model of a seed as its outputs need it: its test evaluation, where it is saved, how
    to time it and (once measured) its efficiency numbers."""

    model: Any  # an nn.Module, or a deployed form's runner (compiled int8, onnxruntime session)
    evaluation: Evaluation
    checkpoint: Path
    train_log: dict = field(default_factory=dict)
    fp32_source: nn.Module | None = None  # a deployed form's fp32 original: its params and GFLOPs
    latency_runtime: str = "eager"
    efficiency: dict | None = None
