"""Where a prototype network sees its prototypes: CaBRNet's attributions of similarity maps.

CaBRNet (``cabrnet/core/visualization/gradients.py``) explains prototype ``p`` on one image by
looping over the locations ``(h, w)`` of its similarity map, skipping those below
``similarity_threshold`` (or all but one, with ``location``), attributing the similarity at each
location to the input and accumulating, then post-processing the sum
(``cabrnet/core/visualization/postprocess.py``, see :mod:`jaxplain.attribution._prototype_post`):

- ``saliency``: ``sum_hw sim[h, w] |d sim[h, w] / dx|`` (Captum's ``Saliency``, absolute gradients);
- ``smoothgrad``: the same with ``mean_s |d sim[h, w] / dx (x + noise_s)|``, ``num_samples`` draws of
  Gaussian noise with standard deviation ``noise_ratio * (max x - min x)``;
- ``prp``: the relevance of ``sim[h, w]`` under CaBRNet's PRP rules (``CaBRNetPRP`` composite),
  summed over locations;
- ``randgrad``: uniform noise in ``[0, 1)`` (a baseline).

Here one forward pass serves every location and prototype of a batch: the backward passes are
vmapped over the locations and prototypes (and the noise samples over the forward). When every
location is explained for more prototypes than the extractor has channels (``K > D``), the ``K``
gradients of a location are combinations of its ``D`` feature gradients, so ``D`` backward passes
serve them all. PRP is
linear in the relevance it starts from, so its sum over locations is one backward pass seeded
with every selected location at once, which equals CaBRNet's loop up to rounding. SmoothGrad's
noise draws are shared by all locations and prototypes of an image (CaBRNet draws new noise for
each location; the expectation is the same).

``proto_idx`` stands in the target position: an int (every image), ``[N]`` (one per image; the
result is ``[N, H, W]``) or ``[N, K]`` (``K`` prototypes per image; ``[N, K, H, W]``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.attribution import _prototype_post as post
from jaxplain.attribution._common import (check_batch_size, check_choice, check_inputs, loop_forward, require_key,
                                          run, sum_over, traced_once)
from jaxplain.model import Model, as_model
from jaxplain import program
from jaxplain.attribution.lrp import block_rules, check_rules
from jaxplain.nets.prototype import SIMILARITY_LAYER
from jaxplain.program.interpret import evaluate
from jaxplain.rules import composites as composites_module
from jaxplain.rules import prp
from jaxplain.typing import Array

Location = tuple[int, int] | str | None


def _prototype_model(model: Any, method: str) -> Model:
    model = as_model(model)
    if not isinstance(model, Model) or not hasattr(type(model.module), "similarities"):
        raise TypeError(f"{method} needs a prototype network (jaxplain.nets.prototype.PrototypeModel, e.g. from "
                        f"converters.from_torch(cabrnet_model)), got {type(model).__name__}")
    return model


def _similarity_shape(model: Model, inputs: Array) -> tuple[int, ...]:
    spec = jax.ShapeDtypeStruct(inputs.shape, inputs.dtype)
    forward = lambda x: model.module.apply(model.variables, x, method="similarities")
    return traced_once("similarity_shape", model, inputs, lambda: tuple(jax.eval_shape(forward, spec).shape))


def _proto_indices(proto_idx: Any, batch: int, prototypes: int, method: str) -> tuple[Array, bool]:
    """``[N, K]`` int32 prototype indices and whether the prototype axis is dropped from the result."""
    indices = np.asarray(proto_idx)
    if not np.issubdtype(indices.dtype, np.integer):
        raise TypeError(f"{method}: proto_idx must be an int or an int array [N] or [N, K], got dtype {indices.dtype}")
    single = indices.ndim <= 1
    if indices.ndim == 0:
        indices = np.full((batch, 1), indices)
    elif indices.ndim == 1 and indices.shape == (batch,):
        indices = indices[:, None]
    elif indices.ndim != 2 or indices.shape[0] != batch:
        raise ValueError(f"{method}: proto_idx must be an int, [{batch}] or [{batch}, K], got shape {indices.shape}")
    if indices.size and (indices.min() < 0 or indices.max() >= prototypes):
        raise ValueError(
            f"{method}: proto_idx {indices.tolist()} out of range for a model with {prototypes} prototypes")
    return jnp.asarray(indices, jnp.int32), single


def _location(location: Any, single_location: bool | None, shape: tuple[int, int],
              method: str) -> tuple[str | None, int]:
    """``(kind, flat point)``: kind ``None``, ``"max"`` or ``"point"`` (static), the point's flat index (an array
    argument, so explaining location after location compiles once)."""
    if single_location:
        if location not in (None, "max"):
            raise ValueError(f"{method}: single_location=True means location='max', got location={location!r}")
        location = "max"
    if location is None or (isinstance(location, str) and location == "max"):
        return location, 0
    if isinstance(location, (tuple, list)) and len(location) == 2 and all(
            isinstance(v, (int, np.integer)) for v in location):
        h, w = int(location[0]), int(location[1])
        if 0 <= h < shape[0] and 0 <= w < shape[1]:
            return "point", h * shape[1] + w
        raise ValueError(f"{method}: location {tuple(location)} outside the {shape[0]}x{shape[1]} similarity map")
    raise ValueError(f"{method}: location must be None, 'max' or a (h, w) pair of ints, got {location!r}")


def _selected(maps: Array, location: str | None, point: Array, threshold: Array) -> tuple[Array, Array]:
    """Flat locations ``[N, K, L]`` and their weights, the similarity there (0 where skipped), of maps ``[N, K, h*w]``.

    ``None``: every location, weighted where ``sim >= threshold``; ``"max"``: the first maximum;
    ``"point"``: the flat location ``point`` (CaBRNet then lowers the threshold to its similarity,
    so it always counts).
    """
    if location is None:
        index = jnp.broadcast_to(jnp.arange(maps.shape[-1]), maps.shape)
        return index, jnp.where(maps >= threshold, maps, 0.0)
    if location == "max":
        index = jnp.argmax(maps, axis=-1)[..., None]
    else:
        index = jnp.broadcast_to(point, maps.shape[:-1] + (1,))
    return index, jnp.take_along_axis(maps, index, axis=-1)


def _seed(index: Array, weight: Array, protos: Array, shape: tuple[int, ...]) -> Array:
    """A cotangent ``shape`` (``[N, h, w, P]``): ``weight[n, l]`` at flat location ``index[n, l]``
    of prototype ``protos[n]``."""
    _, h, w, p = shape
    locations = jnp.einsum("nlx,nl->nx", jax.nn.one_hot(index, h * w, dtype=weight.dtype), weight)
    return (locations[:, :, None] * jax.nn.one_hot(protos, p, dtype=weight.dtype)[:, None, :]).reshape(shape)


def _maps(sims: Array, protos: Array) -> Array:
    """``[N, K, h*w]`` similarity maps of the chosen prototypes."""
    flat = sims.reshape(sims.shape[0], -1, sims.shape[-1])
    return jnp.take_along_axis(flat, protos[:, None, :], axis=2).transpose(0, 2, 1)


def _uses_basis(model: Model, inputs: Array, protos: Array, location: str | None) -> bool:
    """Whether :func:`_absolute_gradient_sum` goes through the feature gradients (every location, ``K > D``)."""
    depth = jax.eval_shape(lambda x: model.module.apply(model.variables, x, method="features"), inputs).shape[-1]
    return location is None and protos.shape[1] > depth


def _gradient_setup(model: Model, inputs: Array, protos: Array, location: str | None,
                    batch_size: int | None) -> tuple[Any, bool]:
    """The features' forward function to differentiate, and whether the basis path is taken (always a loop)."""
    basis = _uses_basis(model, inputs, protos, location)
    return loop_forward(model.feature_model(), 1 if basis else batch_size), basis


