"""Map a PyTorch state dict onto the variables of a zoo module.

The zoo names its Flax modules after torchvision's module paths, so a torch key
``layer1.0.conv1.weight`` lands on ``params/layer1/0/conv1/kernel`` with a layout
change (OIHW -> HWIO for convolutions, (out, in) -> (in, out) for dense layers) and
batch-norm buffers land in ``batch_stats``. Nothing here depends on torch: state
dicts arrive as ``{key: numpy array}``.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxplain import nets, weights
from jaxplain.model import Model

IGNORED_BUFFERS = ("num_batches_tracked",)


def template_variables(module: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """Shapes of ``module``'s variables, without computing anything."""
    return flat_template(jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros(input_shape, jnp.float32)))


def flat_template(variables: Mapping[str, Any]) -> dict:
    """``{collection: {"layer1/0/conv1/kernel": leaf}}`` from (abstract) variables."""
    return {collection: traverse_util.flatten_dict(tree, sep="/") for collection, tree in variables.items()}


def _destination(key: str, flat: Mapping[str, Mapping[str, Any]]) -> tuple[str, str, Any] | None:
    """Where a torch key goes: ``(collection, flax path, transform)``, or None if nowhere."""
    *module_path, leaf = key.split(".")
    prefix = "/".join(module_path)
    params = flat.get("params", {})
    stats = flat.get("batch_stats", {})
    if leaf == "weight":
        if f"{prefix}/kernel" in params:
            return "params", f"{prefix}/kernel", _kernel_layout
        if f"{prefix}/scale" in params:
            return "params", f"{prefix}/scale", None
    if leaf == "running_mean" and f"{prefix}/mean" in stats:
        return "batch_stats", f"{prefix}/mean", None
    if leaf == "running_var" and f"{prefix}/var" in stats:
        return "batch_stats", f"{prefix}/var", None
    if f"{prefix}/{leaf}" in params:
        return "params", f"{prefix}/{leaf}", None
    return None


def _kernel_layout(array: np.ndarray) -> np.ndarray:
    if array.ndim == 4:
        return np.transpose(array, (2, 3, 1, 0))
    if array.ndim == 2:
        return np.transpose(array)
    return array


def variables_from_state_dict(
    state_dict: Mapping[str, np.ndarray],
    module: nn.Module,
    input_shape: tuple[int, ...],
    *,
    template: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict:
    """Variables for ``module`` from a torch state dict given as numpy arrays.

    ``template`` (:func:`flat_template` of the variable shapes) saves tracing
    ``module`` again when the caller already has it.

    Raises:
        ValueError: a short summary of the missing, unexpected and mis-shaped keys
            (:func:`jaxplain.weights.summarise_keys`).
    """
    flat = template_variables(module, input_shape) if template is None else template
    filled: dict[str, dict[str, np.ndarray]] = {collection: {} for collection in flat}
    given: dict[str, tuple[int, ...]] = {}
    fits = True
    for key, value in state_dict.items():
        destination = _destination(key, flat)
        if destination is None:
            if key.rsplit(".", 1)[-1] in IGNORED_BUFFERS and _has_batch_norm(key, flat):
                continue
            given[key] = tuple(np.shape(value))
            fits = False
            continue
        given[key] = tuple(np.shape(value))
        collection, path, transform = destination
        array = np.asarray(value, dtype=np.float32)
        array = transform(array) if transform else array
        if array.shape != flat[collection][path].shape:
            fits = False
            continue
        filled[collection][path] = array
    expected = weights.expected_keys(flat)
    if not fits or sum(map(len, filled.values())) != len(expected):
        what = nets.identify(module) or type(module).__name__
        raise ValueError(weights.summarise_keys(expected, given, what=what))
    # device_put, not jnp.asarray: the latter compiles a copy kernel per distinct shape.
    return {
        collection: traverse_util.unflatten_dict(
            {path: jax.device_put(array, may_alias=False) for path, array in arrays.items()}, sep="/"
        )
        for collection, arrays in filled.items()
    }


def _has_batch_norm(key: str, flat: Mapping[str, Mapping[str, Any]]) -> bool:
    prefix = key.rsplit(".", 1)[0].replace(".", "/")
    return f"{prefix}/mean" in flat.get("batch_stats", {})


def build_model(
    module: nn.Module,
    state_dict: Mapping[str, np.ndarray],
    *,
    input_shape: tuple[int, ...] = (1, 224, 224, 3),
    template: Mapping[str, Mapping[str, Any]] | None = None,
    **metadata: Any,
) -> Model:
    """A ``Model`` of ``module`` carrying the weights of ``state_dict`` (``template`` as above)."""
    variables = variables_from_state_dict(state_dict, module, input_shape, template=template)
    return Model(module, variables, input_channels=input_shape[-1], **metadata)
