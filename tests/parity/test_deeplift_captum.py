"""DeepLift, DeepLiftShap and LayerDeepLift against Captum on the same converted weights.

ResNet-18 and VGG11 (seeded random weights, randomised BatchNorm state), 32x48 inputs,
one target per example, zero, per-channel and full baselines. Tolerance: max abs error
<= 1e-3 x the reference's max abs value; convergence deltas within 1e-3 x the largest
per-example sum of |attributions|.

Test-side adaptations of the torch models (the converted Flax weights are untouched):

- torchvision's ``BasicBlock`` calls its one ``self.relu`` twice. Captum's DeepLift
  stores a module's input and output on the module, so a module called twice raises
  (captum#578, #934). Each block gets one ``nn.ReLU`` per call site and an equivalent
  forward (:func:`one_relu_per_call_site`); the zoo already has one module per site.
- Captum's hooks clash where a hooked module feeds another directly (ReLU into max
  pool, in every torchvision network): the ReLU records its output gradient before
  the pool's hook rewrites it, so it receives the pool's ordinary gradient and the
  attributions miss ``F(x) - F(x')``. ``flavour="captum"`` reproduces that and is
  compared with stock Captum. Our default flavour is compared with Captum on a VGG11
  whose pools get a ``Clone`` module in front (:func:`pools_after_a_clone`): then every
  Captum rule takes effect and Captum satisfies summation-to-delta. ResNet's stem pool
  is left out of that comparison: its windows overlap, and Captum's ``max_unpool2d``
  keeps one window's share where two share a maximum (also reproduced by the Captum
  flavour, on the small network below).
"""

from __future__ import annotations

import contextlib
import copy
import types

import captum.attr as ca
import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import torchvision

import jaxplain as jx
from jaxplain.nets import layers
from jaxplain.nets.vgg import VGG
from tests.parity._torch import assert_close, converted, in_float64, nchw, nhwc

ARCHS = ["resnet18", "vgg11"]
TARGETS = np.array([3, 7])

pytestmark = pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning")


def one_relu_per_call_site(model: torch.nn.Module) -> torch.nn.Module:
    """Give each torchvision ``BasicBlock`` two ReLU modules and the same forward using them."""

    def forward(block, x):
        identity = x if block.downsample is None else block.downsample(x)
        out = block.relu1(block.bn1(block.conv1(x)))
        return block.relu2(block.bn2(block.conv2(out)) + identity)

    for block in model.modules():
        if isinstance(block, torchvision.models.resnet.BasicBlock):
            block.relu1, block.relu2 = torch.nn.ReLU(), torch.nn.ReLU()
            block.forward = types.MethodType(forward, block)
    return model


