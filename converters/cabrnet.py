"""CaBRNet prototype models -> :class:`jaxplain.nets.prototype.PrototypeModel`.

Two ways in: a CaBRNet model instance (:func:`from_cabrnet`, reached through
``converters.from_torch``), or a saved state dict with the CaBRNet configuration it was built from
(:func:`load_cabrnet`: the ``model_arch.yml`` file or its dictionary). Neither imports ``cabrnet``:
the instance is read by its attributes (``extractor.arch_name``, ``extractor.source_layers``,
``extractor.add_on``, ``classifier.prototypes``, ...), the configuration as CaBRNet's
``CaBRNet.build_from_config`` reads it (``cabrnet/archs/generic/model.py``).

Supported: ProtoPNet (``ProtoPNetClassifier``) and ProtoTree (``ProtoTreeClassifier``, its tree
read from the model or from the state dict's ``_extra_state``, so pruned trees convert too) over
a ResNet/ResNeXt/Wide-ResNet or VGG backbone cut at one layer, with add-on layers of the types in
``prototype.ADD_ON_LAYERS`` and any of CaBRNet's L2 similarity layers. Anything else is refused
with a ``ValueError`` naming it.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import torch

from converters.core import build_model, flat_template
from converters.torchvision import structure_mismatches, trace_zoo_module, unsupported_modules
from jaxplain.nets import prototype
from jaxplain.nets.resnet import IMAGENET_MEAN, IMAGENET_STD

CLASSIFIERS = ("ProtoPNetClassifier", "ProtoTreeClassifier")
TREE_STATE = "_extra_state"
"""Where CaBRNet's ``ProtoTree.get_extra_state`` keeps the tree (``TreeNode.export_arch``)."""
TREE_CONSTANTS = ("_eye", "classifier._root_prob", "classifier._root_greedy_path")
"""ProtoTree buffers that hold constants, not weights."""
_ADD_ON_TORCH = {
    torch.nn.Conv2d: "Conv2d",
    torch.nn.ReLU: "ReLU",
    torch.nn.Sigmoid: "Sigmoid",
    torch.nn.BatchNorm2d: "BatchNorm2d",
    torch.nn.Dropout: "Dropout",
    torch.nn.Identity: "Identity",
    torch.nn.LeakyReLU: "LeakyReLU",
    torch.nn.Tanh: "Tanh",
    torch.nn.MaxPool2d: "MaxPool2d",
    torch.nn.AvgPool2d: "AvgPool2d",
}


def is_cabrnet(module: torch.nn.Module) -> bool:
    """Whether ``module`` looks like a CaBRNet top module (an ``extractor`` and a ``classifier`` with prototypes)."""
    classifier = getattr(module, "classifier", None)
    return (hasattr(module, "extractor") and hasattr(classifier, "prototypes")
            and hasattr(classifier, "similarity_layer"))


def _conv_spec(name: str, layer: torch.nn.Conv2d) -> prototype.LayerSpec:
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        raise ValueError(f"extractor.add_on.{name}: padding {layer.padding!r}/{layer.padding_mode} is not supported")
    options = {"out_channels": layer.out_channels, "kernel_size": tuple(layer.kernel_size),
               "stride": tuple(layer.stride), "padding": tuple(layer.padding), "dilation": tuple(layer.dilation),
               "groups": layer.groups, "use_bias": layer.bias is not None}
    return (name, "Conv2d", tuple(sorted(options.items())))


def _layer_spec(name: str, layer: torch.nn.Module) -> prototype.LayerSpec:
    kind = _ADD_ON_TORCH.get(type(layer))
    if kind is None:
        raise ValueError(f"extractor.add_on.{name}: unsupported module {type(layer).__module__}.{type(layer).__name__}")
    if kind == "Conv2d":
        return _conv_spec(name, layer)
    options: dict[str, Any] = {}
    if kind == "BatchNorm2d":
        options = {"eps": layer.eps}
    elif kind == "LeakyReLU":
        options = {"negative_slope": layer.negative_slope}
    elif kind in ("MaxPool2d", "AvgPool2d"):
        options = {"kernel_size": layer.kernel_size, "stride": layer.stride, "padding": layer.padding,
                   "ceil_mode": layer.ceil_mode}
    return (name, kind, tuple(sorted(options.items())))


def _similarity(layer: torch.nn.Module) -> dict[str, Any]:
    kind = type(layer).__name__
    if kind not in prototype.SIMILARITIES:
        raise ValueError(f"classifier.similarity_layer: unsupported similarity {kind}; "
                         f"supported: {', '.join(prototype.SIMILARITIES)}")
    return {"similarity": kind, "stability_factor": float(layer.stability_factor),
            "log_probabilities": bool(getattr(layer, "log_probabilities", False))}