def _absolute_gradient_sum(model: Model, forward_features, inputs: Array, index: Array, weight: Array,
                           protos: Array, basis: bool, batch_size: int | None) -> Array:
    """``sum_l weight_l |d sim_l / dx|`` for every image and chosen prototype: ``[N, K, H, W, C]``.

    One forward pass; the backward passes are vmapped over prototypes and locations, the
    locations chunked by ``batch_size``. With every location selected and more chosen prototypes
    than feature channels (``K > D``: ProtoPNet on CUB has 2000 prototypes over 128 channels;
    ``basis``), the gradients of a location are combinations of its ``D`` feature gradients,
    ``d sim[l, p] / dx = sum_d (d sim[l, p] / dz[l, d]) dz[l, d] / dx`` (a similarity reads only its
    own location's features): ``D`` backward passes per location instead of ``K``, ``batch_size``
    locations at a time (``None``: one, as each is already ``D`` passes).
    """
    features, pull_features = jax.vjp(forward_features, inputs)
    similarity = lambda z: model.module.apply(model.variables, z, method="similarities_of_features")
    sims, pull_sims = jax.vjp(similarity, features)
    if basis:
        return _basis_gradient_sum(pull_features, pull_sims, features, weight, protos, sims.shape[-1], batch_size or 1)

    def at_location(chunk):
        location_index, location_weight = chunk

        def per_prototype(k):
            seed = _seed(location_index[:, k, None], jnp.ones_like(location_weight[:, k, None]), protos[:, k],
                         sims.shape)
            gradient = jnp.abs(pull_features(pull_sims(seed)[0])[0])
            return gradient * location_weight[:, k].reshape((-1,) + (1,) * (gradient.ndim - 1))

        return jax.vmap(per_prototype, out_axes=1)(jnp.arange(protos.shape[1]))

    return sum_over(at_location, (jnp.moveaxis(index, -1, 0), jnp.moveaxis(weight, -1, 0)), batch_size)


