"""Models converted through ``torch.export`` against torch itself.

Every torchvision classification family, a few timm families, a user's own module and the
edited ResNets the zoo refuses, in small configurations at 32 px (AlexNet 64, Inception v3
75; GoogLeNet, Inception v3 and MNASNet keep one block of each kind, the repeats of equal
shape replaced by identities), with seeded random weights: parameters torch initialises to zero (ViT's head, layer
scales) and every batch norm's running statistics are drawn at random so no branch is
vacuous. Tolerance: ``max |ours - torch| <= 1e-4 * max |torch|`` on a batch of three (the
models are converted for a batch of one: the batch size stays free). Captum is the peer
for gradients at the input and at torch module paths: ``Saliency`` on ConvNeXt,
EfficientNet, Swin, ViT and the user module, ``LayerGradCam`` at stages, blocks, a
squeeze-excitation gate and the user module's convolutions (their maps NCHW inside, NHWC
out).
"""

from __future__ import annotations

import functools

import captum.attr as ca
import jax
import numpy as np
import pytest
import timm
import timm.models._efficientnet_builder
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models import convnext, densenet, efficientnet, mobilenetv3, regnet, resnet, swin_transformer, vgg

import converters
import jaxplain as jx
from jaxplain.nets.exported import ExportedGraph
from tests.parity._torch import assert_close, nchw, nhwc

TOLERANCE = 1e-4
forward = jax.jit(lambda model, images: model(images), compiler_options={"xla_backend_optimization_level": 0})


def _randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``module`` in eval mode with its all-zero parameters and batch-norm statistics drawn at random."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if not parameter.abs().sum():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
        for norm in module.modules():
            if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm) and norm.running_mean is not None:
                norm.running_mean.copy_(torch.rand(norm.num_features, generator=generator) - 0.5)
                norm.running_var.copy_(torch.rand(norm.num_features, generator=generator) + 0.5)
    return module.eval()


def _vgg() -> torch.nn.Module:
    model = vgg.VGG(vgg.make_layers([8, "M", 16, "M", 512, "M"], batch_norm=True), num_classes=10, init_weights=False)
    model.classifier = torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Linear(512 * 7 * 7, 10))
    return model


def _alexnet() -> torch.nn.Module:
    model = torchvision.models.alexnet(num_classes=10)
    model.classifier = torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Linear(256 * 6 * 6, 10))
    return model


def _swin(v2: bool) -> torch.nn.Module:
    extra = (
        {"block": swin_transformer.SwinTransformerBlockV2, "downsample_layer": swin_transformer.PatchMergingV2}
        if v2
        else {}
    )
    depths = [2, 1] if v2 else [2]
    return torchvision.models.SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=depths,
        num_heads=[1, 2][: len(depths)],
        window_size=[4, 4],
        num_classes=10,
        **extra,
    )


def _resnet18_edited() -> torch.nn.Module:
    """A resnet18 with both edits the zoo refuses: a CIFAR stem and a ``Sequential`` head."""
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = torch.nn.Identity()
    model.fc = torch.nn.Sequential(
        torch.nn.Linear(512, 32), torch.nn.ReLU(), torch.nn.Dropout(), torch.nn.Linear(32, 10)
    )
    return model


def _pruned(model: torch.nn.Module, names: tuple[str, ...]) -> torch.nn.Module:
    """``model`` with the named blocks (whose output shape equals their input's) replaced by identities."""
    for name in names:
        setattr(model, name, torch.nn.Identity())
    return model


def _mnasnet() -> torch.nn.Module:
    """MNASNet 0.5 with one block per stack."""
    model = torchvision.models.mnasnet0_5(num_classes=10)
    for index, layer in enumerate(model.layers):
        if isinstance(layer, torch.nn.Sequential) and len(layer) > 1:
            model.layers[index] = layer[:1]
    return model


def _mobilenet_v3() -> torch.nn.Module:
    config = functools.partial(mobilenetv3.InvertedResidualConfig, width_mult=1.0)
    setting = [
        config(8, 3, 8, 8, True, "RE", 2, 1),
        config(8, 5, 24, 16, True, "HS", 2, 1),
        config(16, 3, 48, 16, False, "HS", 1, 1),
    ]
    return torchvision.models.MobileNetV3(setting, last_channel=64, num_classes=10)


