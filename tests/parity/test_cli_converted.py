"""``jaxplain explain --arch`` with a torchvision classifier outside the zoo, and ``converters.load`` by name.

The architecture is built by torchvision, the file's weights are loaded in torch, and the model is
converted through ``torch.export``. MobileNetV3-Small at 32 px with 10 classes keeps it small: its
hard-swish units, squeeze-excitation gates and batch norms reach every relevance kind but attention.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import converters
from jaxplain.cli import main


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    path = tmp_path_factory.mktemp("weights") / "mobilenet.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_load_by_torchvision_name_matches_torch(weights_file):
    torch_model, path = weights_file
    model = converters.load(path, "mobilenet_v3_small", num_classes=10, input_shape=(1, 32, 32, 3))
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_load_by_name_summarises_mismatched_keys_and_unknown_names(weights_file):
    _, path = weights_file
    with pytest.raises(ValueError, match="state dict does not fit mobilenet_v3_large"):
        converters.load(path, "mobilenet_v3_large", num_classes=10, input_shape=(1, 32, 32, 3))
    with pytest.raises(ValueError, match="unknown architecture 'mobilenet_v9'.*torchvision"):
        converters.load(path, "mobilenet_v9", input_shape=(1, 32, 32, 3))


def test_cli_explains_a_converted_architecture(weights_file, tmp_path):
    _, path = weights_file
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(images / "a.png")
    out = tmp_path / "out"
    status = main(["explain", str(images), "--arch", "mobilenet_v3_small", "--weights", str(path), "--num-classes",
                   "10", "--size", "32", "--method", "cp_lrp", "--out", str(out)])
    assert status == 0
    attribution = np.load(out / "a.cp_lrp.npy")
    assert attribution.shape == (32, 32, 3) and np.isfinite(attribution).all() and np.abs(attribution).max() > 0
    with Image.open(out / "a.cp_lrp.png") as overlay:
        assert overlay.size == (48, 40)


def test_cli_explains_a_torchvision_vit_b_16(tmp_path):
    """``--arch vit_b_16``: the real ViT-B/16 configuration (12 layers, width 768), built at ``--size`` 32
    (a 2x2 patch grid), explained with the transformer methods: finite, non-zero maps of the image's
    size; the rollouts non-negative and not constant."""
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(image_size=32, num_classes=10).eval()
    with torch.no_grad():
        model.heads.head.weight.normal_(0.0, 0.05)
    path = tmp_path / "vit.pth"
    torch.save(model.state_dict(), path)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / "b.png")
    out = tmp_path / "out"
    methods = ["attn_lrp", "rollout", "transformer_attribution"]
    status = main(["explain", str(images), "--arch", "vit_b_16", "--weights", str(path), "--num-classes", "10",
                   "--size", "32", "--target", "3", "--method", *methods, "--out", str(out)])
    assert status == 0
    for method in methods:
        attribution = np.load(out / f"b.{method}.npy")
        assert attribution.shape[:2] == (32, 32) and np.isfinite(attribution).all() and np.abs(attribution).max() > 0
        if method != "attn_lrp":
            assert attribution.min() >= 0 and attribution.std() > 0
