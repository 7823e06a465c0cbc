"""jaxplain: explanation methods for JAX models, with the numbers of Captum, Zennit and friends.

>>> import jaxplain as jx
>>> attributions = jx.integrated_gradients(model, images, target=3)  # doctest: +SKIP
"""

from jaxplain import _xla

_xla.configure()

from jaxplain import nets  # noqa: E402
from jaxplain.attribution.cam import guided_gradcam, layer_gradcam, score_cam
from jaxplain.attribution.deeplift import deeplift, deeplift_shap, layer_deeplift
from jaxplain.attribution.gradient import deconvolution, gradient_to_saliency, guided_backprop, input_x_gradient, saliency
from jaxplain.attribution.lrp import lrp
from jaxplain.attribution.layer import (
    internal_influence,
    layer_activation,
    layer_activation_guided_backprop,
    layer_conductance,
    layer_gradient_shap,
    layer_gradient_x_activation,
)
from jaxplain.attribution.noise import noise_tunnel, smoothgrad
from jaxplain.attribution.perturbation import (
    feature_ablation,
    occlusion,
    shapley_value_sampling,
    shapley_values,
)
from jaxplain.attribution.lime_image import LimeImageExplanation, image_and_mask, lime_image
from jaxplain.attribution.rise import rise
from jaxplain.attribution.surrogate import kernel_shap, lime
from jaxplain.attribution.path import convergence_delta, gradient_shap, integrated_gradients
from jaxplain.attribution.torchray import (
    contrastive_excitation_backprop,
    excitation_backprop,
    linear_approx,
    torchray_deconvnet,
    torchray_gradient,
    torchray_guided_backprop,
)
from jaxplain.model import FunctionModel, Model, init_model
from jaxplain.rules import composites
from jaxplain.rules import lrp as lrp_rules

__all__ = [
    "LimeImageExplanation",
    "image_and_mask",
    "lime_image",
    "kernel_shap",
    "lime",
    "rise",
    "shapley_values",
    "shapley_value_sampling",
    "occlusion",
    "feature_ablation",
    "FunctionModel",
    "Model",
    "composites",
    "contrastive_excitation_backprop",
    "convergence_delta",
    "deconvolution",
    "deeplift",
    "deeplift_shap",
    "excitation_backprop",
    "gradient_shap",
    "gradient_to_saliency",
    "guided_backprop",
    "guided_gradcam",
    "init_model",
    "input_x_gradient",
    "integrated_gradients",
    "internal_influence",
    "layer_activation",
    "layer_activation_guided_backprop",
    "layer_conductance",
    "layer_deeplift",
    "layer_gradcam",
    "layer_gradient_shap",
    "layer_gradient_x_activation",
    "linear_approx",
    "lrp",
    "lrp_rules",
    "nets",
    "noise_tunnel",
    "saliency",
    "score_cam",
    "smoothgrad",
    "torchray_deconvnet",
    "torchray_gradient",
    "torchray_guided_backprop",
]