def tree_leaves(arch: Mapping[str, Any]) -> tuple[tuple[prototype.TreeLeaf, ...], tuple[str, ...]]:
    """The leaves of a CaBRNet tree (``TreeNode.export_arch()``) and the state-dict key of each leaf's logits.

    A binary node's children are its dissimilar (``{node_id}_child_nsim``) and similar
    (``{node_id}_child_sim``) branches, in that order; the keys follow the module paths.
    """
    leaves: list[prototype.TreeLeaf] = []
    keys: list[str] = []

    def walk(node: Mapping[str, Any], path: prototype.TreeLeaf, prefix: str) -> None:
        kind = node.get("module")
        if kind == "LeafNode":
            leaves.append(path)
            keys.append(f"{prefix}._relative_distribution")
            return
        if kind != "BinaryNode" or len(node.get("children", ())) != 2 or len(node.get("proto_idxs") or ()) != 1:
            raise ValueError(f"classifier.tree node {node.get('node_id')!r}: unsupported {kind} "
                             "(supported: BinaryNode with two children and one prototype, LeafNode)")
        index = int(node["proto_idxs"][0])
        for child, similar in zip(node["children"], (False, True)):
            slot = f"{node['node_id']}_child_{'sim' if similar else 'nsim'}"
            walk(child, path + ((index, similar),), f"{prefix}.{slot}")

    walk(arch, (), "classifier.tree")
    return tuple(leaves), tuple(keys)


def binary_tree_arch(depth: int) -> dict[str, Any]:
    """The ``export_arch()`` of CaBRNet's full tree of ``depth`` (``BinaryNode.create_binary_tree``):
    nodes numbered in pre-order, the dissimilar subtree first."""
    counters = {"node": 0, "prototype": 0}

    def grow(level: int) -> dict[str, Any]:
        node = counters["node"]
        counters["node"] += 1
        if level == depth:
            return {"module": "LeafNode", "node_id": f"leaf_{node}"}
        index = counters["prototype"]
        counters["prototype"] += 1
        return {"module": "BinaryNode", "node_id": f"branch_{node}", "proto_idxs": [index],
                "children": [grow(level + 1), grow(level + 1)]}

    return grow(0)


def module_from_cabrnet(model: torch.nn.Module) -> prototype.ProtoPNet | prototype.ProtoTree:
    """The Flax :class:`~jaxplain.nets.prototype.ProtoPNet` or ``ProtoTree`` matching a CaBRNet model instance."""
    extractor, classifier = model.extractor, model.classifier
    kind = type(classifier).__name__
    if kind not in CLASSIFIERS:
        raise ValueError(f"classifier: unsupported decision {kind}; supported: {', '.join(CLASSIFIERS)}")
    sources = dict(getattr(extractor, "source_layers", {}))
    if len(sources) != 1:
        raise ValueError(f"extractor: exactly one feature pipeline is supported, got {sorted(sources) or 'none'}")
    arch = extractor.arch_name
    prototype.source_layers(arch)
    add_on = () if extractor.add_on is None else tuple(_layer_spec(n, c) for n, c in extractor.add_on.named_children())
    num_prototypes, num_features = classifier.prototypes.shape[:2]
    common = dict(arch=arch, source_layer=next(iter(sources.values())), num_classes=classifier.num_classes,
                  num_prototypes=num_prototypes, num_features=num_features, add_on=add_on,
                  **_similarity(classifier.similarity_layer))
    if kind == "ProtoTreeClassifier":
        common["log_similarities"] = common.pop("log_probabilities")
        return prototype.ProtoTree(leaves=tree_leaves(classifier.tree.export_arch())[0],
                                   log_probabilities=bool(classifier.log_probabilities), **common)
    return prototype.ProtoPNet(compatibility_mode=bool(getattr(classifier, "_compatibility_mode", False)), **common)