def _basis_gradient_sum(pull_features, pull_sims, features: Array, weight: Array, protos: Array, prototypes: int,
                        batch_size: int | None) -> Array:
    """:func:`_absolute_gradient_sum` at every location through the ``D`` feature gradients of each location."""
    n, h, w, depth = features.shape

    def coefficients(k):
        """``d sim[l, protos[:, k]] / dz[l]`` at every location ``l`` at once (each similarity reads one location)."""
        seed = jnp.broadcast_to(jax.nn.one_hot(protos[:, k], prototypes, dtype=features.dtype)[:, None, None, :],
                                (n, h, w, prototypes))
        return pull_sims(seed)[0].reshape(n, h * w, depth)

    per_location = jax.vmap(coefficients, out_axes=2)(jnp.arange(protos.shape[1]))  # [N, L, K, D]

    def at_location(chunk):
        location, coefficient, location_weight = chunk  # [], [N, K, D], [N, K]

        def feature_gradient(channel):
            seed = jax.nn.one_hot(location, h * w, dtype=features.dtype)[:, None] * jax.nn.one_hot(
                channel, depth, dtype=features.dtype)
            return pull_features(jnp.broadcast_to(seed.reshape(1, h, w, depth), features.shape))[0]

        basis = jax.vmap(feature_gradient)(jnp.arange(depth))  # [D, N, H, W, C]
        gradients = jnp.einsum("nkd,dn...->nk...", coefficient, basis)
        return jnp.abs(gradients) * location_weight.reshape(location_weight.shape + (1,) * (gradients.ndim - 2))

    return sum_over(at_location, (jnp.arange(h * w), jnp.moveaxis(per_location, 1, 0), jnp.moveaxis(weight, -1, 0)),
                    batch_size)


