"""Models: every registered teacher and student at 32 px on CPU, timm-test style."""

from __future__ import annotations

import copy
import json

import pytest
import timm
import torch
from torch import nn

from firekd.cli import main
from firekd.errors import ModelError
from firekd.metrics.efficiency import gflops, parameter_count
from firekd.models import create_student, create_teacher, list_students, list_teachers
from firekd.models.memory import SavedTensorBytes, estimate_teacher_memory, should_checkpoint
from firekd.models.registry import resolve_teacher_name, teacher_aliases

SIZE, BATCH = 32, 2
SWIN_SIZE = 64  # at 32 px swin's last stage is one token wide and its position-bias table idle
TEACHERS = list_teachers()
STUDENTS = [*list_students(), "mobilenetv3_small_100"]
CNN_TEACHERS = ("resnet152", "efficientnet_b7")


def size_of(name: str) -> int:
    return SWIN_SIZE if "swin" in name else SIZE

_CACHE: dict[tuple, nn.Module] = {}


def teacher(name: str, **kwargs) -> nn.Module:
    """Built once per configuration for the whole module: big teachers take seconds to build."""
    kwargs = {"img_size": size_of(name), **kwargs}
    key = (name, *sorted(kwargs.items()))
    if key not in _CACHE:
        torch.manual_seed(0)
        _CACHE[key] = create_teacher(name, **kwargs)
    return _CACHE[key]


def student(name: str) -> nn.Module:
    if name not in _CACHE:
        torch.manual_seed(0)
        _CACHE[name] = create_student(name)
    return _CACHE[name]


def inputs(name: str = "", ir_channels: int = 1, size: int | None = None,
           seed: int = 0) -> tuple[torch.Tensor, ...]:
    size = size or size_of(name)
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(BATCH, 3, size, size, generator=g),
            torch.randn(BATCH, ir_channels, size, size, generator=g))


def relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


def assert_outputs(model: nn.Module, logits: torch.Tensor, embedding: torch.Tensor) -> None:
    assert logits.shape == (BATCH, 2)
    assert embedding.shape == (BATCH, model.embed_dim)
    assert torch.isfinite(logits).all() and torch.isfinite(embedding).all()