def _timm_mobilenet_v3() -> torch.nn.Module:
    blocks = [["ds_r1_k3_s2_e1_c16_se0.25_nre"], ["ir_r1_k3_s2_e4.5_c24_nre"], ["ir_r1_k5_s2_e4_c40_se0.25"]]
    return timm.models.mobilenetv3.MobileNetV3(
        timm.models._efficientnet_builder.decode_arch_def(blocks),
        num_features=64,
        act_layer=torch.nn.Hardswish,
        num_classes=10,
    )


class UserNet(torch.nn.Module):
    """A user's own classifier: functional ops, a concatenation, gates, GELU, a residual sum."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.left = torch.nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.right = torch.nn.Conv2d(8, 8, 1)
        self.norm = torch.nn.BatchNorm2d(16)
        self.mix = torch.nn.Conv2d(16, 8, 3, stride=2, padding=1)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.stem(x))
        gated = torch.sigmoid(x) * x
        branches = torch.cat([self.left(gated), F.hardswish(self.right(x))], dim=1)
        y = self.mix(F.relu(self.norm(branches)))
        y = y + F.avg_pool2d(x, 2)[:, :8]
        y = F.gelu(y, approximate="tanh") * torch.tanh(y).softmax(dim=1)
        return self.head(F.adaptive_avg_pool2d(y, 1).flatten(1))


FAMILIES = {
    "alexnet": (_alexnet, 64),
    "convnext": (
        lambda: torchvision.models.ConvNeXt(
            [convnext.CNBlockConfig(8, 16, 1), convnext.CNBlockConfig(16, None, 1)], num_classes=10
        ),
        32,
    ),
    "densenet": (lambda: densenet.DenseNet(8, (2, 2), 16, bn_size=2, num_classes=10), 32),
    "efficientnet_v1": (
        lambda: torchvision.models.EfficientNet(
            [efficientnet.MBConvConfig(1, 3, 1, 8, 8, 1), efficientnet.MBConvConfig(6, 5, 2, 8, 16, 1)],
            0.2,
            num_classes=10,
        ),
        32,
    ),
    "efficientnet_v2": (
        lambda: torchvision.models.EfficientNet(
            [
                efficientnet.FusedMBConvConfig(1, 3, 1, 8, 8, 1),
                efficientnet.FusedMBConvConfig(4, 3, 2, 8, 16, 1),
                efficientnet.MBConvConfig(4, 3, 2, 16, 24, 1),
            ],
            0.2,
            last_channel=64,
            num_classes=10,
        ),
        32,
    ),
    "googlenet": (
        lambda: _pruned(
            torchvision.models.googlenet(num_classes=10, aux_logits=False, init_weights=False),
            ("inception4b", "inception4c", "inception5a"),
        ),
        32,
    ),
    "inception_v3": (
        lambda: _pruned(
            torchvision.models.Inception3(num_classes=10, aux_logits=False, init_weights=False),
            ("Mixed_5d", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7c"),
        ),
        75,
    ),
    "maxvit": (
        lambda: torchvision.models.MaxVit(
            input_size=(32, 32),
            stem_channels=8,
            partition_size=2,
            block_channels=[16],
            block_layers=[1],
            head_dim=8,
            stochastic_depth_prob=0.0,
            num_classes=10,
        ),
        32,
    ),
    "mnasnet": (_mnasnet, 32),
    "mobilenet_v2": (
        lambda: torchvision.models.MobileNetV2(10, inverted_residual_setting=[[1, 8, 1, 1], [6, 16, 2, 2]]),
        32,
    ),
    "mobilenet_v3": (_mobilenet_v3, 32),
    "regnet_x": (lambda: regnet.RegNet(regnet.BlockParams.from_init_params(2, 8, 8.0, 2.0, 8), num_classes=10), 32),
    "regnet_y": (
        lambda: regnet.RegNet(regnet.BlockParams.from_init_params(2, 8, 8.0, 2.0, 8, se_ratio=0.25), num_classes=10),
        32,
    ),
    "resnext": (
        lambda: resnet.ResNet(resnet.Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=8, num_classes=10),
        32,
    ),
    "shufflenet_v2": (lambda: torchvision.models.ShuffleNetV2([1, 2, 1], [8, 16, 32, 64, 128], num_classes=10), 32),
    "squeezenet": (lambda: torchvision.models.squeezenet1_1(num_classes=10), 32),
    "swin_v1": (lambda: _swin(False), 32),
    "swin_v2": (lambda: _swin(True), 32),
    "vgg": (_vgg, 32),
    "vit": (
        lambda: torchvision.models.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
        ),
        32,
    ),
    "resnet18_cifar_stem_sequential_head": (_resnet18_edited, 16),
    "user_module": (UserNet, 32),
    "timm_deit_distilled": (
        lambda: timm.models.deit.VisionTransformerDistilled(
            img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10
        ),
        32,
    ),
    "timm_convnext": (
        lambda: timm.models.convnext.ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), num_classes=10),
        32,
    ),
    "timm_resnet_d": (
        lambda: timm.models.resnet.ResNet(
            timm.models.resnet.Bottleneck, [1, 1, 1, 1], stem_width=16, stem_type="deep", avg_down=True, num_classes=10
        ),
        32,
    ),
    "timm_regnet": (
        lambda: timm.models.regnet.RegNet(timm.models.regnet.RegNetCfg(4, 8, 64.0, 2.0, group_size=8), num_classes=10),
        32,
    ),
    "timm_mobilenetv3": (_timm_mobilenet_v3, 32),
}
"""Family -> (factory of a small torch model, input side)."""

ZOO_FAMILIES = {"alexnet", "densenet", "mobilenet_v2", "resnext", "squeezenet", "vgg"}
"""Families the hand-written zoo converts: exported directly (``converters.export_model``) to test that path."""


@functools.cache
def _pair(family: str) -> tuple[torch.nn.Module, jx.Model, np.ndarray]:
    factory, side = FAMILIES[family]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch_model = _randomised(factory())
    convert = converters.export_model if family in ZOO_FAMILIES else converters.from_torch
    model = convert(torch_model, input_shape=(1, side, side, 3))
    images = np.random.default_rng(1).normal(size=(3, side, side, 3)).astype(np.float32)
    return torch_model, model, images


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_logits_equal_torch(family):
    torch_model, model, images = _pair(family)
    assert isinstance(model.module, ExportedGraph)
    with torch.no_grad():
        expected = torch_model(nchw(images)).numpy()
    assert_close(forward(model, images), expected, rtol=TOLERANCE)


@pytest.mark.parametrize("family", ["convnext", "efficientnet_v1", "swin_v1", "user_module", "vit"])
def test_saliency_equals_captum(family):
    torch_model, model, images = _pair(family)
    targets = [1, 4, 7]
    theirs = ca.Saliency(torch_model).attribute(nchw(images).requires_grad_(), target=targets, abs=True)
    assert_close(jx.saliency(model, images, np.asarray(targets)), nhwc(theirs), rtol=TOLERANCE)


@pytest.mark.parametrize(
    ("family", "path"),
    [
        ("convnext", "features.1"),  # a stage
        ("convnext", "features.3.0"),  # a CNBlock: layer scale and the residual sum in its own forward
        ("efficientnet_v1", "features.2.0.block.2"),  # a squeeze-excitation gate's output
        ("efficientnet_v1", "features.3"),  # the last convolution, batch norm and SiLU
        ("user_module", "left"),  # a grouped convolution of the sigmoid(x) * x gate
        ("user_module", "mix"),  # a strided convolution of the concatenation
    ],
)
def test_layer_gradcam_at_a_torch_module_path_equals_captum(family, path):
    """The converted model's layers keep torch's NCHW maps (``layer_channel_axis=1``); its Grad-CAM
    map comes back NHWC, Captum's ``[N, 1, h, w]`` transposed."""
    torch_model, model, images = _pair(family)
    targets = [1, 4, 7]
    theirs = ca.LayerGradCam(torch_model, torch_model.get_submodule(path)).attribute(nchw(images), target=targets)
    assert_close(jx.layer_gradcam(model, images, np.asarray(targets), layer=path), nhwc(theirs), rtol=TOLERANCE)


