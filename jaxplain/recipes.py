"""Every public method with the peer it reproduces, and ready-to-run settings for whole images.

``CATALOGUE`` is what ``jaxplain methods`` prints. ``RECIPES`` are the methods that
``jaxplain explain`` and ``jaxplain evaluate`` run on a batch of images: each maps
``(model, inputs, target, key, layer)`` to a map of the inputs' spatial size, with
settings that suit any image size (occlusion windows an eighth of the image, RISE with
1000 masks). The settings are stated in each recipe's ``settings`` so that a user can
rerun the same call from Python.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

import jaxplain as jx
from jaxplain import program
from jaxplain.model import Model
from jaxplain.program.interpret import region
from jaxplain.typing import Array

CATALOGUE: tuple[tuple[str, str, str], ...] = (
    ("saliency", "gradient", "Captum Saliency"),
    ("input_x_gradient", "gradient", "Captum InputXGradient"),
    ("integrated_gradients", "gradient", "Captum IntegratedGradients"),
    ("noise_tunnel", "gradient", "Captum NoiseTunnel (smoothgrad, smoothgrad_sq, vargrad)"),
    ("smoothgrad", "gradient", "Captum NoiseTunnel(Saliency); CaBRNet / xdeep noise conventions"),
    ("gradient_shap", "gradient", "Captum GradientShap"),
    ("guided_backprop", "gradient", "Captum GuidedBackprop; TorchRay guided_backprop"),
    ("deconvolution", "gradient", "Captum Deconvolution; TorchRay deconvnet"),
    ("deeplift", "gradient", "Captum DeepLift (rescale; flavour='captum' for its numbers)"),
    ("deeplift_shap", "gradient", "Captum DeepLiftShap"),
    ("layer_gradcam", "cam", "Captum LayerGradCam; TorchRay grad_cam"),
    ("guided_gradcam", "cam", "Captum GuidedGradCam"),
    ("score_cam", "cam", "Score-CAM authors' code; pytorch-cnn-visualizations ScoreCam; pytorch-grad-cam ScoreCAM"),
    ("grad_cam_plus_plus", "cam", "pytorch-grad-cam GradCAMPlusPlus"),
    ("xgrad_cam", "cam", "pytorch-grad-cam XGradCAM"),
    ("hires_cam", "cam", "pytorch-grad-cam HiResCAM"),
    ("grad_cam_element_wise", "cam", "pytorch-grad-cam GradCAMElementWise"),
    ("layer_cam", "cam", "pytorch-grad-cam LayerCAM"),
    ("eigen_cam", "cam", "pytorch-grad-cam EigenCAM"),
    ("eigen_grad_cam", "cam", "pytorch-grad-cam EigenGradCAM"),
    ("ablation_cam", "cam", "pytorch-grad-cam AblationCAM"),
    ("full_grad", "cam", "pytorch-grad-cam FullGrad"),
    ("attention_maps", "attention", "attention probabilities of a ViT (torch's softmax(QK^T / sqrt(d)))"),
    ("attention_rollout", "attention", "Abnar & Zuidema rollout; jacobgil/vit-explain (flavour='vit_explain')"),
    ("gradient_rollout", "attention", "Chefer et al. ICCV 2021 gradient-weighted rollout (the authors' ViT code)"),
    ("transformer_attribution", "attention", "Chefer et al. CVPR 2021 relevance-weighted rollout (the authors' "
     "generate_LRP, method='transformer_attribution')"),
    ("layer_activation", "layer", "Captum LayerActivation"),
    ("layer_gradient_x_activation", "layer", "Captum LayerGradientXActivation"),
    ("internal_influence", "layer", "Captum InternalInfluence"),
    ("layer_conductance", "layer", "Captum LayerConductance"),
    ("layer_deeplift", "layer", "Captum LayerDeepLift"),
    ("layer_gradient_shap", "layer", "Captum LayerGradientShap"),
    ("layer_activation_guided_backprop", "layer", "pytorch-cnn-visualizations layer activation with guided backprop"),
    ("lrp", "lrp", "Zennit Gradient attributor with composites and canonizers; Captum LRP; LXT AttnLRP "
     "(composite='attn_lrp', 'cp_lrp')"),
    ("excitation_backprop", "torchray", "TorchRay excitation_backprop"),
    ("contrastive_excitation_backprop", "torchray", "TorchRay contrastive_excitation_backprop"),
    ("linear_approx", "torchray", "TorchRay linear_approx"),
    ("torchray_gradient", "torchray", "TorchRay gradient"),
    ("torchray_deconvnet", "torchray", "TorchRay deconvnet"),
    ("torchray_guided_backprop", "torchray", "TorchRay guided_backprop"),
    ("feature_ablation", "perturbation", "Captum FeatureAblation"),
    ("occlusion", "perturbation", "Captum Occlusion"),
    ("shapley_value_sampling", "perturbation", "Captum ShapleyValueSampling"),
    ("shapley_values", "perturbation", "Captum ShapleyValues"),
    ("kernel_shap", "surrogate", "Captum KernelShap"),
    ("lime", "surrogate", "Captum Lime"),
    ("lime_image", "surrogate", "lime package LimeImageExplainer"),
    ("rise", "perturbation", "TorchRay rise"),
    ("prototype_saliency", "prototype", "CaBRNet saliency of a prototype"),
    ("prototype_smoothgrad", "prototype", "CaBRNet smoothgrad"),
    ("prototype_randgrad", "prototype", "CaBRNet randgrad"),
    ("prototype_prp", "prototype", "CaBRNet PRP"),
    ("render_vis", "optimization", "Lucent render_vis"),
    ("deep_dream", "optimization", "pytorch-cnn-visualizations DeepDream"),
    ("layer_visualization", "optimization", "pytorch-cnn-visualizations CNNLayerVisualization"),
    ("convergence_delta", "helper", "Captum compute_convergence_delta"),
    ("explain_sharded", "helper", "any method above, data parallel over the local devices (jax.sharding)"),
    ("explain_dataset", "helper", "any method above over a whole dataset, in fixed-shape sharded batches"),
)

Runner = Callable[[Model, Array, Array, Array, str], Array]


@dataclass(frozen=True)
class Recipe:
    """A method with fixed settings for whole images.

    Attributes:
        name: the name on the command line.
        run: ``run(model, inputs, target, key, layer) -> [N, H, W, C]`` or ``[N, H, W, 1]``.
        traceable: whether ``run`` can be called under ``jax.jit`` (so sharded over devices);
            LIME segments the images with scikit-image on the host.
        additive: the map claims to add up to the output's change from a zero input
            (completeness, summation to delta, LRP conservation; exact for input x gradient on
            linear models only), so the completeness gap means something.
        sign: how the map is read: ``"all"`` (signed evidence), ``"positive"``.
        settings: the call it makes, as text.
        aliases: other names the command line takes for it: the public function it calls,
            where that is named otherwise (``layer_gradcam`` for ``gradcam``).
    """

    name: str
    run: Runner
    sign: str
    settings: str
    traceable: bool = True
    additive: bool = False
    aliases: tuple[str, ...] = ()


def _saliency(model, inputs, target, key, layer):
    return jx.saliency(model, inputs, target)


def _input_x_gradient(model, inputs, target, key, layer):
    return jx.input_x_gradient(model, inputs, target)


def _integrated_gradients(model, inputs, target, key, layer):
    return jx.integrated_gradients(model, inputs, target, n_steps=32, batch_size=16)


def _smoothgrad(model, inputs, target, key, layer):
    return jx.smoothgrad(model, inputs, target, key=key, nt_samples=16, noise_ratio=0.15, batch_size=8)


def _guided_backprop(model, inputs, target, key, layer):
    return jx.guided_backprop(model, inputs, target)


def _deconvolution(model, inputs, target, key, layer):
    return jx.deconvolution(model, inputs, target)


def _deeplift(model, inputs, target, key, layer):
    return jx.deeplift(model, inputs, target)


def _gradcam(model, inputs, target, key, layer):
    return jx.layer_gradcam(model, inputs, target, layer=layer, relu_attributions=True, upsample="bilinear")


def _guided_gradcam(model, inputs, target, key, layer):
    return jx.guided_gradcam(model, inputs, target, layer=layer)


def _score_cam(model, inputs, target, key, layer):
    return jx.score_cam(model, inputs, target, layer=layer)


def _pytorch_grad_cam(method: str, **options) -> Runner:
    """A recipe running a pytorch-grad-cam method at ``layer`` with that library's final map."""

    def run(model, inputs, target, key, layer):
        return getattr(jx, method)(model, inputs, target, layer=layer, postprocess="pytorch_grad_cam", **options)

    return run


