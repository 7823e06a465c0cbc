"""NoiseTunnel: SmoothGrad, SmoothGrad-squared and VarGrad around any method."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxplain.attribution._common import (
    check_batch_size,
    check_choice,
    loop_forward,
    prepare,
    require_key,
    run,
    sum_over,
)
from jaxplain.attribution.gradient import input_x_gradient, saliency
from jaxplain.attribution.path import gradient_shap, integrated_gradients
from jaxplain.model import FunctionModel, Model
from jaxplain.typing import Array, Target

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")
Method = Callable[..., Array]
PLAIN_GRADIENT_METHODS = (saliency, input_x_gradient, integrated_gradients, gradient_shap)
"""Methods that only differentiate the model, so may get :func:`loop_forward` inside a chunked tunnel."""


def _noise_tunnel_core(
    model, inputs, target, key, arrays, *, method, method_static, takes_key, nt_type, nt_samples, batch_size
):
    stdevs = arrays["stdevs"].reshape((-1,) + (1,) * (inputs.ndim - 1))
    chunked = batch_size is not None and batch_size < nt_samples
    if chunked and method in PLAIN_GRADIENT_METHODS and isinstance(model, Model):
        model = FunctionModel(loop_forward(model, batch_size))

    def sample(sample_key):
        noise_key, method_key = jax.random.split(sample_key)
        noisy = inputs + stdevs * jax.random.normal(noise_key, inputs.shape, inputs.dtype)
        extra = {"key": method_key} if takes_key else {}
        attribution = method(model, noisy, target, **dict(method_static), **arrays["method_arrays"], **extra)
        return attribution, attribution * attribution

    total, total_sq = sum_over(sample, jax.random.split(key, nt_samples), batch_size)
    mean, mean_sq = total / nt_samples, total_sq / nt_samples
    if nt_type == "smoothgrad":
        return mean
    if nt_type == "smoothgrad_sq":
        return mean_sq
    return mean_sq - mean * mean


def _per_example_stdevs(stdevs: Any, inputs: Array) -> Array:
    stdevs = jnp.asarray(stdevs, inputs.dtype)
    if stdevs.ndim == 0:
        return jnp.full((inputs.shape[0],), stdevs)
    if stdevs.shape != (inputs.shape[0],):
        raise ValueError(f"noise_tunnel: stdevs must be a float or an array [N={inputs.shape[0]}], got {stdevs.shape}")
    return stdevs


def noise_tunnel(method: Method) -> Method:
    """Wrap ``method`` in Captum's ``NoiseTunnel`` (Smilkov et al. 2017; Adebayo et al. 2018).

    The returned function takes the method's arguments plus ``key`` and the noise options
    and averages the method over noisy copies ``x + N(0, stdevs^2)`` of the inputs
    (captum/attr/_core/noise_tunnel.py): ``smoothgrad`` = E[a], ``smoothgrad_sq`` =
    E[a^2], ``vargrad`` = E[a^2] - E[a]^2. Draw ``i`` uses the key
    ``jax.random.split(key, nt_samples)[i]``, split again into (noise, method) keys;
    the noise is ``stdevs * jax.random.normal(noise_key, inputs.shape)``.

    Args:
        method: a jaxplain method ``method(model, inputs, target, **options)``.

    Returns:
        ``tunnelled(model, inputs, target, *, key, nt_type="smoothgrad", nt_samples=5,
        stdevs=1.0, nt_samples_batch_size=None, **options)``, with:

        - key: PRNG key (required).
        - nt_type: ``"smoothgrad"`` (default), ``"smoothgrad_sq"`` or ``"vargrad"``.
        - nt_samples: noisy copies per example (default 5, as Captum).
        - stdevs: absolute noise std, a float (default 1.0, as Captum) or one per example ``[N]``.
        - nt_samples_batch_size: copies evaluated at once (None: all in one vmapped pass).
        - options: passed to ``method``.

        It returns what ``method`` returns, averaged as ``nt_type`` says.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> vargrad = jx.noise_tunnel(jx.input_x_gradient)
        >>> vargrad(model, x, 0, key=jax.random.PRNGKey(0), nt_type="vargrad", nt_samples=2, stdevs=0.2).shape
        (2, 16, 16, 3)
    """
    name = getattr(method, "__name__", "method")
    parameters = inspect.signature(method).parameters
    takes_key = "key" in parameters
    accepted = {p for p, spec in parameters.items() if spec.kind == inspect.Parameter.KEYWORD_ONLY} - {"key"}

    def tunnelled(
        model: Any,
        inputs: Array,
        target: Target,
        *,
        key: Array,
        nt_type: str = "smoothgrad",
        nt_samples: int = 5,
        stdevs: float | Array = 1.0,
        nt_samples_batch_size: int | None = None,
        **options: Any,
    ) -> Array:
        label = f"noise_tunnel({name})"
        check_choice("nt_type", nt_type, NT_TYPES, method=label)
        check_batch_size(nt_samples_batch_size, method=label)
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise TypeError(f"{label}: unknown options {unknown}; {name} accepts {sorted(accepted)}")
        if options.get("return_convergence_delta"):
            raise ValueError(f"{label}: return_convergence_delta is not supported inside a noise tunnel")
        if not isinstance(nt_samples, int) or nt_samples < 1:
            raise ValueError(f"{label}: nt_samples must be a positive int, got {nt_samples!r}")
        model, inputs, target = prepare(model, inputs, target, method=label)
        key = require_key(key, method=label)
        method_arrays = {k: jnp.asarray(v) for k, v in options.items() if hasattr(v, "shape")}
        method_static = tuple(sorted((k, v) for k, v in options.items() if k not in method_arrays))
        return run(
            _noise_tunnel_core,
            model,
            inputs,
            target,
            key=key,
            arrays={"stdevs": _per_example_stdevs(stdevs, inputs), "method_arrays": method_arrays},
            method=method,
            method_static=method_static,
            takes_key=takes_key,
            nt_type=nt_type,
            nt_samples=nt_samples,
            batch_size=nt_samples_batch_size,
        )

    tunnelled.__name__ = f"noise_tunnel_{name}"
    tunnelled.__doc__ = f"``{name}`` averaged over noisy inputs; see ``jaxplain.noise_tunnel``."
    return tunnelled


def _input_ranges(inputs: Array) -> Array:
    flat = inputs.reshape(inputs.shape[0], -1)
    return jnp.max(flat, axis=1) - jnp.min(flat, axis=1)


def smoothgrad(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    key: Array,
    nt_samples: int = 5,
    stdevs: float | None = None,
    noise_ratio: float | None = None,
    sigma_multiplier: float | None = None,
    abs: bool = True,
    batch_size: int | None = None,
) -> Array:
    """SmoothGrad (Smilkov et al. 2017): the mean saliency over noisy copies of the inputs.

    The noise std is set in one of three ways, one per peer:

    - ``stdevs`` (default 1.0): an absolute std, Captum's ``NoiseTunnel(Saliency)``.
    - ``noise_ratio``: ``noise_ratio * (max x - min x)`` per example, CaBRNet's
      (src/cabrnet/core/visualization/gradients.py; 0.2 there) and Zennit's convention.
    - ``sigma_multiplier``: ``(sigma_multiplier / (max x - min x))**2`` per example,
      xdeep's and pytorch-cnn-visualizations' formula, which passes ``sigma**2`` as the
      std (xdeep/xlocal/gradient/backprop/smooth_grad.py; n=50, multiplier 4 there).
      Those peers average signed gradients: pass ``abs=False`` to match them.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        key: PRNG key (required); the same key gives the same result.
        nt_samples: noisy copies per example.
        stdevs: absolute noise std (Captum's), a float or one per example ``[N]``.
        noise_ratio: noise std relative to each input's value range (CaBRNet's, Zennit's).
        sigma_multiplier: xdeep's parameter (see above).
        abs: average ``|g|`` (Captum and CaBRNet) or signed ``g``.
        batch_size: copies evaluated at once (None: all in one vmapped pass).

    Returns:
        ``[N, H, W, C]``: the mean (absolute) input gradient of the target output.

    Raises:
        ValueError: more than one of ``stdevs``, ``noise_ratio``, ``sigma_multiplier``.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> maps = jx.smoothgrad(model, x, 0, key=jax.random.PRNGKey(0), nt_samples=4, noise_ratio=0.15)
        >>> maps.shape, bool((maps >= 0).all())
        ((2, 16, 16, 3), True)
    """
    given = [name for name, value in (("stdevs", stdevs), ("noise_ratio", noise_ratio), ("sigma_multiplier", sigma_multiplier)) if value is not None]
    if len(given) > 1:
        raise ValueError(f"smoothgrad: pass only one of stdevs, noise_ratio, sigma_multiplier (got {given})")
    model, inputs, target = prepare(model, inputs, target, method="smoothgrad")
    if noise_ratio is not None:
        noise = noise_ratio * _input_ranges(inputs)
    elif sigma_multiplier is not None:
        noise = (sigma_multiplier / _input_ranges(inputs)) ** 2
    else:
        noise = 1.0 if stdevs is None else stdevs
    return noise_tunnel(saliency)(
        model,
        inputs,
        target,
        key=key,
        nt_type="smoothgrad",
        nt_samples=nt_samples,
        stdevs=noise,
        nt_samples_batch_size=batch_size,
        abs=abs,
    )
