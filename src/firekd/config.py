"""Plain configuration records. The CLI builds them from flags; recipes read them; checkpoints
store them as dicts so every artifact records the settings that made it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from firekd.data.csv import ColumnNames


@dataclass(frozen=True)
class DataConfig:
    csv: str
    base_path: str | None = None
    columns: ColumnNames = field(default_factory=ColumnNames)
    skip_missing: bool = False
    split: str = "auto"
    split_ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    block_size: int = 50
    split_file: str | None = None
    img_size: int = 224
    ir_channels: str = "auto"
    ir_range: tuple[float, float] | None = None
    require_ir: bool = True
    cache: bool = True
    cache_dir: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; the spec's flags with their defaults."""

    data: DataConfig
    output: str = "output"
    teachers: tuple[str, ...] = ("resnet152",)
    variants: tuple[str, ...] = ("kl_bce",)
    seeds: tuple[int, ...] = (42, 123, 456, 789, 1024)
    epochs_teacher: int = 50
    epochs_student: int = 30
    batch_size: int = 64
    num_workers: int = 4
    lr_teacher: float = 1e-4
    lr_student: float = 1e-3
    weight_decay: float = 1e-4
    kd_temperature: float = 4.0
    patience_teacher: int = 10
    patience_student: int = 5
    prune_sparsity: float = 0.4
    finetune_epochs: int = 10
    compress: bool = True
    prune_method: str = "structured"
    calibration_batches: int = 32
    quant_compile: bool = True  # the int8 student through torch.compile (inductor, freezing)
    latency_runs: int = 20  # 0: no latency numbers
    latency_threads: int = 1
    onnx: bool = False  # also export the student as ONNX fp32 + onnxruntime int8
    loss_weights: dict[str, float] = field(default_factory=dict)
    student: str = "firekd_student"
    teacher_modalities: str = "rgb+ir"
    pretrained: bool = True
    teacher_weights: str | None = None
    pos_weight: str = "none"
    device: str = "auto"
    amp: bool = True
    retrain_teacher: bool = False
    teacher_reuse: bool = True
    compile: bool = False
    teacher_only: bool = False  # train (or find) the teachers and stop
    sync_bn: bool = False  # SyncBatchNorm under torchrun on CUDA
    jobs: int = 1  # parallel grid jobs (processes); see recipes/grid.py
    gpus: tuple[int, ...] = ()  # one grid job per listed GPU at a time
    executor: str = "local"  # local processes or "ray"
    ray_address: str | None = None
    ray_gpus_per_job: float = 1.0
    overwrite: bool = False
    tensorboard: bool = False
    max_embed_points: int = 2000  # t-SNE/UMAP sample cap per figure; 0: no embedding figures

    def to_dict(self) -> dict:
        return asdict(self)
