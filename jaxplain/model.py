"""``Model``: a Flax linen module bound to its variables, as one pytree."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from jaxplain.forms import ProgramModel, from_equinox, from_function, from_nnx, is_equinox, is_nnx
from jaxplain.typing import Array


@struct.dataclass
class Model:
    """A Flax linen module with its variables; ``model(x)`` runs inference on NHWC ``x``.

    A ``Model`` is a pytree (the variables are its leaves, the module is static), so it
    passes through ``jax.jit`` as an ordinary argument and one compilation serves every
    set of weights of the same architecture.

    Example:
        >>> import flax.linen as nn, jax, jax.numpy as jnp, jaxplain as jx
        >>> module = nn.Dense(3)
        >>> model = jx.Model(module, module.init(jax.random.PRNGKey(0), jnp.ones((1, 4))))
        >>> model(jnp.ones((2, 4))).shape
        (2, 3)

    Attributes:
        module: the unbound Flax module.
        variables: ``{"params": ..., "batch_stats": ...}``.
        input_channels: channels of the expected NHWC image input, used to catch NCHW input; None
            (a model of your own) checks no layout, and inputs may be any ``[N, ...]``.
        mean: per-channel mean the model expects inputs to be normalised with (metadata).
        std: per-channel std, likewise.
        name: architecture name, such as ``"resnet18"``.
        call_kwargs: keywords of every forward call (``(("train", False),)``; see :meth:`with_call`).
        layer_channel_axis: where the model's layers keep their channels (``1`` for a converted
            model that runs torch's NCHW layout inside); inputs stay NHWC.
    """

    module: nn.Module = struct.field(pytree_node=False)
    variables: Any
    input_channels: int | None = struct.field(pytree_node=False, default=None)
    mean: tuple[float, ...] | None = struct.field(pytree_node=False, default=None)
    std: tuple[float, ...] | None = struct.field(pytree_node=False, default=None)
    name: str | None = struct.field(pytree_node=False, default=None)
    call_kwargs: tuple[tuple[str, Any], ...] = struct.field(pytree_node=False, default=())
    layer_channel_axis: int = struct.field(pytree_node=False, default=-1)

    def __call__(self, inputs: Array) -> Array:
        """The forward pass; called outside any trace (on concrete values) it runs as one compiled program.

        Op by op, a converted graph of a few hundred operations compiles each of them on its first call (a
        MobileNetV3-Small at 32 px: 18 s against 4 s compiled whole); inside ``jit``, ``grad`` or a method it is the
        module's ``apply``, traced into the caller's program.
        """
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves((self.variables, inputs))):
            return self._apply(inputs)
        return _compiled_call(self, inputs)

    def _apply(self, inputs: Array) -> Array:
        return self.module.apply(self.variables, inputs, **dict(self.call_kwargs))

    @staticmethod
    def from_function(function: Callable[[Any, Array], Array], params: Any, *, channel_axis: int = -1,
                      name: str | None = None) -> ProgramModel:
        """A plain batched ``function(params, x)`` with its parameters as traced arguments.

        Every method accepts the result; layers are named by the parameter paths their operations
        read (``"block.conv2"`` for ``params["block"]["conv2"]["kernel"]``) or by ``jax.named_scope``.

        Args:
            function: the forward pass on a batch; keep it one object (a module-level function) so
                repeated calls hit the compilation cache.
            params: its parameter pytree; a new pytree of the same structure gives new answers
                without recompiling.
            channel_axis: the channel axis of image inputs (``-1`` NHWC, ``1`` NCHW).
            name: a label for messages.

        Returns:
            A :class:`jaxplain.forms.ProgramModel`.

        Example:
            >>> import jax.numpy as jnp, jaxplain as jx
            >>> model = jx.Model.from_function(lambda p, x: x @ p["w"], {"w": jnp.eye(3)})
            >>> jx.saliency(model, jnp.ones((2, 3)), target=0).shape
            (2, 3)
        """
        return from_function(function, params, channel_axis=channel_axis, name=name)

    def with_call(self, **call_kwargs: Any) -> "Model":
        """The same model called with ``call_kwargs`` (``train=False``) on every forward pass."""
        return self.replace(call_kwargs=tuple(sorted({**dict(self.call_kwargs), **call_kwargs}.items())))

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


@jax.jit
def _compiled_call(model: Model, inputs: Array) -> Array:
    return model._apply(inputs)


@struct.dataclass
class FunctionModel:
    """A bare JAX callable as a pytree with no leaves (for ``jax.jit``); no structure.

    Gradient, path and perturbation methods take it; structure-dependent methods ask for
    ``jx.Model.from_function(fn, params)`` instead, whose weights are traced arguments.

    Example:
        >>> import jax.numpy as jnp, jaxplain as jx
        >>> model = jx.as_model(lambda x: x @ jnp.eye(3))
        >>> type(model).__name__, jx.saliency(model, jnp.ones((2, 3)), 0).shape
        ('FunctionModel', (2, 3))
    """

    function: Callable[[Array], Array] = struct.field(pytree_node=False)

    def __call__(self, inputs: Array) -> Array:
        return self.function(inputs)


def as_model(model: Any, **call_kwargs: Any) -> Model | ProgramModel | FunctionModel:
    """Any model form as the object every method takes.

    Args:
        model: a ``jx.Model``, a bound Flax linen module, a Flax NNX module, an Equinox module
            (called per example, as Equinox models are: jaxplain vmaps it), a
            ``jx.Model.from_function`` model, or a bare callable (gradient and perturbation
            methods only).
        **call_kwargs: keywords passed on every forward call (``train=False``,
            ``deterministic=True``), given once here.

    Returns:
        The normalised model; its weights are traced arguments of every method.

    Example:
        >>> import jaxplain as jx
        >>> jx.as_model(jx.demo.load_model()).name
        'demo'
    """
    if isinstance(model, Model):
        return model.with_call(**call_kwargs) if call_kwargs else model
    if isinstance(model, (ProgramModel, FunctionModel)):
        if call_kwargs:
            raise TypeError("call keywords apply to Flax, NNX and Equinox modules; bake them into your function")
        return model
    if isinstance(model, nn.Module):
        if model.scope is None:
            raise TypeError("an unbound Flax module has no weights: pass jx.Model(module, variables) or module.bind(variables)")
        module, variables = model.unbind()
        return Model(module, variables, call_kwargs=tuple(sorted(call_kwargs.items())))
    if is_nnx(model):
        return from_nnx(model, **call_kwargs)
    if is_equinox(model):
        return from_equinox(model, **call_kwargs)
    if callable(model):
        if call_kwargs:
            raise TypeError("call keywords apply to Flax, NNX and Equinox modules; bake them into your function")
        return FunctionModel(model)
    raise TypeError(f"model must be a jaxplain.Model, a Flax, NNX or Equinox module or a callable, "
                    f"got {type(model).__name__}")


def require_structure(model: Model | ProgramModel | FunctionModel, method: str) -> Model | ProgramModel:
    """Raise a clear ``TypeError`` when a structure-dependent method gets a bare callable."""
    if isinstance(model, FunctionModel):
        raise TypeError(
            f"{method} reads the model's layers, so it needs the weights as arguments: pass "
            "jx.Model.from_function(fn, params) for a function fn(params, x), a jx.Model, an NNX or an Equinox module"
        )
    return model


def init_model(module: nn.Module, input_shape: tuple[int, ...], key: Array | None = None, **metadata: Any) -> Model:
    """Initialise ``module`` on an NHWC input shape (the zoo's layers use PyTorch's default initialisers).

    Args:
        module: an unbound Flax linen module.
        input_shape: the NHWC shape to initialise on (its channels become ``input_channels``).
        key: the ``jax.random`` key (``PRNGKey(0)`` by default); same key, same weights.
        **metadata: further :class:`Model` fields (``mean``, ``std``, ``name``).

    Returns:
        The :class:`Model` with its variables.

    Example:
        >>> import jaxplain as jx
        >>> model = jx.init_model(jx.nets.build("resnet18", num_classes=4), (1, 32, 32, 3))
        >>> model.input_channels
        3
    """
    key = jax.random.PRNGKey(0) if key is None else key
    variables = jax.jit(module.init)(key, jnp.zeros(input_shape, jnp.float32))
    return Model(module, variables, input_channels=input_shape[-1], **metadata)
