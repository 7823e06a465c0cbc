"""PyTorch -> Flax conversion: the only part of jaxplain that imports torch.

>>> import torchvision, converters
>>> model = converters.from_torch(torchvision.models.resnet18())  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import torch

from converters import demo
from converters.cabrnet import from_cabrnet, is_cabrnet, load_cabrnet
from converters.core import build_model, flat_template, variables_from_state_dict
from converters.export import export_model
from converters.torchvision import RECOGNISERS, structure_mismatches, trace_zoo_module, unsupported_modules
from jaxplain import nets, weights
from jaxplain.nets import exported
from jaxplain.model import Model
from jaxplain.nets.resnet import IMAGENET_MEAN, IMAGENET_STD

_RECOGNISERS = {**RECOGNISERS, "DemoNetTorch": demo.recognise}
"""Model class name -> the zoo module it converts to: torchvision's, and the demo net."""


def _numpy_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(value, (torch.Tensor, np.ndarray)):
            raise ValueError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        arrays[key] = value.detach().cpu().float().numpy() if isinstance(value, torch.Tensor) else value
    return arrays


def from_torch(module: torch.nn.Module, *, input_shape: tuple[int, ...] | None = None) -> Model:
    """Convert a torch classifier, with its weights, into a ``jaxplain.Model`` (NHWC inputs).

    A torchvision model that the hand-written zoo reproduces (ResNet, VGG, AlexNet,
    SqueezeNet, DenseNet, MobileNetV2 as torchvision builds them) and the demo net
    (:class:`converters.demo.DemoNetTorch`) become zoo modules; a CaBRNet model becomes a
    :class:`jaxplain.nets.prototype.PrototypeModel` (see :mod:`converters.cabrnet`). Any
    other model (other torchvision families, timm, edited zoo models, a user's own
    ``nn.Module``) goes through ``torch.export``
    (:func:`converters.export.export_model`); :func:`zoo_mismatch` says why the zoo did
    not take it.

    The model's ``name`` is the torchvision constructor it matches (``"vgg11_bn"``,
    ``"densenet121"``), or its lowercase class name otherwise.

    Args:
        module: a torch classification model (a model in train mode is exported in eval mode).
        input_shape: NHWC input shape (default 1x224x224x3); the batch size stays free.

    Raises:
        ValueError: an input shape the model rejects, a forward pass ``torch.export``
            cannot capture, an op with no JAX implementation (named with its module path),
            or (zoo) a missing, unexpected or mis-shaped state-dict key.
    """
    if is_cabrnet(module):
        return from_cabrnet(module, input_shape=input_shape)
    kind = type(module).__name__
    input_shape = input_shape or (1, 224, 224, 3)
    refusal, flax_module, shapes = _zoo_fit(module, input_shape)
    if refusal is not None:
        return export_model(module, input_shape)
    return build_model(
        flax_module,
        _numpy_state_dict(module.state_dict()),
        input_shape=input_shape,
        template=flat_template(shapes),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        name=nets.identify(flax_module) or kind.lower(),
    )


def _zoo_fit(module: torch.nn.Module, input_shape: tuple[int, ...]) -> tuple[str | None, Any, Any]:
    """``(why the zoo does not reproduce module, or None; the zoo module; its variable shapes)``."""
    kind = type(module).__name__
    origin = type(module).__module__
    if kind not in _RECOGNISERS or not origin.startswith(("torchvision.", "converters.")):
        return f"unsupported model class {origin}.{kind}; the zoo has: {', '.join(_RECOGNISERS)}", None, None
    unsupported = unsupported_modules(module)
    if unsupported:
        return "unsupported modules: " + ", ".join(unsupported), None, None
    try:
        flax_module = _RECOGNISERS[kind](module)
    except ValueError as error:
        return str(error), None, None
    zoo_modules, shapes = trace_zoo_module(flax_module, input_shape)
    mismatches = structure_mismatches(module, zoo_modules)
    if mismatches:
        return f"the torch {kind} departs from the zoo's {kind}:\n" + "\n".join(mismatches), None, None
    return None, flax_module, shapes


