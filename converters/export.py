"""Any exportable torch classifier -> :class:`jaxplain.nets.exported.ExportedGraph`.

``torch.export.export`` captures the model's forward pass as a graph of ATen ops (with a
symbolic batch dimension); ``run_decompositions()`` lowers it to core ATen; every op node
becomes a :class:`~jaxplain.nets.exported.Node` with the innermost torch module path of its
``nn_module_stack``. Parameters, buffers and lifted constants become numpy arrays under
their state-dict names.
"""

from __future__ import annotations

import operator
import warnings
from typing import Any

import numpy as np
import torch
from torch.export import Dim

from jaxplain.model import Model
from jaxplain.nets import aten
from jaxplain.nets.exported import DType, ExportedGraph, Node, Program, Ref, Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_IGNORED_KWARGS = frozenset({"device", "layout", "pin_memory", "memory_format", "non_blocking"})
_UNCOMPUTED_OUTPUTS = {
    "aten.max_pool2d_with_indices.default": (1,),
    "aten.max_pool3d_with_indices.default": (1,),
    "aten.adaptive_max_pool2d.default": (1,),
    "aten.adaptive_max_pool1d.default": (1,),
    "aten._native_batch_norm_legit_no_training.default": (1, 2),
}
"""Outputs of multi-output ops that the JAX ops do not compute (pooling indices, saved statistics)."""


def _op_name(target: Any) -> str:
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return str(target)
    if getattr(target, "__module__", None) in ("_operator", "operator"):
        return f"operator.{target.__name__}"
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__name__', repr(target))}"


