"""The ``lime`` package's image explainer against ``jx.lime_image`` on a converted ResNet-18.

LIME draws its binary rows with its own ``RandomState``; the test replays those rows
(same seed, same draw) into ``samples=`` and hands LIME the same superpixels through
``segmentation_fn``. The classifier on LIME's side is the torch model with a softmax,
on the same (already normalised) pixels. Compared: the top labels, every superpixel's
ridge coefficient, the intercept, R^2 and local prediction, to 1e-3 of the largest
coefficient (LIME fits in float64, we in float32). The quickshift segmentation is
compared with LIME's own ``SegmentationAlgorithm`` wrapper, id for id.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from lime.lime_image import LimeImageExplainer
from lime.wrappers.scikit_image import SegmentationAlgorithm

import jaxplain as jx
from jaxplain.attribution.lime_image import image_and_mask, segment_images
from tests.parity._torch import converted, nchw

SEEDS = (11, 12)
NUM_SAMPLES = 120


@pytest.fixture(scope="module")
def setup():
    torch_model, model = converted("resnet18", seed=3)
    rng = np.random.default_rng(9)
    raw = rng.random((2, 32, 40, 3)).astype(np.float32)
    segments = segment_images(raw, seed=4, options={"kernel_size": 2, "max_dist": 8})
    return torch_model, model, raw, segments


def lime_explanations(torch_model, images, segments, **kwargs):
    def classifier(batch):
        with torch.no_grad():
            return torch.softmax(torch_model(nchw(batch.astype(np.float32))), dim=1).numpy()

    explanations, rows = [], []
    for image, segment, seed in zip(images, segments, SEEDS):
        explainer = LimeImageExplainer(random_state=seed)
        explanations.append(
            explainer.explain_instance(
                image, classifier, segmentation_fn=lambda _: segment, random_seed=0,
                num_samples=NUM_SAMPLES, **kwargs,
            )
        )
        count = segment.max() + 1
        drawn = np.random.RandomState(seed).randint(0, 2, NUM_SAMPLES * count).reshape(NUM_SAMPLES, count)
        drawn[0] = 1
        rows.append(drawn)
    width = max(r.shape[1] for r in rows)
    return explanations, np.stack([np.pad(r, ((0, 0), (0, width - r.shape[1])), constant_values=1) for r in rows])


def coefficients(explanation, label, count):
    weights = np.zeros(count)
    for feature, weight in explanation.local_exp[label]:
        weights[feature] = weight
    return weights


@pytest.mark.parametrize(
    "options",
    [{}, {"hide_color": 0.5, "num_features": 4}, {"num_features": 10, "top_labels": 3}],
    ids=["defaults", "hide_color_forward_selection", "highest_weights"],
)
def test_lime_image_matches_lime_package(setup, options):
    torch_model, model, images, segments = setup
    explanations, samples = lime_explanations(torch_model, images, segments, **options)
    ours = jx.lime_image(model, images, segments=segments, samples=samples, **options)
    count = samples.shape[2]
    for i, explanation in enumerate(explanations):
        assert list(np.asarray(ours.labels[i])) == list(explanation.top_labels)
        scale = max(np.abs(coefficients(explanation, label, count)).max() for label in explanation.top_labels)
        for rank, label in enumerate(explanation.top_labels):
            theirs = coefficients(explanation, label, count)
            np.testing.assert_allclose(ours.weights[i, rank], theirs, atol=1e-3 * scale)
            np.testing.assert_allclose(ours.intercept[i, rank], explanation.intercept[label], atol=1e-3 * scale)
        # LIME keeps the score and local prediction of the last label it fitted: it fits the
        # top labels in ascending order of probability, so that is the most probable one.
        np.testing.assert_allclose(ours.score[i, 0], explanation.score, atol=1e-3)
        np.testing.assert_allclose(ours.local_pred[i, 0], explanation.local_pred[0], atol=1e-3 * scale)


def test_image_and_mask_matches_lime_package(setup):
    torch_model, model, images, segments = setup
    explanations, samples = lime_explanations(torch_model, images, segments, num_features=10, top_labels=3)
    ours = jx.lime_image(model, images, segments=segments, samples=samples, num_features=10, top_labels=3)
    for settings in [{}, {"positive_only": False, "num_features": 3}, {"negative_only": True, "positive_only": False, "hide_rest": True}]:
        shown, mask = image_and_mask(ours, images, 1, **settings)
        for i, explanation in enumerate(explanations):
            their_image, their_mask = explanation.get_image_and_mask(explanation.top_labels[1], **settings)
            np.testing.assert_array_equal(np.asarray(mask[i]), their_mask)
            np.testing.assert_allclose(np.asarray(shown[i]), their_image, atol=1e-6)


def test_quickshift_segments_match_lime_wrapper(setup):
    """LIME's wrapper drops ``random_seed`` (scikit-image now calls it ``rng``), so it runs with rng=42."""
    _, _, images, _ = setup
    lime_segmentation = SegmentationAlgorithm("quickshift", kernel_size=4, max_dist=200, ratio=0.2, random_seed=7)
    ours = segment_images(images, seed=42)
    for image, segment in zip(images, ours):
        np.testing.assert_array_equal(segment, lime_segmentation(image))


def test_random_samples_same_key_same_answer(setup):
    _, model, images, segments = setup
    first = jx.lime_image(model, images, segments=segments, key=jax.random.PRNGKey(0), num_samples=NUM_SAMPLES, top_labels=2)
    again = jx.lime_image(model, images, segments=segments, key=jax.random.PRNGKey(0), num_samples=NUM_SAMPLES, top_labels=2)
    np.testing.assert_array_equal(first.weights, again.weights)
    assert first.heatmap().shape == (2, 2, 32, 40)
