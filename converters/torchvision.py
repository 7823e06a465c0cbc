"""Recognise torchvision models, build the matching zoo module and check it fits.

A recogniser reads the few numbers a torchvision model is built from (VGG's layer
widths, DenseNet's block sizes, ...) off the torch instance and builds the zoo
module. :func:`structure_mismatches` then compares every torch leaf with the zoo
module at the same path (type and hyper-parameters), so a model that merely looks
like a torchvision one is refused with the offending paths named.
"""

from __future__ import annotations

from itertools import count, takewhile
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import torch

from jaxplain.nets import alexnet, densenet, layers, mobilenet, resnet, squeezenet, vgg

SUPPORTED_LEAVES: tuple[type, ...] = (
    torch.nn.Conv2d,
    torch.nn.Linear,
    torch.nn.BatchNorm2d,
    torch.nn.ReLU,
    torch.nn.ReLU6,
    torch.nn.MaxPool2d,
    torch.nn.AvgPool2d,
    torch.nn.AdaptiveAvgPool2d,
    torch.nn.Dropout,
    torch.nn.Identity,
    torch.nn.Flatten,
)


def unsupported_modules(module: torch.nn.Module) -> list[str]:
    """``"path (Type)"`` for every leaf module the zoo has no counterpart for."""
    found = []
    for path, child in module.named_modules():
        if next(child.children(), None) is None and not isinstance(child, SUPPORTED_LEAVES):
            found.append(f"{path or '<root>'} ({type(child).__module__}.{type(child).__name__})")
    return found


def _layer(model: torch.nn.Module, path: str, kind: type[torch.nn.Module]) -> Any:
    """The submodule at ``path``, which must be a ``kind``; ``ValueError`` naming the path otherwise."""
    try:
        found = model.get_submodule(path)
    except AttributeError:
        raise ValueError(f"{path}: missing (expected a {kind.__name__})") from None
    if not isinstance(found, kind):
        raise ValueError(f"{path}: expected a {kind.__name__}, got {type(found).__name__}")
    return found


def _resnet(model: torch.nn.Module) -> nn.Module:
    blocks = {"BasicBlock": resnet.BasicBlock, "Bottleneck": resnet.Bottleneck}
    block_name = type(_layer(model, "layer1.0", torch.nn.Module)).__name__
    if block_name not in blocks:
        raise ValueError(f"unsupported ResNet block layer1.0 ({block_name})")
    return resnet.ResNet(
        stage_sizes=tuple(len(_layer(model, f"layer{i}", torch.nn.Sequential)) for i in range(1, 5)),
        block=blocks[block_name],
        num_classes=_layer(model, "fc", torch.nn.Linear).out_features,
        groups=model.groups,
        width_per_group=model.base_width,
    )


def _vgg(model: torch.nn.Module) -> nn.Module:
    cfg: list[int | str] = []
    batch_norm = False
    for index, layer in enumerate(_layer(model, "features", torch.nn.Sequential)):
        if isinstance(layer, torch.nn.Conv2d):
            cfg.append(layer.out_channels)
        elif isinstance(layer, torch.nn.MaxPool2d):
            cfg.append(vgg.POOL)
        elif isinstance(layer, torch.nn.BatchNorm2d):
            batch_norm = True
        elif not isinstance(layer, torch.nn.ReLU):
            raise ValueError(f"features.{index}: unexpected {type(layer).__name__} in VGG features")
    num_classes = _layer(model, "classifier.6", torch.nn.Linear).out_features
    return vgg.VGG(cfg=tuple(cfg), batch_norm=batch_norm, num_classes=num_classes)


def _alexnet(model: torch.nn.Module) -> nn.Module:
    return alexnet.AlexNet(num_classes=_layer(model, "classifier.6", torch.nn.Linear).out_features)


def _squeezenet(model: torch.nn.Module) -> nn.Module:
    stem = _layer(model, "features.0", torch.nn.Conv2d)
    versions = {(width, (kernel, kernel)): version for version, (width, kernel, _) in squeezenet.LAYOUTS.items()}
    version = versions.get((stem.out_channels, stem.kernel_size))
    if version is None:
        raise ValueError(f"features.0: a {stem.out_channels}-channel {stem.kernel_size} stem is no SqueezeNet version")
    num_classes = _layer(model, "classifier.1", torch.nn.Conv2d).out_channels
    return squeezenet.SqueezeNet(version=version, num_classes=num_classes)


