"""Per-stage configuration records, one frozen dataclass per stage.

Every field declares its flag, default and help (`firekd.options.option`) and whether results
depend on it: ``KEY`` fields enter the reuse key of their stage (see `firekd.keys`), ``EXEC``
fields (folders, workers, device, logging, scheduling) enter none. The CLI flags are generated
from these declarations (`firekd.cli.args`); checkpoints store the stage records as dicts so
every artifact records the settings that made it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace

from firekd.compress import PRUNE_METHODS
from firekd.data.csv import ColumnNames
from firekd.data.splits import METHODS
from firekd.errors import ConfigError
from firekd.kd.variants import parse_loss_weights
from firekd.options import (
    DATA,
    EXEC,
    FIGURE,
    gpu_list,
    image_size,
    non_negative_float,
    non_negative_int,
    open_fraction,
    open_unit_fraction,
    option,
    positive_float,
    positive_int,
    unit_fraction,
)


@dataclass(frozen=True)
class DataConfig:
    """The samples, how they are decoded and split. Its key is the data fingerprint: the images'
    content, the labels and the split actually drawn (`firekd.keys.data_fingerprint`), so only the
    image size enters it as a setting; the rest (``DATA``) counts through what it selects."""

    csv: str = option(help="CSV with columns rgb_path,ir_path,fire,smoke (aliases accepted; optional "
                           "split and group columns are honoured, others ignored)",
                      kind=DATA, group="data", required=True)
    base_path: str | None = option(None, kind=DATA, group="data",
                                   help="folder that relative image paths start from (default: the "
                                        "CSV's folder)")
    columns: ColumnNames = field(default_factory=ColumnNames, metadata={"kind": DATA, "cli": False})
    skip_missing: bool = option(False, kind=DATA, group="data", switch=(("--skip_missing",), ()),
                                help="drop rows whose images are missing or unreadable (with a "
                                     "warning) instead of stopping")
    img_size: int = option(224, group="data", type=image_size,
                           help="training image size in pixels, a multiple of 32; RGB and IR are both "
                                "resized to it")
    ir_channels: str = option("auto", kind=DATA, group="data", choices=("auto", "1", "3"),
                              help="IR channels: 1 for grayscale/16-bit/radiometric, 3 for "
                                   "colour-mapped; auto decides from the files")
    ir_range: tuple[float, float] | None = option(
        None, kind=DATA, group="data", type=float, nargs=2, metavar=("LO", "HI"),
        help="for 16-bit or radiometric (float, deg C) IR: the value range mapped to [0, 1], clipped "
             "(default: 0 65535 for 16-bit, -20 600 for radiometric)")
    require_ir: bool = option(True, kind=DATA, cli=False, help="IR files are required (an RGB+IR teacher)")
    cache: bool = option(True, kind=EXEC, group="data", switch=((), ("--no_cache",)),
                         help="decode image files on every access instead of using the decoded "
                              "cache (the cache is built once, when it fits the disk, and reused)")
    cache_dir: str | None = option(None, kind=EXEC, group="data",
                                   help="where decoded caches live (default: $FIREKD_CACHE_DIR or "
                                        "~/.cache/firekd); safe to delete")
    split: str = option("auto", kind=DATA, group="split", choices=METHODS,
                        help="auto: the CSV's split column if it has one, else whole groups of its "
                             "group column, else blocks of --block_size consecutive frames when the "
                             "file names look like video frames (so near-duplicate frames do not leak "
                             "across splits), else random; random (alias stratified): stratified on "
                             "the label combinations, group-aware; block: --block_size rows in CSV "
                             "order; column: the CSV's split column. Identical images always stay in "
                             "one split")
    split_ratios: tuple[float, float, float] = option(
        (0.7, 0.15, 0.15), kind=DATA, group="split", type=unit_fraction, nargs=3,
        metavar=("TRAIN", "VAL", "TEST"), help="split ratios")
    split_seed: int = option(0, kind=DATA, group="split", type=int,
                             help="seed of the split, independent of the training seeds")
    block_size: int = option(50, kind=DATA, group="split", type=positive_int,
                             help="rows or frames per block (--split block, and auto on video frames)")
    split_file: str | None = option(None, kind=DATA, group="split",
                                    help="reuse a split.csv written by an earlier run (row,split columns)")
    resample_split: bool = option(False, kind=DATA, group="split", switch=(("--resample_split",), ()),
                                  help="draw every training seed's own split (split seed = training "
                                       "seed, instead of --split_seed): replicates that vary the "
                                       "labelled subset, not only the initialisation. The teachers, "
                                       "control and students of a seed share its split; each seed "
                                       "folder records it (split.csv)")
    n_labelled: int | None = option(None, kind=DATA, group="split", type=positive_int, metavar="N",
                                    help="keep only N of the train split's labelled rows as labelled "
                                         "(a draw stratified on the label combinations, seeded by the "
                                         "split seed) and move the rest to the unlabelled pool: the KD "
                                         "students train on them without labels; teachers and the bce "
                                         "control never see them; validation and test are unchanged")
    label_fraction: float | None = option(None, kind=DATA, group="split", type=open_unit_fraction,
                                          metavar="F", help="as --n_labelled, with N = round(F x the "
                                                            "train split's rows), at least 1")
    # which CSV columns to report per-slice metrics on: adds metrics, changes no trained model
    slice_cols: tuple[str, ...] = option((), flag="--slice_col", kind=EXEC, group="data",
                                         action="append", metavar="COL",
                                         help="a categorical CSV column (e.g. hidden_in_rgb, a site, day "
                                              "or night): recall, precision and F1 per label on each of "
                                              "its values, for every model, in final_evaluation.json, "
                                              "aggregated_results.json, compare and the report; "
                                              "repeatable")

    def __post_init__(self) -> None:
        if any(r <= 0 for r in self.split_ratios):
            raise ConfigError(f"--split_ratios: every ratio must be > 0, got {list(self.split_ratios)}")
        if self.ir_range is not None and not self.ir_range[0] < self.ir_range[1]:
            raise ConfigError(f"--ir_range: LO must be below HI, got {list(self.ir_range)}")
        if self.n_labelled is not None and self.label_fraction is not None:
            raise ConfigError("--n_labelled and --label_fraction: give one of them, not both")
        if self.resample_split and (self.split_file or self.split == "column"):
            given = "--split_file" if self.split_file else "--split column"
            raise ConfigError(f"--resample_split draws a split per seed; {given} fixes one: drop one "
                              "of them")


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation settings shared by the teacher and student stages."""

    batch_size: int = option(64, group="training", type=positive_int,
                             help="batch size (per process under torchrun)")
    weight_decay: float = option(1e-4, group="training", type=float,
                                 help="AdamW weight decay. LR schedule: linear warm-up over the first "
                                      "10%% of steps, then cosine decay to 0 at the maximum epoch")
    pos_weight: str = option("none", group="training", choices=("none", "auto"),
                             help="BCE positive-class weight: auto = negatives/positives per label on "
                                  "the train split")
    amp: bool = option(True, group="hardware", switch=(("--amp",), ("--no_amp", "--no-amp")),
                       help="bf16 autocast and channels_last on CUDA (no effect on CPU)")
    sync_bn: bool = option(False, group="hardware", switch=(("--sync_bn",), ()),
                           help="under torchrun on CUDA: SyncBatchNorm across the processes")


