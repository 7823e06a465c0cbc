"""AttnLRP and CP-LRP on a converted torchvision ViT against LXT 2.1 (same weights, same input).

LXT's own torchvision-ViT recipe (``lxt.efficient.models.vit_torch.cp_LRP``: the identity rule on
GELU and LayerNorm, no gradient through the attention's query and key) with Gamma rules on every
``Conv2d`` and ``Linear`` module through its Zennit patches, relevance = input x gradient. The
attention's projections are computed functionally inside ``nn.MultiheadAttention`` (Zennit's hooks
never see them), so they keep LRP-0: ours gets ``name_map`` LRP-0 at the attention paths. AttnLRP
proper: the same patches with LXT's uniform rule at the attention (``divide_gradient`` on query and
key by 4, value by 2, as its ``wrap_attention_forward``) instead of CP's stopped gradient.

LXT runs in a subprocess: its patches replace ``forward`` of torch's GELU, LayerNorm and
MultiheadAttention and Zennit's ``BasicHook`` for the whole process, and its package ``__init__``
imports transformers' BERT (absent here); the test loads its ``efficient`` modules without it.
Small configurations (32 px, patch 8, two layers, two heads, width 16), weights randomised.
Tolerance: max abs error <= 1e-4 x the reference's max abs value (measured: 1e-6 to 2e-5).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
import torch
from torchvision.models.vision_transformer import VisionTransformer

import converters
import jaxplain as jx
from jaxplain.rules import lrp as rules
from tests.parity._torch import assert_close, nhwc

CONFIG = {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32,
          "num_classes": 10}
TARGETS = np.array([3, 7])
CASES = [("cp_lrp", 0.25, 0.05), ("cp_lrp", 0.0, 0.0), ("cp_lrp", 1.0, 0.3), ("attn_lrp", 0.25, 0.05),
         ("attn_lrp", 0.0, 0.0)]
ATTENTION = tuple(f"encoder.layers.encoder_layer_{i}.self_attention" for i in range(CONFIG["num_layers"]))

LXT_SCRIPT = textwrap.dedent('''
    import os, sys, types
    import numpy as np, torch, lxt
    base = os.path.join(os.path.dirname(lxt.__file__), "efficient")
    for name, path in (("lxt.efficient", base), ("lxt.efficient.models", os.path.join(base, "models"))):
        module = types.ModuleType(name)
        module.__path__ = [path]
        sys.modules[name] = module
    from lxt.efficient import patches, zennit_patches
    from lxt.efficient.models import vit_torch
    from lxt.efficient.rules import divide_gradient
    from zennit import rules as z
    from zennit.composites import LayerMapComposite
    from torchvision.models import vision_transformer
    from torchvision.models.vision_transformer import VisionTransformer

    config, weights, images, targets, cases = torch.load(sys.argv[1], weights_only=False)
    original = {cls: cls.forward for cls in vit_torch.cp_LRP}
    zennit_patches.monkey_patch_zennit()
    results = []
    for recipe, conv_gamma, linear_gamma in cases:
        for cls, forward in original.items():
            cls.forward = forward
        for cls, patch in vit_torch.cp_LRP.items():
            patch(cls)
        if recipe == "attn_lrp":
            attention = vision_transformer.nn.MultiheadAttention
            def uniform(self, query, key, value, *args, **kwargs):
                return self.original_forward(divide_gradient(query, 4), divide_gradient(key, 4),
                                             divide_gradient(value, 2), *args, **kwargs)
            attention.forward = uniform
        model = VisionTransformer(**config)
        model.load_state_dict(weights)
        model.eval()
        composite = LayerMapComposite([(torch.nn.Conv2d, z.Gamma(conv_gamma)), (torch.nn.Linear, z.Gamma(linear_gamma))])
        x = images.clone().requires_grad_()
        with composite.context(model) as modified:
            outputs = modified(x)
            outputs[torch.arange(len(targets)), targets].sum().backward()
        results.append((x * x.grad).detach().numpy())
    np.save(sys.argv[2], np.stack(results))
''')


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    torch.manual_seed(0)
    model = VisionTransformer(**CONFIG)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "encoder.ln.weight":
                parameter.uniform_(0.5, 1.5)
            else:
                parameter.normal_(0.0, 0.3)
    model.eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    folder = tmp_path_factory.mktemp("lxt")
    torch.save((CONFIG, model.state_dict(), images, torch.from_numpy(TARGETS), CASES), folder / "inputs.pt")
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", LXT_SCRIPT, str(folder / "inputs.pt"), str(folder / "lxt.npy")],
                   check=True, env=environment, capture_output=True, timeout=600)
    reference = np.load(folder / "lxt.npy")
    return converters.from_torch(model, input_shape=(1, 32, 32, 3)), nhwc(images), reference


@pytest.mark.parametrize("case", range(len(CASES)))
def test_matches_lxt(vit, case):
    model, images, reference = vit
    recipe, conv_gamma, linear_gamma = CASES[case]
    ours = jx.lrp(model, images, TARGETS, composite=recipe, conv_gamma=conv_gamma, linear_gamma=linear_gamma,
                  name_map=((ATTENTION, rules.Epsilon(1e-12)),))
    assert_close(ours, reference[case].transpose(0, 2, 3, 1), rtol=1e-4)


def _randomised_vit(bias_free: bool) -> VisionTransformer:
    torch.manual_seed(2)
    model = VisionTransformer(**CONFIG)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if bias_free and (name.endswith("bias") or name in ("class_token", "encoder.pos_embedding")):
                parameter.zero_()
            elif name.endswith(".weight") and ".ln" in name:
                parameter.uniform_(0.5, 1.5)
            else:
                parameter.normal_(0.0, 0.3)
    return model.eval()


def test_cp_lrp_conserves_relevance_on_a_bias_free_vit():
    """No biases, position embedding or class token: CP-LRP's rules (identity on LayerNorm and GELU,
    Gamma on the projections, all relevance of ``A V`` to the values) lose nothing but the stabiliser."""
    torch_model = _randomised_vit(bias_free=True)
    model = converters.from_torch(torch_model, input_shape=(1, 32, 32, 3))
    images = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (2, 32, 32, 3)))
    with torch.no_grad():
        logits = torch_model(torch.from_numpy(np.array(images.transpose(0, 3, 1, 2)))).numpy()[np.arange(2), TARGETS]
    relevance = np.asarray(jx.lrp(model, images, TARGETS, composite="cp_lrp"))
    np.testing.assert_allclose(relevance.sum((1, 2, 3)), logits, rtol=1e-4)
    again = np.asarray(jx.lrp(model, images, TARGETS, composite="cp_lrp"))
    np.testing.assert_array_equal(relevance, again)


def test_attention_rules_need_an_attention_composite():
    """Under a CNN composite the ViT's norms, products and softmax have no rule: refused, named."""
    model = converters.from_torch(_randomised_vit(bias_free=False), input_shape=(1, 32, 32, 3))
    with pytest.raises(ValueError, match="no rule for the norm layer at 'encoder.layers.encoder_layer_0.ln_1'"
                                         ".*attn_lrp"):
        jx.lrp(model, np.zeros((1, 32, 32, 3), np.float32), 0, composite="epsilon_plus")
