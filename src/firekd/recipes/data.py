"""Data stage: CSV -> validated records -> split -> datasets."""

from __future__ import annotations

import functools
import logging
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from firekd.config import DataConfig
from firekd.data.cache import DecodedCache, build, cache_bytes, cache_key, verify
from firekd.data.checks import FileReport, check_files, same_image_ids, with_digests
from firekd.data.csv import read_records, read_slices, read_unlabeled
from firekd.data.dataset import FileSource, PairedDataset, SampleSource
from firekd.data.images import IRSpec
from firekd.data.manifest import MANIFEST
from firekd.data.splits import (
    COMBO_NAMES,
    SPLITS,
    UNLABELED,
    SplitDecision,
    check_split,
    keep_labelled,
    label_combination,
    labelled_count,
    load_split,
    split_records,
    straddling_images,
)
from firekd.data.unlabeled import check_unlabeled_files, drop_eval_overlap
from firekd.diskspace import OutOfSpaceError, human_bytes
from firekd.errors import ConfigError
from firekd.io import Writer, ensure_writable
from firekd.keys import Lineage, data_fingerprint, stable_hash
from firekd.locks import waiting

log = logging.getLogger(__name__)
FREE_SHARE = 0.8  # the most of a disk's free space the decoded cache may take


@dataclass
class DataBundle:
    """Validated records with their split, and where decoded samples come from."""

    config: DataConfig
    records: pd.DataFrame  # canonical columns + "split_assigned" (unlabelled pairs: "unlabeled")
    report: FileReport
    source: SampleSource | None = None  # the decoded cache once opened, else the files
    split_decision: SplitDecision | None = None  # which split was made and why
    # the CSV's validated rows before splitting (the first rows of ``records``): what a seed's own
    # split (--resample_split) is drawn from
    csv_records: pd.DataFrame | None = field(default=None, repr=False)
    base: DataBundle | None = field(default=None, repr=False)  # a seed's own draw: the invocation's data
    slices: pd.DataFrame | None = None  # the --slice_col columns by CSV line (row), as categories
    seed: int | None = None  # the training seed whose own split this is (--resample_split)
    _seeds: dict = field(default_factory=dict, repr=False)

    @property
    def ir_spec(self) -> IRSpec:
        return self.report.ir

    @property
    def labelled(self) -> pd.DataFrame:
        """The labelled pairs (the CSV's rows, less those moved to the unlabelled pool by
        --n_labelled/--label_fraction): what is split, summarised and recorded."""
        return self.records[self.records["split_assigned"].isin(SPLITS)]

    @property
    def unlabeled_count(self) -> int:
        return int((self.records["split_assigned"] == UNLABELED).sum())

    @property
    def moved_count(self) -> int:
        """CSV rows moved to the unlabelled pool (--n_labelled/--label_fraction)."""
        n_csv = len(self.csv_records) if self.csv_records is not None else 0
        return int((self.records["split_assigned"].to_numpy()[:n_csv] == UNLABELED).sum())

    def for_seed(self, seed: int) -> DataBundle:
        """The data training seed ``seed`` uses: this bundle, or with --resample_split the seed's own
        split (split seed = ``seed``) and label draw, sharing this bundle's decoded samples."""
        if not self.config.resample_split or self.csv_records is None or self.seed == seed:
            return self
        if self.seed is not None:
            raise ValueError(f"the data of seed {self.seed} asked for seed {seed}'s")
        if seed not in self._seeds:
            records, decision = assign_split(self.csv_records, self.config, seed)
            unl = self.records.iloc[len(self.csv_records):]
            records = pd.concat([records, _held_out_groups(unl, records)], ignore_index=True)
            self._seeds[seed] = replace(self, records=records, split_decision=decision, base=self,
                                        seed=seed, _seeds={})
        return self._seeds[seed]

    def positions(self, split: str) -> np.ndarray:
        return np.nonzero(self.records["split_assigned"].to_numpy() == split)[0]

    def dataset(self, split: str, *, with_unlabeled: bool = False, repeat: int = 1) -> PairedDataset:
        """Samples of a split; the KD students' training set adds the unlabelled pairs (labels NaN).
        ``repeat``: every sample k times per epoch, each time in another augmented view."""
        source = self.source or FileSource(self.records, self.config.img_size, self.ir_spec)
        positions = self.positions(split)
        if with_unlabeled:
            positions = np.concatenate([positions, self.positions(UNLABELED)])
        return PairedDataset(self.records, np.tile(positions, repeat), source)

    def summary(self) -> pd.DataFrame:
        """Counts per split (rows) and label combination (columns); unlabelled pairs in a row of
        their own (their label columns empty)."""
        labelled = self.labelled
        table = split_summary(labelled["fire"], labelled["smoke"], labelled["split_assigned"]).astype("Int64")
        if self.unlabeled_count:
            table.loc[UNLABELED] = [pd.NA] * (len(table.columns) - 1) + [self.unlabeled_count]
        return table

    @functools.cached_property
    def fingerprint(self) -> str:
        """Identifies the labelled data a model was trained on: the images' content, labels and
        split of every sample in order, the IR decoding and the image size
        (`firekd.keys.data_fingerprint`), not where the files are or how the CSV spells them."""
        spec = self.ir_spec
        rows = self.labelled[["rgb_digest", "ir_digest", "fire", "smoke", "split_assigned"]]
        return data_fingerprint(self.config, ir=[spec.kind, spec.channels, spec.value_range],
                                rows=rows.astype(object).to_numpy().tolist())

    @functools.cached_property
    def unlabeled_fingerprint(self) -> str | None:
        """The unlabelled pool by its images' content (None without a pool)."""
        if not self.unlabeled_count:
            return None
        pool = self.records[self.records["split_assigned"] == UNLABELED]
        return stable_hash(pool[["rgb_digest", "ir_digest"]].astype(object).to_numpy().tolist())

    def lineage(self, seed: int, world_size: int) -> Lineage:
        """What a model of ``seed`` trained on this data by ``world_size`` processes comes from (with
        --resample_split: on the seed's own draw)."""
        data = self.for_seed(seed)
        return Lineage(data=data.fingerprint, seed=seed, world_size=world_size,
                       unlabeled=data.unlabeled_fingerprint, unlabeled_count=data.unlabeled_count)

    def run_lineage(self, world_size: int) -> Lineage:
        """What every seed of a run shares (its run key): the invocation's data; with
        --resample_split the data the seeds draw from, marked as resampled so such a run never
        shares a run key (and an aggregate) with the seeds of one fixed split."""
        base = self.base or self
        data = base.fingerprint
        if self.config.resample_split:
            data = stable_hash({"resampled_per_seed_from": data})
        return Lineage(data=data, seed=0, world_size=world_size, unlabeled=base.unlabeled_fingerprint,
                       unlabeled_count=base.unlabeled_count)

    def split_table(self) -> pd.DataFrame:
        """split.csv: every CSV row's split; rows moved to the unlabelled pool read ``unlabeled``
        (reusable with --split_file)."""
        rows = self.records.iloc[:len(self.csv_records)] if self.csv_records is not None else self.labelled
        return rows[["row", "rgb_path", "split_assigned"]].rename(columns={"split_assigned": "split"})

    def resampled(self) -> str | None:
        """How the seeds' labels and split are drawn, in words (None: one split from the split
        seed, every labelled train row labelled: nothing to say beyond the split decision)."""
        cfg = self.config
        subset = cfg.n_labelled is not None or cfg.label_fraction is not None
        if not (cfg.resample_split or subset):
            return None
        parts = ["each seed draws its own train/val/test split (split seed = training seed); its "
                 "teacher, control and students share it" if cfg.resample_split
                 else f"every seed shares one split (split seed {cfg.split_seed})"]
        if subset:
            how = f"{cfg.n_labelled}" if cfg.n_labelled is not None else f"a fraction {cfg.label_fraction:g}"
            seeded = "the training seed" if cfg.resample_split else f"split seed {cfg.split_seed}"
            parts.append(f"{how} of the train split's rows kept labelled (stratified draw seeded by "
                         f"{seeded}), the rest moved to the unlabelled pool")
        return "; ".join(parts)