def zoo_mismatch(module: torch.nn.Module, input_shape: tuple[int, ...] = (1, 224, 224, 3)) -> str | None:
    """Why the hand-written zoo does not reproduce ``module`` (None when it does).

    :func:`from_torch` converts such a model through ``torch.export`` instead
    (:func:`converters.export.export_model`).

    Args:
        module: a torch model.
        input_shape: NHWC shape used to trace the zoo module's parameter shapes.

    Returns:
        the reason (the unknown class, every unsupported module, every departing layer
        with its hyper-parameters), or None.

    Example:
        >>> converters.zoo_mismatch(torchvision.models.vit_b_16())  # doctest: +SKIP
        'unsupported model class torchvision.models.vision_transformer.VisionTransformer; ...'
    """
    return _zoo_fit(module, tuple(input_shape))[0]


def read_state_dict(path: str | os.PathLike) -> Mapping[str, Any]:
    """The mapping saved at ``path``, read safely: ``.safetensors``, or ``torch.load(weights_only=True)``.

    Entries come back as saved: tensors, and plain data a module keeps as extra state.
    """
    path = os.fspath(path)
    try:
        if path.endswith(".safetensors"):
            from safetensors.numpy import load_file

            return load_file(path)
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as error:
        reason = str(error).partition("\n")[0]
        raise ValueError(
            f"{path} is not a readable state dict ({type(error).__name__}: {reason}); "
            "save one with torch.save(model.state_dict(), path) or safetensors.torch.save_file"
        ) from error
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path} holds a {type(loaded).__name__}, not a state dict")
    return loaded


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a state dict of tensors safely (:func:`read_state_dict`) as numpy arrays."""
    return _numpy_state_dict(read_state_dict(path))


def load(
    path: str | os.PathLike, arch: str | Model, *, input_shape: tuple[int, ...] | None = None, **arch_kwargs: Any
) -> Model:
    """Build zoo architecture ``arch`` with the weights saved at ``path``, or load them into a converted model.

    ``jaxplain.weights.load`` reads ``.safetensors`` files the same way without torch.

    Args:
        path: a ``.pth``/``.pt`` state dict (loaded with ``weights_only=True``) or a
            ``.safetensors`` file.
        arch: a zoo name such as ``"resnet18"`` (see ``jaxplain.nets.ARCHITECTURES``), another
            torchvision classifier's name (``"vit_b_16"``, ``"swin_t"``: built by torchvision, the
            weights loaded in torch, then exported by :func:`from_torch`), or a
            model :func:`from_torch` exported (its weights are replaced by the file's,
            torch names and layouts as they are: :func:`jaxplain.nets.exported.load_state_dict`).
        input_shape: NHWC shape used to trace parameter shapes (default 1x224x224x3).
        **arch_kwargs: constructor arguments, e.g. ``num_classes=10``.
    """
    if isinstance(arch, Model):
        return exported.load_state_dict(arch, load_state_dict(path))
    if arch not in nets.ARCHITECTURES:
        return _torchvision(path, arch, input_shape or (1, 224, 224, 3), arch_kwargs)
    return weights.from_state_dict(load_state_dict(path), arch, input_shape=input_shape, **arch_kwargs)


def _torchvision(path: str | os.PathLike, arch: str, input_shape: tuple[int, ...], arch_kwargs: dict) -> Model:
    """A torchvision classifier outside the zoo (``vit_b_16``, ``swin_t``...) with the file's weights, exported."""
    import torchvision

    if arch not in torchvision.models.list_models(torchvision.models):
        raise ValueError(f"unknown architecture {arch!r}: neither a zoo name ({', '.join(sorted(nets.ARCHITECTURES))}) "
                         "nor a torchvision classifier (torchvision.models.list_models())")
    arch_kwargs = {key: value for key, value in arch_kwargs.items() if value is not None}
    if arch.startswith("vit_") and len(input_shape) == 4:
        arch_kwargs.setdefault("image_size", input_shape[1])
    module = torchvision.models.get_model(arch, weights=None, **arch_kwargs)
    state = read_state_dict(path)
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    given = {key: tuple(value.shape) for key, value in state.items()}
    summary = weights.summarise_keys(expected, given, what=arch)
    if summary:
        raise ValueError(summary)
    module.load_state_dict(state)
    return from_torch(module.eval(), input_shape=input_shape)


__all__ = [
    "export_model",
    "from_torch",
    "load",
    "load_cabrnet",
    "load_state_dict",
    "read_state_dict",
    "variables_from_state_dict",
    "zoo_mismatch",
]
