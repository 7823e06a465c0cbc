"""jx.viz against Captum's own visualisation, pixel for pixel.

The oracle for :func:`jx.viz.normalize_attribution` is Captum's private
``_normalize_attr`` (after the channel sum ``visualize_image_attr`` does), compared to
float rounding. The oracle for :func:`jx.viz.overlay` and :func:`jx.viz.heatmap` is
Captum's ``visualize_image_attr`` itself, rendered by matplotlib's Agg backend into a
figure exactly the image's size whose one axes fills the canvas (one screen pixel per
image pixel, nearest interpolation). Its 8-bit canvas must equal our float pixels
exactly for the modes that only scale 8-bit levels (``original_image``,
``masked_image``), within 1.5/255 where Agg converts colours to 8 bits (``heat_map``,
``alpha_scaling``), and within 2.5/255 for ``blended_heat_map``, whose 8-bit
compositing truncates (Agg's pixels lie up to 2.2/255 below the exact blend).
``alpha_scaling`` is compared after composing our RGBA over white, the figure's
background.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from PIL import Image

import jaxplain.viz as viz

matplotlib.use("Agg")

RNG = np.random.default_rng(0)
H, W = 9, 13
ATTRIBUTION = RNG.normal(size=(H, W, 3)) * np.exp(RNG.normal(size=(H, W, 1)))
IMAGE = RNG.uniform(size=(H, W, 3))
IMAGE_UINT8 = RNG.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
TOLERANCE = {
    "original_image": 1e-6,
    "masked_image": 1e-6,
    "heat_map": 1.5 / 255,
    "alpha_scaling": 1.5 / 255,
    "blended_heat_map": 2.5 / 255,
}
VALID = [
    (method, sign)
    for method in viz.METHODS
    for sign in viz.SIGNS
    if not (sign == "all" and method in ("masked_image", "alpha_scaling"))
]


def captum_pixels(attribution: np.ndarray, image: np.ndarray | None, method: str, sign: str, **kwargs) -> np.ndarray:
    """Captum's picture as an RGB float array: the Agg canvas of a figure the image's size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from captum.attr import visualization

    height, width = attribution.shape[:2]
    figure = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    visualization.visualize_image_attr(
        attribution, image, method=method, sign=sign, plt_fig_axis=(figure, axes), use_pyplot=False, **kwargs
    )
    axes.set_position((0, 0, 1, 1))
    axes.set_axis_off()
    for drawn in axes.get_images():
        drawn.set_interpolation("nearest")
    figure.canvas.draw()
    canvas = np.asarray(figure.canvas.buffer_rgba())
    assert canvas.shape[:2] == (height, width)
    return canvas[..., :3] / 255.0


def composed_over_white(pixels: np.ndarray) -> np.ndarray:
    if pixels.shape[-1] == 3:
        return pixels
    return pixels[..., :3] * pixels[..., 3:] + 1 - pixels[..., 3:]


@pytest.mark.parametrize("sign", viz.SIGNS)
@pytest.mark.parametrize("outlier_perc", [0.5, 2, 10, 50.5])
def test_normalize_attribution_equals_captum(sign, outlier_perc):
    from captum.attr._utils.visualization import _normalize_attr

    expected = _normalize_attr(ATTRIBUTION.sum(axis=2), sign, outlier_perc)
    ours = viz.normalize_attribution(ATTRIBUTION, sign, outlier_perc)
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)
    flat = ATTRIBUTION[..., 0].astype(np.float32)
    np.testing.assert_allclose(
        viz.normalize_attribution(flat, sign, outlier_perc),
        _normalize_attr(flat, sign, outlier_perc),
        rtol=1e-6,
        atol=1e-6,
    )
    joint = viz.normalize_attribution(ATTRIBUTION, sign, outlier_perc, reduce_channels=False)
    np.testing.assert_allclose(joint, _normalize_attr(ATTRIBUTION, sign, outlier_perc), rtol=1e-12, atol=1e-12)


def test_normalize_attribution_edge_cases_captum_fails_on():
    """An empty sign gives zeros (Captum asserts); ``outlier_perc=0`` scales by the maximum.

    Captum's threshold search can find no index at ``outlier_perc=0`` when the rounded
    ``total * 0.01 * 100`` exceeds the total, and raises ``IndexError``.
    """
    np.testing.assert_array_equal(viz.normalize_attribution(np.abs(ATTRIBUTION), "negative"), np.zeros((H, W)))
    summed = ATTRIBUTION.sum(axis=2)
    np.testing.assert_allclose(
        viz.normalize_attribution(ATTRIBUTION, "all", 0), summed / np.abs(summed).max(), rtol=1e-12
    )