def _full_grad(model, inputs, target, key, layer):
    return jx.full_grad(model, inputs, target, postprocess="pytorch_grad_cam")


def _rollout(model, inputs, target, key, layer):
    return jx.attention_rollout(model, inputs, upsample="bilinear")


def _gradient_rollout(model, inputs, target, key, layer):
    return jx.gradient_rollout(model, inputs, target, upsample="bilinear")


def _transformer_attribution(model, inputs, target, key, layer):
    return jx.transformer_attribution(model, inputs, target, upsample="bilinear")


def _lrp(model, inputs, target, key, layer):
    return jx.lrp(model, inputs, target, composite="epsilon_plus_flat")


def _attention_lrp(composite: str):
    def recipe(model, inputs, target, key, layer):
        return jx.lrp(model, inputs, target, composite=composite)

    return recipe


def _excitation_backprop(model, inputs, target, key, layer):
    return jx.excitation_backprop(model, inputs, target, saliency_layer=layer, resize=True)


def _occlusion(model, inputs, target, key, layer):
    channels = inputs.shape[3]
    window = (max(inputs.shape[1] // 8, 1), max(inputs.shape[2] // 8, 1), channels)
    strides = (max(window[0] // 2, 1), max(window[1] // 2, 1), channels)
    return jx.occlusion(model, inputs, target, sliding_window_shapes=window, strides=strides, batch_size=64)


def _rise(model, inputs, target, key, layer):
    return jx.rise(model, inputs, target, key=key, num_masks=1000, batch_size=50)


def _lime(model, inputs, target, key, layer):
    explanation = jx.lime_image(model, inputs, target, key=key, top_labels=None, num_samples=500, batch_size=50)
    return explanation.heatmap()[:, 0, :, :, None]


def _random(model, inputs, target, key, layer):
    return jax.random.uniform(key, inputs.shape[:3] + (1,), inputs.dtype)


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe("saliency", _saliency, "positive", "saliency(abs=True)"),
        Recipe("input_x_gradient", _input_x_gradient, "all", "input_x_gradient", additive=True),
        Recipe("integrated_gradients", _integrated_gradients, "all", "integrated_gradients(baselines=0, n_steps=32)",
               additive=True),
        Recipe("smoothgrad", _smoothgrad, "positive", "smoothgrad(nt_samples=16, noise_ratio=0.15)"),
        Recipe("guided_backprop", _guided_backprop, "all", "guided_backprop"),
        Recipe("deconvolution", _deconvolution, "all", "deconvolution"),
        Recipe("deeplift", _deeplift, "all", "deeplift(baselines=0)", additive=True),
        Recipe("gradcam", _gradcam, "positive", "layer_gradcam(layer, relu_attributions=True, upsample='bilinear')",
               aliases=("layer_gradcam",)),
        Recipe("guided_gradcam", _guided_gradcam, "all", "guided_gradcam(layer)"),
        Recipe("score_cam", _score_cam, "positive", "score_cam(layer)"),
        Recipe("grad_cam_plus_plus", _pytorch_grad_cam("grad_cam_plus_plus"), "positive",
               "grad_cam_plus_plus(layer, postprocess='pytorch_grad_cam')"),
        Recipe("xgrad_cam", _pytorch_grad_cam("xgrad_cam"), "positive",
               "xgrad_cam(layer, postprocess='pytorch_grad_cam')"),
        Recipe("hires_cam", _pytorch_grad_cam("hires_cam"), "positive",
               "hires_cam(layer, postprocess='pytorch_grad_cam')"),
        Recipe("grad_cam_element_wise", _pytorch_grad_cam("grad_cam_element_wise"), "positive",
               "grad_cam_element_wise(layer, postprocess='pytorch_grad_cam')"),
        Recipe("layer_cam", _pytorch_grad_cam("layer_cam"), "positive",
               "layer_cam(layer, postprocess='pytorch_grad_cam')"),
        Recipe("eigen_cam", _pytorch_grad_cam("eigen_cam"), "positive",
               "eigen_cam(layer, postprocess='pytorch_grad_cam')"),
        Recipe("eigen_grad_cam", _pytorch_grad_cam("eigen_grad_cam"), "positive",
               "eigen_grad_cam(layer, postprocess='pytorch_grad_cam')"),
        Recipe("ablation_cam", _pytorch_grad_cam("ablation_cam", batch_size=32), "positive",
               "ablation_cam(layer, batch_size=32, postprocess='pytorch_grad_cam')"),
        Recipe("full_grad", _full_grad, "positive", "full_grad(postprocess='pytorch_grad_cam'), every bias layer"),
        Recipe("rollout", _rollout, "positive", "attention_rollout(head_fusion='mean', upsample='bilinear'), "
               "every attention layer (vision transformers)", aliases=("attention_rollout",)),
        Recipe("gradient_rollout", _gradient_rollout, "positive",
               "gradient_rollout(upsample='bilinear'), every attention layer (vision transformers)"),
        Recipe("transformer_attribution", _transformer_attribution, "positive",
               "transformer_attribution(upsample='bilinear'), every attention layer (vision transformers)"),
        Recipe("lrp", _lrp, "all", "lrp(composite='epsilon_plus_flat')", additive=True),
        Recipe("attn_lrp", _attention_lrp("attn_lrp"), "all",
               "lrp(composite='attn_lrp'): AttnLRP (transformers)", additive=True),
        Recipe("cp_lrp", _attention_lrp("cp_lrp"), "all", "lrp(composite='cp_lrp'): CP-LRP (transformers)",
               additive=True),
        Recipe("excitation_backprop", _excitation_backprop, "positive",
               "excitation_backprop(saliency_layer=layer, resize=True)"),
        Recipe("occlusion", _occlusion, "all", "occlusion(window = size/8, stride = window/2, baseline 0)"),
        Recipe("rise", _rise, "positive", "rise(num_masks=1000, num_cells=7, p=0.5)"),
        Recipe("lime", _lime, "all", "lime_image(num_samples=500, quickshift), superpixel weights", traceable=False,
               aliases=("lime_image",)),
        Recipe("random", _random, "positive", "uniform noise (a chance-level reference, not an explanation)"),
    )
}

DEFAULT_METHODS = ("integrated_gradients", "gradcam", "lrp")
EVALUATED_METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "guided_backprop",
                     "deeplift", "gradcam", "score_cam", "lrp", "occlusion", "rise", "random")
ALIASES: dict[str, str] = {alias: recipe.name for recipe in RECIPES.values() for alias in recipe.aliases}
"""Other names of recipes (the public function a recipe calls) -> the recipe's name."""


def resolve(names: Sequence[str]) -> list[str]:
    """Recipe names for command-line method names: aliases replaced, repeats dropped, order kept.

    Args:
        names: names of :data:`RECIPES` or :data:`ALIASES`.

    Returns:
        The recipe names, each once, in the order first given.

    Raises:
        ValueError: naming every unknown name, with the known ones (and the closest
            known name, when one is close).

    >>> resolve(["layer_gradcam", "saliency", "gradcam"])
    ['gradcam', 'saliency']
    """
    known = [*RECIPES, *ALIASES]
    unknown = [name for name in names if name not in known]
    if unknown:
        hints = [difflib.get_close_matches(name, known, n=1) for name in unknown]
        named = ", ".join(f"{name} (did you mean {hint[0]}?)" if hint else name for name, hint in zip(unknown, hints))
        raise ValueError(f"unknown {named}; known: {', '.join(RECIPES)} (also {', '.join(ALIASES)})")
    return list(dict.fromkeys(ALIASES.get(name, name) for name in names))


def default_layer(model: Any, inputs: Array) -> str:
    """The last layer (in order of completion) whose output is a spatial map larger than 1x1.

    Layers that only resample (no parameters, no non-linearity: VGG's adaptive ``avgpool``,
    which only resamples the features to 7x7) are passed over. For torchvision's ResNets that
    is ``layer4``, for VGG ``features``: the usual Grad-CAM layer of a network. Read from the
    model's traced program, so every model form has one.
    """
    model = program.structured(model, "default_layer")
    graph = program.graph_of(model, jax.ShapeDtypeStruct(inputs.shape, jnp.float32))
    axis = getattr(model, "channel_axis", -1)
    finished = []
    for name in graph.layer_names():
        layer = region(graph, name, method="default_layer")
        nodes = [graph.nodes[i] for i in layer.nodes]
        if not any(node.params_read or node.kind == "unit" for node in nodes) or len(layer.outputs) != 1:
            continue
        shape = tuple(graph.aval(layer.outputs[0]).shape)
        if len(shape) == 4:
            spatial = [size for i, size in enumerate(shape[1:], 1) if i != axis % 4]
            if spatial[0] * spatial[1] > 1:
                finished.append((layer.end, -name.count("."), name))
    if not finished:
        raise ValueError("no layer of this model has a spatial output; pass --layer")
    return max(finished)[2]