def _saliency_core(model, inputs, protos, key, arrays, *, location, batch_size):
    forward_features, basis = _gradient_setup(model, inputs, protos, location, batch_size)
    sims = model.module.apply(model.variables, inputs, method="similarities")
    index, weight = _selected(_maps(sims, protos), location, arrays["point"], arrays["threshold"])
    return _absolute_gradient_sum(model, forward_features, inputs, index, weight, protos, basis, batch_size)


def _smoothgrad_core(model, inputs, protos, key, arrays, *, location, batch_size, num_samples,
                     noise_ratio):
    forward_features, basis = _gradient_setup(model, inputs, protos, location, batch_size)
    sims = model.module.apply(model.variables, inputs, method="similarities")
    index, weight = _selected(_maps(sims, protos), location, arrays["point"], arrays["threshold"])
    noise = smoothgrad_noise(key, inputs, num_samples, noise_ratio)
    total = sum_over(
        lambda delta: _absolute_gradient_sum(model, forward_features, inputs + delta, index, weight, protos, basis,
                                             None),
        noise, batch_size)
    return total / num_samples


def _similarity_rule(composite: composites_module.Composite, first_path: str | None) -> prp.SimilarityRelevance:
    rule = composite.rule_for(composites_module.SIMILARITY[0], SIMILARITY_LAYER, first_path)
    if not isinstance(rule, prp.SimilarityRelevance):
        raise ValueError(
            f"prototype_prp: the similarity layer {SIMILARITY_LAYER!r} needs a jaxplain.rules.prp.SimilarityRelevance "
            f"rule, the composite gives it {rule!r}; add layer_map=((\"similarity\",), prp.SimilarityRelevance())"
        )
    return rule


def _prp_core(model, inputs, protos, key, arrays, *, location, batch_size, composite, first_path, channel_axis):
    extractor = model.feature_model()
    graph = program.graph_of(extractor, inputs)
    view = program.blocks_of(extractor, inputs, merge=composite.merge_batch_norm)
    rules = block_rules(composite, view, first_path, channel_axis)
    similarity = _similarity_rule(composite, first_path)

    def features_of(x):
        return evaluate(graph, program.params_of(extractor), x, rules=rules, units=view.blocks)[0]

    features, pullback = jax.vjp(features_of, inputs)
    prototypes = model.prototypes
    sims = similarity.forward(features, prototypes)
    index, weight = _selected(_maps(sims, protos), location, arrays["point"], arrays["threshold"])

    def per_prototype(k):
        seed = _seed(index[:, k], weight[:, k], protos[:, k], sims.shape)
        return pullback(similarity.relevance(features, prototypes, seed))[0]

    prototypes_chosen = jnp.arange(protos.shape[1])
    if batch_size is None:
        return jax.vmap(per_prototype, out_axes=1)(prototypes_chosen)
    return jnp.moveaxis(jax.lax.map(per_prototype, prototypes_chosen, batch_size=batch_size), 0, 1)

def _random_core(model, inputs, protos, key, arrays):
    return jax.random.uniform(key, (inputs.shape[0], protos.shape[1]) + inputs.shape[1:], inputs.dtype)


def smoothgrad_noise(key: Array, inputs: Array, num_samples: int, noise_ratio: float) -> Array:
    """The noise ``prototype_smoothgrad`` adds: ``[num_samples, N, H, W, C]`` Gaussian draws from ``key``,
    standard deviation ``noise_ratio * (max - min)`` of each image (CaBRNet's ``_captum_smoothgrad_attribute``).

    Args:
        key: PRNG key of the draws.
        inputs: ``[N, H, W, C]`` images.
        num_samples: noisy copies per image.
        noise_ratio: the standard deviation relative to each image's value range.

    Returns:
        ``[num_samples, N, H, W, C]`` noise (added to the images, not yet).

    Example:
        >>> import jax
        >>> images = jax.numpy.stack([jax.numpy.zeros((4, 4, 1)), jax.numpy.eye(4)[..., None]])
        >>> noise = smoothgrad_noise(jax.random.PRNGKey(0), images, 3, 0.2)
        >>> noise.shape, float(noise[:, 0].std())  # the first image is constant: no noise
        ((3, 2, 4, 4, 1), 0.0)
    """
    axes = tuple(range(1, inputs.ndim))
    stdev = noise_ratio * (jnp.max(inputs, axis=axes) - jnp.min(inputs, axis=axes))
    draws = jax.random.normal(key, (num_samples,) + inputs.shape, inputs.dtype)
    return draws * stdev.reshape((1, -1) + (1,) * (inputs.ndim - 1))


