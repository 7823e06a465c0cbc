"""State-dict keys: short summaries of a mismatch and a guess at the architecture keys belong to.

Torch-free: keys arrive as ``{name: shape}`` mappings, whatever read them. The zoo's
key sets (:func:`zoo_keys`) are torchvision's names with torch's shapes, traced once
per architecture (abstractly, nothing computed) when a summary first needs them.
"""

from __future__ import annotations

import functools
import re
from typing import Iterable, Mapping

import jax
import jax.numpy as jnp
from flax import traverse_util

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
    from jaxplain import nets

    module = nets.build(arch)
    for size in (64, 224):
        try:
            shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3), jnp.float32))
            break
        except ValueError:
            continue
    template = {collection: traverse_util.flatten_dict(tree, sep="/") for collection, tree in shapes.items()}
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
    from jaxplain import nets

    given = {key: shape for key, shape in given.items() if not key.endswith(".num_batches_tracked")}
    patterns = {_pattern(key) for key in given}
    families: dict[type, list[str]] = {}
    for arch in nets.ARCHITECTURES:
        families.setdefault(type(nets.build(arch)), []).append(arch)
    fits = {family: _jaccard(patterns, map(_pattern, dict(_zoo_keys(members[0])))) for family, members in families.items()}
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


__all__ = ["EXAMPLES", "expected_keys", "guess_architecture", "summarise_keys", "torch_key", "torch_shape", "zoo_keys"]
