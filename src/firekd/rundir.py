"""The run directory: the spec's output tree and its file names, locks, logs and environment.

    output/metrics/{teacher}_{variant}/          config.json, environment.json, split.csv, run.log,
                                                  data_summary.csv, aggregated_results.json
    output/metrics/{teacher}_{variant}/seed_{s}/  teacher_train_log.json, student_train_log.json,
                                                  final_evaluation.json, predictions_*.csv
    output/models/{teacher}_{variant}/seed_{s}/   teacher_best.pth, student_best.pth, ...
    output/graphs/{teacher}_{variant}/seed_{s}/   *.png
    output/teachers/{teacher}/seed_{s}-{key}/     the shared teacher, trained once per
                                                  (teacher, seed, data, split, settings)
    output/controls/{student}/seed_{s}-{key}/     the bce control's seed (metrics/, models/,
                                                  graphs/), trained once and shown under every teacher
    output/controls/{student}/self_kd-seed_{s}-{key}/  the self_kd baseline's seed (distilled from
                                                  that control), likewise

`RunDir` writes and reads one (teacher, variant) run; every file name is a constant here.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from firekd.io import Writer, read_json
from firekd.kd.variants import split_run_name
from firekd.locks import exclusive

log = logging.getLogger(__name__)

CONFIG = "config.json"
ENVIRONMENT = "environment.json"
SPLIT = "split.csv"
DATA_SUMMARY = "data_summary.csv"
RUN_LOG = "run.log"
AGGREGATED = "aggregated_results.json"
FINAL_EVALUATION = "final_evaluation.json"  # written last: its presence means the seed is done
TEACHER_LOG = "teacher_train_log.json"
STUDENT_LOG = "student_train_log.json"
PRUNED_LOG = "student_pruned_train_log.json"
TEACHER_CURVES = "teacher_training_curves.png"
STUDENT_CURVES = "student_training_curves.png"
CHECKPOINTS = {"teacher": "teacher_best.pth", "student": "student_best.pth",
               "student_quantized": "student_quantized.pth", "student_pruned": "student_pruned.pth"}
PROJECTOR = "student_projector.pth"  # the L2 projector trained with the student (not deployed)
# 1: firekd < 0.2 (flat settings), 2: per-stage records and run key, 3: data keyed by the images'
# content, compression and figures out of the run key (their own outputs key)
CONFIG_FORMAT = 3


def predictions_file(model: str) -> str:
    return f"predictions_{model}.csv"


@dataclass(frozen=True)
class SeedDirs:
    """The three folders of one seed: metrics (JSON, CSV), models (checkpoints), graphs (PNG)."""

    metrics: Path
    models: Path
    graphs: Path

    def create(self, writer: Writer) -> SeedDirs:
        writer.mkdirs(self.metrics, self.models, self.graphs)
        return self

    def done(self, key: str) -> bool:
        """The seed finished with settings key ``key``."""
        path = self.metrics / FINAL_EVALUATION
        return path.exists() and read_json(path).get("run", {}).get("settings_hash") == key

    def files(self) -> list[tuple[Path, str]]:
        """(file, folder kind) of every file the seed holds."""
        return [(path, kind) for kind in ("metrics", "models", "graphs")
                for path in sorted(getattr(self, kind).glob("*")) if path.is_file()]


def teacher_store(output: str | Path, teacher: str, seed: int, key: str,
                  own_variant: str | None = None) -> Path:
    """The teacher's folder; with --no_teacher_reuse (``own_variant``) each variant has its own
    copy, trained the same way."""
    own = f"-{own_variant}" if own_variant else ""
    return Path(output) / "teachers" / teacher / f"seed_{seed}-{key}{own}"


def control_store(output: str | Path, student: str, seed: int, key: str, variant: str = "bce") -> SeedDirs:
    """A no-teacher baseline's seed folders: the ``bce`` control's, or (``variant``) another's."""
    prefix = "" if variant == "bce" else f"{variant}-"
    root = Path(output) / "controls" / student / f"{prefix}seed_{seed}-{key}"
    return SeedDirs(root / "metrics", root / "models", root / "graphs")