def test_ops_run_under_their_torch_module_paths():
    _, model, images = _pair("vit")
    jaxpr = jax.make_jaxpr(model)(images)
    stacks = {str(eqn.source_info.name_stack) for eqn in jaxpr.jaxpr.eqns}
    for path in (
        "conv_proj",
        "encoder.layers.encoder_layer_1.ln_1",
        "encoder.layers.encoder_layer_0.mlp.1",
        "heads.head",
    ):
        assert path in model.module.program.paths()
        assert any(stack.endswith(path) for stack in stacks), path
    assert {"params", "buffers"} >= set(model.variables)
    assert model.variables["params"]["conv_proj.weight"].shape == (32, 3, 8, 8)


def _equations(jaxpr: jax.extend.core.Jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)
            if isinstance(inner, jax.extend.core.Jaxpr):
                yield from _equations(inner)


def test_attention_in_projection_does_not_copy_its_weight_per_token():
    """``F.linear`` on ``nn.MultiheadAttention``'s ``(tokens, batch, dim)`` input decomposes to a
    ``bmm`` of the weight ``expand``-ed over the tokens; the converted model multiplies by the
    weight itself (the per-token copies made ViT-B/16's compiled CPU forward about 100x slower)."""
    _, model, images = _pair("vit")
    weight = model.variables["params"]["encoder.layers.encoder_layer_0.self_attention.in_proj_weight"]
    jaxpr = jax.make_jaxpr(model)(images)
    copies = [
        eqn.outvars[0].aval.shape
        for eqn in _equations(jaxpr.jaxpr)
        if eqn.primitive.name == "broadcast_in_dim" and sorted(eqn.invars[0].aval.shape) == sorted(weight.shape)
    ]
    assert copies == []


