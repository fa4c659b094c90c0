"""Pieces every training recipe needs: hashing, loaders, runtime, file checkpointer."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from firekd.checkpoints import load_payload, save_model, save_payload
from firekd.config import TrainConfig
from firekd.data.dataset import make_loader
from firekd.data.transforms import PairedTransform
from firekd.engine import distributed
from firekd.engine.runtime import Runtime, resolve_device
from firekd.io import is_writer
from firekd.recipes.data import DataBundle

log = logging.getLogger(__name__)


def stable_hash(obj) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def data_fingerprint(bundle: DataBundle) -> str:
    """Identifies the data a model was trained on: CSV content, decoding settings and the split."""
    cfg = bundle.config
    return stable_hash({
        "csv": file_digest(cfg.csv),
        "base_path": str(Path(cfg.base_path).resolve()) if cfg.base_path else None,
        "columns": cfg.columns.explicit(),
        "img_size": cfg.img_size,
        "ir": [bundle.ir_spec.kind, bundle.ir_spec.channels, bundle.ir_spec.value_range],
        "split": stable_hash(bundle.records[["row", "split_assigned"]].to_numpy().tolist()),
    })


@dataclass
class Loaders:
    train: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader
    test: torch.utils.data.DataLoader
    generator: torch.Generator  # the train shuffle; reseeded every epoch by the loop


def make_runtime(cfg: TrainConfig, seed: int, bundle: DataBundle) -> tuple[Runtime, Loaders]:
    """Runtime and loaders for one seed. On CUDA the batch transform runs on the device."""
    device = resolve_device(cfg.device)
    if distributed.info().enabled and device.type == "cuda":
        device = torch.device("cuda", distributed.info().local_rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    ir_max = bundle.ir_spec.max_value
    size = bundle.config.img_size
    train_tf = PairedTransform(size, train=True, ir_max=ir_max)
    eval_tf = PairedTransform(size, train=False, ir_max=ir_max)
    on_device = device.type == "cuda"
    rt = Runtime(device, amp=cfg.amp, seed=seed,
                 device_transforms=(train_tf, eval_tf) if on_device else None)
    workers = min(cfg.num_workers, os.cpu_count() or 1) if cfg.num_workers else 0
    common = {"batch_size": cfg.batch_size, "num_workers": workers, "seed": seed,
              "pin_memory": on_device}
    generator = torch.Generator().manual_seed(seed)
    datasets = {split: bundle.dataset(split) for split in ("train", "val", "test")}
    samplers = _distributed_samplers(datasets, seed)
    loaders = Loaders(
        train=make_loader(datasets["train"], train=True, generator=generator, sampler=samplers["train"],
                          transform=None if on_device else train_tf, **common),
        val=make_loader(datasets["val"], train=False, sampler=samplers["val"],
                        transform=None if on_device else eval_tf, **common),
        test=make_loader(datasets["test"], train=False, sampler=samplers["test"],
                         transform=None if on_device else eval_tf, **common),
        generator=generator,
    )
    return rt, loaders


def _distributed_samplers(datasets: dict, seed: int) -> dict:
    """Under torchrun each rank reads its share: the train split reshuffled every epoch (the loop
    calls set_epoch), val/test in order and padded; predictions are gathered and de-duplicated."""
    info = distributed.info()
    if not info.enabled:
        return dict.fromkeys(datasets)
    from torch.utils.data import DistributedSampler

    return {split: DistributedSampler(ds, num_replicas=info.world_size, rank=info.rank,
                                      shuffle=split == "train", seed=seed, drop_last=split == "train")
            for split, ds in datasets.items()}


class FileCheckpointer:
    """Persists a stage: ``{prefix}_best.pth`` (deployable checkpoint) whenever validation
    improves and ``{prefix}_state.pt`` (everything needed to resume) after every epoch."""

    def __init__(self, folder: Path, prefix: str, model: torch.nn.Module, kind: str,
                 meta: dict) -> None:
        self.best_path = folder / f"{prefix}_best.pth"
        self.state_path = folder / f"{prefix}_state.pt"
        self.model, self.kind, self.meta = model, kind, meta

    def load_last(self) -> dict | None:
        if not self.state_path.exists():
            return None
        payload = load_payload(self.state_path)
        if payload.get("meta") != self.meta:
            log.warning("%s was made with other settings; starting this stage afresh", self.state_path)
            return None
        return payload["state"]

    def save_last(self, state: dict) -> None:
        save_payload(self.state_path, {"format": "firekd-state/1", "meta": self.meta, "state": state})

    def save_best(self, model_state: dict, epoch: int, score: float) -> None:
        save_model(self.best_path, self.model, kind=self.kind, state_dict=model_state,
                   meta={**self.meta, "best_epoch": epoch, "val_f1_macro": score})

    def load_best(self) -> dict:
        return load_payload(self.best_path)["state_dict"]

    def finish(self, thresholds) -> None:
        """Record the validation thresholds in the best checkpoint; drop the resume state."""
        payload = load_payload(self.best_path)
        payload["meta"]["thresholds"] = [float(t) for t in thresholds]
        save_payload(self.best_path, payload)
        if is_writer():
            self.state_path.unlink(missing_ok=True)