class RunDir:
    """One (teacher, variant) run inside ``output``: writes it and reads it back."""

    def __init__(self, output: str | Path, teacher: str, variant: str) -> None:
        self.output, self.teacher, self.variant = Path(output), teacher, variant
        self.name = f"{teacher}_{variant}"
        self.metrics = self.output / "metrics" / self.name
        self.models = self.output / "models" / self.name
        self.graphs = self.output / "graphs" / self.name

    @classmethod
    def open(cls, metrics_folder: Path) -> RunDir:
        """The run whose metrics folder is ``metrics_folder`` (teacher and variant from its
        config.json; from the folder name for a run that has none)."""
        metrics_folder = Path(metrics_folder)
        settings = (read_json(metrics_folder / CONFIG).get("settings", {})
                    if (metrics_folder / CONFIG).exists() else {})
        if "teacher" in settings and "variant" in settings:
            teacher, variant = settings["teacher"], settings["variant"]
        else:
            teacher, variant = split_run_name(metrics_folder.name)
        run = cls(metrics_folder.parent.parent, teacher, variant)
        if run.metrics != metrics_folder:  # a folder renamed by hand: read it where it is
            run.name, run.metrics = metrics_folder.name, metrics_folder
        return run

    def __repr__(self) -> str:
        return f"RunDir({self.metrics})"

    def seed(self, seed: int) -> SeedDirs:
        return SeedDirs(*(d / f"seed_{seed}" for d in (self.metrics, self.models, self.graphs)))

    # --- reading -----------------------------------------------------------------------------

    def config(self) -> dict:
        path = self.metrics / CONFIG
        return read_json(path) if path.exists() else {}

    def run_key(self) -> str | None:
        return self.config().get("run_key")

    def seeds(self) -> list[int]:
        """Finished seeds (with a final_evaluation.json), in numeric order."""
        found = []
        for path in self.metrics.glob(f"seed_*/{FINAL_EVALUATION}"):
            suffix = path.parent.name.removeprefix("seed_")
            if suffix.lstrip("-").isdigit():
                found.append(int(suffix))
        return sorted(found)

    def final_evaluation(self, seed: int) -> dict:
        return read_json(self.seed(seed).metrics / FINAL_EVALUATION)

    def seed_done(self, seed: int, key: str) -> bool:
        return self.seed(seed).done(key)

    def predictions(self, seed: int) -> dict[str, Path]:
        """{model: predictions CSV} of a seed."""
        folder = self.seed(seed).metrics
        return {p.stem.removeprefix("predictions_"): p for p in sorted(folder.glob(predictions_file("*")))}

    def matching_seeds(self) -> tuple[list[int], list[int]]:
        """(seeds made with this run's settings, data, compression and figure settings, seeds made
        otherwise). A run recorded by firekd < 0.2 has no run key: all its seeds count."""
        config = self.config()
        wanted = {k: config[k] for k in ("run_key", "outputs_key") if config.get(k) is not None}
        matching, other = [], []
        for seed in self.seeds():
            recorded = self.final_evaluation(seed).get("run", {})
            same = all(recorded.get(k) == v for k, v in wanted.items())
            (matching if same else other).append(seed)
        return matching, other

    def aggregate(self) -> dict:
        """Mean, std, CI... over the seeds made with this run's settings and data; seeds made
        otherwise are left out with a warning."""
        from firekd.metrics.stats import aggregate_runs

        matching, other = self.matching_seeds()
        if other:
            log.warning("%s: seed(s) %s were made with other data or settings than this run's "
                        "config.json; left out of the aggregate (rerun them, or use --overwrite)",
                        self.metrics, ", ".join(map(str, other)))
        per_seed = {}
        for seed in matching:
            per_seed[seed] = {k: v for k, v in self.final_evaluation(seed).items() if k != "run"}
        return aggregate_runs(per_seed)

    # --- writing -----------------------------------------------------------------------------

    def lock(self, writer: Writer):
        return exclusive(self.metrics / ".lock", what=f"run folder {self.metrics}", enabled=writer.enabled)

    def remove(self, writer: Writer) -> None:
        writer.remove(self.metrics, self.models, self.graphs)

    @contextlib.contextmanager
    def log_to_file(self, writer: Writer):
        """Append what is logged during the block to run.log: the grid's own lines, and a job's lines
        only when the job works for this run (see `working_on`)."""
        if not writer.enabled:
            yield
            return
        self.metrics.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.metrics / RUN_LOG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.setLevel(logging.INFO)
        handler.addFilter(_ForRun(self.name))
        logging.getLogger().addHandler(handler)
        try:
            yield
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()


# the runs the current job works for (None: the grid itself, whose lines every run.log gets)
_WORKING_ON: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar("runs", default=None)


@contextlib.contextmanager
def working_on(names: Iterable[str]):
    """During the block, log lines go to the run.log of the runs ``names`` alone."""
    token = _WORKING_ON.set(frozenset(names))
    try:
        yield
    finally:
        _WORKING_ON.reset(token)


class _ForRun(logging.Filter):
    def __init__(self, run: str) -> None:
        super().__init__()
        self.run = run

    def filter(self, record: logging.LogRecord) -> bool:
        runs = _WORKING_ON.get()
        return runs is None or self.run in runs


def environment() -> dict:
    """Versions, device and git commit: enough to tell how a result was produced."""
    import torch

    packages = {}
    for name in ("firekd", "torch", "torchvision", "timm", "numpy", "scikit-learn", "scipy",
                 "torchao", "torch-pruning", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages[name] = metadata.version(name)
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": packages,
        "git_commit": _git_commit(),
        "command": " ".join(sys.argv),
    }


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