def split_summary(fire, smoke, split) -> pd.DataFrame:
    """Counts per split (rows, plus "all") and label combination (columns, plus "total")."""
    combos = pd.Categorical(np.asarray(COMBO_NAMES)[label_combination(fire, smoke)], categories=COMBO_NAMES)
    table = pd.crosstab(pd.Categorical(np.asarray(split), categories=SPLITS), combos, dropna=False)
    table["total"] = table.sum(axis=1)
    table.loc["all"] = table.sum(axis=0)
    table.index.name, table.columns.name = "split", None
    return table


def load_data(config: DataConfig, unlabeled_csv: str | None = None) -> DataBundle:
    """Read, validate and split; every problem ends in a DataError naming the file/row/flag.
    ``unlabeled_csv``: unlabelled pairs, validated like the labelled ones and added to the records
    for the KD students' training set only (never to validation or test)."""
    records = read_records(config.csv, base_path=config.base_path, columns=config.columns,
                           require_ir=config.require_ir)
    records, report = check_files(records, csv_name=str(config.csv), skip_missing=config.skip_missing,
                                  ir_channels=config.ir_channels, ir_range=config.ir_range)
    records = with_digests(records, manifest=digest_manifest(config))
    csv_records = records.assign(same_image=same_image_ids(records))
    records, decision = assign_split(csv_records, config, config.split_seed)
    split = records["split_assigned"]
    log.info("data: %d samples from %s (IR: %s), split %s", len(records), Path(config.csv).name,
             describe_ir(report.ir), ", ".join(f"{s} {int((split == s).sum())}" for s in (*SPLITS, UNLABELED)
                                              if s in SPLITS or (split == s).any()))
    _log_split(decision, records)
    if config.resample_split and decision.method in ("column", "file"):
        raise ConfigError(f"--resample_split draws a split per seed, but {decision.sentence()}: pass "
                          "--split random or block, or drop --resample_split")
    if unlabeled_csv:
        records = pd.concat([records, _unlabeled(unlabeled_csv, config, records, report)], ignore_index=True)
    slices = read_slices(config.csv, config.slice_cols) if config.slice_cols else None
    return DataBundle(config, records, report, split_decision=decision, csv_records=csv_records,
                      slices=slices)


