"""Torch-side helpers for parity tests: seeded models, layout conversion, tolerances."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchvision

import converters


def randomised(arch: str, seed: int = 0, num_classes: int = 10, **kwargs) -> torch.nn.Module:
    """A torchvision model (``arch`` a builder or class name, ``kwargs`` its configuration) with seeded
    random weights and random BatchNorm state (eval mode)."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(num_classes=num_classes, **kwargs).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                count = module.num_features
                module.running_mean.copy_(torch.rand(count, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(count, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(count, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(count, generator=generator) * 0.4 - 0.2)
    return model


def converted(arch: str, seed: int = 0, **kwargs):
    """``(torch model, jaxplain model)`` with the same weights."""
    torch_model = randomised(arch, seed, **kwargs)
    return torch_model, converters.from_torch(torch_model)


@contextlib.contextmanager
def in_float64(torch_model: torch.nn.Module, model, *arrays) -> Iterator[tuple]:
    """``(torch model, jaxplain model, *arrays)`` in float64 on both sides, JAX's x64 switched on meanwhile.

    For comparisons that float32 leaves ill-conditioned: max-pool windows whose two
    largest values lie within an ulp of each other route the gradient to one element or
    the other depending on the summation order of the convolution before them (oneDNN,
    YNNPACK and Eigen each order it differently). In float64 both sides resolve the ties
    alike. ``None`` arrays stay ``None``.
    """
    jax.config.update("jax_enable_x64", True)
    try:
        variables = jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, jnp.float64), model.variables)
        doubled = [None if a is None else (a.double() if isinstance(a, torch.Tensor) else np.asarray(a, np.float64)) for a in arrays]
        yield (torch_model.double(), model.replace_variables(variables), *doubled)
    finally:
        torch_model.float()
        jax.config.update("jax_enable_x64", False)


def nchw(array) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(array).transpose(0, 3, 1, 2)))


def nhwc(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().numpy().transpose(0, 2, 3, 1)


def assert_close(ours, theirs, rtol: float = 1e-3) -> None:
    """``max |ours - theirs| <= rtol * max |theirs|``: error relative to the map's scale."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    scale = np.abs(theirs).max()
    assert scale > 0, "reference is all zeros: the comparison would be vacuous"
    error = np.abs(ours - theirs).max()
    assert error <= rtol * scale, f"max abs error {error:.3g} > {rtol} x reference scale {scale:.3g}"
