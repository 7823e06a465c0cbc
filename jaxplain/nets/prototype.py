"""Prototype networks in CaBRNet's generic form: a cut zoo backbone, add-on layers, prototypes,
a similarity layer and a decision layer.

CaBRNet (``cabrnet/archs/generic/model.py``, ``conv_extractor.py``) builds every prototype model
the same way: a torchvision backbone cut at one layer (``extractor.convnet``), add-on layers
(``extractor.add_on``), then a classifier holding the prototypes, a similarity layer turning
squared L2 distances into similarity maps, and a decision layer. Module paths here follow the
torch state dict (``extractor.convnet.layer2.0.conv1``, ``extractor.add_on.conv1``,
``classifier.prototypes``, ``classifier.last_layer``), so converted weights land by name.

Implemented: ProtoPNet's decision (``cabrnet/archs/protopnet/decision.py``: minimum distance per
prototype, similarity, a bias-free linear layer; its legacy ``compatibility_mode`` too) and
ProtoTree's soft binary decision tree (``cabrnet/archs/prototree/decision.py``,
``cabrnet/core/utils/tree.py``, pruned trees included), with any of CaBRNet's L2 similarities
(``cabrnet/core/utils/similarities.py``: ``ProtoPNetSimilarity``, ``LegacyProtoPNetSimilarity``,
``ProtoTreeSimilarity``, ``LegacyProtoTreeSimilarity``).

Layout: NHWC throughout; similarity maps are ``[N, h, w, P]``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxplain.model import Model
from jaxplain.nets import ARCHITECTURES, layers, resnet, vgg

RESNETS = {name: make for name, make in ARCHITECTURES.items() if getattr(make, "func", None) is resnet.ResNet}
VGGS = {name: make for name, make in ARCHITECTURES.items() if getattr(make, "func", None) is vgg.VGG}
RESNET_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
SIMILARITIES = ("ProtoPNetSimilarity", "LegacyProtoPNetSimilarity", "ProtoTreeSimilarity", "LegacyProtoTreeSimilarity")
ADD_ON_LAYERS = ("Conv2d", "ReLU", "Sigmoid", "BatchNorm2d", "Dropout", "Identity", "LeakyReLU", "Tanh", "MaxPool2d",
                 "AvgPool2d")


def source_layers(arch: str) -> tuple[str, ...]:
    """The layers a backbone of zoo architecture ``arch`` may be cut at (torchvision node names)."""
    if arch in RESNETS:
        return RESNET_CHILDREN
    if arch in VGGS:
        return ("features",) + tuple(f"features.{i}" for i in range(len(_vgg_items(arch))))
    raise ValueError(f"unsupported backbone {arch!r}; supported: {', '.join(sorted(RESNETS) + sorted(VGGS))}")


def _vgg_items(arch: str) -> list[tuple[str, Any]]:
    """VGG ``features`` as ``(kind, width)`` items in torchvision's index order."""
    keywords = VGGS[arch].keywords
    items: list[tuple[str, Any]] = []
    for entry in keywords["cfg"]:
        if entry == vgg.POOL:
            items.append(("pool", None))
            continue
        items.append(("conv", int(entry)))
        if keywords.get("batch_norm", False):
            items.append(("bn", None))
        items.append(("relu", None))
    return items


class Backbone(nn.Module):
    """A zoo backbone (``arch``) run up to and including ``source_layer``, with torchvision's paths.

    Equals ``torchvision.models.feature_extraction.create_feature_extractor(model,
    {source_layer: ...})``, as CaBRNet's ``ConvExtractor`` builds it.
    """

    arch: str
    source_layer: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        allowed = source_layers(self.arch)
        if self.source_layer not in allowed:
            raise ValueError(f"cannot cut {self.arch} at {self.source_layer!r}; choose one of {', '.join(allowed)}")
        if self.arch in RESNETS:
            return self._resnet(x)
        return self._vgg(x)

    def _resnet(self, x: jax.Array) -> jax.Array:
        keywords = RESNETS[self.arch].keywords
        block = keywords["block"]
        groups, width = keywords.get("groups", 1), keywords.get("width_per_group", 64)
        stop = RESNET_CHILDREN.index(self.source_layer)
        stem = (
            lambda v: layers.Conv2d(64, 7, 2, 3, use_bias=False, name="conv1")(v),
            lambda v: layers.BatchNorm2d(name="bn1")(v),
            lambda v: layers.ReLU(name="relu")(v),
            lambda v: layers.MaxPool2d(3, 2, 1, name="maxpool")(v),
        )
        for step in stem[: stop + 1]:
            x = step(x)
        in_channels = 64
        for stage, blocks in enumerate(keywords["stage_sizes"][: max(stop - 3, 0)]):
            planes = 64 * 2**stage
            x = resnet.Stage(block, planes, blocks, 1 if stage == 0 else 2, in_channels, groups, width,
                             name=f"layer{stage + 1}")(x)
            in_channels = planes * block.expansion
        return x

    def _vgg(self, x: jax.Array) -> jax.Array:
        items = _vgg_items(self.arch)
        stop = len(items) if self.source_layer == "features" else int(self.source_layer.split(".")[1]) + 1
        return _VGGPrefix(tuple(items[:stop]), name="features")(x)


