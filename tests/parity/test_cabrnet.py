"""CaBRNet 1.2 prototype models and attributions against ours, on the same weights.

ProtoPNets built by CaBRNet from a configuration (``CaBRNet.build_from_config``) over a
ResNet-18 cut at ``layer2`` and a VGG-11 cut at ``features.10``, seeded random weights and
randomised BatchNorm statistics, 64x64 inputs. Tolerances: similarity maps and logits 1e-4
relative to the reference's largest value; attributions before post-processing 1e-3 of the
reference map's scale (``assert_close``).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from cabrnet.archs.generic.model import CaBRNet
from loguru import logger

import converters
from jaxplain.attribution import _prototype_post as post
from jaxplain.attribution import prototype as jx_prototype
from tests.parity._torch import assert_close, nchw, nhwc

logger.disable("cabrnet")

SIZE = 64
FEATURES = 16


def config(arch: str, layer: str, similarity: str = "ProtoPNetSimilarity", compatibility: bool = False) -> dict:
    """A CaBRNet ProtoPNet configuration: 3 classes, 2 prototypes each, a 16-wide add-on."""
    return {
        "top_arch": {"module": "cabrnet.archs.protopnet.model", "name": "ProtoPNet"},
        "extractor": {
            "backbone": {"arch": arch, "weights": "None", "layer": layer},
            "add_on": {
                "conv1": {"type": "Conv2d", "params": {"out_channels": FEATURES, "kernel_size": 1}},
                "relu1": {"type": "ReLU"},
                "conv2": {"type": "Conv2d", "params": {"out_channels": FEATURES, "kernel_size": 1}},
                "sigmoid": {"type": "Sigmoid"},
            },
        },
        "classifier": {
            "module": "cabrnet.archs.protopnet.decision",
            "name": "ProtoPNetClassifier",
            "params": {"num_classes": 3, "num_proto_per_class": 2, "num_features": FEATURES,
                       "compatibility_mode": compatibility},
        },
        "similarity": {"name": similarity},
    }


def build(arch: str = "resnet18", layer: str = "layer2", seed: int = 0, **options) -> torch.nn.Module:
    """A CaBRNet model with seeded weights and randomised BatchNorm statistics (eval mode)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CaBRNet.build_from_config(copy.deepcopy(config(arch, layer, **options))).eval()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.5, 0.5)
                    module.running_var.uniform_(0.5, 1.5)
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.uniform_(-0.2, 0.2)
    return model


def image(seed: int = 1, batch: int = 1, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)


SMALL = 32
"""Attribution tests run on 32x32 images (4x4 similarity maps): CaBRNet loops over every location."""


@pytest.fixture(scope="module")
def resnet_pair():
    model = build()
    return model, converters.from_torch(model)


CASES = [
    ("resnet18", "layer2", "ProtoPNetSimilarity", False),
    ("vgg11", "features.10", "LegacyProtoPNetSimilarity", True),
    ("resnet18", "layer3", "ProtoTreeSimilarity", False),
]


