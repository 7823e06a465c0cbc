"""Token sequences of vision transformers read as patch-grid maps, for the layer and CAM methods.

``T`` tokens over an ``H x W`` input are ``T - h w`` leading tokens (the class token, and a
distillation or register token where the model has one) followed by an ``h x w`` grid of
square patches, row by row (torchvision's ``VisionTransformer``, timm's ViT and DeiT).
"""

from __future__ import annotations

from jaxplain.attribution._common import check_choice
from jaxplain.typing import Array

RESHAPES = (None, "tokens", "channels_last")
"""``reshape=`` of the CAM methods: the layer as it is, a token sequence, a channels-last map."""


def token_grid(tokens: int, size: tuple[int, int], *, method: str = "token_grid") -> tuple[int, int, int]:
    """``(prefix, h, w)``: how ``tokens`` tokens of an ``H x W`` input split into leading tokens and a patch grid.

    The grid is the largest one of square patches that tile the input (``h = H / p``,
    ``w = W / p`` for a patch side ``p`` dividing both) with ``h w <= tokens``; the
    ``prefix = tokens - h w`` tokens before it are the class token (and distillation or
    register tokens). A torchvision ViT-B/16 at 224 px: 197 tokens, ``(1, 14, 14)``.

    Args:
        tokens: the token count ``T`` of a ``[N, T, D]`` layer.
        size: the input's spatial size ``(H, W)``.
        method: the calling method's name, for the message.

    Returns:
        ``(prefix, h, w)``.

    Raises:
        ValueError: when no grid of square patches fits.

    Example:
        >>> from jaxplain.attribution.tokens import token_grid
        >>> token_grid(197, (224, 224)), token_grid(18, (32, 32))
        ((1, 14, 14), (2, 4, 4))
    """
    height, width = size
    for patch in range(1, min(height, width) + 1):
        if height % patch == 0 and width % patch == 0 and (height // patch) * (width // patch) <= tokens:
            return tokens - (height // patch) * (width // patch), height // patch, width // patch
    raise ValueError(f"{method}: {tokens} tokens do not hold a grid of square patches of a {height}x{width} input")


def token_map(activation: Array, size: tuple[int, int], *, method: str = "token_map") -> Array:
    """A token layer ``[N, T, D]`` as a channels-last map ``[N, h, w, D]`` (leading tokens dropped).

    pytorch-grad-cam's ViT ``reshape_transform`` (``tensor[:, 1:, :]`` reshaped to the grid),
    with the grid and the leading-token count read by :func:`token_grid` from ``T`` and the input size.

    Args:
        activation: the layer's output (or its gradient) ``[N, T, D]``.
        size: the input's spatial size ``(H, W)``.
        method: the calling method's name, for the message.

    Returns:
        ``[N, h, w, D]``.

    Raises:
        ValueError: when ``activation`` is not ``[N, T, D]`` or its tokens hold no patch grid.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxplain.attribution.tokens import token_map
        >>> token_map(jnp.zeros((2, 17, 16)), (32, 32)).shape
        (2, 4, 4, 16)
    """
    if activation.ndim != 3:
        raise ValueError(f"{method}: reshape='tokens' reads a [N, T, D] token layer, got shape {tuple(activation.shape)}")
    prefix, height, width = token_grid(activation.shape[1], size, method=method)
    return activation[:, prefix:].reshape(activation.shape[0], height, width, activation.shape[2])


def layer_map(activation: Array, size: tuple[int, int], reshape: str | None, *, layer: str, method: str) -> Array:
    """The layer's output (or its gradient) as a channels-last map ``[N, h, w, C]``.

    ``reshape="tokens"`` reads a ``[N, T, D]`` token sequence (:func:`token_map`);
    ``"channels_last"`` and None take a 4-d array as it is (the caller has put its channels last).

    Args:
        activation: the layer's output or its gradient.
        size: the input's spatial size ``(H, W)``.
        reshape: None, ``"tokens"`` or ``"channels_last"``.
        layer: the layer's path, for the message.
        method: the calling method's name, for the message.

    Returns:
        ``[N, h, w, C]``.

    Raises:
        ValueError: when the output cannot be read so (a token sequence without ``"tokens"``,
            a map with it, a 2-d output).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxplain.attribution.tokens import layer_map
        >>> layer_map(jnp.zeros((2, 18, 8)), (32, 32), "tokens", layer="blocks.1", method="example").shape
        (2, 4, 4, 8)
    """
    check_choice("reshape", reshape, RESHAPES, method=method)
    if reshape == "tokens":
        if activation.ndim != 3:
            raise ValueError(f"{method}: layer {layer!r} gives {tuple(activation.shape)}, not a [N, T, D] token "
                             "sequence; reshape='tokens' applies to the blocks of a vision transformer")
        return token_map(activation, size, method=method)
    if activation.ndim != 4:
        raise ValueError(f"{method}: layer {layer!r} gives {tuple(activation.shape)}, not a [N, h, w, C] map; "
                         + ("pass reshape='tokens' for a token sequence" if activation.ndim == 3 else
                            "pick a layer with a spatial map"))
    return activation


__all__ = ["RESHAPES", "layer_map", "token_grid", "token_map"]