def _densenet(model: torch.nn.Module) -> nn.Module:
    features = _layer(model, "features", torch.nn.Sequential)
    block_config = tuple(len(child) for name, child in features.named_children() if name.startswith("denseblock"))
    growth_rate = _layer(model, "features.denseblock1.denselayer1.conv2", torch.nn.Conv2d).out_channels
    bottleneck = _layer(model, "features.denseblock1.denselayer1.conv1", torch.nn.Conv2d).out_channels
    return densenet.DenseNet(
        growth_rate=growth_rate,
        block_config=block_config,
        num_init_features=_layer(model, "features.conv0", torch.nn.Conv2d).out_channels,
        bn_size=bottleneck // growth_rate,
        num_classes=_layer(model, "classifier", torch.nn.Linear).out_features,
    )


def _mobilenet_v2(model: torch.nn.Module) -> nn.Module:
    features = _layer(model, "features", torch.nn.Sequential)
    blocks = []
    for index in range(1, len(features) - 1):
        expand = len(_layer(model, f"features.{index}.conv", torch.nn.Sequential)) == 4
        depthwise = _layer(model, f"features.{index}.conv.{int(expand)}.0", torch.nn.Conv2d)
        projection = _layer(model, f"features.{index}.conv.{int(expand) + 1}", torch.nn.Conv2d)
        blocks.append(mobilenet.BlockSpec(depthwise.out_channels, projection.out_channels, depthwise.stride[0], expand))
    return mobilenet.MobileNetV2(
        blocks=tuple(blocks),
        stem_channels=_layer(model, "features.0.0", torch.nn.Conv2d).out_channels,
        last_channel=_layer(model, f"features.{len(features) - 1}.0", torch.nn.Conv2d).out_channels,
        num_classes=_layer(model, "classifier.1", torch.nn.Linear).out_features,
    )


RECOGNISERS: dict[str, Callable[[torch.nn.Module], nn.Module]] = {
    "ResNet": _resnet,
    "VGG": _vgg,
    "AlexNet": _alexnet,
    "SqueezeNet": _squeezenet,
    "DenseNet": _densenet,
    "MobileNetV2": _mobilenet_v2,
}


def _pair(value: Any) -> Any:
    """Torch's int-or-tuple hyper-parameters as a pair (strings such as ``"same"`` kept)."""
    if isinstance(value, int):
        return (value, value)
    return value if isinstance(value, str) else tuple(value)


def _describe_torch(layer: torch.nn.Module) -> dict[str, Any]:
    """A torch leaf's type and the hyper-parameters the zoo must reproduce."""
    if isinstance(layer, torch.nn.Conv2d):
        return {
            "type": "Conv2d",
            "out_channels": layer.out_channels,
            "kernel_size": _pair(layer.kernel_size),
            "stride": _pair(layer.stride),
            "padding": _pair(layer.padding),
            "dilation": _pair(layer.dilation),
            "groups": layer.groups,
            "bias": layer.bias is not None,
            "padding_mode": layer.padding_mode,
        }
    if isinstance(layer, torch.nn.Linear):
        return {"type": "Linear", "out_features": layer.out_features, "bias": layer.bias is not None}
    if isinstance(layer, torch.nn.BatchNorm2d):
        return {
            "type": "BatchNorm2d",
            "eps": layer.eps,
            "affine": layer.affine,
            "track_running_stats": layer.track_running_stats,
        }
    if isinstance(layer, torch.nn.MaxPool2d):
        return {
            "type": "MaxPool2d",
            "kernel_size": _pair(layer.kernel_size),
            "stride": _pair(layer.stride),
            "padding": _pair(layer.padding),
            "dilation": _pair(layer.dilation),
            "ceil_mode": layer.ceil_mode,
        }
    if isinstance(layer, torch.nn.AvgPool2d):
        return {
            "type": "AvgPool2d",
            "kernel_size": _pair(layer.kernel_size),
            "stride": _pair(layer.stride),
            "padding": _pair(layer.padding),
            "ceil_mode": layer.ceil_mode,
            "count_include_pad": layer.count_include_pad,
            "divisor_override": layer.divisor_override,
        }
    if isinstance(layer, torch.nn.AdaptiveAvgPool2d):
        return {"type": "AdaptiveAvgPool2d", "output_size": _pair(layer.output_size)}
    if isinstance(layer, torch.nn.Flatten):
        return {"type": "Flatten", "start_dim": layer.start_dim, "end_dim": layer.end_dim}
    if isinstance(layer, (torch.nn.Dropout, torch.nn.Identity)):
        return {"type": "Identity"}
    return {"type": type(layer).__name__}