def _explain(core, method: str, model: Any, inputs: Any, proto_idx: Any, *, key: Array | None, location: Any,
             single_location: bool | None, similarity_threshold: float, polarity: str | None,
             gaussian_ksize: float | None, normalize: bool, grads_x_input: bool,
             image_size: tuple[int, int] | None, postprocess: bool, batch_size: int | None, **static: Any) -> Array:
    check_choice("polarity", polarity, post.POLARITIES, method=method)
    check_batch_size(batch_size, method=method)
    model = _prototype_model(model, method)
    inputs = check_inputs(model, inputs, method=method)
    shape = _similarity_shape(model, inputs)
    protos, single = _proto_indices(proto_idx, inputs.shape[0], shape[-1], method)
    kind, point = _location(location, single_location, shape[1:3], method)
    if not np.isfinite(similarity_threshold):
        raise ValueError(f"{method}: similarity_threshold must be finite, got {similarity_threshold}")
    raw = run(core, model, inputs, protos, key=key, location=kind, batch_size=batch_size,
              arrays={"point": jnp.asarray(point, jnp.int32),
                      "threshold": jnp.asarray(similarity_threshold, inputs.dtype)},
              **static)
    return _finish(raw, inputs, single, polarity=polarity, gaussian_ksize=gaussian_ksize, normalize=normalize,
                   grads_x_input=grads_x_input, image_size=image_size, postprocess=postprocess)


def _finish(raw: Array, inputs: Array, single: bool, *, polarity, gaussian_ksize, normalize, grads_x_input,
            image_size, postprocess) -> Array:
    if postprocess:
        size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        raw = _post_jitted(raw, inputs, polarity=polarity, gaussian_ksize=gaussian_ksize, normalize=normalize,
                           grads_x_input=grads_x_input, image_size=size)
    return raw[:, 0] if single else raw


_post_jitted = jax.jit(post.post_process, static_argnames=("polarity", "gaussian_ksize", "normalize",
                                                           "grads_x_input", "image_size"))


