"""The paired dataset and its loaders.

One loader yields (rgb, ir, labels, index) so that teacher and student always see the same samples
in the same augmented view. Samples come out as integer images; the batch transform (augmentation
+ normalisation) runs in the loader workers, or on the training device when asked.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from firekd.data.images import IRSpec, decode_sample
from firekd.data.transforms import PairedTransform, sample_keys

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class SampleSource(Protocol):
    """Gives decoded (rgb, ir) integer arrays for a row of the full records table."""

    def __call__(self, position: int) -> tuple[np.ndarray, np.ndarray]: ...


class FileSource:
    """Decodes image files on every access."""

    def __init__(self, records: pd.DataFrame, size: int, ir_spec: IRSpec) -> None:
        self.rgb = records["rgb_path"].tolist()
        self.ir = records["ir_path"].tolist()
        self.size, self.ir_spec = size, ir_spec

    def __call__(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        return decode_sample(self.rgb[position], self.ir[position], self.size, self.ir_spec)


class PairedDataset(Dataset):
    """Rows ``positions`` of the records table: (rgb u8 (3,S,S), ir (C,S,S), labels (2,), index)."""

    def __init__(self, records: pd.DataFrame, positions: np.ndarray, source: SampleSource) -> None:
        self.positions = np.asarray(positions)
        self.labels = torch.as_tensor(
            records[["fire", "smoke"]].to_numpy()[self.positions], dtype=torch.float32)
        self.rows = records["row"].to_numpy()[self.positions]
        self.source = source

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> Batch:
        rgb, ir = self.source(int(self.positions[index]))
        return torch.from_numpy(rgb), torch.from_numpy(ir), self.labels[index], torch.tensor(index)

    def __getitems__(self, indices: list[int]) -> list[Batch] | StackedBatch:
        """The loader's batched fetch: one gather from the cache instead of a read per sample."""
        read_many = getattr(self.source, "read_many", None)
        if read_many is None:
            return [self[i] for i in indices]
        index = torch.as_tensor(indices)
        rgb, ir = read_many(self.positions[indices])
        return StackedBatch((torch.from_numpy(rgb), torch.from_numpy(ir), self.labels[index], index))


class StackedBatch(tuple):
    """A batch that the dataset already stacked (marks it for the collate function)."""


def apply_transform(transform: PairedTransform, batch: Batch | tuple, seed: int,
                    epoch: int | None = None) -> Batch:
    """Run the transform with each sample's randomness drawn from (seed, epoch, its index) alone.

    So a sample's view does not depend on the other samples of its batch, the number of loader
    workers, their persistence, the device, or where a resumed run picks up. ``epoch`` defaults to
    the transform's (`PairedTransform.set_epoch`). No global RNG (CPU or CUDA) is read or
    reseeded; ``index`` stays on the host. A batch of five carries its parameters, drawn by a
    loader worker from the same keys (`augmentation_params`): they are used as they are.
    """
    rgb, ir, labels, index = batch[:4]
    if len(batch) == 5:
        rgb, ir = transform(rgb, ir, params=batch[4])
        return rgb, ir, labels, index
    epoch = transform.epoch if epoch is None else epoch
    rgb, ir = transform(rgb, ir, keys=sample_keys(seed, index.cpu(), epoch))
    return rgb, ir, labels, index


def augmentation_params(transform: PairedTransform, batch: Batch, seed: int) -> torch.Tensor:
    """(B, P) float32: the packed parameters `apply_transform` would draw for ``batch`` now."""
    rgb, _, _, index = batch
    keys = sample_keys(seed, index.cpu(), transform.epoch)
    return torch.from_numpy(transform.params_for(keys, rgb.shape[-2], rgb.shape[-1]))


class CollateTransform:
    """Stacks samples and, unless the transform is deferred to the device, applies it. Deferred,
    ``draw`` (the device's train transform) has the worker draw the batch's augmentation
    parameters: the batch is then (rgb, ir, labels, index, params)."""

    def __init__(self, transform: PairedTransform | None, seed: int = 0,
                 draw: PairedTransform | None = None) -> None:
        self.transform, self.seed, self.draw = transform, seed, draw

    def __call__(self, samples: list[Batch] | StackedBatch) -> Batch | tuple:
        if isinstance(samples, StackedBatch):
            batch = tuple(samples)
        else:
            batch = tuple(torch.stack(parts) for parts in zip(*samples, strict=True))
        if self.transform is not None:
            return apply_transform(self.transform, batch, self.seed)
        if self.draw is not None and self.draw.train:
            return (*batch, augmentation_params(self.draw, batch, self.seed))
        return batch


class DrawSampler(Sampler[int]):
    """``num_samples`` draws per epoch from a dataset of whole copies of ``n`` samples
    (`firekd.recipes.data.DataBundle.dataset` with ``repeat``): every whole copy that fits, plus a
    random part of the next copy, in a random order. Each sample is drawn ``num_samples // n`` times
    or once more, each time as another copy (another index: another augmented view). So an epoch of
    the control has exactly as many draws, and batches, as the KD students' epoch.

    ``generator`` (reseeded by the caller every epoch) gives the order in a single process. Under
    DDP (``world_size`` > 1) the order comes from (``seed``, epoch), the same on every rank, and
    rank r takes every world_size-th draw of it, the tail cut off as `DistributedSampler` does with
    ``drop_last``."""

    def __init__(self, n: int, num_samples: int, generator: torch.Generator | None = None, *,
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.num_samples, self.generator = n, num_samples, generator
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0

    def __len__(self) -> int:
        return self.num_samples // self.world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = self.generator
        if g is None:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
        whole, part = divmod(self.num_samples, self.n)
        extra = whole * self.n + torch.randperm(self.n, generator=g)[:part]  # a part of the next copy
        chosen = torch.cat([torch.arange(whole * self.n), extra])
        order = chosen[torch.randperm(len(chosen), generator=g)]
        return iter(order[: len(self) * self.world_size][self.rank::self.world_size].tolist())


def make_loader(dataset: PairedDataset, *, batch_size: int, train: bool,
                transform: PairedTransform | None, seed: int = 0, num_workers: int = 0,
                generator: torch.Generator | None = None, pin_memory: bool = False,
                sampler: torch.utils.data.Sampler | None = None,
                draw: PairedTransform | None = None) -> DataLoader:
    """``transform=None`` leaves batches as integer images (the device applies the transform);
    then ``draw``, the device's train transform, has the workers draw its parameters.

    ``generator`` drives the shuffle alone (the sampler's own): reseed it at the start of each
    epoch and the order is reproducible whatever the number of workers. The loader's own
    generator (the workers' base seed) is a separate one, so creating workers never draws from it.
    """
    if train and sampler is None:
        sampler = RandomSampler(dataset, generator=generator)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        # a distributed sampler gives each rank its share: keep a lone partial batch there too
        drop_last=train and (len(sampler) if sampler is not None else len(dataset)) > batch_size,
        num_workers=num_workers,
        collate_fn=CollateTransform(transform, seed, draw),
        generator=torch.Generator().manual_seed(seed),
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