@pytest.mark.parametrize("arch,layer,similarity,compatibility", CASES)
def test_similarities_and_logits(arch, layer, similarity, compatibility):
    model = build(arch, layer, similarity=similarity, compatibility=compatibility)
    ours = converters.from_torch(model)
    x = image(batch=2)
    with torch.no_grad():
        theirs = nhwc(model.similarities(nchw(x)))
        logits = model(nchw(x))[0].numpy()
    assert ours.similarities(x).shape == (2, SIZE // 8 if layer != "layer3" else SIZE // 16, *theirs.shape[2:3], 6)
    np.testing.assert_allclose(ours.similarities(x), theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())
    np.testing.assert_allclose(ours(x), logits, rtol=0, atol=1e-4 * np.abs(logits).max())


def test_state_dict_with_config_equals_instance(resnet_pair):
    model, ours = resnet_pair
    loaded = converters.load_cabrnet(model.state_dict(), config("resnet18", "layer2"))
    x = image()
    np.testing.assert_array_equal(loaded.similarities(x), ours.similarities(x))


def test_state_dict_errors_name_keys(resnet_pair):
    model, _ = resnet_pair
    state = dict(model.state_dict())
    del state["extractor.add_on.conv1.bias"]
    state["classifier.extra"] = torch.zeros(1)
    state["classifier.last_layer.weight"] = torch.zeros(3, 5)
    with pytest.raises(ValueError) as error:
        converters.load_cabrnet(state, config("resnet18", "layer2"))
    message = str(error.value)
    for key in ("extractor.add_on.conv1.bias", "classifier.extra", "classifier.last_layer.weight"):
        assert key in message


def test_unsupported_add_on_and_stride_change_are_named():
    model = build()
    model.extractor.add_on.sigmoid = torch.nn.GELU()
    with pytest.raises(ValueError, match=r"extractor\.add_on\.sigmoid.*GELU"):
        converters.from_torch(model)
    model = build()
    model.extractor.convnet.get_submodule("layer2.0.conv1").stride = (1, 1)
    with pytest.raises(ValueError, match=r"extractor\.convnet\.layer2\.0\.conv1.*stride"):
        converters.from_torch(model)


# Attributions. CaBRNet's ``post_process`` is patched to hand back the raw input-space sum
# (``[C, H, W]``) so the maps are compared before post-processing; the post-processing itself is
# compared on its own below.


@pytest.fixture
def raw_cabrnet(monkeypatch):
    from cabrnet.core.visualization import gradients

    monkeypatch.setattr(gradients, "post_process", lambda array, **kwargs: np.array(array))
    return gradients


def _pil(x: np.ndarray):
    from PIL import Image

    return Image.new("RGB", (x.shape[2], x.shape[1]))


def test_saliency_raw(resnet_pair, raw_cabrnet):
    location = None
    model, ours = resnet_pair
    x = image(size=SMALL)
    theirs = raw_cabrnet.saliency(model, _pil(x), nchw(x), 1, "cpu", location=location)
    mine = jx_prototype.prototype_saliency(ours, x, 1, location=location, postprocess=False)
    assert_close(mine, nhwc(torch.from_numpy(theirs)[None]))


def test_smoothgrad_raw_with_injected_noise(resnet_pair, raw_cabrnet, monkeypatch):
    import jax

    model, ours = resnet_pair
    x = image(size=SMALL)
    key = jax.random.PRNGKey(3)
    noise = np.asarray(jx_prototype.smoothgrad_noise(key, x, 2, 0.2))[:, 0]
    injected = torch.from_numpy(noise.transpose(0, 3, 1, 2).copy())
    monkeypatch.setattr(torch, "normal", lambda mean, std: injected.clone())
    theirs = raw_cabrnet.smoothgrad(model, _pil(x), nchw(x), 2, "cpu", location=None, num_samples=2)
    mine = jx_prototype.prototype_smoothgrad(ours, x, 2, key=key, num_samples=2, postprocess=False, batch_size=1)
    assert_close(mine, nhwc(torch.from_numpy(theirs)[None]))


@pytest.mark.parametrize("arch,layer,location", [("resnet18", "layer2", None), ("vgg11", "features.10", "max")])
def test_prp_raw(raw_cabrnet, arch, layer, location):
    from cabrnet.core.visualization.prp_utils import get_cabrnet_lrp_composite_model

    model = build(arch, layer)
    ours = converters.from_torch(model)
    x = image(seed=4, size=SMALL)
    lrp_model = get_cabrnet_lrp_composite_model(model)
    theirs = raw_cabrnet.prp(lrp_model, _pil(x), nchw(x), 0, "cpu", location=location)
    mine = jx_prototype.prototype_prp(ours, x, 0, location=location, postprocess=False, stacked_sum_quirk=True)
    assert_close(mine, nhwc(torch.from_numpy(theirs)[None]))


@pytest.mark.parametrize("polarity", ["absolute", "negative"])
def test_post_processing(polarity):
    from cabrnet.core.visualization.postprocess import post_process

    rng = np.random.default_rng(5)
    raw = rng.normal(size=(3, 20, 24)).astype(np.float32)
    x = rng.normal(size=(1, 20, 24, 3)).astype(np.float32)
    options = dict(polarity=polarity, gaussian_ksize=2, normalize=True, grads_x_input=True)
    theirs = post_process(raw.copy(), img=_pil(np.zeros((1, 31, 40, 3))), img_tensor=nchw(x), **options)
    mine = post.post_process(raw.transpose(1, 2, 0)[None, None], x, image_size=(31, 40), **options)[0, 0]
    # OpenCV's bicubic interpolates in float32 with its own rounding: 1e-4 of the [0, 1] range.
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-4)
    same_size = post_process(raw.copy(), img=_pil(x), img_tensor=nchw(x), **{**options, "normalize": False})
    mine = post.post_process(raw.transpose(1, 2, 0)[None, None], x, image_size=None,
                             **{**options, "normalize": False})[0, 0]
    assert_close(mine, same_size, rtol=1e-5)


def test_post_processed_prp_end_to_end(resnet_pair):
    from cabrnet.core.visualization import gradients
    from cabrnet.core.visualization.prp_utils import get_cabrnet_lrp_composite_model

    model, ours = resnet_pair
    x = image(seed=6, size=SMALL)
    lrp_model = get_cabrnet_lrp_composite_model(model)
    theirs = gradients.prp(lrp_model, _pil(x), nchw(x), 3, "cpu", location="max", normalize=True)
    mine = jx_prototype.prototype_prp(ours, x, 3, location="max", normalize=True, stacked_sum_quirk=True)
    np.testing.assert_allclose(mine[0], theirs, rtol=0, atol=1e-3)


# ProtoTree: CaBRNet's soft decision tree (``cabrnet/archs/prototree``), full and pruned.

TREE_DEPTH = 3