def assign_split(records: pd.DataFrame, config: DataConfig, seed: int) -> tuple[pd.DataFrame, SplitDecision]:
    """The CSV's records with their split (``split_assigned``) drawn with split seed ``seed``, and
    the train rows beyond --n_labelled/--label_fraction moved to the unlabelled pool (their labels
    NaN, so nothing can train on them as labelled)."""
    if config.split_file:
        split = load_split(config.split_file, records)
        decision = SplitDecision("file", f"from {config.split_file}")
    else:
        split, decision = split_records(records, method=config.split, ratios=config.split_ratios,
                                        seed=seed, block_size=config.block_size)
    check_split(split, config.split_ratios)
    split = split.to_numpy()
    keep = labelled_count(int((split == "train").sum()), n=config.n_labelled, fraction=config.label_fraction)
    split = keep_labelled(split, label_combination(*_labels(records, split)), keep, seed)
    moved = split == UNLABELED
    records = records.assign(split_assigned=split)
    if moved.any():
        records = records.astype({"fire": float, "smoke": float})
        records.loc[moved, ["fire", "smoke"]] = np.nan
        log.info("data: %d of the train split's labelled rows kept labelled (split seed %d), %d moved to "
                 "the unlabelled pool", int((split == "train").sum()), seed, int(moved.sum()))
    return records, decision