class _Sort(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sort(x, dim=1).values


class _Sorted(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
        self.head = torch.nn.Sequential(torch.nn.Linear(144, 10), _Sort())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sort(self.head(self.features(x)), dim=1).values


class _DataDependent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if y.sum() > 0:
            return y.mean((2, 3))
        return y.amax((2, 3))


def test_op_without_jax_implementation_is_named_with_its_path():
    with pytest.raises(ValueError, match=r"_Sorted: no JAX implementation of aten\.sort\.\w+ \(in head\.1, <root>\)"):
        converters.from_torch(_Sorted().eval(), input_shape=(1, 8, 8, 3))


def test_transposed_convolution_is_named_with_its_path():
    torch_model = torch.nn.Sequential(torch.nn.ConvTranspose2d(3, 4, 3), torch.nn.Flatten()).eval()
    with pytest.raises(ValueError, match=r"aten\.convolution\.default with transposed=True \(in 0\)"):
        converters.from_torch(torch_model, input_shape=(1, 8, 8, 3))


def test_data_dependent_control_flow_passes_on_what_export_said():
    with pytest.raises(
        ValueError, match=r"torch.export could not capture _DataDependent.*torch.export said: .*data.dependent"
    ):
        converters.from_torch(_DataDependent().eval(), input_shape=(1, 8, 8, 3))


def test_rejected_input_shape_is_named():
    with pytest.raises(ValueError, match=r"_DataDependent rejects inputs of shape \(1, 8, 8, 5\)"):
        converters.from_torch(_DataDependent().eval(), input_shape=(1, 8, 8, 5))


def test_train_mode_is_converted_in_eval_mode_with_a_warning():
    torch_model = _randomised(
        torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten())
    )
    torch_model.train()
    with pytest.warns(UserWarning, match="Sequential is in train mode; it is converted in eval mode"):
        model = converters.from_torch(torch_model, input_shape=(1, 6, 6, 3))
    assert torch_model.training
    images = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype(np.float32)
    with torch.no_grad():
        expected = torch_model.eval()(nchw(images)).numpy()
    assert_close(model(images), expected, rtol=TOLERANCE)


def test_state_dict_file_loads_into_a_converted_model(tmp_path):
    _, model, images = _pair("user_module")
    with torch.random.fork_rng():
        torch.manual_seed(5)
        other = _randomised(UserNet(), seed=5)
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    with torch.no_grad():
        expected = other(nchw(images)).numpy()
    assert_close(forward(converters.load(path, model), images), expected, rtol=TOLERANCE)


def test_mismatched_state_dict_is_summarised(tmp_path):
    _, model, _ = _pair("user_module")
    state = UserNet().state_dict()
    del state["mix.weight"]
    state["mix.extra"] = torch.zeros(3)
    state["head.weight"] = torch.zeros(10, 9)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as raised:
        converters.load(path, model)
    message = str(raised.value)
    assert "1 missing, 1 unexpected, 1 mis-shaped" in message
    assert "missing: mix.weight" in message and "unexpected: mix.extra" in message
    assert "head.weight: got (10, 9), expected (10, 8)" in message