class Clone(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def pools_after_a_clone(model: torch.nn.Module) -> torch.nn.Module:
    """Put a ``Clone`` in front of every max pool, so no hooked module feeds another."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.MaxPool2d):
                setattr(parent, name, torch.nn.Sequential(Clone(), child))
    return model


@pytest.fixture(scope="module")
def models():
    pairs = {arch: converted(arch, seed=2) for arch in ARCHS}
    one_relu_per_call_site(pairs["resnet18"][0])
    return pairs


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(4).normal(size=(2, 32, 48, 3)).astype(np.float32)


def baselines_of(kind: str, images: np.ndarray):
    """``(ours, Captum's)`` baselines of one kind."""
    rng = np.random.default_rng(5)
    if kind == "zero":
        return None, None
    if kind == "channel":
        channel = rng.normal(size=3).astype(np.float32)
        return channel, nchw(np.broadcast_to(channel, images.shape))
    full = (0.5 * rng.normal(size=images.shape)).astype(np.float32)
    return full, nchw(full)


def assert_deltas_close(ours, theirs, attributions) -> None:
    scale = np.abs(np.asarray(attributions)).reshape(len(attributions), -1).sum(axis=1).max()
    np.testing.assert_allclose(np.asarray(ours).ravel(), np.asarray(theirs).ravel(), atol=1e-3 * scale)


def captum_deeplift(explainer, images, baselines, **kwargs):
    out, delta = explainer.attribute(
        nchw(images).requires_grad_(),
        baselines=baselines,
        target=torch.from_numpy(kwargs.pop("target", TARGETS)),
        return_convergence_delta=True,
        **kwargs,
    )
    return (nhwc(out) if out.dim() == 4 else out.detach().numpy()), delta.detach().numpy()


DEEPLIFT_CASES = [("resnet18", "zero"), ("resnet18", "channel"), ("resnet18", "full"), ("vgg11", "zero"), ("vgg11", "full")]


@contextlib.contextmanager
def prepared(torch_model, model, images, kind):
    """``(torch model, model, images, our baselines, Captum's)``, in float64 on both sides for VGG11.

    At 32x48, VGG11's second max pool holds a window whose two largest values differ by
    6e-8 (one float32 ulp of 0.49): which element wins depends on the summation order of
    the convolution before it (oneDNN, YNNPACK and Eigen each order it differently), and
    the losing side's map differs by 8% of its scale. In float64 both sides agree.
    """
    ours_baselines, their_baselines = baselines_of(kind, images)
    if not isinstance(model.module, VGG):
        yield torch_model, model, images, ours_baselines, their_baselines
        return
    with in_float64(torch_model, model, images, ours_baselines, their_baselines) as doubled:
        yield doubled


@pytest.mark.parametrize("arch,kind", DEEPLIFT_CASES)
def test_deeplift_captum_flavour(models, images, arch, kind):
    with prepared(*models[arch], images, kind) as (torch_model, model, images, ours_baselines, their_baselines):
        ours, our_delta = jx.deeplift(
            model, images, TARGETS, baselines=ours_baselines, return_convergence_delta=True, flavour="captum"
        )
        theirs, their_delta = captum_deeplift(ca.DeepLift(torch_model), images, their_baselines)
    assert_close(ours, theirs)
    assert_deltas_close(our_delta, their_delta, theirs)


def test_deeplift_equals_captum_where_its_hooks_do_not_clash(models, images):
    torch_model, model = models["vgg11"]
    torch_model = pools_after_a_clone(copy.deepcopy(torch_model))
    with prepared(torch_model, model, images, "full") as (torch_model, model, images, ours_baselines, their_baselines):
        ours, our_delta = jx.deeplift(model, images, TARGETS, baselines=ours_baselines, return_convergence_delta=True)
        theirs, their_delta = captum_deeplift(ca.DeepLift(torch_model), images, their_baselines)
    assert_close(ours, theirs)
    scale = np.abs(theirs).reshape(2, -1).sum(axis=1).max()
    np.testing.assert_allclose(our_delta, 0.0, atol=1e-5 * scale)
    np.testing.assert_allclose(their_delta, 0.0, atol=1e-5 * scale)


def test_deeplift_shap_captum_flavour(models, images):
    torch_model, model = models["resnet18"]
    distribution = (0.5 * np.random.default_rng(6).normal(size=(3,) + images.shape[1:])).astype(np.float32)
    ours, our_delta = jx.deeplift_shap(
        model, images, TARGETS, baselines=distribution, batch_size=2, return_convergence_delta=True, flavour="captum"
    )
    theirs, their_delta = captum_deeplift(ca.DeepLiftShap(torch_model), images, nchw(distribution))
    assert_close(ours, theirs)
    assert our_delta.shape == (2, 3)
    assert_deltas_close(our_delta, their_delta, theirs)


LAYER_CASES = [
    ("resnet18", "layer3.1.conv2", False, "zero"),
    ("resnet18", "layer4", True, "channel"),
    ("resnet18", "layer1.0.relu2", True, "full"),  # a ReLU's input: Captum skips its rule there
    ("vgg11", "features.8", False, "full"),
]


@pytest.mark.parametrize("arch,layer,to_input,kind", LAYER_CASES)
def test_layer_deeplift_captum_flavour(models, images, arch, layer, to_input, kind):
    with prepared(*models[arch], images, kind) as (torch_model, model, images, ours_baselines, their_baselines):
        ours, our_delta = jx.layer_deeplift(
            model,
            images,
            TARGETS,
            layer=layer,
            baselines=ours_baselines,
            attribute_to_layer_input=to_input,
            return_convergence_delta=True,
            flavour="captum",
        )
        explainer = ca.LayerDeepLift(torch_model, torch_model.get_submodule(layer))
        theirs, their_delta = captum_deeplift(explainer, images, their_baselines, attribute_to_layer_input=to_input)
    assert_close(ours, theirs)
    assert_deltas_close(our_delta, their_delta, theirs)


class Stack(nn.Module):
    """A sequence of zoo layers, ``(class name, keyword arguments)`` each, named 0, 1, ..."""

    specs: tuple[tuple[str, tuple[tuple[str, object], ...]], ...]

    @nn.compact
    def __call__(self, x):
        for index, (kind, options) in enumerate(self.specs):
            x = getattr(layers, kind)(**dict(options), name=str(index))(x)
        return x


def flax_stack(torch_model: torch.nn.Sequential) -> jx.Model:
    """The Flax twin of a torch ``Sequential`` of convolutions, activations and pools."""
    specs, params = [], {}
    for index, module in enumerate(torch_model):
        kind = type(module).__name__
        options: dict[str, object] = {}
        if kind == "Conv2d":
            options = {"out_channels": module.out_channels, "kernel_size": module.kernel_size}
            options["padding"] = module.padding
            params[str(index)] = {"kernel": module.weight.detach().numpy().transpose(2, 3, 1, 0)}
        elif kind == "Linear":
            options = {"out_features": module.out_features}
            params[str(index)] = {"kernel": module.weight.detach().numpy().T}
        elif kind == "MaxPool2d":
            options = {"kernel_size": module.kernel_size, "stride": module.stride, "padding": module.padding}
        elif kind == "LeakyReLU":
            options = {"negative_slope": module.negative_slope}
        elif kind == "ELU":
            options = {"alpha": module.alpha}
        elif kind == "Softplus":
            options = {"beta": module.beta, "threshold": module.threshold}
        elif kind == "Softmax":
            options = {"axis": -1}
        if kind in ("Conv2d", "Linear"):
            params[str(index)]["bias"] = module.bias.detach().numpy()
        specs.append((kind, tuple(options.items())))
    return jx.Model(Stack(tuple(specs)), {"params": params})


def every_rule_network() -> torch.nn.Sequential:
    """Every rule once: an overlapping pool after a conv (Captum's unpooling), ReLU into a
    pool (the hook clash), each elementwise activation, ReLU6 (not hooked by Captum),
    softmax over the batch (Captum's mean). Parameters x3, so outputs vary enough
    between examples for the attributions to be well above float noise."""
    torch.manual_seed(0)
    t = torch.nn
    network = t.Sequential(
        t.Conv2d(3, 6, 3, padding=1), t.MaxPool2d(3, 2, 1), t.LeakyReLU(0.1),
        t.Conv2d(6, 6, 3, padding=1), t.ELU(0.7), t.Conv2d(6, 6, 1), t.ReLU6(),
        t.Conv2d(6, 6, 3, padding=1), t.ReLU(), t.MaxPool2d(2, 2), t.Conv2d(6, 6, 1), t.Softplus(2.0, 1.0),
        t.Conv2d(6, 6, 1), t.Tanh(), t.Conv2d(6, 6, 1), t.Sigmoid(),
        t.Flatten(), t.Linear(6 * 4 * 5, 4), t.Softmax(dim=1),
    ).eval()  # fmt: skip
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.mul_(3.0)
    return network


@pytest.mark.parametrize("kind", ["full", "zero", "partly equal"])
def test_every_rule_against_captum_on_a_small_network(kind):
    """Attributions, and multipliers where the baseline equals the input on a patch: there
    the rules fall back to gradients (Captum's max pool to its first row's, broadcast)."""
    torch_model = every_rule_network()
    model = flax_stack(torch_model)
    rng = np.random.default_rng(7)
    images = rng.normal(size=(2, 16, 20, 3)).astype(np.float32)
    baselines = rng.normal(size=images.shape).astype(np.float32)
    if kind == "zero":
        baselines[:] = 0.0
    if kind == "partly equal":
        baselines[:, 2:14, 3:17] = images[:, 2:14, 3:17]
    multiply = kind != "partly equal"
    targets = np.array([0, 2])
    forward = jax.jit(lambda m, x: m(x))
    np.testing.assert_allclose(forward(model, images), torch_model(nchw(images)).detach().numpy(), rtol=1e-5, atol=1e-6)
    options = {"baselines": baselines, "multiply_by_inputs": multiply, "flavour": "captum"}
    ours, our_delta = jx.deeplift(model, images, targets, return_convergence_delta=True, **options)
    explainer = ca.DeepLift(torch_model, multiply_by_inputs=multiply)
    theirs, their_delta = captum_deeplift(explainer, images, nchw(baselines), target=targets)
    assert_close(ours, theirs)
    assert_deltas_close(our_delta, their_delta, theirs)
    if kind == "partly equal":
        assert np.abs(theirs[:, 5:10, 6:12]).max() > 0, "the fallbacks should reach the patch"
    else:
        assert np.abs(their_delta).max() > 1e-3, "Captum's departures should show in its delta"