def _describe_zoo(module: nn.Module) -> dict[str, Any]:
    """A zoo module's type and hyper-parameters, in :func:`_describe_torch`'s terms."""
    if isinstance(module, layers.Conv2d):
        return {
            "type": "Conv2d",
            "out_channels": module.out_channels,
            "kernel_size": _pair(module.kernel_size),
            "stride": _pair(module.stride),
            "padding": _pair(module.padding),
            "dilation": _pair(module.dilation),
            "groups": module.groups,
            "bias": module.use_bias,
            "padding_mode": "zeros",
        }
    if isinstance(module, layers.Linear):
        return {"type": "Linear", "out_features": module.out_features, "bias": module.use_bias}
    if isinstance(module, layers.BatchNorm2d):
        return {"type": "BatchNorm2d", "eps": module.eps, "affine": True, "track_running_stats": True}
    if isinstance(module, (layers.MaxPool2d, layers.AvgPool2d)):
        stride = module.kernel_size if module.stride is None else module.stride
        pooling = {
            "kernel_size": _pair(module.kernel_size),
            "stride": _pair(stride),
            "padding": _pair(module.padding),
            "ceil_mode": module.ceil_mode,
        }
        if isinstance(module, layers.MaxPool2d):
            return {"type": "MaxPool2d", **pooling, "dilation": (1, 1)}
        return {"type": "AvgPool2d", **pooling, "count_include_pad": module.count_include_pad, "divisor_override": None}
    if isinstance(module, layers.AdaptiveAvgPool2d):
        return {"type": "AdaptiveAvgPool2d", "output_size": _pair(module.output_size)}
    if isinstance(module, layers.Flatten):
        return {"type": "Flatten", "start_dim": 1, "end_dim": -1}
    return {"type": type(module).__name__}


def trace_zoo_module(module: nn.Module, input_shape: Sequence[int]) -> tuple[dict[str, nn.Module], dict]:
    """The modules ``module`` calls, by dotted path, and its variables' shapes.

    One abstract trace on an NHWC input of ``input_shape``; nothing is computed.
    """
    found: dict[str, nn.Module] = {}

    def record(call: Callable[..., Any], args: tuple, kwargs: dict, context: nn.module.InterceptorContext) -> Any:
        if context.method_name == "__call__":
            found[".".join(context.module.path)] = context.module
        return call(*args, **kwargs)

    def init() -> Any:
        with nn.intercept_methods(record):
            return module.init(jax.random.PRNGKey(0), jnp.zeros(tuple(input_shape), jnp.float32))

    shapes = jax.eval_shape(init)
    return found, shapes


def _call_sites(path: str, ours: dict[str, nn.Module]) -> list[str]:
    """The zoo paths standing for torch leaf ``path``: itself, or its numbered call sites."""
    if path in ours:
        return [path]
    if path[-1:].isdigit():
        return []
    return [f"{path}{i}" for i in takewhile(lambda i: f"{path}{i}" in ours, count(1))]


def _differences(path: str, theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    if theirs["type"] != ours["type"]:
        return [f"{path}: torch has {theirs['type']}, the zoo {ours['type']}"]
    return [
        f"{path} ({theirs['type']}): {key} is {value} in torch, {ours[key]} in the zoo"
        for key, value in theirs.items()
        if ours[key] != value
    ]


def structure_mismatches(model: torch.nn.Module, ours: dict[str, nn.Module]) -> list[str]:
    """Where the zoo modules ``ours`` (from :func:`trace_zoo_module`) depart from the torch
    ``model``, one line per module path.

    Every torch leaf needs a zoo module of the same type and hyper-parameters at the
    same path; a torch activation reused at several call sites (``layer1.0.relu``)
    matches the zoo's numbered call sites (``relu1``, ``relu2``, ...). Children of a
    torch ``nn.Sequential`` are numbered by torch, so the zoo may add none there.
    """
    problems = []
    sequential_children: dict[str, set[str]] = {}
    for path, layer in model.named_modules():
        if isinstance(layer, torch.nn.Sequential):
            sequential_children[path] = {name for name, _ in layer.named_children()}
        if next(layer.children(), None) is not None:
            continue
        theirs = _describe_torch(layer)
        call_sites = _call_sites(path, ours)
        if not call_sites:
            problems.append(f"{path}: torch has {theirs['type']}, the zoo nothing")
        for site in call_sites:
            problems.extend(_differences(site, theirs, _describe_zoo(ours[site])))
    for path, zoo_module in ours.items():
        parent, _, child = path.rpartition(".")
        if parent in sequential_children and child not in sequential_children[parent]:
            problems.append(f"{path}: the zoo has {type(zoo_module).__name__}, torch's {parent} nothing")
    return problems
