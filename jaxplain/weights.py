"""State dicts onto zoo modules, torch-free; short summaries of a mismatch.

The zoo names its Flax modules after torchvision's module paths, so a torch key
``layer1.0.conv1.weight`` lands on ``params/layer1/0/conv1/kernel`` with a layout
change (OIHW -> HWIO for convolutions, (out, in) -> (in, out) for dense layers) and
batch-norm buffers land in ``batch_stats``. State dicts arrive as
``{key: numpy array}``; :func:`load` reads a ``.safetensors`` file of a zoo
architecture without torch (``converters.load`` also reads ``.pth`` files, with torch).

When keys do not fit, :func:`summarise_keys` says so in a few lines: counts, a few
names of each kind, and the zoo architecture the keys look like (the zoo's key sets,
:func:`zoo_keys`, are torchvision's names with torch's shapes, traced abstractly once
per architecture when a summary first needs them).
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Iterable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxplain import nets
from jaxplain.model import Model
from jaxplain.nets.resnet import IMAGENET_MEAN, IMAGENET_STD

EXAMPLES = 5
"""How many names of each kind a summary shows."""

_LINE_LIMIT = 200
_TORCH_LEAVES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def torch_key(collection: str, path: str) -> str:
    """The torch key a Flax variable is filled from (``params``, ``fc/kernel`` -> ``fc.weight``)."""
    *module_path, leaf = path.split("/")
    return ".".join([*module_path, _TORCH_LEAVES.get((collection, leaf), leaf)])


def torch_shape(collection: str, path: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A Flax variable's shape in torch's layout (HWIO kernels as OIHW, dense kernels transposed)."""
    if collection == "params" and path.endswith("kernel") and len(shape) == 4:
        kh, kw, cin, cout = shape
        return (cout, cin, kh, kw)
    if collection == "params" and path.endswith("kernel") and len(shape) == 2:
        return tuple(reversed(shape))
    return tuple(shape)


def expected_keys(template: Mapping[str, Mapping[str, object]]) -> dict[str, tuple[int, ...]]:
    """``{torch key: torch shape}`` of a flat template (``{collection: {"a/b/kernel": leaf}}``).

    In torch's order: modules by path (numbers compared as numbers), then ``weight``,
    ``bias``, ``running_mean``, ``running_var``, other leaves.
    """
    keys = {
        torch_key(collection, path): torch_shape(collection, path, tuple(leaf.shape))
        for collection, leaves in template.items()
        for path, leaf in leaves.items()
    }
    return {key: keys[key] for key in sorted(keys, key=_torch_order)}


_LEAF_ORDER = ("weight", "bias", "running_mean", "running_var")


def _torch_order(key: str) -> tuple:
    *module_path, leaf = key.split(".")
    parts = tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in module_path)
    return parts, _LEAF_ORDER.index(leaf) if leaf in _LEAF_ORDER else len(_LEAF_ORDER), leaf


