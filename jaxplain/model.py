"""``Model``: a Flax linen module bound to its variables, as one pytree."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from jaxplain.typing import Array, Forward


@struct.dataclass
class Model:
    """A Flax linen module with its variables; ``model(x)`` runs inference on NHWC ``x``.

    A ``Model`` is a pytree (the variables are its leaves, the module is static), so it
    passes through ``jax.jit`` as an ordinary argument and one compilation serves every
    set of weights of the same architecture.

    Attributes:
        module: the unbound Flax module.
        variables: ``{"params": ..., "batch_stats": ...}``.
        input_channels: channels of the expected NHWC input, used to catch NCHW input.
        mean: per-channel mean the model expects inputs to be normalised with (metadata).
        std: per-channel std, likewise.
        name: architecture name, such as ``"resnet18"``.
    """

    module: nn.Module = struct.field(pytree_node=False)
    variables: Any
    input_channels: int = struct.field(pytree_node=False, default=3)
    mean: tuple[float, ...] | None = struct.field(pytree_node=False, default=None)
    std: tuple[float, ...] | None = struct.field(pytree_node=False, default=None)
    name: str | None = struct.field(pytree_node=False, default=None)

    def __call__(self, inputs: Array) -> Array:
        return self.module.apply(self.variables, inputs)

    def replace_variables(self, variables: Any) -> "Model":
        """The same model with other variables (randomised weights, canonised parameters)."""
        return self.replace(variables=variables)

    def astype(self, dtype: Any) -> "Model":
        """The same model with its floating-point variables cast to ``dtype``.

        ``model.astype(jnp.bfloat16)`` with ``bfloat16`` inputs runs a method in bf16 end to
        end (float32 stays the default; README's "Precision" gives the measured error).
        """
        def cast(value: Any) -> Any:
            return value.astype(dtype) if jnp.issubdtype(value.dtype, jnp.floating) else value

        return self.replace(variables=jax.tree_util.tree_map(cast, self.variables))


@struct.dataclass
class FunctionModel:
    """A bare JAX callable as a pytree with no leaves (for ``jax.jit``); no structure."""

    function: Callable[[Array], Array] = struct.field(pytree_node=False)

    def __call__(self, inputs: Array) -> Array:
        return self.function(inputs)


def as_model(model: Model | nn.Module | Forward) -> Model | FunctionModel:
    """Normalise a ``Model``, a bound Flax module or a plain callable."""
    if isinstance(model, (Model, FunctionModel)):
        return model
    if isinstance(model, nn.Module):
        if model.scope is None:
            raise TypeError("an unbound Flax module has no weights: pass jx.Model(module, variables) or module.bind(variables)")
        module, variables = model.unbind()
        return Model(module, variables)
    if callable(model):
        return FunctionModel(model)
    raise TypeError(f"model must be a jaxplain.Model, a bound Flax module or a callable, got {type(model).__name__}")


def require_structure(model: Model | FunctionModel, method: str) -> Model:
    """Raise a clear ``TypeError`` when a structure-dependent method gets a bare callable."""
    if not isinstance(model, Model):
        raise TypeError(
            f"{method} modifies the backward pass of individual layers, so it needs a jaxplain.Model "
            "(a Flax module with its variables, e.g. from converters.from_torch), not a bare function"
        )
    return model


def init_model(module: nn.Module, input_shape: tuple[int, ...], key: Array | None = None, **metadata: Any) -> Model:
    """Initialise ``module`` with PyTorch's default initialisers on an NHWC input shape."""
    key = jax.random.PRNGKey(0) if key is None else key
    variables = jax.jit(module.init)(key, jnp.zeros(input_shape, jnp.float32))
    return Model(module, variables, input_channels=input_shape[-1], **metadata)