@dataclass(frozen=True)
class TeacherConfig:
    """The teacher stage: an RGB+IR (or RGB) network trained on labels, once per teacher and seed."""

    epochs: int = option(50, flag="--epochs_teacher", group="training", type=non_negative_int,
                         help="maximum teacher epochs; 0 leaves the teacher as initialised (ImageNet "
                              "weights, or random with --no_pretrained): a teacher that knows nothing, the "
                              "negative control of distillation")
    steps: int | None = option(None, flag="--steps_teacher", group="training", type=positive_int,
                               metavar="N",
                               help="teacher schedule in optimizer steps instead of epochs (few labelled "
                                    "pairs make few steps per epoch): N steps, rounded up to whole "
                                    "epochs; replaces --epochs_teacher")
    lr: float = option(1e-4, flag="--lr_teacher", group="training", type=positive_float,
                       help="teacher peak learning rate")
    patience: int = option(10, flag="--patience_teacher", group="training", type=positive_int,
                           help="teacher early-stopping patience in epochs on validation macro-F1")
    modalities: str = option("rgb+ir", flag="--teacher_modalities", group="models",
                             choices=("rgb+ir", "rgb"), nargs="+",
                             help="teacher input: rgb+ir, or rgb for an RGB-only teacher (rgb also "
                                  "accepts a CSV without IR); both (rgb+ir rgb): each teacher is "
                                  "trained once per seed with each input, in one study whose students "
                                  "pair by seed, the RGB-only runs named {teacher}-rgb_{variant}")
    pretrained: bool = option(True, group="models", switch=((), ("--no_pretrained",)),
                              help="initialise teachers randomly instead of from ImageNet weights")
    weights: str | None = option(None, flag="--teacher_weights", group="models", content=True,
                                 metavar="PATH",
                                 help="local weights for the teacher's backbone: a timm state dict "
                                      "(e.g. ImageNet weights downloaded elsewhere) or a firekd "
                                      "teacher_best.pth (a teacher trained on another dataset: its "
                                      "backbone is taken); the IR stem starts as a copy of the RGB stem")
    # recomputes activations in the backward pass: the same gradients, less memory, ~30% slower
    grad_checkpointing: str = option("auto", kind=EXEC, group="hardware", choices=("auto", "on", "off"),
                                     help="activation checkpointing of the teacher's trunk while it "
                                          "trains: on, off, or auto = on when the estimated training "
                                          "memory exceeds 75%% of the GPU's free memory (never on CPU)")


    def epochs_for(self, steps_per_epoch: int) -> int:
        """Maximum epochs: --epochs_teacher, or --steps_teacher rounded up to whole epochs."""
        if self.steps is None:
            return self.epochs
        return -(-self.steps // max(1, steps_per_epoch))


@dataclass(frozen=True)
class StudentConfig:
    """The student stage: the RGB-only student trained with one loss variant."""

    arch: str = option("firekd_student", flag="--student", group="distillation",
                       help="student: firekd_student (~1.2M params) or any timm model name, e.g. "
                            "mobilenetv3_small_100")
    pretrained: bool = option(False, flag="--student_pretrained", group="models",
                              switch=(("--student_pretrained",), ()),
                              help="start a timm --student from timm's ImageNet weights (downloaded once "
                                   "by timm; offline, use --student_weights)")
    weights: str | None = option(None, flag="--student_weights", group="models", content=True, metavar="PATH",
                                 help="start a timm --student from a local timm state dict of that model "
                                      "(e.g. ImageNet weights downloaded elsewhere); the classifier is "
                                      "replaced")
    epochs: int = option(30, flag="--epochs_student", group="training", type=positive_int,
                         help="maximum student epochs")
    lr: float = option(1e-3, flag="--lr_student", group="training", type=positive_float,
                       help="student peak learning rate")
    patience: int = option(5, flag="--patience_student", group="training", type=positive_int,
                           help="student early-stopping patience in epochs")
    # in the control's key too: its epochs are as long as the KD students' (labelled pairs repeated)
    unlabeled_csv: str | None = option(
        None, kind=DATA, group="data", metavar="PAIRS.csv",
        help="unlabelled RGB+IR pairs (rgb_path,ir_path; label columns absent or empty; paths relative to "
             "this CSV's folder), validated like the labelled ones: the KD students also train on them "
             "(KD terms on every sample, BCE on the labelled ones); teachers, validation and test never "
             "see them, nor does the bce control, whose epochs repeat its labelled pairs (in new "
             "augmented views) to as many steps as the KD students'")
    kd_temperature: float = option(4.0, group="distillation", type=positive_float, kd_only=True,
                                   help="distillation temperature T of the per-label binary KL")
    loss_weights: dict[str, float] = option(
        {}, group="distillation", nargs="+", metavar="TERM=W", convert=parse_loss_weights,
        help="override loss weights, e.g. kl=0.6 bce=0.4 (terms: kl, l2, contrastive, bce; "
             "default: the spec's weights per variant)")


@dataclass(frozen=True)
class CompressConfig:
    """The compression stage, per seed after the student: int8, pruning + fine-tuning, ONNX."""

    compress: bool = option(True, group="compression", switch=(("--compress",), ("--no_compress",)),
                            help="quantize and prune the student of every seed")
    prune_method: str = option("structured", group="compression", choices=PRUNE_METHODS,
                               help="structured: remove whole channels (Torch-Pruning, L2 magnitude, "
                                    "output layer kept), a smaller dense model; unstructured: zero "
                                    "single weights (global L1 magnitude), same size and speed on "
                                    "dense kernels")
    prune_sparsity: float = option(0.4, group="compression", type=open_fraction,
                                   help="fraction of the student's parameters removed, in (0, 1): "
                                        "structured removes channels until the parameter count has "
                                        "dropped by at least this fraction; unstructured zeroes exactly "
                                        "this fraction of the conv and linear weights. The fraction "
                                        "achieved is reported as prune_fraction")
    finetune_epochs: int = option(10, group="compression", type=positive_int,
                                  help="maximum fine-tuning epochs after pruning, with the same loss "
                                       "variant, teacher and trained L2 projector, early stopping "
                                       "(--patience_student) and the student's schedule and peak LR "
                                       "(--lr_student)")
    calibration_batches: int = option(32, group="compression", type=positive_int,
                                      help="training batches (of --batch_size, no augmentation) that set "
                                           "the int8 activation ranges; fewer when the train split is "
                                           "smaller")
    quant_compile: bool = option(True, group="compression",
                                 switch=(("--quant_compile",), ("--no_quant_compile",)),
                                 help="run the int8 student through torch.compile (inductor, freezing) "
                                      "for its evaluation and latency, compiled for batch 32 and 1 "
                                      "(about 10-40 s per seed on 2 cores); off: evaluated uncompiled, "
                                      "nearly the same predictions but slower than fp32")
    onnx: bool = option(False, group="compression", switch=(("--onnx",), ()),
                        help="also export each seed's student as ONNX (student_best.onnx) and as "
                             "onnxruntime static int8 QDQ (student_best_int8.onnx), evaluated as "
                             "student_onnx and student_onnx_int8")
    # Latency settings change only the measured latency, which every result records with its
    # thread count; re-measuring is no reason to retrain.
    latency_runs: int = option(20, kind=EXEC, group="compression", type=non_negative_int,
                               help="timed forward passes per CPU latency number (median after 3 "
                                    "warm-up passes, random inputs, batch 1 and 32); 0 skips latency")
    latency_threads: int = option(1, kind=EXEC, group="compression", type=positive_int,
                                  help="CPU threads while measuring latency, recorded as cpu_threads "
                                       "(1: reproducible on a shared machine)")


@dataclass(frozen=True)
class ExecConfig:
    """Where and how the work runs: in no reuse key."""

    output: str = option("output", kind=EXEC, group="output and seeds", help="output folder")
    overwrite: bool = option(False, kind=EXEC, group="output and seeds", switch=(("--overwrite",), ()),
                             help="delete this run's earlier results and start over (the shared "
                                  "teacher is kept; see --retrain_teacher)")
    retrain_teacher: bool = option(False, kind=EXEC, group="output and seeds",
                                   switch=(("--retrain_teacher",), ()),
                                   help="train the teacher again even if one with the same settings "
                                        "exists")
    teacher_only: bool = option(False, kind=EXEC, group="output and seeds", switch=(("--teacher_only",), ()),
                                help="train (or find) the teachers for every seed, then stop (students "
                                     "later reuse them)")
    teacher_reuse: bool = option(True, kind=EXEC, group="output and seeds",
                                 switch=((), ("--no_teacher_reuse",)),
                                 help="train a separate teacher for every loss variant (slow; the "
                                      "naive baseline the reuse benchmark compares against)")
    num_workers: int = option(4, kind=EXEC, group="training", type=non_negative_int,
                              help="data loader worker processes, capped at the CPU count")
    save_every: int = option(1, kind=EXEC, group="training", type=positive_int,
                             help="write a stage's resume state (model, optimizer) every N epochs and "
                                  "at its last; a killed run redoes at most N-1 epochs, same result")
    lockstep: str = option("on", kind=EXEC, group="training", choices=("on", "off"),
                           help="on: the loss variants of a seed (and the bce control) train in one pass "
                                "over the same batches, the teacher running once per batch; off: one "
                                "variant at a time (same results, more teacher passes)")
    device: str = option("auto", kind=EXEC, group="hardware", help="auto, cpu, cuda or cuda:N")
    compile: bool = option(False, kind=EXEC, group="hardware", switch=(("--compile",), ()),
                           help="torch.compile teacher and student for training (worth it on GPU for "
                                "long runs; the first epoch pays the compile time)")
    tensorboard: bool = option(False, kind=EXEC, group="hardware", switch=(("--tensorboard",), ()),
                               help="also log every epoch to TensorBoard (in the models folder)")
    max_embed_points: int = option(2000, kind=FIGURE, group="figures", type=non_negative_int,
                                   help="test samples (a seeded random subset) shown in each "
                                        "t-SNE/UMAP figure; 0 skips those figures")
    figures: bool = option(True, kind=FIGURE, group="figures", switch=((), ("--no_figures",)),
                           help="skip every per-seed figure (training curves, confusion matrices, "
                                "PR curves, t-SNE/UMAP); metrics, predictions and training logs are still "
                                "written, and a later run without it draws the figures from them "
                                "without training again")
    jobs: int = option(1, kind=EXEC, group="parallel jobs (see README: Scaling)", type=positive_int,
                       ablation_only=True,
                       help="run grid jobs in N parallel processes on this machine (CPU); teacher "
                            "jobs first, then each seed's variants (1 = in this process)")
    gpus: tuple[int, ...] = option((), kind=EXEC, group="parallel jobs (see README: Scaling)",
                                   type=gpu_list, ablation_only=True,
                                   help="comma-separated GPU ids, e.g. 0,1,2,3: one grid job at a time "
                                        "per GPU")
    executor: str = option("local", kind=EXEC, group="parallel jobs (see README: Scaling)",
                           choices=("local", "ray"), ablation_only=True,
                           help="local processes, or ray: each job a Ray task on the cluster that "
                                "ray.init(address=--ray_address) finds; --output must be on a "
                                "filesystem every node sees")
    ray_address: str | None = option(None, kind=EXEC, group="parallel jobs (see README: Scaling)",
                                     ablation_only=True,
                                     help="Ray cluster address (default: $RAY_ADDRESS, else a local "
                                          "Ray instance)")
    ray_gpus_per_job: float = option(1.0, kind=EXEC, group="parallel jobs (see README: Scaling)",
                                     type=non_negative_float, ablation_only=True,
                                     help="GPUs each Ray job asks for; 0 for CPU-only clusters")

    @property
    def parallel(self) -> bool:
        """Run the grid's jobs in other processes (or on Ray) rather than in this one."""
        return self.jobs > 1 or bool(self.gpus) or self.executor == "ray"


STAGES = {"optim": OptimConfig, "teacher": TeacherConfig, "student": StudentConfig,
          "compress": CompressConfig, "execution": ExecConfig}


@dataclass(frozen=True)
class RunConfig:
    """A whole invocation: the stage records and the grid's axes (teachers x variants x seeds)."""

    data: DataConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    execution: ExecConfig = field(default_factory=ExecConfig)
    teachers: tuple[str, ...] = ("resnet152",)
    variants: tuple[str, ...] = ("kl_bce",)
    seeds: tuple[int, ...] = (42, 123, 456, 789, 1024)
    # the teacher inputs of the study (--teacher_modalities); () = the teacher stage's one
    modalities: tuple[str, ...] = ()

    def per_modality(self) -> list[RunConfig]:
        """The study as one grid per teacher input: with several inputs, each grid's teacher stage
        has one input and its teachers go by their labels (`firekd.models.teacher_label`)."""
        if len(self.modalities) <= 1:
            return [self]
        from firekd.models.registry import teacher_label

        return [replace(self, teacher=replace(self.teacher, modalities=m), modalities=(m,),
                        teachers=tuple(teacher_label(t, m) for t in self.teachers))
                for m in self.modalities]

    def to_dict(self) -> dict:
        return asdict(self)

    def flags(self) -> dict:
        """Every setting by its flag name (``epochs_teacher``, ``img_size``...): the flat view that
        config.json records and the report reads (also how firekd < 0.2 recorded its settings)."""
        out = {"teachers": list(self.teachers), "variants": list(self.variants), "seeds": list(self.seeds)}
        for stage in (self.data, self.optim, self.teacher, self.student, self.compress, self.execution):
            for f in fields(stage):
                value = getattr(stage, f.name)
                out[flag_name(f)] = asdict(value) if is_dataclass(value) else value
        return out


def flag_name(f) -> str:
    """The flag of a field without its dashes: ``epochs_teacher`` for TeacherConfig.epochs."""
    return (f.metadata.get("flag") or f"--{f.name}").lstrip("-")