def prototype_saliency(model: Any, inputs: Array, proto_idx: Any, *, location: Location = None,
                       single_location: bool | None = None, similarity_threshold: float = 0.1,
                       polarity: str | None = "absolute", gaussian_ksize: float | None = 5, normalize: bool = False,
                       grads_x_input: bool = False, image_size: tuple[int, int] | None = None,
                       postprocess: bool = True, batch_size: int | None = None) -> Array:
    """CaBRNet's ``saliency`` patch visualisation (``cabrnet/core/visualization/gradients.py``).

    ``sum_hw sim[h, w] |d sim[h, w] / dx|`` over the selected locations of prototype ``proto_idx``'s
    similarity map, then CaBRNet's post-processing.

    Args:
        model: a prototype network (``jaxplain.nets.prototype.PrototypeModel``).
        inputs: ``[N, H, W, C]`` normalised images.
        proto_idx: an int, ``[N]`` or ``[N, K]`` prototype indices.
        location: ``None`` (every location with ``sim >= similarity_threshold``), ``"max"`` (the most
            similar location) or ``(h, w)`` in the similarity map.
        single_location: CaBRNet's older flag; ``True`` is ``location="max"``.
        similarity_threshold: locations below it are skipped (``location=None`` only).
        polarity: ``"absolute"``, ``"positive"``, ``"negative"`` or ``None``.
        gaussian_ksize: the Gaussian filter's *sigma* (CaBRNet's naming); 0 or ``None`` skips it.
        normalize: min-max normalise each map.
        grads_x_input: multiply the attribution by the input first.
        image_size: ``(height, width)`` to resize to (bicubic, as OpenCV); ``None`` keeps ``H, W``.
        postprocess: ``False`` returns the raw input-space sum ``[N, (K,) H, W, C]`` instead.
        batch_size: locations evaluated at once (``None``: all). With every location selected and more
            prototypes asked for than the extractor has channels (``K > D``), each location's ``K``
            gradients come from its ``D`` feature gradients (``D`` backward passes instead of ``K``), one
            location at a time unless ``batch_size`` says more.

    Returns:
        ``[N, H, W]`` (``[N, K, H, W]`` for ``[N, K]`` indices) maps.

    Raises:
        ValueError: a model that is not a prototype network, prototype indices out of range,
            an unknown polarity, a location outside the similarity map.

    Example:
        >>> import jax, jaxplain as jx
        >>> from jaxplain.nets.prototype import protopnet
        >>> model = protopnet("vgg11", "features.2", num_classes=3, num_prototypes=4, num_features=64,
        ...                   input_shape=(1, 16, 16, 3), key=jax.random.PRNGKey(0))  # a small random ProtoPNet
        >>> x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
        >>> jx.prototype_saliency(model, x, 1, location="max").shape
        (2, 16, 16)
    """
    return _explain(_saliency_core, "prototype_saliency", model, inputs, proto_idx, key=None, location=location,
                    single_location=single_location, similarity_threshold=similarity_threshold, polarity=polarity,
                    gaussian_ksize=gaussian_ksize, normalize=normalize, grads_x_input=grads_x_input,
                    image_size=image_size, postprocess=postprocess, batch_size=batch_size)


def prototype_smoothgrad(model: Any, inputs: Array, proto_idx: Any, *, key: Array | None = None,
                         location: Location = None, single_location: bool | None = None,
                         similarity_threshold: float = 0.1, polarity: str | None = "absolute",
                         gaussian_ksize: float | None = 5, normalize: bool = False, num_samples: int = 10,
                         noise_ratio: float = 0.2, grads_x_input: bool = False,
                         image_size: tuple[int, int] | None = None, postprocess: bool = True,
                         batch_size: int | None = None) -> Array:
    """CaBRNet's ``smoothgrad`` patch visualisation (``cabrnet/core/visualization/gradients.py``).

    As :func:`prototype_saliency` with ``|d sim[h, w] / dx|`` averaged over ``num_samples`` noisy
    copies of each image (:func:`smoothgrad_noise`: standard deviation ``noise_ratio * (max - min)``);
    the weights ``sim[h, w]`` and the selected locations come from the clean image. One set of noise
    draws serves every location and prototype of an image. ``key`` is required; ``batch_size``
    bounds the noise samples evaluated at once.

    Args:
        model: a prototype network (``jaxplain.nets.prototype.PrototypeModel``).
        inputs: ``[N, H, W, C]`` normalised images.
        proto_idx: an int, ``[N]`` or ``[N, K]`` prototype indices.
        key: PRNG key of the noise (required).
        num_samples: noisy copies per image.
        noise_ratio: the noise's standard deviation relative to each image's value range.
        location, single_location, similarity_threshold, polarity, gaussian_ksize, normalize,
            grads_x_input, image_size, postprocess: as in :func:`prototype_saliency`.
        batch_size: noise samples evaluated at once (``None``: all).

    Returns:
        ``[N, H, W]`` (``[N, K, H, W]`` for ``[N, K]`` indices) maps.

    Raises:
        ValueError: no key, ``num_samples`` below 1, and as :func:`prototype_saliency`.

    Example:
        >>> import jax, jaxplain as jx
        >>> from jaxplain.nets.prototype import protopnet
        >>> model = protopnet("vgg11", "features.2", num_classes=3, num_prototypes=4, num_features=64,
        ...                   input_shape=(1, 16, 16, 3), key=jax.random.PRNGKey(0))  # a small random ProtoPNet
        >>> x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
        >>> jx.prototype_smoothgrad(model, x, 1, key=jax.random.PRNGKey(2), location="max", num_samples=2).shape
        (2, 16, 16)
    """
    method = "prototype_smoothgrad"
    key = require_key(key, method=method)
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"{method}: num_samples must be a positive int, got {num_samples!r}")
    return _explain(_smoothgrad_core, method, model, inputs, proto_idx, key=key, location=location,
                    single_location=single_location, similarity_threshold=similarity_threshold, polarity=polarity,
                    gaussian_ksize=gaussian_ksize, normalize=normalize, grads_x_input=grads_x_input,
                    image_size=image_size, postprocess=postprocess, batch_size=batch_size,
                    num_samples=num_samples, noise_ratio=float(noise_ratio))