def _numpy(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(value, (torch.Tensor, np.ndarray)):
            raise ValueError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        arrays[key] = value.detach().cpu().float().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return arrays


def _prepared(state_dict: Mapping[str, np.ndarray], tree: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """CaBRNet's keys in the zoo's terms: prototypes ``[P, D, 1, 1] -> [P, D]``, constant kernels dropped;
    for a ProtoTree (``tree``: its ``export_arch()``), the constants dropped and the leaves' logits
    stacked into ``classifier.leaf_logits`` ``[L, K]`` in leaf order."""
    prepared = dict(state_dict)
    prototypes = prepared.get("classifier.prototypes")
    if prototypes is not None and prototypes.ndim == 4 and prototypes.shape[2:] == (1, 1):
        prepared["classifier.prototypes"] = prototypes[:, :, 0, 0]
    kernel = prepared.pop("classifier.similarity_layer._summation_kernel", None)
    if kernel is not None and not np.all(kernel == 1):
        raise ValueError("classifier.similarity_layer._summation_kernel: expected all ones")
    if tree is None:
        return prepared
    for key in TREE_CONSTANTS:
        prepared.pop(key, None)
    _, keys = tree_leaves(tree)
    missing = [key for key in keys if key not in prepared]
    if missing:
        raise ValueError("missing keys: " + ", ".join(missing))
    logits = [prepared.pop(key) for key in keys]
    misshaped = [f"{key}: got {tuple(value.shape)}, expected (1, K)" for key, value in zip(keys, logits)
                 if value.ndim != 2 or value.shape[0] != 1 or value.shape != logits[0].shape]
    if misshaped:
        raise ValueError("mis-shaped keys: " + ", ".join(misshaped))
    prepared["classifier.leaf_logits"] = np.concatenate(logits, axis=0)
    return prepared


def _model(module: prototype.ProtoPNet | prototype.ProtoTree, state_dict: Mapping[str, np.ndarray],
           input_shape: tuple[int, ...] | None, tree: Mapping[str, Any] | None = None,
           template: Any = None) -> prototype.PrototypeModel:
    input_shape = input_shape or (1, 224, 224, 3)
    name = f"{'prototree' if isinstance(module, prototype.ProtoTree) else 'protopnet'}_{module.arch}"
    model = build_model(module, _prepared(state_dict, tree), input_shape=input_shape, template=template,
                        mean=IMAGENET_MEAN, std=IMAGENET_STD, name=name)
    return prototype.PrototypeModel(model.module, model.variables, input_channels=input_shape[-1],
                                    mean=IMAGENET_MEAN, std=IMAGENET_STD, name=model.name)


def from_cabrnet(model: torch.nn.Module, *, input_shape: tuple[int, ...] | None = None) -> prototype.PrototypeModel:
    """Convert a CaBRNet model instance (``CaBRNet.build_from_config(...)``) with its weights.

    Raises:
        ValueError: naming every unsupported module, every backbone layer whose type or
            hyper-parameters the zoo does not reproduce (e.g. CaBRNet's ``stride_divider``),
            and every missing, unexpected or mis-shaped state-dict key.
    """
    unsupported = [f"extractor.{entry}" for entry in unsupported_modules(model.extractor)
                   if not entry.startswith("add_on")]
    if unsupported:
        raise ValueError("unsupported modules: " + ", ".join(unsupported))
    module = module_from_cabrnet(model)
    shape = tuple(input_shape or (1, 224, 224, 3))
    zoo, _ = trace_zoo_module(prototype.Backbone(module.arch, module.source_layer), shape)
    mismatches = structure_mismatches(model.extractor.convnet, zoo)
    if mismatches:
        raise ValueError(f"the backbone departs from the zoo's {module.arch}:\n"
                         + "\n".join(f"extractor.convnet.{line}" for line in mismatches))
    _, shapes = trace_zoo_module(module, shape)
    state = dict(model.state_dict())
    tree = state.pop(TREE_STATE, None)
    return _model(module, _numpy(state), shape, tree, flat_template(shapes))


def _read_config(config: str | os.PathLike | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(config, Mapping):
        return config
    import yaml

    with open(config) as handle:
        return yaml.safe_load(handle)


def _add_on_from_config(entries: Mapping[str, Any]) -> tuple[prototype.LayerSpec, ...]:
    specs = []
    for name, entry in entries.items():
        if name == "init_mode":
            continue
        kind, params = entry.get("type"), dict(entry.get("params") or {})
        if kind not in prototype.ADD_ON_LAYERS:
            raise ValueError(f"add_on.{name}: unsupported type {kind}; supported: {', '.join(prototype.ADD_ON_LAYERS)}")
        if kind == "Conv2d":
            params.pop("in_channels", None)
            if "bias" in params:
                params["use_bias"] = params.pop("bias")
            if params.pop("padding_mode", "zeros") != "zeros":
                raise ValueError(f"add_on.{name}: only zero padding is supported")
        elif kind == "BatchNorm2d":
            params = {"eps": params["eps"]} if "eps" in params else {}
        elif kind in ("ReLU", "Sigmoid", "Dropout", "Identity", "Tanh"):
            params = {}
        options = ((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items())
        specs.append((name, kind, tuple(sorted(options))))
    return tuple(specs)


def module_from_config(config: str | os.PathLike | Mapping[str, Any],
                       tree: Mapping[str, Any] | None = None) -> prototype.ProtoPNet | prototype.ProtoTree:
    """The Flax ProtoPNet or ProtoTree described by a CaBRNet model configuration (``model_arch.yml``).

    A ProtoTree's tree is ``tree`` (``TreeNode.export_arch()``, e.g. a state dict's
    ``_extra_state``: a pruned tree), else the full tree of the configured ``depth``.
    """
    config = _read_config(config)
    missing = [field for field in ("extractor", "classifier") if field not in config]
    if missing:
        raise ValueError(f"CaBRNet configuration: missing {', '.join(missing)}")
    extractor, classifier = config["extractor"], config["classifier"]
    backbone = extractor.get("backbone", {})
    if backbone.get("postprocess"):
        raise ValueError(f"extractor.backbone.postprocess: unsupported ({', '.join(backbone['postprocess'])})")
    if backbone.get("layer"):
        source, add_on = backbone["layer"], extractor.get("add_on")
    else:
        pipelines = {name: entry for name, entry in extractor.items() if name != "backbone"}
        if len(pipelines) != 1:
            raise ValueError(f"extractor: exactly one feature pipeline is supported, got {sorted(pipelines) or 'none'}")
        pipeline = next(iter(pipelines.values()))
        source, add_on = pipeline["source_layer"], pipeline.get("add_on")
    if classifier.get("name") not in CLASSIFIERS:
        raise ValueError(
            f"classifier: unsupported decision {classifier.get('name')}; supported: {', '.join(CLASSIFIERS)}")
    params = classifier.get("params", {})
    legacy = "LegacyProtoTreeSimilarity" if classifier.get("name") == "ProtoTreeClassifier" else "LegacyProtoPNetSimilarity"
    similarity = config.get("similarity") or {"name": legacy}
    if similarity.get("name") not in prototype.SIMILARITIES:
        raise ValueError(
            f"similarity: unsupported {similarity.get('name')}; supported: {', '.join(prototype.SIMILARITIES)}")
    sim_params = similarity.get("params", {})
    add_on_specs = _add_on_from_config(add_on or {})
    widths = [dict(options)["out_channels"] for _, kind, options in add_on_specs if kind == "Conv2d"]
    num_features = params.get("num_features") or (widths[-1] if widths else None)
    if num_features is None:
        raise ValueError("classifier.params.num_features is required when the add-on has no convolution")
    arch = backbone.get("arch", "").lower()
    prototype.source_layers(arch)
    if classifier["name"] == "ProtoTreeClassifier":
        leaves = tree_leaves(tree if tree is not None else binary_tree_arch(int(params["depth"])))[0]
        count = 1 + max((index for path in leaves for index, _ in path), default=-1)
        return prototype.ProtoTree(
            arch, source, params["num_classes"], max(count, 2 ** int(params["depth"]) - 1), num_features, leaves,
            add_on_specs, similarity["name"], sim_params.get("stability_factor"),
            bool(params.get("log_probabilities", False)),
            log_similarities=bool(sim_params.get("log_probabilities", False)))
    return prototype.ProtoPNet(
        arch, source, params["num_classes"], params["num_classes"] * params["num_proto_per_class"], num_features,
        add_on_specs, similarity["name"], sim_params.get("stability_factor"),
        bool(sim_params.get("log_probabilities", False)), bool(params.get("compatibility_mode", False)))


def load_cabrnet(path: str | os.PathLike | Mapping[str, Any], config: str | os.PathLike | Mapping[str, Any], *,
                 input_shape: tuple[int, ...] | None = None) -> prototype.PrototypeModel:
    """A CaBRNet ProtoPNet or ProtoTree from its saved state dict (``model_state.pth``, or the dict itself)
    and configuration; a ProtoTree's (possibly pruned) tree comes from the state dict's ``_extra_state``.

    Raises:
        ValueError: for an unsupported configuration, or naming every missing, unexpected or
            mis-shaped key.
    """
    from converters import read_state_dict

    state = dict(path if isinstance(path, Mapping) else read_state_dict(path))
    tree = state.pop(TREE_STATE, None)
    module = module_from_config(config, tree)
    if tree is None and isinstance(module, prototype.ProtoTree):
        tree = binary_tree_arch(int(_read_config(config)["classifier"]["params"]["depth"]))
    return _model(module, _numpy(state), input_shape, tree)