def _labels(records: pd.DataFrame, split: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels for the stratified draw; rows a split file marks unlabelled count as 'none'."""
    labelled = np.isin(split, SPLITS)
    fire = np.where(labelled, records["fire"].fillna(0).to_numpy(), 0)
    smoke = np.where(labelled, records["smoke"].fillna(0).to_numpy(), 0)
    return fire, smoke


def _held_out_groups(unl: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Unlabelled pairs that share a group with this split's validation or test pairs leave the
    pool (marked ``excluded``, so the decoded samples keep their positions)."""
    if unl.empty or "group" not in unl or "group" not in records:
        return unl
    held = records.loc[records["split_assigned"].isin(("val", "test")), "group"]
    clash = unl["group"].isin(set(held.dropna())).to_numpy()
    if clash.any():
        log.info("data: %d unlabelled pair(s) share a group with this seed's validation or test pairs; "
                 "left out for this seed", int(clash.sum()))
    return unl.assign(split_assigned=np.where(clash, "excluded", unl["split_assigned"]))


def _unlabeled(path: str, config: DataConfig, records: pd.DataFrame, report: FileReport) -> pd.DataFrame:
    unl = read_unlabeled(path, columns=config.columns, require_ir=config.require_ir)
    unl, _ = check_unlabeled_files(unl, labelled_ir=report.ir, csv_name=str(path),
                                   skip_missing=config.skip_missing)
    unl = with_digests(unl, manifest=digest_manifest(config))
    unl = drop_eval_overlap(unl, records, records["split_assigned"], csv_name=str(path))
    log.info("data: %d unlabelled pairs from %s (for the KD students' training only: their KD terms; "
             "teachers and the bce control never see them)", len(unl), Path(path).name)
    return unl.assign(split_assigned=UNLABELED)


def _log_split(decision: SplitDecision, records: pd.DataFrame) -> None:
    """One line: the split and why (a warning when frames may leak); a warning when a given split
    puts copies of one image in different splits."""
    log.log(logging.WARNING if decision.leak_risk else logging.INFO, "%s", decision.sentence())
    if decision.method in ("column", "file"):
        apart = straddling_images(records["split_assigned"], records["same_image"].to_numpy())
        if apart:
            source = "the CSV's split column" if decision.method == "column" else decision.reason
            log.warning("%d rows show an image that also appears in another split (split %s): test "
                        "scores on them are not independent of training", apart, source)


def cache_root(config: DataConfig) -> Path:
    root = config.cache_dir or os.environ.get("FIREKD_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "firekd"


def digest_manifest(config: DataConfig) -> Path | None:
    """Where image digests are remembered (beside the decoded caches); nowhere with --no_cache, which
    writes nothing there (every digest is then computed anew, as every image is decoded anew)."""
    return cache_root(config) / MANIFEST if config.cache else None


def open_cache(bundle: DataBundle, *, workers: int = 1, writer: Writer | None = None,
               required: bool = False) -> DecodedCache | None:
    """Open (building if needed) the decoded cache of ``bundle``; None when it is turned off or
    would not fit the disk (then samples are decoded from the files on every access), or an
    OutOfSpaceError when ``required`` (`firekd cache`). A disabled ``writer`` (a non-zero DDP
    rank) never builds: it opens what rank 0 built."""
    cfg, spec = bundle.config, bundle.ir_spec
    if not cfg.cache:
        return None
    key = cache_key(bundle.records, cfg.img_size, spec)
    if writer is not None and not writer.enabled:  # rank 0 built and verified it (then a barrier)
        folder = cache_root(cfg) / key
        return DecodedCache(folder) if folder.exists() else None
    root = ensure_writable(cache_root(cfg), "--cache_dir")
    folder = root / key
    on_wait = lambda who: log.info("cache: waiting for %s, which is building it", who)  # noqa: E731
    with waiting(root / f"{key}.lock", on_wait=on_wait):
        if folder.exists():
            if verify(folder):
                log.info("cache: using %s", folder)
                return DecodedCache(folder)
            log.warning("cache: %s is damaged or incomplete; rebuilding it", folder)
        need = cache_bytes(len(bundle.records), cfg.img_size, spec)
        free = shutil.disk_usage(root).free
        if need > FREE_SHARE * free:  # the rest of the free space stays for checkpoints and logs
            return _does_not_fit(root, need, free, required)
        log.info("cache: decoding %d pairs at %d px into %s (%s; %s free)", len(bundle.records),
                 cfg.img_size, folder, human_bytes(need), human_bytes(free))
        with tqdm(total=len(bundle.records), desc="cache", unit="pair", leave=False, disable=None) as bar:
            build(folder, bundle.records, cfg.img_size, spec, workers=workers, progress=bar.update)
        log.info("cache: built %s (%s)", folder, human_bytes(need))
    return DecodedCache(folder)


def _does_not_fit(root: Path, need: int, free: int, required: bool) -> None:
    message = (f"{root}: the decoded cache needs {human_bytes(need)}, more than {FREE_SHARE:.0%} of the "
               f"{human_bytes(free)} free")
    if required:
        raise OutOfSpaceError(f"{message}; free some space or choose another --cache_dir")
    log.warning("cache: %s; decoding images on the fly instead (free space or choose another "
                "--cache_dir)", message)


def describe_ir(spec: IRSpec) -> str:
    if spec.kind is None:
        return "none (RGB-only)"
    extra = f", range {spec.range()}" if spec.kind != "8bit" else ""
    return f"{spec.kind}, {spec.channels} channel(s){extra}"