@pytest.mark.parametrize("method,sign", VALID)
@pytest.mark.parametrize("image", [IMAGE, IMAGE_UINT8], ids=["float", "uint8"])
def test_overlay_draws_captums_pixels(method, sign, image):
    ours = viz.overlay(image, ATTRIBUTION, method=method, sign=sign, alpha_overlay=0.6, outlier_perc=3)
    assert ours.dtype == np.float32 and ours.shape == (H, W, 4 if method == "alpha_scaling" else 3)
    assert ours.min() >= 0 and ours.max() <= 1
    expected = captum_pixels(ATTRIBUTION, image, method, sign, alpha_overlay=0.6, outlier_perc=3)
    np.testing.assert_allclose(composed_over_white(ours), expected, rtol=0, atol=TOLERANCE[method])


@pytest.mark.parametrize("sign", viz.SIGNS)
def test_heatmap_draws_captums_pixels(sign):
    ours = viz.heatmap(ATTRIBUTION[..., :1], sign=sign)
    np.testing.assert_allclose(
        ours, captum_pixels(ATTRIBUTION[..., :1], None, "heat_map", sign), rtol=0, atol=TOLERANCE["heat_map"]
    )
    custom = viz.heatmap(ATTRIBUTION, sign=sign, cmap="viridis", outlier_perc=1)
    expected = captum_pixels(ATTRIBUTION, None, "heat_map", sign, cmap="viridis", outlier_perc=1)
    np.testing.assert_allclose(custom, expected, rtol=0, atol=TOLERANCE["heat_map"])


def test_batches_are_stacked_single_results():
    images = np.stack([IMAGE, IMAGE[::-1]])
    attributions = np.stack([ATTRIBUTION, -ATTRIBUTION])
    batch = viz.overlay(images, attributions[..., 0], method="masked_image", sign="positive")
    assert batch.shape == (2, H, W, 3)
    for i in range(2):
        np.testing.assert_array_equal(
            batch[i], viz.overlay(images[i], attributions[i, ..., 0], method="masked_image", sign="positive")
        )
    heat = viz.heatmap(attributions, sign="all")
    np.testing.assert_array_equal(heat[1], viz.heatmap(-ATTRIBUTION, sign="all"))


def test_overlay_accepts_jax_arrays_and_single_channel_images():
    import jax.numpy as jnp

    np.testing.assert_array_equal(
        viz.overlay(jnp.asarray(IMAGE), jnp.asarray(ATTRIBUTION)), viz.overlay(IMAGE, ATTRIBUTION)
    )
    gray = viz.overlay(IMAGE_UINT8[..., :1], ATTRIBUTION, method="original_image")
    np.testing.assert_array_equal(gray, np.repeat(IMAGE_UINT8[..., :1] / 255.0, 3, axis=-1).astype(np.float32))


@pytest.mark.parametrize(
    "image,attribution,kwargs,message",
    [
        (IMAGE.transpose(2, 0, 1), ATTRIBUTION, {}, "channels-first"),
        (IMAGE[None].transpose(0, 3, 1, 2), ATTRIBUTION[None], {}, "channels-first"),
        (IMAGE, ATTRIBUTION[:-1], {}, "does not match"),
        (IMAGE, ATTRIBUTION.transpose(2, 0, 1), {}, "does not match"),
        (IMAGE, ATTRIBUTION, {"method": "hot_map"}, "unknown method"),
        (IMAGE, ATTRIBUTION, {"sign": "both"}, "unknown sign"),
        (IMAGE, ATTRIBUTION, {"method": "masked_image", "sign": "all"}, "both signs"),
        (IMAGE, ATTRIBUTION, {"method": "alpha_scaling", "sign": "all"}, "both signs"),
        (IMAGE, np.where(ATTRIBUTION > 1, np.nan, ATTRIBUTION), {}, "NaN"),
        (IMAGE * 255, ATTRIBUTION, {}, r"\[0, 1\]"),
        (IMAGE, ATTRIBUTION, {"alpha_overlay": 1.5}, "alpha_overlay"),
        (IMAGE, ATTRIBUTION, {"outlier_perc": 101}, "outlier_perc"),
        (IMAGE, ATTRIBUTION, {"cmap": "no such map"}, "colour map"),
    ],
)
def test_overlay_errors(image, attribution, kwargs, message):
    with pytest.raises(ValueError, match=message):
        viz.overlay(image, attribution, **kwargs)


def test_heatmap_and_normalize_errors():
    with pytest.raises(ValueError, match="channels last"):
        viz.heatmap(ATTRIBUTION.transpose(2, 0, 1))
    with pytest.raises(ValueError, match="NaN"):
        viz.heatmap(np.full((H, W), np.inf))
    with pytest.raises(ValueError, match="unknown sign"):
        viz.normalize_attribution(ATTRIBUTION, "absolute")
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        viz.normalize_attribution(ATTRIBUTION[None])