def prototype_prp(model: Any, inputs: Array, proto_idx: Any, *, location: Location = None,
                  single_location: bool | None = None, similarity_threshold: float = 0.1,
                  stability_factor: float = 1e-6, polarity: str | None = "absolute",
                  gaussian_ksize: float | None = 5, normalize: bool = False, grads_x_input: bool = False,
                  stacked_sum_quirk: bool = False, composite: Any = None,
                  image_size: tuple[int, int] | None = None, postprocess: bool = True,
                  batch_size: int | None = None) -> Array:
    """CaBRNet's ``prp``: prototype relevance propagation (``cabrnet/core/visualization/gradients.py``).

    The relevance of ``sim[h, w]`` at each selected location (it starts from the similarity value,
    as Captum's LRP does), propagated through the extractor's traced program (the program
    engine's blocks, as :func:`jaxplain.lrp` reads them) under the ``CaBRNetPRP`` composite
    (``jaxplain.rules.composites``: ZBeta on the first convolution, Alpha1Beta0 on the others,
    StackedSum on residual sums, batch norms merged, CaBRNet's similarity rule), summed over
    locations, then post-processed. The sum over locations is a single backward pass (the rules
    are linear in the relevance). ``stacked_sum_quirk=True`` reproduces CaBRNet 1.2's StackedSum
    stabiliser (``jaxplain.rules.prp``); ``composite`` replaces the whole composite.
    ``batch_size`` bounds the prototypes propagated at once.

    Args:
        model: a prototype network (``jaxplain.nets.prototype.PrototypeModel``).
        inputs: ``[N, H, W, C]`` normalised images.
        proto_idx: an int, ``[N]`` or ``[N, K]`` prototype indices.
        stability_factor: the rules' stabiliser.
        stacked_sum_quirk: reproduce CaBRNet 1.2's StackedSum stabiliser.
        composite: a composite to use instead of ``CaBRNetPRP``.
        location, single_location, similarity_threshold, polarity, gaussian_ksize, normalize,
            grads_x_input, image_size, postprocess: as in :func:`prototype_saliency`.
        batch_size: prototypes propagated at once (``None``: all).

    Returns:
        ``[N, H, W]`` (``[N, K, H, W]`` for ``[N, K]`` indices) maps.

    Raises:
        ValueError: naming the layer, for a layer of the extractor the composite has no rule
            for, an operation no rule can reach, or a similarity layer without a
            :class:`~jaxplain.rules.prp.SimilarityRelevance` rule; and as :func:`prototype_saliency`.

    Example:
        >>> import jax, jaxplain as jx
        >>> from jaxplain.nets.prototype import protopnet
        >>> model = protopnet("vgg11", "features.2", num_classes=3, num_prototypes=4, num_features=64,
        ...                   input_shape=(1, 16, 16, 3), key=jax.random.PRNGKey(0))  # a small random ProtoPNet
        >>> x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
        >>> jx.prototype_prp(model, x, 1, location="max").shape
        (2, 16, 16)
    """
    method = "prototype_prp"
    chosen = composite if composite is not None else composites_module.CaBRNetPRP(
        stability_factor=stability_factor, stacked_sum_quirk=stacked_sum_quirk)
    chosen = composites_module.get(chosen)
    prepared = _prototype_model(model, method)
    checked = check_inputs(prepared, inputs, method=method)
    extractor = prepared.feature_model()
    view = program.blocks_of(extractor, checked, merge=chosen.merge_batch_norm)
    first_path = chosen.first_layer([(block.name, block.kind) for block in view.blocks])
    check_rules(chosen, view, first_path, program.graph_of(extractor, checked), method=method)
    _similarity_rule(chosen, first_path)
    return _explain(_prp_core, method, prepared, checked, proto_idx, key=None, location=location,
                    single_location=single_location, similarity_threshold=similarity_threshold, polarity=polarity,
                    gaussian_ksize=gaussian_ksize, normalize=normalize, grads_x_input=grads_x_input,
                    image_size=image_size, postprocess=postprocess, batch_size=batch_size, composite=chosen,
                    first_path=first_path, channel_axis=extractor.layer_channel_axis)