@functools.lru_cache(maxsize=None)
def _zoo_keys(arch: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    module = nets.build(arch)
    try:
        template = template_variables(module, (1, 64, 64, 3))
    except ValueError:
        template = template_variables(module, (1, 224, 224, 3))
    return tuple(expected_keys(template).items())


def zoo_keys(arch: str) -> dict[str, tuple[int, ...]]:
    """``{torch key: torch shape}`` of zoo architecture ``arch`` with its default classes (cached).

    Args:
        arch: a name in ``jaxplain.nets.ARCHITECTURES``.

    Returns:
        The state-dict keys torchvision's model of that name has, with their shapes.

    >>> zoo_keys("demo")["classifier.weight"]
    (6, 128)
    """
    return dict(_zoo_keys(arch))


def _pattern(key: str) -> str:
    """``layer3.1.conv2.weight`` -> ``layer#.#.conv#.weight``: a key with its numbers blanked."""
    return re.sub(r"\d+", "#", key)


def _jaccard(ours: Iterable[str], theirs: Iterable[str]) -> float:
    ours, theirs = set(ours), set(theirs)
    return len(ours & theirs) / max(len(ours | theirs), 1)


def guess_architecture(given: Mapping[str, tuple[int, ...]]) -> tuple[str, int, int] | None:
    """The zoo architecture whose keys best fit ``given``.

    Names are compared by their Jaccard index (shared over either's), ties broken by
    the number of equal shapes (``resnet50`` and ``wide_resnet50_2`` differ only in
    shapes). To keep tracing short, only the two families (zoo classes: ``ResNet``,
    ``VGG``, ...) whose first architecture's key patterns (numbers blanked:
    ``layer#.#.conv#.weight``) best fit are searched through. ``num_batches_tracked``
    buffers are passed over.

    Args:
        given: ``{key: shape}`` of a state dict.

    Returns:
        ``(arch, names in common, names with equal shapes)``, or None when no
        architecture shares a single name with ``given``.

    >>> guess_architecture(zoo_keys("demo"))[0]
    'demo'
    """
    given = {key: shape for key, shape in given.items() if not key.endswith(".num_batches_tracked")}
    patterns = {_pattern(key) for key in given}
    families: dict[type, list[str]] = {}
    for arch in nets.ARCHITECTURES:
        families.setdefault(type(nets.build(arch)), []).append(arch)
    fits = {family: _jaccard(patterns, (_pattern(key) for key, _ in _zoo_keys(members[0])))
            for family, members in families.items()}
    searched = [arch for family in sorted(fits, key=fits.get, reverse=True)[:2] if fits[family] > 0
                for arch in families[family]]
    best: tuple[tuple[float, int], str, int, int] | None = None
    for arch in searched:
        keys = dict(_zoo_keys(arch))
        common = keys.keys() & given.keys()
        same_shape = sum(tuple(keys[k]) == tuple(given[k]) for k in common)
        score = (_jaccard(keys, given), same_shape)
        if common and (best is None or score > best[0]):
            best = (score, arch, len(common), same_shape)
    return None if best is None else best[1:]


def _names(kind: str, items: list[str], separator: str = ", ") -> str:
    shown = separator.join(items[:EXAMPLES])
    more = f" (+{len(items) - EXAMPLES} more)" if len(items) > EXAMPLES else ""
    line = f"  {kind}: {shown}{more}"
    return line if len(line) <= _LINE_LIMIT else line[: _LINE_LIMIT - 3] + "..."


def _common_prefix(keys: list[str]) -> str | None:
    """The first dotted component shared by every key (``"module"`` after ``nn.DataParallel``)."""
    if not keys or any("." not in key for key in keys):
        return None
    first = {key.split(".", 1)[0] for key in keys}
    return first.pop() if len(first) == 1 else None


def summarise_keys(
    expected: Mapping[str, tuple[int, ...]],
    given: Mapping[str, tuple[int, ...]],
    *,
    what: str,
) -> str:
    """A few lines on how a state dict's keys depart from a model's.

    Counts of matching, missing, unexpected and mis-shaped keys, up to
    :data:`EXAMPLES` names of each, and which zoo architecture the given keys look
    like (:func:`guess_architecture`). No line is longer than 200 characters.

    Args:
        expected: ``{key: shape}`` the model needs (torch names and layout).
        given: ``{key: shape}`` the state dict holds.
        what: the model, for the first line (``"resnet18"``, ``"the exported VGG"``).

    Returns:
        The summary, first line ``"state dict does not fit {what}: ..."``; an empty
        string when every key matches with its shape.

    >>> expected = zoo_keys("demo")
    >>> given = {"fc.weight": (10, 512), "conv1.weight": (64, 3, 7, 7)}
    >>> print(summarise_keys(expected, given, what="demo").splitlines()[0])
    state dict does not fit demo: 0 of 22 keys match; 22 missing, 2 unexpected, 0 mis-shaped
    """
    common = [key for key in expected if key in given]
    misshaped = [key for key in common if tuple(expected[key]) != tuple(given[key])]
    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    if not (missing or unexpected or misshaped):
        return ""
    matching = len(common) - len(misshaped)
    lines = [
        f"state dict does not fit {what}: {matching} of {len(expected)} keys match; "
        f"{len(missing)} missing, {len(unexpected)} unexpected, {len(misshaped)} mis-shaped"
    ]
    if missing:
        lines.append(_names("missing", missing))
    if unexpected:
        lines.append(_names("unexpected", unexpected))
    if misshaped:
        lines.append(_names("mis-shaped", [
            f"{key}: got {tuple(given[key])}, expected {tuple(expected[key])}" for key in misshaped], "; "))
    prefix = _common_prefix(list(given))
    if prefix is not None and prefix not in {key.split(".", 1)[0] for key in expected}:
        lines.append(f"  every given key starts with '{prefix}.' (saved from a wrapper such as nn.DataParallel?); "
                     f"strip it: {{k.removeprefix('{prefix}.'): v for k, v in state_dict.items()}}")
        given = {key.split(".", 1)[1]: shape for key, shape in given.items()}
    guess = guess_architecture(given)
    if guess is None:
        lines.append("  the given keys look like no zoo architecture")
    else:
        arch, names, shapes = guess
        lines.append(f"  the given keys look like {arch} ({names} of {len(given)} names in common with it, "
                     f"{shapes} of the same shape)")
    return "\n".join(lines)


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
            (:func:`summarise_keys`).
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
    expected = expected_keys(flat)
    if not fits or sum(map(len, filled.values())) != len(expected):
        what = nets.identify(module) or type(module).__name__
        raise ValueError(summarise_keys(expected, given, what=what))
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


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a ``.safetensors`` file, without torch.

    Raises:
        ValueError: naming the file when it is not a readable safetensors file.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(os.fspath(path))
    except (SafetensorError, TypeError, ValueError) as error:
        raise ValueError(f"{os.fspath(path)} is not a readable safetensors file ({error})") from error


def from_state_dict(
    state_dict: Mapping[str, np.ndarray], arch: str, *, input_shape: tuple[int, ...] | None = None, **arch_kwargs: Any
) -> Model:
    """Zoo architecture ``arch`` with the weights of a torchvision-named state dict (numpy arrays).

    Args:
        state_dict: ``{torch key: array}`` in torch's layout.
        arch: a zoo name such as ``"resnet18"`` (``jaxplain.nets.ARCHITECTURES``).
        input_shape: NHWC shape used to trace parameter shapes (default 1x224x224x3).
        **arch_kwargs: constructor arguments, e.g. ``num_classes=10``.

    Returns:
        The ``Model``, ``name=arch``, with ImageNet's ``mean`` and ``std``.

    Raises:
        ValueError: for an unknown ``arch``, or :func:`summarise_keys`'s summary when
            the keys do not fit.
    """
    return build_model(
        nets.build(arch, **arch_kwargs),
        state_dict,
        input_shape=input_shape or (1, 224, 224, 3),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        name=arch,
    )


def load(
    path: str | os.PathLike, arch: str, *, input_shape: tuple[int, ...] | None = None, **arch_kwargs: Any
) -> Model:
    """Zoo architecture ``arch`` with the weights of a ``.safetensors`` state dict, without torch.

    The file holds torchvision's keys in torch's layout, as
    ``safetensors.torch.save_file(model.state_dict(), path)`` writes them.
    ``converters.load`` (which needs torch) reads ``.pth`` files as well.

    Args:
        path: a ``.safetensors`` file.
        arch: a zoo name such as ``"resnet18"`` (``jaxplain.nets.ARCHITECTURES``).
        input_shape: NHWC shape used to trace parameter shapes (default 1x224x224x3).
        **arch_kwargs: constructor arguments, e.g. ``num_classes=10``.

    Returns:
        The ``Model`` (as :func:`from_state_dict`).

    Raises:
        ValueError: for another kind of file, an unreadable one, or keys that do not fit.
    """
    if not os.fspath(path).endswith(".safetensors"):
        raise ValueError(
            f"{os.fspath(path)}: only .safetensors files load without torch; for .pth files "
            'pip install ".[converters]" and use converters.load'
        )
    return from_state_dict(read_safetensors(path), arch, input_shape=input_shape, **arch_kwargs)


__all__ = [
    "EXAMPLES",
    "build_model",
    "expected_keys",
    "flat_template",
    "from_state_dict",
    "guess_architecture",
    "load",
    "read_safetensors",
    "summarise_keys",
    "template_variables",
    "torch_key",
    "torch_shape",
    "variables_from_state_dict",
    "zoo_keys",
]
