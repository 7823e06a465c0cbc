"""jaxplain: explanation methods for JAX models, with the numbers of Captum, Zennit and friends.

>>> import jaxplain as jx
>>> attributions = jx.integrated_gradients(model, images, target=3)  # doctest: +SKIP
"""

from jaxplain import _xla

_xla.configure()

from jaxplain import demo, metrics, nets, optimization, parallel, viz  # noqa: E402
from jaxplain.attribution.attention import attention_maps, attention_rollout, gradient_rollout, transformer_attribution
from jaxplain.attribution.cam import guided_gradcam, layer_gradcam, score_cam
from jaxplain.attribution.cam_family import (
    ablation_cam,
    eigen_cam,
    eigen_grad_cam,
    full_grad,
    grad_cam_element_wise,
    grad_cam_plus_plus,
    hires_cam,
    layer_cam,
    xgrad_cam,
)
from jaxplain.attribution.deeplift import deeplift, deeplift_shap, layer_deeplift
from jaxplain.attribution.gradient import deconvolution, gradient_to_saliency, guided_backprop, input_x_gradient, saliency
from jaxplain.attribution.layer import (
    internal_influence,
    layer_activation,
    layer_activation_guided_backprop,
    layer_conductance,
    layer_gradient_shap,
    layer_gradient_x_activation,
)
from jaxplain.attribution.lime_image import LimeImageExplanation, image_and_mask, lime_image
from jaxplain.attribution.lrp import lrp
from jaxplain.attribution.noise import noise_tunnel, smoothgrad
from jaxplain.attribution.path import convergence_delta, gradient_shap, integrated_gradients
from jaxplain.attribution.perturbation import (
    feature_ablation,
    occlusion,
    shapley_value_sampling,
    shapley_values,
)
from jaxplain.attribution.prototype import prototype_prp, prototype_randgrad, prototype_saliency, prototype_smoothgrad
from jaxplain.attribution.rise import rise
from jaxplain.attribution.surrogate import kernel_shap, lime
from jaxplain.attribution.torchray import (
    contrastive_excitation_backprop,
    excitation_backprop,
    linear_approx,
    torchray_deconvnet,
    torchray_gradient,
    torchray_guided_backprop,
)
from jaxplain.caches import clear_caches
from jaxplain.forms import ProgramModel
from jaxplain.model import FunctionModel, Model, as_model, init_model
from jaxplain.program import layers
from jaxplain.nets.prototype import PrototypeModel
from jaxplain.optimization import deep_dream, layer_visualization, render_vis
from jaxplain.parallel import explain_dataset, explain_sharded
from jaxplain.rules import composites
from jaxplain.rules import lrp as lrp_rules

__all__ = [
    "FunctionModel",
    "LimeImageExplanation",
    "Model",
    "ProgramModel",
    "PrototypeModel",
    "as_model",
    "ablation_cam",
    "attention_maps",
    "attention_rollout",
    "clear_caches",
    "composites",
    "contrastive_excitation_backprop",
    "convergence_delta",
    "deconvolution",
    "deep_dream",
    "deeplift",
    "deeplift_shap",
    "demo",
    "eigen_cam",
    "eigen_grad_cam",
    "excitation_backprop",
    "explain_dataset",
    "explain_sharded",
    "feature_ablation",
    "full_grad",
    "grad_cam_element_wise",
    "grad_cam_plus_plus",
    "gradient_rollout",
    "gradient_shap",
    "gradient_to_saliency",
    "guided_backprop",
    "guided_gradcam",
    "hires_cam",
    "image_and_mask",
    "init_model",
    "input_x_gradient",
    "integrated_gradients",
    "internal_influence",
    "kernel_shap",
    "layer_activation",
    "layer_activation_guided_backprop",
    "layer_cam",
    "layer_conductance",
    "layer_deeplift",
    "layer_gradcam",
    "layer_gradient_shap",
    "layer_gradient_x_activation",
    "layer_visualization",
    "layers",
    "lime",
    "lime_image",
    "linear_approx",
    "lrp",
    "lrp_rules",
    "metrics",
    "nets",
    "noise_tunnel",
    "occlusion",
    "optimization",
    "parallel",
    "prototype_prp",
    "prototype_randgrad",
    "prototype_saliency",
    "prototype_smoothgrad",
    "render_vis",
    "rise",
    "saliency",
    "score_cam",
    "shapley_value_sampling",
    "shapley_values",
    "smoothgrad",
    "torchray_deconvnet",
    "torchray_gradient",
    "torchray_guided_backprop",
    "transformer_attribution",
    "viz",
    "xgrad_cam",
]