def prototype_randgrad(model: Any, inputs: Array, proto_idx: Any = 0, *, key: Array | None = None,
                       polarity: str | None = "absolute", gaussian_ksize: float | None = 5, normalize: bool = False,
                       grads_x_input: bool = False, image_size: tuple[int, int] | None = None,
                       postprocess: bool = True) -> Array:
    """CaBRNet's ``randgrad`` baseline (``cabrnet/core/visualization/gradients.py``): uniform ``[0, 1)``
    noise of the input's shape, post-processed like the other maps; one draw per image and prototype.

    Args:
        model: a prototype network (``jaxplain.nets.prototype.PrototypeModel``).
        inputs: ``[N, H, W, C]`` normalised images.
        proto_idx: an int, ``[N]`` or ``[N, K]`` prototype indices (only the output's shape
            depends on them).
        key: PRNG key of the noise (required).
        polarity, gaussian_ksize, normalize, grads_x_input, image_size, postprocess: as in
            :func:`prototype_saliency`.

    Returns:
        ``[N, H, W]`` (``[N, K, H, W]`` for ``[N, K]`` indices) maps.

    Raises:
        ValueError: no key, an unknown polarity, prototype indices out of range.

    Example:
        >>> import jax, jaxplain as jx
        >>> from jaxplain.nets.prototype import protopnet
        >>> model = protopnet("vgg11", "features.2", num_classes=3, num_prototypes=4, num_features=64,
        ...                   input_shape=(1, 16, 16, 3), key=jax.random.PRNGKey(0))  # a small random ProtoPNet
        >>> x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
        >>> jx.prototype_randgrad(model, x, 1, key=jax.random.PRNGKey(2)).shape
        (2, 16, 16)
    """
    method = "prototype_randgrad"
    key = require_key(key, method=method)
    check_choice("polarity", polarity, post.POLARITIES, method=method)
    model = _prototype_model(model, method)
    inputs = check_inputs(model, inputs, method=method)
    protos, single = _proto_indices(proto_idx, inputs.shape[0], model.module.num_prototypes, method)
    raw = run(_random_core, model, inputs, protos, key=key)
    return _finish(raw, inputs, single, polarity=polarity, gaussian_ksize=gaussian_ksize, normalize=normalize,
                   grads_x_input=grads_x_input, image_size=image_size, postprocess=postprocess)


__all__ = ["prototype_prp", "prototype_randgrad", "prototype_saliency", "prototype_smoothgrad", "smoothgrad_noise"]
