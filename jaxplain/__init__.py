"""jaxplain: explanation methods for JAX models, with the numbers of Captum, Zennit and friends.

>>> import jaxplain as jx
>>> attributions = jx.integrated_gradients(model, images, target=3)  # doctest: +SKIP
"""

from jaxplain import nets
from jaxplain.attribution.gradient import deconvolution, gradient_to_saliency, guided_backprop, input_x_gradient, saliency
from jaxplain.attribution.noise import noise_tunnel, smoothgrad
from jaxplain.attribution.path import convergence_delta, gradient_shap, integrated_gradients
from jaxplain.model import FunctionModel, Model, init_model

__all__ = [
    "FunctionModel",
    "Model",
    "convergence_delta",
    "deconvolution",
    "gradient_shap",
    "gradient_to_saliency",
    "guided_backprop",
    "init_model",
    "input_x_gradient",
    "integrated_gradients",
    "nets",
    "noise_tunnel",
    "saliency",
    "smoothgrad",
]