class _VGGPrefix(nn.Module):
    """The first layers of a VGG ``features`` block, numbered as torchvision numbers them."""

    items: tuple[tuple[str, Any], ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for index, (kind, width) in enumerate(self.items):
            name = str(index)
            if kind == "conv":
                x = layers.Conv2d(width, 3, 1, 1, name=name)(x)
            elif kind == "bn":
                x = layers.BatchNorm2d(name=name)(x)
            elif kind == "relu":
                x = layers.ReLU(name=name)(x)
            else:
                x = layers.MaxPool2d(2, 2, name=name)(x)
        return x


LayerSpec = tuple[str, str, tuple[tuple[str, Any], ...]]
"""An add-on layer: ``(name, layer type, sorted keyword arguments of the zoo layer)``."""


class AddOn(nn.Module):
    """CaBRNet's add-on layers (``extractor.add_on``): named layers applied in order."""

    specs: tuple[LayerSpec, ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for name, kind, options in self.specs:
            if kind not in ADD_ON_LAYERS:
                raise ValueError(
                    f"add-on layer {name!r}: unsupported type {kind}; supported: {', '.join(ADD_ON_LAYERS)}")
            x = getattr(layers, kind)(**dict(options), name=name)(x)
        return x


class ConvExtractor(nn.Module):
    """``extractor``: ``convnet`` (the cut backbone), then ``add_on`` (``cabrnet/archs/generic/conv_extractor.py``)."""

    arch: str
    source_layer: str
    add_on: tuple[LayerSpec, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = Backbone(self.arch, self.source_layer, name="convnet")(x)
        return AddOn(self.add_on, name="add_on")(x) if self.add_on else x


def squared_distances(features: jax.Array, prototypes: jax.Array) -> jax.Array:
    """``||f - p||^2`` for every location and prototype, ``[N, h, w, D] x [P, D] -> [N, h, w, P]``.

    Expanded as ``||f||^2 - 2 f.p + ||p||^2`` (one matrix product), as torch's ``cdist`` does for
    more than 25 rows and CaBRNet's legacy layers always do.
    """
    cross = jnp.einsum("nhwd,pd->nhwp", features, prototypes)
    return jnp.sum(features**2, axis=-1, keepdims=True) - 2 * cross + jnp.sum(prototypes**2, axis=-1)


def log_similarity(distances: jax.Array, epsilon: float = 1e-4) -> jax.Array:
    """ProtoPNet's similarity of squared distances: ``log((d + 1) / (d + eps))`` with ``d = relu(distances)``."""
    distances = jax.nn.relu(distances)
    return jnp.log((distances + 1) / (distances + epsilon))


SIMILARITY_LAYER = "classifier.similarity_layer"
"""The path of a prototype network's similarity layer (where CaBRNet's similarity rule applies)."""


class L2Similarity(nn.Module):
    """CaBRNet's L2 similarity layers (``cabrnet/core/utils/similarities.py``), by class name.

    ``ProtoPNetSimilarity``/``LegacyProtoPNetSimilarity``: ``log((d + 1) / (d + eps))`` with
    ``d = relu(||f - p||^2)``, ``eps = stability_factor`` (1e-4).
    ``ProtoTreeSimilarity``/``LegacyProtoTreeSimilarity``: ``exp(-sqrt(|d| + eps))`` (eps 1e-14), or
    ``-sqrt(|d| + eps)`` with ``log_probabilities``. The legacy variants differ from the others only
    in the order of floating-point operations in torch.
    """

    layer_kind = "similarity"

    kind: str = "ProtoPNetSimilarity"
    stability_factor: float | None = None
    log_probabilities: bool = False

    @property
    def epsilon(self) -> float:
        if self.stability_factor is not None:
            return self.stability_factor
        return 1e-4 if "ProtoPNet" in self.kind else 1e-14

    @nn.nowrap
    def distances_to_similarities(self, distances: jax.Array) -> jax.Array:
        if self.kind not in SIMILARITIES:
            raise ValueError(f"unknown similarity {self.kind!r}; supported: {', '.join(SIMILARITIES)}")
        if "ProtoPNet" in self.kind:
            return log_similarity(distances, self.epsilon)
        scores = jnp.sqrt(jnp.abs(distances) + self.epsilon)
        return -scores if self.log_probabilities else jnp.exp(-scores)

    @nn.compact
    def __call__(self, features: jax.Array, prototypes: jax.Array) -> jax.Array:
        if features.shape[-1] != prototypes.shape[-1]:
            raise ValueError(f"the extractor gives {features.shape[-1]} feature channels, the prototypes have "
                             f"{prototypes.shape[-1]}: set num_features to the extractor's output width")
        return self.distances_to_similarities(squared_distances(features, prototypes))


class ProtoPNetClassifier(nn.Module):
    """ProtoPNet's decision (``cabrnet/archs/protopnet/decision.py``): prototypes, similarity, linear layer.

    ``prototypes`` is ``[P, D]``; ``proto_class_map`` ``[P, K]`` (a constant, kept for
    ``prototype_class_mapping``); ``last_layer`` a bias-free ``Linear(P -> K)``. Logits are the
    linear layer applied to each prototype's similarity at its closest location;
    ``compatibility_mode`` reproduces legacy ProtoPNet (the distance is not clamped at 0).
    """

    num_classes: int
    num_prototypes: int
    num_features: int
    similarity: str = "ProtoPNetSimilarity"
    stability_factor: float | None = None
    log_probabilities: bool = False
    compatibility_mode: bool = False

    def setup(self):
        shape = (self.num_prototypes, self.num_features)
        per_class = max(self.num_prototypes // self.num_classes, 1)
        class_map = jax.nn.one_hot(jnp.arange(self.num_prototypes) // per_class, self.num_classes)
        self.prototypes = self.param("prototypes", nn.initializers.uniform(1.0), shape)
        self.proto_class_map = self.param("proto_class_map", lambda key: class_map)
        self.similarity_layer = L2Similarity(self.similarity, self.stability_factor, self.log_probabilities)
        self.last_layer = layers.Linear(self.num_classes, use_bias=False)

    def similarities(self, features: jax.Array) -> jax.Array:
        """``[N, h, w, P]`` similarity maps."""
        return self.similarity_layer(features, self.prototypes)

    def distances(self, features: jax.Array) -> jax.Array:
        """``[N, h, w, P]`` squared L2 distances."""
        return squared_distances(features, self.prototypes)

    def __call__(self, features: jax.Array) -> jax.Array:
        minimum = jnp.min(self.distances(features), axis=(1, 2))
        if self.compatibility_mode:
            scores = jnp.log((minimum + 1) / (minimum + 1e-4))
        else:
            scores = self.similarity_layer.distances_to_similarities(minimum)
        return self.last_layer(scores)


TreeLeaf = tuple[tuple[int, bool], ...]
"""A leaf of a soft decision tree, as its path from the root: ``(prototype index, took the similar branch)``."""
STRATEGIES = ("distributed", "sample_max", "greedy")


def binary_tree(depth: int) -> tuple[TreeLeaf, ...]:
    """The leaves of CaBRNet's full ProtoTree of ``depth`` (``BinaryNode.create_binary_tree``).

    Prototypes are numbered in pre-order with the dissimilar ("nsim") subtree first, and the
    leaves come in the same order: ``2**depth - 1`` prototypes, ``2**depth`` leaves.
    """
    if depth < 1:
        raise ValueError(f"tree depth must be at least 1, got {depth}")
    leaves: list[TreeLeaf] = []

    def grow(level: int, prototype: int, path: TreeLeaf) -> int:
        if level == depth:
            leaves.append(path)
            return prototype
        after_dissimilar = grow(level + 1, prototype + 1, path + ((prototype, False),))
        return grow(level + 1, after_dissimilar, path + ((prototype, True),))

    grow(0, 0, ())
    return tuple(leaves)


def log1mexp(x: jax.Array) -> jax.Array:
    """``log(1 - exp(-x))`` for ``x > 0``, accurately on both sides of ``log 2`` (Maechler 2012, as CaBRNet)."""
    return jnp.where(x < jnp.log(2.0), jnp.log(-jnp.expm1(-x)), jnp.log1p(-jnp.exp(-x)))


class ProtoTreeClassifier(nn.Module):
    """ProtoTree's decision (``cabrnet/archs/prototree/decision.py``): a soft binary tree over prototypes.

    Each inner node holds one prototype; its similarity ``s`` (the maximum of the prototype's
    similarity map) is the probability of the similar branch and ``1 - s`` of the other one
    (with ``log_probabilities``, ``s`` is a log-probability and the other branch is
    ``log1mexp(|s| + 1e-7)``). A leaf's probability is the product along its path; each leaf
    holds a class distribution ``softmax(leaf_logits[l])``. ``strategy``: ``"distributed"``
    (CaBRNet's default: the probability-weighted sum of the leaf distributions, or its
    log-sum-exp), ``"sample_max"`` (the most probable leaf's distribution) or ``"greedy"`` (the
    leaf reached by taking the more probable branch at every node; CaBRNet 1.2's ``GREEDY``
    reads the leaf probabilities instead of its greedy path and so returns ``sample_max``'s
    answer). ``leaves`` gives the tree (pruned trees too), ``num_prototypes`` the rows of
    ``prototypes`` (a pruned tree leaves some unused). ``log_similarities`` (default: as
    ``log_probabilities``) is whether the similarity layer returns log-probabilities: CaBRNet 1.2
    hands the classifier's ``log_probabilities`` to the tree but not to the similarity layer, so
    its log-probability trees read probabilities as log-probabilities, and converted ones keep
    ``log_similarities=False`` to match.
    """

    num_classes: int
    num_prototypes: int
    num_features: int
    leaves: tuple[TreeLeaf, ...]
    similarity: str = "ProtoTreeSimilarity"
    stability_factor: float | None = None
    log_probabilities: bool = False
    strategy: str = "distributed"
    log_similarities: bool | None = None

    def setup(self):
        self.prototypes = self.param("prototypes", nn.initializers.uniform(1.0),
                                     (self.num_prototypes, self.num_features))
        self.leaf_logits = self.param("leaf_logits", nn.initializers.normal(1.0), (len(self.leaves), self.num_classes))
        log_similarities = self.log_probabilities if self.log_similarities is None else self.log_similarities
        self.similarity_layer = L2Similarity(self.similarity, self.stability_factor, log_similarities)

    def similarities(self, features: jax.Array) -> jax.Array:
        """``[N, h, w, P]`` similarity maps."""
        return self.similarity_layer(features, self.prototypes)

    def distances(self, features: jax.Array) -> jax.Array:
        """``[N, h, w, P]`` squared L2 distances."""
        return squared_distances(features, self.prototypes)

    @nn.nowrap
    def _paths(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per leaf and depth: the prototype index, whether the similar branch was taken, whether the step exists."""
        if not self.leaves:
            raise ValueError("a decision tree needs at least one leaf")
        depth = max(len(path) for path in self.leaves)
        index = np.zeros((len(self.leaves), depth), np.int32)
        similar = np.zeros((len(self.leaves), depth), bool)
        valid = np.zeros((len(self.leaves), depth), bool)
        for leaf, path in enumerate(self.leaves):
            for step, (prototype, took_similar) in enumerate(path):
                if not 0 <= prototype < self.num_prototypes:
                    raise ValueError(f"tree leaf {leaf}: prototype {prototype} outside 0..{self.num_prototypes - 1}")
                index[leaf, step], similar[leaf, step], valid[leaf, step] = prototype, took_similar, True
        return index, similar, valid

    def leaf_probabilities(self, features: jax.Array) -> jax.Array:
        """``[N, L]`` probability (log-probability with ``log_probabilities``) of reaching each leaf."""
        taken, _, valid = self._branches(features)
        return self._reach(taken, valid)

    @nn.nowrap
    def _reach(self, taken: jax.Array, valid: np.ndarray) -> jax.Array:
        """The product (sum of logs) of the taken branches' probabilities along each leaf's path."""
        if self.log_probabilities:
            return jnp.sum(jnp.where(valid, taken, 0.0), axis=-1)
        return jnp.prod(jnp.where(valid, taken, 1.0), axis=-1)

    def _branches(self, features: jax.Array) -> tuple[jax.Array, jax.Array, np.ndarray]:
        """Along every leaf's path ``[N, L, depth]``: the taken branch's (log-)probability, the other's, validity."""
        scores = jnp.max(self.similarities(features), axis=(1, 2))
        index, similar, valid = self._paths()
        sims = scores[:, index]
        dissimilar = log1mexp(jnp.abs(sims) + 1e-7) if self.log_probabilities else 1 - sims
        return jnp.where(similar, sims, dissimilar), jnp.where(similar, dissimilar, sims), valid

    def __call__(self, features: jax.Array) -> jax.Array:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        taken, other, valid = self._branches(features)
        reach = self._reach(taken, valid)
        normalise = jax.nn.log_softmax if self.log_probabilities else jax.nn.softmax
        distributions = normalise(self.leaf_logits, axis=-1)
        if self.strategy == "distributed":
            if self.log_probabilities:
                return jax.nn.logsumexp(reach[..., None] + distributions, axis=1)
            return reach @ distributions
        if self.strategy == "sample_max":
            leaf = jnp.argmax(reach, axis=1)
        else:
            leaf = jnp.argmax(jnp.all(jnp.where(valid, taken >= other, True), axis=-1), axis=1)
        return distributions[leaf]

    def prototype_class_mapping(self) -> jax.Array:
        """``[P, K]``: the classes (argmax of each leaf's distribution) of the leaves below each prototype's node."""
        index, _, valid = self._paths()
        below = np.zeros((self.num_prototypes, len(self.leaves)), np.float32)
        for leaf in range(len(self.leaves)):
            below[index[leaf][valid[leaf]], leaf] = 1.0
        classes = jax.nn.one_hot(jnp.argmax(self.leaf_logits, axis=-1), self.num_classes)
        return (below @ classes > 0).astype(jnp.float32)


class _PrototypeNetwork(nn.Module):
    """CaBRNet's generic model: ``extractor`` (cut backbone + add-on), then ``classifier`` (built by ``_classifier``).

    ``model(x)`` gives the classifier's output ``[N, K]``; ``similarities``, ``distances``,
    ``features`` and ``prototype_class_mapping`` are further methods
    (``module.apply(variables, x, method="similarities")``, or :class:`PrototypeModel`'s).
    """

    def setup(self):
        self.extractor = ConvExtractor(self.arch, self.source_layer, self.add_on)
        self.classifier = self._classifier()

    def features(self, x: jax.Array) -> jax.Array:
        return self.extractor(x)

    def similarities(self, x: jax.Array) -> jax.Array:
        return self.classifier.similarities(self.extractor(x))

    def similarities_of_features(self, features: jax.Array) -> jax.Array:
        """Similarity maps ``[N, h, w, P]`` of extractor outputs ``[N, h, w, D]`` (each location on its own)."""
        return self.classifier.similarities(features)

    def distances(self, x: jax.Array) -> jax.Array:
        return self.classifier.distances(self.extractor(x))

    def prototype_vectors(self) -> jax.Array:
        """The prototypes ``[P, D]`` in feature space."""
        return self.classifier.prototypes

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.classifier(self.extractor(x))


class ProtoPNet(_PrototypeNetwork):
    """A CaBRNet ProtoPNet: logits are a linear layer over each prototype's best similarity.

    ``num_features`` is the extractor's output width.
    """

    arch: str
    source_layer: str
    num_classes: int
    num_prototypes: int
    num_features: int
    add_on: tuple[LayerSpec, ...] = ()
    similarity: str = "ProtoPNetSimilarity"
    stability_factor: float | None = None
    log_probabilities: bool = False
    compatibility_mode: bool = False

    @nn.nowrap
    def _classifier(self) -> ProtoPNetClassifier:
        return ProtoPNetClassifier(self.num_classes, self.num_prototypes, self.num_features, self.similarity,
                                   self.stability_factor, self.log_probabilities, self.compatibility_mode)

    def prototype_class_mapping(self) -> jax.Array:
        return self.classifier.proto_class_map


class ProtoTree(_PrototypeNetwork):
    """A CaBRNet ProtoTree: the output is :class:`ProtoTreeClassifier`'s class distribution ``[N, K]``.

    Probabilities, or log-probabilities with ``log_probabilities``; ``leaves`` from
    :func:`binary_tree` or a converted (possibly pruned) tree; ``log_similarities`` as
    :class:`ProtoTreeClassifier`'s.
    """

    arch: str
    source_layer: str
    num_classes: int
    num_prototypes: int
    num_features: int
    leaves: tuple[TreeLeaf, ...]
    add_on: tuple[LayerSpec, ...] = ()
    similarity: str = "ProtoTreeSimilarity"
    stability_factor: float | None = None
    log_probabilities: bool = False
    strategy: str = "distributed"
    log_similarities: bool | None = None

    @nn.nowrap
    def _classifier(self) -> ProtoTreeClassifier:
        return ProtoTreeClassifier(self.num_classes, self.num_prototypes, self.num_features, self.leaves,
                                   self.similarity, self.stability_factor, self.log_probabilities, self.strategy,
                                   self.log_similarities)

    def leaf_probabilities(self, x: jax.Array) -> jax.Array:
        """``[N, L]`` (log-)probability of reaching each leaf."""
        return self.classifier.leaf_probabilities(self.extractor(x))

    def prototype_class_mapping(self) -> jax.Array:
        return self.classifier.prototype_class_mapping()


@struct.dataclass
class PrototypeModel(Model):
    """A :class:`~jaxplain.model.Model` of a prototype network, with its similarity maps.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxplain.nets import prototype
        >>> model = prototype.protopnet("vgg11", "features.5", 3, 6, 128, input_shape=(1, 32, 32, 3))
        >>> model.similarities(jnp.zeros((2, 32, 32, 3))).shape  # [N, h, w, P]
        (2, 8, 8, 6)
    """

    def similarities(self, inputs: jax.Array) -> jax.Array:
        """``[N, h, w, P]`` similarity maps (CaBRNet's ``model.similarities``, channels last)."""
        return self.module.apply(self.variables, inputs, method="similarities")

    def distances(self, inputs: jax.Array) -> jax.Array:
        """``[N, h, w, P]`` squared L2 distances to the prototypes."""
        return self.module.apply(self.variables, inputs, method="distances")

    def features(self, inputs: jax.Array) -> jax.Array:
        """The extractor's output ``[N, h, w, D]``."""
        return self.module.apply(self.variables, inputs, method="features")

    def feature_model(self) -> Model:
        """The extractor alone, as a :class:`~jaxplain.model.Model` (its layers keep their paths)."""
        return Model(self.module, self.variables, self.input_channels, self.mean, self.std, self.name,
                     call_kwargs=(("method", "features"),), layer_channel_axis=self.layer_channel_axis)

    @property
    def prototypes(self) -> jax.Array:
        """The prototypes ``[P, D]`` in feature space."""
        return self.module.apply(self.variables, method="prototype_vectors")

    @property
    def num_prototypes(self) -> int:
        return self.module.num_prototypes

    @property
    def prototype_class_mapping(self) -> jax.Array:
        """``[P, K]`` binary map of prototypes to classes (CaBRNet's ``prototype_class_mapping``)."""
        return self.module.apply(self.variables, method="prototype_class_mapping")


def protopnet(arch: str, source_layer: str, num_classes: int, num_prototypes: int, num_features: int, *,
              add_on: tuple[LayerSpec, ...] = (), similarity: str = "ProtoPNetSimilarity",
              stability_factor: float | None = None, compatibility_mode: bool = False,
              input_shape: tuple[int, ...] = (1, 224, 224, 3), key: jax.Array | None = None) -> PrototypeModel:
    """A randomly initialised :class:`PrototypeModel` of a ProtoPNet (for tests and experiments)."""
    module = ProtoPNet(arch, source_layer, num_classes, num_prototypes, num_features, tuple(add_on), similarity,
                       stability_factor, compatibility_mode=compatibility_mode)
    return _initialised(module, input_shape, key, "protopnet")


def prototree(arch: str, source_layer: str, num_classes: int, depth: int, num_features: int, *,
              add_on: tuple[LayerSpec, ...] = (), similarity: str = "ProtoTreeSimilarity",
              stability_factor: float | None = None, log_probabilities: bool = False, strategy: str = "distributed",
              input_shape: tuple[int, ...] = (1, 224, 224, 3), key: jax.Array | None = None) -> PrototypeModel:
    """A randomly initialised :class:`PrototypeModel` of a ProtoTree with a full tree of ``depth``."""
    module = ProtoTree(arch, source_layer, num_classes, 2**depth - 1, num_features, binary_tree(depth),
                       tuple(add_on), similarity, stability_factor, log_probabilities, strategy)
    return _initialised(module, input_shape, key, "prototree")


def _initialised(module: nn.Module, input_shape: tuple[int, ...], key: jax.Array | None,
                 name: str) -> PrototypeModel:
    variables = jax.jit(module.init)(jax.random.PRNGKey(0) if key is None else key, jnp.zeros(input_shape, jnp.float32))
    return PrototypeModel(module, variables, input_channels=input_shape[-1], name=name)
