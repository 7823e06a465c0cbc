"""Composites: which relevance rule each layer gets, and the canonizers applied first.

A :class:`Composite` maps layers to rules as Zennit's composites do
(zennit/composites.py): ``name_map`` (exact layer paths) first, then ``first_map``
for the first layer (in execution order) of a kind it lists, then ``layer_map`` by
kind; the first entry that matches wins, later entries of a map are not consulted.
Kinds are those of the program's blocks (:mod:`jaxplain.program.blocks`), whatever
framework or class wrote the layer: ``"convolution"``, ``"dense"``, ``"batch_norm"``,
``"activation"``, ``"sum"``, ``"avg_pool"``, ``"scale"``, ``"max_pool"``, ``"softmax"``,
``"product"``, ``"norm"`` (and ``"similarity"``, a prototype network's similarity layer).
Max pooling and structural operations (reshape, concatenation, padding) keep their
gradient, which routes relevance without copying it; every other kind needs a rule, or
LRP refuses the model, naming the layer.

Canonizer: with ``merge_batch_norm`` (the default) every affine-only layer (an inference
batch norm, whatever wrote it) that reads the output of a convolution or dense layer and
nothing else is folded into that layer's weights (``W' = W s``, ``b' = (b - mu) s + beta``
with ``s = gamma / sqrt(var + eps)``), as a pure function of the model's traced weights; the
model is never modified. Residual additions are ``"sum"`` blocks, so the ``Norm`` entry of
every preset splits relevance between the branches in proportion, instead of copying it to
both (Zennit needs its ``ResNetCanonizer`` for that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from jaxplain.rules import lrp, prp, relevance

CONVOLUTION = ("convolution",)
DENSE = ("dense",)
LINEAR = CONVOLUTION + DENSE
ACTIVATION = ("activation",)
SUM = ("sum",)
AVG_POOL = ("avg_pool",)
BATCH_NORM = ("batch_norm",)
SCALE = ("scale",)
MAX_POOL = ("max_pool",)
SOFTMAX = ("softmax",)
PRODUCT = ("product",)
NORM = ("norm",)
SIMILARITY = ("similarity",)
KINDS = LINEAR + ACTIVATION + SUM + AVG_POOL + BATCH_NORM + SCALE + MAX_POOL + SOFTMAX + PRODUCT + NORM + SIMILARITY
"""Every layer kind a composite can map."""
GRADIENT_OK = MAX_POOL
"""Kinds whose plain gradient routes relevance (they need no rule)."""

LayerMap = tuple[tuple[tuple[str, ...], Any], ...]
NameMap = tuple[tuple[tuple[str, ...], Any], ...]


def _check_kinds(entries: LayerMap, field_name: str) -> None:
    for entry in entries:
        kinds = entry[0]
        if isinstance(kinds, str):
            kinds = (kinds,)
        for kind in kinds:
            if not isinstance(kind, str):
                raise TypeError(f"{field_name} takes layer kinds ({', '.join(KINDS)}), not {kind!r}; "
                                "for one layer use name_map=((\"block.conv\",), rule)")
            if kind not in KINDS:
                raise ValueError(f"{field_name}: unknown layer kind {kind!r}; known: {', '.join(KINDS)}")


def base_layer_map(stabilizer: float = 1e-6) -> LayerMap:
    """Zennit's shared entries: activations pass, sums and average pooling by Norm, batch norm passes;
    element-wise scalings by constants pass relevance unchanged."""
    return (
        (ACTIVATION, lrp.Pass()),
        (SUM, lrp.Norm(stabilizer)),
        (AVG_POOL, lrp.Norm(stabilizer)),
        (BATCH_NORM, lrp.Pass()),
        (SCALE, lrp.Pass()),
    )


def _normalised(entries: Any) -> LayerMap:
    return tuple(((kinds,) if isinstance(kinds, str) else tuple(kinds), rule) for kinds, rule in entries)


@dataclass(frozen=True)
class Composite:
    """A rule per layer: ``name_map``, then ``first_map`` (first matching layer only), then ``layer_map``.

    ``layer_map`` and ``first_map`` entries are ``(kinds, rule)`` with kinds from :data:`KINDS`;
    ``name_map`` entries are ``(paths, rule)`` with dotted layer paths (``jx.layers`` lists them).
    A linear rule in ``name_map`` applies to the convolutions and dense layers at its paths (a torch
    ``MultiheadAttention`` holds its projections, products and softmax under one path).
    """

    layer_map: LayerMap = ()
    first_map: LayerMap = ()
    name_map: NameMap = ()
    merge_batch_norm: bool = True

    def __post_init__(self):
        _check_kinds(self.layer_map, "layer_map")
        _check_kinds(self.first_map, "first_map")
        object.__setattr__(self, "layer_map", _normalised(self.layer_map))
        object.__setattr__(self, "first_map", _normalised(self.first_map))
        object.__setattr__(self, "name_map", tuple(((paths,) if isinstance(paths, str) else tuple(paths), rule)
                                                   for paths, rule in self.name_map))

    def rule_for(self, kind: str | None, path: str, first_path: str | None) -> Any:
        """The rule of one layer of ``kind`` at ``path`` (``None``: ordinary gradient)."""
        for paths, rule in self.name_map:
            if path in paths and (kind in LINEAR or not isinstance(rule, lrp.LinearRule)):
                return rule
        if path == first_path:
            for kinds, rule in self.first_map:
                if kind in kinds:
                    return rule
        for kinds, rule in self.layer_map:
            if kind in kinds:
                return rule
        return None

    def first_layer(self, layers: Sequence[tuple[str, str | None]]) -> str | None:
        """The path of the first ``(path, kind)`` whose kind a ``first_map`` entry lists."""
        kinds = tuple(k for entry, _ in self.first_map for k in entry)
        return next((path for path, kind in layers if kinds and kind in kinds), None)


def _composite(kind: str) -> Callable:
    def register(cls):
        PRESETS[kind] = cls
        return cls

    return register


PRESETS: dict[str, type] = {}


class _EpsilonConvolutions(Composite):
    """Dense layers Epsilon, convolutions ``convolution_rule``, optionally Flat on the first linear layer."""

    flat_first = False

    @staticmethod
    def convolution_rule(stabilizer: float, set_bias_to_zero: bool) -> lrp.LinearRule:
        raise NotImplementedError

    def __init__(self, epsilon: float = 1e-6, stabilizer: float = 1e-6, set_bias_to_zero: bool = False,
                 layer_map: LayerMap = (), first_map: LayerMap = (), name_map: NameMap = (),
                 merge_batch_norm: bool = True):
        rules = (
            (CONVOLUTION, self.convolution_rule(stabilizer, set_bias_to_zero)),
            (DENSE, lrp.Epsilon(epsilon, set_bias_to_zero)),
        )
        first = ((LINEAR, lrp.Flat(stabilizer)),) if self.flat_first else ()
        super().__init__(tuple(layer_map) + base_layer_map(stabilizer) + rules, tuple(first_map) + first,
                         tuple(name_map), merge_batch_norm)


@_composite("epsilon_plus")
class EpsilonPlus(_EpsilonConvolutions):
    """Convolutions ZPlus, dense layers Epsilon (Zennit's ``EpsilonPlus``)."""

    convolution_rule = staticmethod(lrp.ZPlus)


@_composite("epsilon_plus_flat")
class EpsilonPlusFlat(EpsilonPlus):
    """EpsilonPlus with Flat on the first linear layer (Zennit's ``EpsilonPlusFlat``)."""

    flat_first = True


@_composite("epsilon_alpha2_beta1")
class EpsilonAlpha2Beta1(_EpsilonConvolutions):
    """Convolutions Alpha2Beta1, dense layers Epsilon (Zennit's ``EpsilonAlpha2Beta1``)."""

    convolution_rule = staticmethod(lrp.Alpha2Beta1)


@_composite("epsilon_alpha2_beta1_flat")
class EpsilonAlpha2Beta1Flat(EpsilonAlpha2Beta1):
    """EpsilonAlpha2Beta1 with Flat on the first linear layer (Zennit's ``EpsilonAlpha2Beta1Flat``)."""

    flat_first = True


def _bound(value: float | Sequence[float]) -> float | tuple[float, ...]:
    return float(value) if isinstance(value, (int, float)) else tuple(float(v) for v in value)


@_composite("epsilon_gamma_box")
class EpsilonGammaBox(Composite):
    """Convolutions Gamma, dense layers Epsilon, the first convolution ZBox(low, high) (Zennit's ``EpsilonGammaBox``).

    ``low``/``high``: scalars or per-channel sequences in the model's input space
    (ImageNet-normalised pixels: ``IMAGENET_LOW``/``IMAGENET_HIGH``).
    """

    def __init__(self, low: float | Sequence[float], high: float | Sequence[float], epsilon: float = 1e-6,
                 gamma: float = 0.25, stabilizer: float = 1e-6, set_bias_to_zero: bool = False,
                 layer_map: LayerMap = (), first_map: LayerMap = (), name_map: NameMap = (),
                 merge_batch_norm: bool = True):
        rules = (
            (CONVOLUTION, lrp.Gamma(gamma, stabilizer, set_bias_to_zero)),
            (DENSE, lrp.Epsilon(epsilon, set_bias_to_zero)),
        )
        first = ((CONVOLUTION, lrp.ZBox(_bound(low), _bound(high), stabilizer, set_bias_to_zero)),)
        super().__init__(tuple(layer_map) + base_layer_map(stabilizer) + rules, tuple(first_map) + first,
                         tuple(name_map), merge_batch_norm)


def _attention_map(stabilizer: float, conv_gamma: float, linear_gamma: float, constant_attention: bool) -> LayerMap:
    softmax = lrp.Zero() if constant_attention else lrp.Norm(stabilizer)
    return (
        (CONVOLUTION, lrp.Gamma(conv_gamma, stabilizer)),
        (DENSE, lrp.Gamma(linear_gamma, stabilizer)),
        (NORM, relevance.IdentityNorm(stabilizer)),
        (ACTIVATION, lrp.Pass()),
        (PRODUCT, relevance.Uniform(stabilizer, constant_attention)),
        (SOFTMAX, softmax),
        (SUM, lrp.Norm(stabilizer)),
        (AVG_POOL, lrp.Norm(stabilizer)),
        (BATCH_NORM, lrp.Norm(stabilizer)),
        (SCALE, lrp.Pass()),
    )


@_composite("attn_lrp")
class AttnLRP(Composite):
    """AttnLRP (Achtibat et al., ICML 2024; LXT's rules) for transformers, on any model form.

    The identity rule on element-wise non-linearities (GELU, SiLU: relevance passes) and on
    LayerNorm/RMSNorm (linearised with the standard deviation held constant), the uniform rule on
    products of activations (``Q K^T``, ``A V``, gates: half to each factor), the softmax rule
    ``R_i = x_i (R_i - s_i sum_j R_j)`` (the proportional split through its Jacobian), Gamma on
    convolutions (``conv_gamma``) and dense layers (``linear_gamma``; gamma 0 is LRP-0), and sums,
    pools and affine layers (a position embedding) split in proportion, as LXT's gradient x input
    framework computes them. ``stabilizer`` is the denominators' epsilon.
    """

    def __init__(self, conv_gamma: float = 0.25, linear_gamma: float = 0.05, stabilizer: float = 1e-12,
                 layer_map: LayerMap = (), first_map: LayerMap = (), name_map: NameMap = (),
                 merge_batch_norm: bool = True):
        super().__init__(tuple(layer_map) + _attention_map(stabilizer, conv_gamma, linear_gamma, False),
                         tuple(first_map), tuple(name_map), merge_batch_norm)


@_composite("cp_lrp")
class CPLRP(Composite):
    """CP-LRP (Ali et al., ICML 2022, "XAI for Transformers: Better Explanations through Conservative
    Propagation"): :class:`AttnLRP` with no relevance through the attention softmax; a product with an
    attention softmax's output gives all of its relevance to the other factor (the values).
    """

    def __init__(self, conv_gamma: float = 0.25, linear_gamma: float = 0.05, stabilizer: float = 1e-12,
                 layer_map: LayerMap = (), first_map: LayerMap = (), name_map: NameMap = (),
                 merge_batch_norm: bool = True):
        super().__init__(tuple(layer_map) + _attention_map(stabilizer, conv_gamma, linear_gamma, True),
                         tuple(first_map), tuple(name_map), merge_batch_norm)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_LOW = tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
IMAGENET_HIGH = tuple((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))


@_composite("cabrnet_extractor")
class CaBRNetExtractor(Composite):
    """CaBRNet's extractor composite (``get_extractor_lrp_composite_model``, ``cabrnet/core/visualization/prp_utils.py``).

    The first convolution ZBeta (:class:`~jaxplain.rules.lrp.ZBox` over
    ``[zbeta_lower_bound, zbeta_upper_bound]``, scalars: CaBRNet's defaults are the extreme
    ImageNet-normalised pixel values), every other convolution Alpha1Beta0, residual sums
    :class:`~jaxplain.rules.prp.StackedSum`, batch norms merged, activations and batch norms pass
    relevance, max pooling keeps its gradient; dense layers Epsilon(1e-9) and average pooling
    Norm(1e-9), Captum's defaults for the layers CaBRNet leaves alone. ``set_bias_to_zero`` drops
    the (merged) biases from the convolutions' relevance; ``stacked_sum_quirk`` reproduces
    CaBRNet 1.2's StackedSum stabiliser (see :mod:`jaxplain.rules.prp`).
    """

    def __init__(self, set_bias_to_zero: bool = True, stability_factor: float = 1e-6, use_zbeta: bool = True,
                 zbeta_lower_bound: float = min(IMAGENET_LOW), zbeta_upper_bound: float = max(IMAGENET_HIGH),
                 stacked_sum_quirk: bool = False, layer_map: LayerMap = (), first_map: LayerMap = (),
                 name_map: NameMap = (), merge_batch_norm: bool = True):
        rules = (
            (SUM, prp.StackedSum(stability_factor, stacked_sum_quirk)),
            (ACTIVATION, lrp.Pass()),
            (BATCH_NORM, lrp.Pass()),
            (CONVOLUTION, lrp.Alpha1Beta0(stability_factor, set_bias_to_zero)),
            (DENSE, lrp.Epsilon(1e-9)),
            (AVG_POOL, lrp.Norm(1e-9)),
        )
        zbeta = lrp.ZBox(float(zbeta_lower_bound), float(zbeta_upper_bound), stability_factor, set_bias_to_zero)
        first = ((CONVOLUTION, zbeta),) if use_zbeta else ()
        super().__init__(tuple(layer_map) + rules, tuple(first_map) + first, tuple(name_map), merge_batch_norm)


@_composite("cabrnet_prp")
class CaBRNetPRP(CaBRNetExtractor):
    """CaBRNet's PRP composite (``get_cabrnet_lrp_composite_model``): :class:`CaBRNetExtractor` on the
    extractor and :class:`~jaxplain.rules.prp.SimilarityRelevance` (``decision_stability_factor``,
    1e-12) on the similarity layer."""

    def __init__(self, set_bias_to_zero: bool = True, stability_factor: float = 1e-6, use_zbeta: bool = True,
                 zbeta_lower_bound: float = min(IMAGENET_LOW), zbeta_upper_bound: float = max(IMAGENET_HIGH),
                 stacked_sum_quirk: bool = False, decision_stability_factor: float = 1e-12,
                 layer_map: LayerMap = (), first_map: LayerMap = (), name_map: NameMap = (),
                 merge_batch_norm: bool = True):
        similarity = ((SIMILARITY, prp.SimilarityRelevance(decision_stability_factor)),)
        super().__init__(set_bias_to_zero, stability_factor, use_zbeta, zbeta_lower_bound, zbeta_upper_bound,
                         stacked_sum_quirk, similarity + tuple(layer_map), first_map, name_map, merge_batch_norm)


def get(composite: Composite | str, **options: Any) -> Composite:
    """A composite object, or one built from its snake_case name and keyword arguments."""
    if isinstance(composite, Composite):
        if options:
            raise TypeError(f"options {sorted(options)} only apply when the composite is given by name")
        return composite
    if composite not in PRESETS:
        raise ValueError(f"unknown composite {composite!r}; known: {', '.join(sorted(PRESETS))}")
    try:
        return PRESETS[composite](**options)
    except TypeError as error:
        raise TypeError(f"composite {composite!r}: {error}") from None
