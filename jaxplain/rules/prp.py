"""Prototype relevance propagation (PRP) rules: CaBRNet's additions to LRP.

Gautam et al. 2023 (Pattern Recognition 136, "This looks more like that") propagate relevance
from a prototype's similarity map back to the input. CaBRNet
(``cabrnet/core/visualization/prp_utils.py``) does it with three pieces beyond ordinary LRP
rules:

- :class:`SimilarityRelevance`: the relevance of a similarity map ``R[p, h, w]`` goes to the
  feature channels in proportion to how close each is to the prototype,
  ``R_f[c, h, w] = sum_p R[p, h, w] g_pc / (sum_c' g_pc' + eps)`` with
  ``g_pc = 1 / ((f_c - p_c)^2 + eps)``; nothing goes to the prototypes. ``prototype_prp``
  applies it between the extractor's relevance pass and the similarity maps.
- :class:`StackedSum` (a rule of the program engine's sum blocks): residual sums split in proportion, ``R_i = x_i R / stab(x_1 + x_2)``.
  CaBRNet's stabiliser is written ``eps * (sign(z) + z == 0)``, which Python reads as
  ``eps * ((sign(z) + z) == 0)``: ``eps`` is added only where ``z == 0`` and never with the sign
  of ``z``. ``cabrnet_quirk=True`` reproduces that; the default is the intended
  ``z + eps * sign(z)`` (sign 1 at 0), as ``jaxplain.rules.lrp.Norm``.
- ZBeta on the first convolution (``jaxplain.rules.lrp.ZBox`` with the bias dropped) and
  Alpha1Beta0 on the others (``jaxplain.rules.lrp.AlphaBeta(1, 0)``): the composites
  ``CaBRNetExtractor``/``CaBRNetPRP`` in ``jaxplain.rules.composites`` put them together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax.numpy as jnp

from jaxplain.nets import prototype
from jaxplain.rules import lrp
from jaxplain.typing import Array


def similarity_relevance(features: Array, prototypes: Array, relevance: Array, epsilon: float = 1e-12) -> Array:
    """Feature relevance ``[N, h, w, D]`` from similarity-map relevance ``[N, h, w, P]`` (CaBRNet's L2 rule)."""
    gamma = 1.0 / ((features[..., None, :] - prototypes) ** 2 + epsilon)
    share = gamma / (jnp.sum(gamma, axis=-1, keepdims=True) + epsilon)
    return jnp.einsum("nhwp,nhwpd->nhwd", relevance, share)


@dataclass(frozen=True)
class SimilarityRelevance:
    """CaBRNet's similarity rule (``SimilarityLRPWrapper``) for a ``(features, prototypes) -> [N, h, w, P]`` layer.

    Conserves relevance up to ``epsilon``: each location's features receive
    ``sum_p R[p] * S_p / (S_p + epsilon)`` with ``S_p = sum_c g_pc``. Like CaBRNet's wrapper, the
    layer's forward becomes ProtoPNet's similarity ``log((d + 1) / (d + similarity_epsilon))``
    whatever the model's own similarity (a ProtoTree's ``exp(-sqrt(d))`` included): the
    relevance starts from that value (:meth:`forward`).
    """

    epsilon: float = 1e-12
    similarity_epsilon: float = 1e-4

    def forward(self, features: Array, prototypes: Array) -> Array:
        """The similarity maps ``[N, h, w, P]`` the relevance starts from."""
        return prototype.log_similarity(prototype.squared_distances(features, prototypes), self.similarity_epsilon)

    def relevance(self, features: Array, prototypes: Array, relevance: Array) -> Array:
        """The features' relevance ``[N, h, w, D]`` from the maps' ``relevance`` (none goes to the prototypes)."""
        return similarity_relevance(features, prototypes, relevance, self.epsilon)


@dataclass(frozen=True)
class StackedSum:
    """CaBRNet's ``StackedSum`` rule for a residual sum ``a + b``: ``R_a = a R / den``, ``R_b = b R / den``.

    ``den = z + stabilizer * sign(z)`` (sign 1 at 0); with ``cabrnet_quirk`` ``den = z`` except
    ``stabilizer`` where ``z == 0`` (CaBRNet 1.2's operator-precedence slip, see the module docstring).
    """

    stabilizer: float = 1e-6
    cabrnet_quirk: bool = False

    def denominator(self, total: Array) -> Array:
        if self.cabrnet_quirk:
            return jnp.where(total == 0, jnp.asarray(self.stabilizer, total.dtype), total)
        return lrp.stabilize(total, self.stabilizer)

    def __call__(self, block: Any, call: Callable[..., Array], *terms: Array) -> Array:
        def backward(args, output, relevance):
            ratio = relevance / self.denominator(output)
            return tuple(term * ratio for term in args)

        return lrp.with_backward(call, terms, backward)