def assert_every_parameter_learns(model: nn.Module, logits: torch.Tensor,
                                  embedding: torch.Tensor) -> None:
    g = torch.Generator().manual_seed(1)  # random weights: a plain sum can cancel through a norm
    loss = ((logits * torch.randn(logits.shape, generator=g)).sum()
            + (embedding * torch.randn(embedding.shape, generator=g)).sum())
    loss.backward()
    dead = [name for name, p in model.named_parameters()
            if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not dead, f"{len(dead)} parameters get no gradient, e.g. {dead[:3]}"


def wake_zero_gains(model: nn.Module) -> nn.Module:
    """timm ResNets zero-init the last BN gain of each residual block (blocks start as identity),
    which makes the gradient of the block's other weights exactly zero at init. Give those gains
    a value so the gradient test checks that every weight is wired to the loss."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and not m.weight.any():
                m.weight.fill_(1.0)
    return model


# --- teachers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_forward_shapes_and_head(name):
    model = teacher(name).eval()
    rgb, ir = inputs(name)
    with torch.no_grad():
        logits, embedding = model(rgb, ir)
        assert_outputs(model, logits, embedding)
        features = model.forward_features(rgb, ir)
        assert torch.allclose(model.forward_head(features, pre_logits=True), embedding)
        assert torch.allclose(model.forward_head(features), logits, atol=1e-6)


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_every_parameter_gets_gradient(name):
    model = wake_zero_gains(copy.deepcopy(teacher(name))).train()
    logits, embedding = model(*inputs(name))
    assert_every_parameter_learns(model, logits, embedding)


def _train_step(model: nn.Module, rgb: torch.Tensor, ir: torch.Tensor) -> int:
    """One forward+backward in train mode; returns the bytes autograd saved outside checkpoints."""
    with SavedTensorBytes(model) as saved:
        logits, embedding = model(rgb, ir)
    g = torch.Generator().manual_seed(1)
    ((logits * torch.randn(logits.shape, generator=g)).sum()
     + (embedding * torch.randn(embedding.shape, generator=g)).sum()).backward()
    return saved.total


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_grad_checkpointing_keeps_gradients_and_bn_statistics(name):
    base = wake_zero_gains(copy.deepcopy(teacher(name))).train()
    rgb, ir = inputs(name)
    plain, ckpt = base, copy.deepcopy(base)  # base: already a copy of the cached teacher
    ckpt.set_grad_checkpointing()
    plain_bytes, ckpt_bytes = _train_step(plain, rgb, ir), _train_step(ckpt, rgb, ir)
    # the blocks' activations really were dropped (resnet10t keeps more: its three-conv stem at
    # H/2 runs outside the checkpointed blocks, which are one per stage)
    assert ckpt_bytes < (0.8 if name == "resnet10t" else 0.6) * plain_bytes
    grads = dict(plain.named_parameters())
    for key, p in ckpt.named_parameters():
        assert torch.allclose(p.grad, grads[key].grad, rtol=1e-4, atol=1e-6), key
    buffers = dict(plain.named_buffers())  # BN running statistics updated once, not twice
    for key, b in ckpt.named_buffers():
        assert torch.equal(b, buffers[key]), key
    with torch.no_grad():  # no recomputation without gradients: the plain forward
        assert torch.equal(ckpt.eval()(rgb, ir)[0], plain.eval()(rgb, ir)[0])


@pytest.mark.slow
def test_grad_checkpointing_under_torch_compile():
    """--compile traces the checkpointed blocks (dynamo takes no custom context_fn): same result."""
    base = wake_zero_gains(copy.deepcopy(teacher("resnet18"))).train()
    rgb, ir = inputs()
    plain, ckpt = base, copy.deepcopy(base)  # base: already a copy of the cached teacher
    ckpt.set_grad_checkpointing()
    _train_step(plain, rgb, ir)
    _train_step(torch.compile(ckpt, backend="aot_eager"), rgb, ir)
    for (key, p), q in zip(ckpt.named_parameters(), plain.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), key
    for (key, b), c in zip(ckpt.named_buffers(), plain.buffers(), strict=True):
        assert torch.allclose(b.float(), c.float(), rtol=1e-5, atol=1e-6), key


def test_rgb_only_teacher_uses_timms_checkpointing():
    base = wake_zero_gains(copy.deepcopy(teacher("resnet18", modalities="rgb"))).train()
    rgb = inputs()[0]
    plain, ckpt = base, copy.deepcopy(base)  # base: already a copy of the cached teacher
    ckpt.set_grad_checkpointing()
    assert _train_step(ckpt, rgb, None) < 0.6 * _train_step(plain, rgb, None)
    for (key, p), q in zip(ckpt.named_parameters(), plain.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), key


@pytest.mark.parametrize("name", TEACHERS)
def test_memory_estimate_on_meta_matches_a_real_forward(name):
    estimate = estimate_teacher_memory(name, BATCH, size_of(name))
    model = copy.deepcopy(teacher(name)).train()
    real = _train_step(model, *inputs(name))
    # exact for CNNs; attention backends differ by device in what they save (ViT: 3%)
    assert abs(estimate.activations - real) <= 0.05 * real
    assert estimate.params == parameter_count(model)
    assert 0 < estimate.activations_checkpointed < estimate.activations


def test_checkpointing_policy():
    b7 = estimate_teacher_memory("efficientnet_b7", 8, 64, torch.bfloat16)
    need = b7.training_bytes(checkpointed=False)
    assert b7.training_bytes(checkpointed=True) < need
    assert should_checkpoint("efficientnet-b7", 8, 64, free_bytes=need)  # alias, headroom short
    assert not should_checkpoint("efficientnet_b7", 8, 64, free_bytes=2 * need)
    assert not should_checkpoint("efficientnet_b7", 8, 64, free_bytes=None)  # CPU


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_output_depends_on_ir(name):
    model = teacher(name).eval()
    rgb, ir = inputs(name)
    _, other_ir = inputs(name, seed=1)
    with torch.no_grad():
        _, embedding = model(rgb, ir)
        _, with_other_ir = model(rgb, other_ir)
    assert relative_change(embedding, with_other_ir) > 1e-3


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_rgb_only(name):
    model = teacher(name, modalities="rgb").eval()
    with torch.no_grad():
        logits, embedding = model(inputs(name)[0])
    assert_outputs(model, logits, embedding)
    assert all(key.startswith("backbone.") for key in model.state_dict())  # no IR stem, no fusion


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_three_channel_ir(name):
    model = teacher(name, ir_channels=3).eval()
    rgb, ir = inputs(name, ir_channels=3)
    with torch.no_grad():
        assert_outputs(model, *model(rgb, ir))
    with pytest.raises(ValueError, match="3-channel IR"):
        model(rgb, ir[:, :1])


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_needs_ir(name):
    with pytest.raises(ValueError, match="pass ir"):
        teacher(name)(inputs(name)[0])


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_ir_stream_is_a_stem_not_a_second_backbone(name):
    fused = parameter_count(teacher(name))
    rgb_only = parameter_count(teacher(name, modalities="rgb"))
    assert 0 < fused - rgb_only < 0.1 * rgb_only  # ResNet-50's 1x1 fusion conv: 9%


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_config_round_trip(name):
    model = teacher(name)
    config = json.loads(json.dumps(model.model_config()))
    assert config["name"] == name
    rebuilt = create_teacher(**config)
    assert ({k: v.shape for k, v in rebuilt.state_dict().items()}
            == {k: v.shape for k, v in model.state_dict().items()})


@pytest.mark.parametrize("name", ["swin_tiny", "vit_b_16"])
@pytest.mark.parametrize("size", [96, 160])
def test_transformer_teachers_other_sizes(name, size):
    model = create_teacher(name, img_size=size).eval()
    rgb, ir = inputs(size=size)
    with torch.no_grad():
        assert_outputs(model, *model(rgb, ir))


def test_swin_window_rule_at_64px():
    stages = teacher("swin_tiny").backbone.layers
    windows = [stage.blocks[0].window_size for stage in stages]
    assert windows == [(7, 7), (7, 7), (4, 4), (2, 2)]  # stages 16, 8, 4, 2 tokens wide
    assert not any(stage.blocks[-1].shift_size[0] for stage in stages[2:])


def test_inputs_are_renormalised_for_the_backbone():
    from firekd.data.transforms import normalize

    pixels = torch.rand(1, 3, 4, 4)
    rgb, ir = normalize(pixels, pixels[:, :1])
    vit = teacher("vit_b_16")  # timm's ViT-B/16 weights expect mean = std = 0.5
    assert torch.allclose(vit.rgb_adapter(rgb), (pixels - 0.5) / 0.5, atol=1e-5)
    assert torch.allclose(vit.ir_adapter(ir), (pixels[:, :1] - 0.5) / 0.5, atol=1e-5)
    assert isinstance(teacher("resnet18").rgb_adapter, nn.Identity)  # ImageNet statistics


def test_spec_teachers_are_registered_with_folder_aliases():
    assert TEACHERS[:4] == ["resnet152", "efficientnet_b7", "swin_tiny", "vit_b_16"]
    assert {"resnet10t", "resnet18", "resnet50"} <= set(TEACHERS)
    for alias, name in [("resnet-152", "resnet152"), ("efficientnet-b7", "efficientnet_b7"),
                        ("swin-tiny", "swin_tiny"), ("vit-b-16", "vit_b_16"),
                        ("ResNet-152", "resnet152")]:
        assert resolve_teacher_name(alias) == name
        assert alias.lower() in teacher_aliases(name)


def test_alias_builds_the_canonical_teacher():
    model = create_teacher("resnet-18", img_size=SIZE)
    assert model.model_config()["name"] == "resnet18"


def test_unknown_teacher_lists_known_names():
    with pytest.raises(ModelError) as info:
        create_teacher("resnet-153")
    message = str(info.value)
    assert "\n" not in message and "resnet-153" in message
    assert all(name in message for name in TEACHERS) and "swin-tiny" in message


@pytest.mark.parametrize("kwargs, match", [({"ir_channels": 2}, "ir_channels"),
                                           ({"modalities": "ir"}, "modalities"),
                                           ({"img_size": 100}, "multiple of 32")])
def test_bad_teacher_arguments(kwargs, match):
    with pytest.raises(ModelError, match=match):
        create_teacher("resnet18", **kwargs)


# --- pretrained weights -----------------------------------------------------------------------

def test_unavailable_pretrained_weights_fail_clearly(monkeypatch):
    real = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'\nmore detail")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ModelError) as info:
        create_teacher("resnet18", pretrained=True)
    message = str(info.value)
    assert "\n" not in message and "resnet18" in message and "couldn't connect" in message
    assert "--no_pretrained" in message and "--teacher_weights PATH" in message
    with pytest.raises(ModelError, match="--student_weights PATH"):
        create_student("mobilenetv3_small_100", pretrained=True)


def test_model_without_imagenet_weights_is_no_silent_random_init():
    # timm has no weights for this architecture: no download is attempted, and no fallback
    with pytest.raises(ModelError, match="mobilenetv2_035"):
        create_student("mobilenetv2_035", pretrained=True)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    torch.manual_seed(1)
    source = timm.create_model("resnet18")  # ImageNet-shaped: 1000 classes
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(source.state_dict(), path)
    return path, source


@pytest.mark.parametrize("ir_channels", [1, 3])
def test_pretrained_file_loads_and_seeds_the_ir_stem(resnet18_file, ir_channels):
    path, source = resnet18_file
    model = create_teacher("resnet18", pretrained_file=str(path), ir_channels=ir_channels)
    assert torch.equal(model.backbone.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    rgb_stem = source.conv1.weight  # (64,3,7,7)
    ir_stem = model.ir_stem[0].weight  # (64,C,7,7)
    assert ir_stem.shape[1] == ir_channels
    # gray IR through the IR stem == gray RGB through the RGB stem (same activation scale)
    assert torch.allclose(ir_stem.sum(dim=1), rgb_stem.sum(dim=1), atol=1e-6)
    assert torch.allclose(ir_stem[:, 0], rgb_stem.mean(dim=1) * 3 / ir_channels)
    assert torch.equal(model.ir_stem[1].running_var, source.bn1.running_var)


@pytest.mark.parametrize("ir_channels", [1, 3])
def test_a_deep_stem_gets_an_ir_copy_whose_first_conv_takes_the_ir_channels(ir_channels):
    model = teacher("resnet10t", ir_channels=ir_channels)
    rgb_stem, ir_stem = model.backbone.conv1, model.ir_stem[0]  # Sequential(conv, bn, act, ...)
    assert ir_stem[0].weight.shape[1] == ir_channels and rgb_stem[0].weight.shape[1] == 3
    assert torch.allclose(ir_stem[0].weight.sum(dim=1), rgb_stem[0].weight.sum(dim=1), atol=1e-6)
    assert torch.equal(ir_stem[3].weight, rgb_stem[3].weight)  # the rest of the stem: a copy
    assert ir_stem[3].weight is not rgb_stem[3].weight  # not shared: IR learns its own stem


def test_pretrained_file_missing_or_foreign(tmp_path, resnet18_file):
    with pytest.raises(ModelError, match="not found"):
        create_teacher("resnet18", pretrained_file=str(tmp_path / "none.pth"))
    foreign = tmp_path / "foreign.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, foreign)
    with pytest.raises(ModelError, match="does not hold resnet18 weights"):
        create_teacher("resnet18", pretrained_file=str(foreign))
    with pytest.raises(ModelError, match="does not hold resnet50 weights"):
        create_teacher("resnet50", pretrained_file=str(resnet18_file[0]))


def test_pretrained_file_resizes_vit_position_embedding(tmp_path):
    source = timm.create_model("vit_base_patch16_224")
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    model = create_teacher("vit_b_16", pretrained_file=str(path), img_size=SIZE)
    assert model.backbone.pos_embed.shape == (1, 1 + (SIZE // 16) ** 2, 768)
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


# --- students ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", STUDENTS)
def test_student_forward_and_gradients(name):
    model = copy.deepcopy(student(name)).train()
    logits, embedding = model(inputs(name)[0])
    assert_outputs(model, logits, embedding)
    assert_every_parameter_learns(model, logits, embedding)


@pytest.mark.parametrize("name", STUDENTS)
def test_student_head_and_config_round_trip(name):
    model = student(name).eval()
    rgb = inputs(name)[0]
    with torch.no_grad():
        logits, embedding = model(rgb)
        features = model.forward_features(rgb)
        assert torch.allclose(model.forward_head(features, pre_logits=True), embedding)
        assert torch.allclose(model.forward_head(features), logits, atol=1e-6)
    rebuilt = create_student(**json.loads(json.dumps(model.model_config())))
    assert ({k: v.shape for k, v in rebuilt.state_dict().items()}
            == {k: v.shape for k, v in model.state_dict().items()})


def test_student_is_light():
    model = student("firekd_student")
    assert 1.0e6 <= parameter_count(model) <= 1.4e6
    assert model.embed_dim == 256
    assert gflops(model, torch.randn(1, 3, 224, 224)) <= 0.6


def test_unknown_student_lists_known_names():
    with pytest.raises(ModelError, match="firekd_student.*any timm model name"):
        create_student("no_such_student")


# --- efficiency metrics, CLI ------------------------------------------------------------------

def test_parameter_count_and_gflops_of_a_linear_layer():
    layer = nn.Linear(10, 5)
    layer.bias.requires_grad_(False)
    assert parameter_count(layer) == 55
    assert parameter_count(layer, trainable_only=True) == 50
    layer.train()
    assert gflops(layer, torch.randn(1, 10)) == pytest.approx(2 * 10 * 5 / 1e9)
    assert layer.training  # mode restored


class _Attention(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def test_gflops_counts_fused_attention():
    heads, tokens, dim = 4, 16, 8
    q = torch.randn(1, heads, tokens, dim)
    expected = 2 * (2 * heads * tokens * tokens * dim)  # q @ k^T and attn @ v, 2 per mul-add
    assert gflops(_Attention(), q, q, q) * 1e9 == pytest.approx(expected)


def test_models_command_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["models", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--img_size" in out and "--ir_channels" in out


def test_models_command_prints_a_table(capsys):
    code = main(["models", "--img_size", "64", "--teachers", "resnet-18",
                 "--students", "firekd_student"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and lines[0].startswith("| kind")
    assert [line.split("|")[2].strip() for line in lines[2:]] == ["resnet18", "firekd_student"]


def _with_random_bn_statistics(model: nn.Module) -> nn.Module:
    """A copy in eval whose BatchNorm running statistics are not the identity's (mean 0, var 1)."""
    model = copy.deepcopy(model).eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(1 + 0.5 * torch.rand(m.running_var.shape, generator=g))
    return model


@pytest.mark.parametrize("name", [*TEACHERS, *STUDENTS])
def test_sync_batchnorm_keeps_every_activation(name):
    """--sync_bn converts every BatchNorm, timm's fused BatchNormAct2d included, and leaves the
    eval outputs as they were (torch's own converter silently dropped the fused activations)."""
    from firekd.engine.runtime import sync_batchnorm

    model = _with_random_bn_statistics(teacher(name) if name in TEACHERS else student(name))
    rgb, ir = inputs(name)
    args = (rgb, ir) if getattr(model, "modalities", "rgb") == "rgb+ir" else (rgb,)
    synced = sync_batchnorm(copy.deepcopy(model)).eval()
    with torch.no_grad():
        before, after = model(*args), synced(*args)
    plain = [m for m in synced.modules() if type(m) in (nn.BatchNorm1d, nn.BatchNorm2d)]
    assert not plain, f"{len(plain)} BatchNorm layers left unsynchronised"
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b)