def tree_config(log_probabilities: bool = False) -> dict:
    """A CaBRNet ProtoTree configuration: 3 classes, a depth-3 tree (7 prototypes), the add-on of ``config``."""
    base = config("resnet18", "layer2", similarity="ProtoTreeSimilarity")
    base["top_arch"] = {"module": "cabrnet.archs.prototree.model", "name": "ProtoTree"}
    base["classifier"] = {
        "module": "cabrnet.archs.prototree.decision", "name": "ProtoTreeClassifier",
        "params": {"num_classes": 3, "depth": TREE_DEPTH, "num_features": FEATURES, "leaves_init_mode": "NORMAL",
                   "log_probabilities": log_probabilities},
    }
    return base


def build_tree(seed: int = 0, log_probabilities: bool = False) -> torch.nn.Module:
    """A seeded CaBRNet ProtoTree; prototypes drawn near the features so similarities spread over (0, 1)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CaBRNet.build_from_config(copy.deepcopy(tree_config(log_probabilities))).eval()
        with torch.no_grad():
            model.classifier.prototypes.uniform_(0.3, 0.7)
    return model


def _tree_outputs(model: torch.nn.Module, x: np.ndarray, strategy: str) -> np.ndarray:
    from cabrnet.archs.prototree.decision import SamplingStrategy

    with torch.no_grad():
        return model(nchw(x), strategy=SamplingStrategy[strategy.upper()])[0].numpy()


@pytest.mark.parametrize("log_probabilities", [False, True])
def test_prototree_similarities_and_outputs(log_probabilities):
    model = build_tree(log_probabilities=log_probabilities)
    ours = converters.from_torch(model)
    assert isinstance(ours.module, converters.cabrnet.prototype.ProtoTree)
    x = image(batch=3)
    with torch.no_grad():
        theirs = nhwc(model.similarities(nchw(x)))
    np.testing.assert_allclose(ours.similarities(x), theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())
    for strategy in ("distributed", "sample_max"):
        expected = _tree_outputs(model, x, strategy)
        mine = ours.module.clone(strategy=strategy).apply(ours.variables, x)
        np.testing.assert_allclose(mine, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    np.testing.assert_array_equal(ours.prototype_class_mapping, model.classifier.prototype_class_mapping)
    loaded = converters.load_cabrnet(model.state_dict(), tree_config(log_probabilities))
    np.testing.assert_array_equal(loaded(x), ours(x))


def test_pruned_prototree_from_instance_file_and_config(tmp_path):
    model = build_tree(seed=2)
    leaves = dict(model.classifier.tree.named_modules())
    with torch.no_grad():
        for name, leaf in leaves.items():
            if name.endswith("child_nsim") and hasattr(leaf, "_relative_distribution"):
                leaf._relative_distribution.copy_(torch.tensor([[3.0, 0.0, -1.0]]))
            elif hasattr(leaf, "_relative_distribution"):
                leaf._relative_distribution.copy_(torch.tensor([[-1.0, 0.0, 3.0]]))
        # One leaf uniform (max 1/3): pruning at 0.34 removes it and lifts its sibling a level up.
        leaves["branch_0_child_nsim.branch_1_child_nsim.branch_2_child_nsim"]._relative_distribution.zero_()
    model.prune(pruning_threshold=0.34)
    assert model.classifier.tree.num_leaves == 7
    x = image(seed=3, batch=2)
    expected = _tree_outputs(model, x, "distributed")
    path = tmp_path / "model_state.pth"
    torch.save(model.state_dict(), path)
    for ours in (converters.from_torch(model), converters.load_cabrnet(path, tree_config())):
        assert len(ours.module.leaves) == 7 and ours.module.num_prototypes == 7
        np.testing.assert_allclose(ours(x), expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    state = dict(model.state_dict())
    del state["classifier.tree.branch_0_child_sim.branch_8_child_sim.branch_12_child_sim._relative_distribution"]
    with pytest.raises(ValueError, match="branch_12_child_sim._relative_distribution"):
        converters.load_cabrnet(state, tree_config())


def test_prototree_saliency_and_prp_raw(raw_cabrnet):
    from cabrnet.core.visualization.prp_utils import get_cabrnet_lrp_composite_model

    model = build_tree(seed=5)
    ours = converters.from_torch(model)
    x = image(seed=7, size=SMALL)
    theirs = raw_cabrnet.saliency(model, _pil(x), nchw(x), 4, "cpu", location=None)
    mine = jx_prototype.prototype_saliency(ours, x, 4, location=None, postprocess=False)
    assert_close(mine, nhwc(torch.from_numpy(theirs)[None]))
    lrp_model = get_cabrnet_lrp_composite_model(model)
    theirs = raw_cabrnet.prp(lrp_model, _pil(x), nchw(x), 2, "cpu", location=None)
    mine = jx_prototype.prototype_prp(ours, x, 2, location=None, postprocess=False, stacked_sum_quirk=True)
    assert_close(mine, nhwc(torch.from_numpy(theirs)[None]))