def test_to_pil_round_trip():
    for array, mode in [(IMAGE_UINT8, "RGB"), (IMAGE_UINT8[..., 0], "L"), (IMAGE_UINT8[..., :1], "L")]:
        picture = viz.to_pil(array)
        assert picture.mode == mode
        np.testing.assert_array_equal(np.asarray(picture), array[..., 0] if array.shape[-1] == 1 else array)
    np.testing.assert_allclose(np.asarray(viz.to_pil(IMAGE)) / 255.0, IMAGE, rtol=0, atol=0.5 / 255 + 1e-6)
    rgba = viz.overlay(IMAGE, ATTRIBUTION, method="alpha_scaling")
    picture = viz.to_pil(rgba)
    assert picture.mode == "RGBA" and picture.size == (W, H)
    np.testing.assert_allclose(np.asarray(picture) / 255.0, rgba, rtol=0, atol=0.5 / 255 + 1e-6)
    for bad in [IMAGE * 2, IMAGE[None], IMAGE[..., :2]]:
        with pytest.raises(ValueError):
            viz.to_pil(bad)


@pytest.mark.parametrize("titles", [False, True])
def test_grid_layout_and_tiles(titles):
    images = np.stack([IMAGE_UINT8, IMAGE_UINT8[::-1]])
    attributions = {
        "saliency": np.abs(np.stack([ATTRIBUTION, ATTRIBUTION[::-1]])),
        "ig": np.stack([ATTRIBUTION] * 2)[..., 0],
    }
    picture = viz.grid(images, attributions, method="alpha_scaling", titles=titles, scale=2, padding=3)
    assert isinstance(picture, Image.Image) and picture.mode == "RGB"
    width, height = picture.size
    tile_h, tile_w = 2 * H, 2 * W
    if titles:
        assert width >= 3 * tile_w + 4 * 3 and height > 2 * tile_h + 3 * 3
        return
    assert (width, height) == (3 * tile_w + 4 * 3, 2 * tile_h + 3 * 3)
    pixels = np.asarray(picture)
    second_row_ig = pixels[3 + tile_h + 3 :: 2, 3 + 2 * (tile_w + 3) :: 2][:H, :W]
    expected = composed_over_white(viz.overlay(images[1], attributions["ig"][1], method="alpha_scaling"))
    np.testing.assert_allclose(second_row_ig / 255.0, expected, rtol=0, atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(pixels[3 : 3 + tile_h : 2, 3 : 3 + tile_w : 2], IMAGE_UINT8)
    assert (pixels[:3] == 255).all() and (pixels[:, :3] == 255).all()


def test_grid_titles_widen_columns_and_errors():
    long_name = "a rather long method name"
    picture = viz.grid(IMAGE, {long_name: ATTRIBUTION}, titles=True)
    assert picture.size[0] > 2 * W + 3 * 2
    assert (np.asarray(picture)[:8] < 128).any()
    with pytest.raises(ValueError, match="at least one"):
        viz.grid(IMAGE, {})
    with pytest.raises(ValueError, match="does not match"):
        viz.grid(IMAGE, {"m": ATTRIBUTION[:-1]})


def test_resize_attribution_upsamples_as_torch_bilinear():
    torch = pytest.importorskip("torch")
    small = RNG.normal(size=(7, 5, 2)).astype(np.float32)
    ours = viz.resize_attribution(small, (20, 13))
    theirs = torch.nn.functional.interpolate(torch.from_numpy(small.transpose(2, 0, 1))[None], size=(20, 13),
                                             mode="bilinear", align_corners=False)[0].numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    assert viz.resize_attribution(small[..., 0], (20, 13)).shape == (20, 13)
    with pytest.raises(ValueError, match="size must be positive"):
        viz.resize_attribution(small, (0, 4))


@pytest.mark.parametrize("sign", viz.SIGNS)
def test_value_range_is_captums_normalising_threshold(sign):
    from captum.attr._utils.visualization import _cumulative_sum_threshold

    summed = ATTRIBUTION.sum(axis=2)
    selected = {"positive": np.maximum(summed, 0), "negative": -np.minimum(summed, 0),
                "absolute_value": np.abs(summed), "all": summed}[sign]
    threshold = _cumulative_sum_threshold(np.abs(selected), 98)
    expected = {"all": (-threshold, threshold), "negative": (0, -threshold)}.get(sign, (0, threshold))
    np.testing.assert_allclose(viz.value_range(ATTRIBUTION, sign), expected, rtol=1e-12)


def test_colour_bar_shows_the_colour_map_from_high_to_low():
    picture = viz.overlay(IMAGE, ATTRIBUTION, sign="all")
    framed = viz.with_colorbar(picture, (-1.0, 1.0), sign="all", width=4)
    np.testing.assert_array_equal(framed[:, :W], picture)
    bar = framed[:, W + 2:W + 6]
    np.testing.assert_allclose(bar[0, 0], matplotlib.colors.to_rgb("green"), atol=1e-6)
    np.testing.assert_allclose(bar[-1, 0], matplotlib.colors.to_rgb("red"), atol=1e-6)
    with pytest.raises(ValueError, match=r"picture must be \[H, W, 3\]"):
        viz.with_colorbar(picture[..., :1], (0.0, 1.0))