def _module_path(node: torch.fx.Node) -> str:
    """The innermost module path of the node's ``nn_module_stack`` (``""``: the root module)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, _ = list(stack.values())[-1]
    return "" if path.startswith("_empty_nn_module_stack") else path


def _calls(node: torch.fx.Node) -> tuple[tuple[str, int], ...]:
    """``(module path, call index)`` for every module of the node's ``nn_module_stack`` below the root.

    ``torch.export`` keys a module's second and later calls in one forward pass with an
    ``@k`` suffix (``"L__self__relu@1"``); the first call's key has none.
    """
    calls = []
    for key, (path, _) in (node.meta.get("nn_module_stack") or {}).items():
        if not path or path.startswith("_empty_nn_module_stack"):
            continue
        _, at, index = key.rpartition("@")
        calls.append((path, int(index) if at and index.isdigit() else 0))
    return tuple(calls)


def _argument(value: Any, where: str) -> Any:
    if isinstance(value, torch.fx.Node):
        return Ref(value.name)
    if isinstance(value, (list, tuple)):
        return tuple(_argument(item, where) for item in value)
    if isinstance(value, torch.dtype):
        return DType(str(value).removeprefix("torch."))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        raise ValueError(f"{where}: an unresolved symbolic size {value} is an argument")
    raise ValueError(f"{where}: argument of type {type(value).__name__} ({value!r}) cannot be converted")


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point():
        tensor = tensor.float()
    return tensor.numpy().copy()


def _tensor(name: str, array: np.ndarray) -> Tensor:
    dtype = "bool" if array.dtype == np.bool_ else str(array.dtype)
    return Tensor(name, tuple(array.shape), dtype)


def _example(module: torch.nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    if len(input_shape) < 3:
        raise ValueError(
            f"input_shape must be channels-last with a batch axis, such as (1, 224, 224, 3); got {input_shape}"
        )
    shape = (max(2, input_shape[0]), input_shape[-1], *input_shape[1:-1])
    parameter = next(module.parameters(), None)
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)


def _few(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _static_shape(node: Any) -> tuple[int, ...] | None:
    value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    shape = tuple(getattr(value, "shape", None) or ())
    return shape if value is not None and all(type(n) is int for n in shape) else None


def _unexpanded(operand: Any) -> torch.fx.Node | None:
    """The tensor that ``operand`` of a ``bmm`` broadcasts over the batch, or None.

    ``F.linear`` on a 3-d input that is not contiguous (``nn.MultiheadAttention``'s
    in-projection on ``(tokens, batch, dim)``) decomposes to ``bmm`` with the weight
    ``expand``-ed over the leading dimension (then ``view``-ed to the same shape). In XLA
    that broadcast is a real copy of the weight per token (197 x 768 x 2304 floats per
    ViT-B/16 layer) and the product a batch of matrix-vector products; a plain ``matmul``
    of the 2-d weight computes the same values as one matrix product.
    """
    if not isinstance(operand, torch.fx.Node) or operand.target is not torch.ops.aten.view.default:
        return None
    expanded = operand.args[0]
    if not isinstance(expanded, torch.fx.Node) or expanded.target is not torch.ops.aten.expand.default:
        return None
    source = expanded.args[0]
    shape, size = _static_shape(source), _static_shape(expanded)
    if shape is None or size is None or len(size) != 3 or size != _static_shape(operand):
        return None
    if len(operand.users) != 1 or len(expanded.users) != 1:
        return None
    return source if shape[-2:] == size[1:] and len(shape) in (2, 3) and shape[:-2] in ((), (1,)) else None


def _broadcast_products(graph: torch.fx.Graph) -> tuple[dict[str, tuple[Any, Any]], set[str]]:
    """``bmm`` nodes with one operand broadcast over the batch, as ``{bmm: (lhs, rhs)}`` of
    ``matmul`` operands, and the names of the ``expand`` and ``view`` nodes they no longer use."""
    products, unused = {}, set()
    for node in graph.nodes:
        if node.target is not torch.ops.aten.bmm.default:
            continue
        sources = [_unexpanded(operand) for operand in node.args]
        if sum(source is not None for source in sources) != 1:
            continue
        position = 0 if sources[0] is not None else 1
        operands = list(node.args)
        operands[position] = sources[position]
        products[node.name] = (operands[0], operands[1])
        unused.update((node.args[position].name, node.args[position].args[0].name))
    return products, unused


def _capture(
    module: torch.nn.Module, example: torch.Tensor, input_shape: tuple[int, ...]
) -> torch.export.ExportedProgram:
    """``torch.export`` with a free batch size, lowered to core ATen; a failure is classified by
    running the model eagerly: it rejects the shape, or export cannot capture it."""
    name = type(module).__name__
    try:
        exported = torch.export.export(module, (example,), dynamic_shapes=({0: Dim.AUTO},), strict=False)
        return exported.run_decompositions()
    except Exception as error:
        try:
            with torch.no_grad():
                module(example)
        except Exception as eager_error:
            raise ValueError(
                f"{name} rejects inputs of shape {tuple(input_shape)} (NHWC; run as NCHW {tuple(example.shape)}): "
                f"{_first_line(eager_error)}"
            ) from eager_error
        raise ValueError(
            f"torch.export could not capture {name} (data-dependent control flow or an untraceable op; "
            f"jaxplain converts what torch.export captures). torch.export said: {type(error).__name__}: "
            f"{str(error).strip()}"
        ) from error


def export_program(
    module: torch.nn.Module, input_shape: tuple[int, ...]
) -> tuple[Program, dict[str, dict[str, np.ndarray]]]:
    """The static op program of ``module`` and its variables, from ``torch.export``.

    Args:
        module: a torch classifier, in eval mode; NCHW inputs, logits out.
        input_shape: NHWC shape of the inputs (the batch size is left free).

    Returns:
        ``(program, variables)`` with ``variables = {"params": ..., "buffers": ..., "constants": ...}``
        holding numpy arrays under their torch names.

    Raises:
        ValueError: the model rejects the shape, ``torch.export`` cannot capture it, an op has
            no JAX implementation (named with its module path), or the graph does not return
            one tensor.
    """
    example = _example(module, input_shape)
    exported = _capture(module, example, input_shape)
    graph = exported.graph
    signature = exported.graph_signature
    state = exported.state_dict
    used = {node.name for node in graph.nodes if node.op == "placeholder" and node.users}
    variables: dict[str, dict[str, np.ndarray]] = {"params": {}, "buffers": {}, "constants": {}}
    placeholder_names: dict[str, str] = {}
    user_inputs = []
    for spec in signature.input_specs:
        kind = spec.kind.name
        argument = spec.arg.name
        if kind == "USER_INPUT":
            user_inputs.append(argument)
            continue
        if argument not in used:
            continue
        if kind == "PARAMETER":
            collection, value = "params", state[spec.target]
        elif kind == "BUFFER" and spec.persistent:
            collection, value = "buffers", state[spec.target]
        elif kind in ("BUFFER", "CONSTANT_TENSOR"):
            collection, value = "constants", exported.constants[spec.target]
        else:
            raise ValueError(f"{type(module).__name__}: graph input {argument} of kind {kind} cannot be converted")
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{type(module).__name__}: {spec.target} is a {type(value).__name__}, not a tensor")
        variables[collection][spec.target] = _numpy(value)
        placeholder_names[argument] = spec.target
    if len(user_inputs) != 1:
        raise ValueError(
            f"{type(module).__name__}.forward takes {len(user_inputs)} tensor inputs; an image classifier takes one"
        )
    kinds = [spec.kind.name for spec in signature.output_specs]
    if kinds != ["USER_OUTPUT"]:
        raise ValueError(
            f"{type(module).__name__}.forward returns {kinds.count('USER_OUTPUT')} outputs"
            f"{' and mutates buffers' if len(kinds) > kinds.count('USER_OUTPUT') else ''}; "
            "a classifier returns one tensor of logits"
        )

    def rename(value: Any) -> Any:
        if isinstance(value, Ref):
            return Ref(placeholder_names.get(value.name, value.name))
        if isinstance(value, tuple):
            return tuple(rename(item) for item in value)
        return value

    nodes: list[Node] = []
    missing: dict[str, dict[str, None]] = {}
    ops_of: dict[str, str] = {}
    output = None
    products, unused = _broadcast_products(graph)
    for node in graph.nodes:
        if node.name in unused:
            continue
        if node.op == "output":
            (result,) = node.args[0]
            output = rename(_argument(result, "output"))
            continue
        if node.op != "call_function":
            continue
        name = _op_name(node.target)
        path = _module_path(node)
        where = f"{name} at {path or type(module).__name__}"
        if name not in aten.OPS:
            missing.setdefault(name, {})[path or "<root>"] = None
            continue
        if name == "aten.convolution.default" and node.args[6]:
            missing.setdefault(f"{name} with transposed=True", {})[path or "<root>"] = None
            continue
        if node.target is operator.getitem and node.users:
            source, position = node.args
            if position in _UNCOMPUTED_OUTPUTS.get(ops_of.get(source.name, ""), ()):
                raise ValueError(
                    f"{where}: output {position} of {ops_of[source.name]} is used, which is not computed here"
                )
        kwargs = tuple(
            sorted(
                (key, rename(_argument(value, where)))
                for key, value in node.kwargs.items()
                if key not in _IGNORED_KWARGS
            )
        )
        args = node.args
        if node.name in products:
            name, args = "aten.matmul.default", products[node.name]
        ops_of[node.name] = name
        nodes.append(Node(node.name, name, rename(_argument(args, where)), kwargs, path, _calls(node)))
    if missing:
        listed = "; ".join(f"{op} (in {_few(list(paths))})" for op, paths in missing.items())
        raise ValueError(f"{type(module).__name__}: no JAX implementation of {listed}")
    if not isinstance(output, Ref):
        raise ValueError(f"{type(module).__name__}.forward does not return a tensor")
    program = Program(
        input=user_inputs[0],
        params=tuple(_tensor(k, v) for k, v in variables["params"].items()),
        buffers=tuple(_tensor(k, v) for k, v in variables["buffers"].items()),
        constants=tuple(_tensor(k, v) for k, v in variables["constants"].items()),
        nodes=tuple(nodes),
        output=output,
    )
    return program, variables


def export_model(
    module: torch.nn.Module, input_shape: tuple[int, ...] = (1, 224, 224, 3), *, name: str | None = None
) -> Model:
    """Convert any classifier that ``torch.export`` captures into a ``jaxplain.Model`` (NHWC inputs).

    A model in train mode is converted in eval mode (with a warning) and left as it was.
    ``mean``/``std`` are the model's ``pretrained_cfg`` ones (timm) or ImageNet's.

    Args:
        module: the torch classifier (NCHW inputs, one tensor of logits out).
        input_shape: NHWC shape of the inputs; the batch size stays free.
        name: the model's name (default: its lowercase class name).

    Returns:
        a ``Model`` whose module is an :class:`~jaxplain.nets.exported.ExportedGraph`.

    Example:
        >>> model = export_model(torchvision.models.vit_b_16(), (1, 224, 224, 3))  # doctest: +SKIP

    Raises:
        ValueError: as :func:`export_program`.
    """
    import jax

    training = module.training
    if training:
        warnings.warn(f"{type(module).__name__} is in train mode; it is converted in eval mode", stacklevel=2)
        module.eval()
    try:
        program, arrays = export_program(module, tuple(input_shape))
    finally:
        module.train(training)
    config = getattr(module, "pretrained_cfg", None) or {}
    mean = tuple(float(v) for v in config.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in config.get("std", IMAGENET_STD))
    # device_put, not jnp.asarray: the latter compiles a copy kernel per distinct shape.
    variables = {
        collection: {
            key: jax.device_put(value.astype(jax.dtypes.canonicalize_dtype(value.dtype)))
            for key, value in tensors.items()
        }
        for collection, tensors in arrays.items()
        if tensors
    }
    return Model(
        ExportedGraph(program),
        variables,
        input_channels=input_shape[-1],
        mean=mean,
        std=std,
        name=name or type(module).__name__.lower(),
        layer_channel_axis=1,
    )


__all__ = ["export_model", "export_program"]
