"""ColorMAE's data-independent masks for grid-shaped inputs: white noise filtered in 2-D, then thresholded to SMA's
exact count per image (`masked_counts`). What a vision user reaches for when the grid is known; SMA's self-guided
masks have to find the grid on their own. `sma-pretrain --mask_noise_color` feeds them to the model as
`masked_positions`.

The filters act on the amplitude spectrum of the noise, over the radial frequency f (cycles per element, 0 to about
0.7): white keeps it flat (thresholded white noise is a uniformly random mask), pink weights it by f^-1/2 (power
1/f: large blobs), blue by f^1/2 (power f: scattered single elements), green by a band around `GREEN_BAND_CENTER`
(blobs of a few elements with gaps of about the same size between them: the band-pass noise ColorMAE found best).
"""

import math

import torch

from ..masking_sma import masked_counts, top_k_per_row


NOISE_COLORS = ("white", "pink", "blue", "green")
# cycles per element: blobs about 3 elements across and as far apart, the width of an MNIST digit's stroke
GREEN_BAND_CENTER = 0.15
GREEN_BAND_WIDTH = 0.05


def radial_frequencies(grid_shape: tuple[int, int]) -> torch.Tensor:
    """[height, width // 2 + 1] radial frequency (cycles per element) of each coefficient of `torch.fft.rfft2`."""
    height, width = grid_shape
    return torch.sqrt(torch.fft.fftfreq(height)[:, None] ** 2 + torch.fft.rfftfreq(width)[None, :] ** 2)


def noise_filter(color: str, grid_shape: tuple[int, int]) -> torch.Tensor:
    """The amplitude response of `color` on the `rfft2` coefficients of a `grid_shape` grid (the constant term 0:
    a shift of every value changes no ranking)."""
    frequency = radial_frequencies(grid_shape)
    if color == "white":
        response = torch.ones_like(frequency)
    elif color == "pink":
        response = frequency.clamp(min=1e-12).rsqrt()
    elif color == "blue":
        response = frequency.sqrt()
    elif color == "green":
        response = torch.exp(-0.5 * ((frequency - GREEN_BAND_CENTER) / GREEN_BAND_WIDTH) ** 2)
    else:
        raise ValueError(f"`color` must be one of {NOISE_COLORS}, got {color!r}.")
    response[0, 0] = 0.0
    return response


def colored_noise(
    batch_size: int, grid_shape: tuple[int, int], color: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """[batch_size, height, width] float32 noise of `color`, each image its own draw of white noise filtered."""
    white = torch.randn(batch_size, *grid_shape, generator=generator)
    return torch.fft.irfft2(torch.fft.rfft2(white) * noise_filter(color, grid_shape), s=grid_shape)


def colored_noise_masked_positions(
    valid: torch.Tensor,
    ratio: float,
    grid_shape: tuple[int, int],
    color: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """ColorMAE masks: per image, the round(ratio x valid) grid elements where its `color` noise is highest.

    Args:
        valid: [batch, height x width] bool; elements in row-major order. Padding (False) is never masked.
        ratio: share of the valid elements to mask, as `SMAConfig.masking_ratio`.
        grid_shape: (height, width) of the images.
        color: one of `NOISE_COLORS`.
        generator: a CPU `torch.Generator` for the noise (default: torch's global random state).

    Returns:
        [batch, height x width] bool mask on `valid`'s device with exactly `masked_counts(valid, ratio)` per row.
    """
    height, width = grid_shape
    if valid.shape[1] != height * width:
        raise ValueError(
            f"`grid_shape` {tuple(grid_shape)} holds {height * width} elements, but the inputs have {valid.shape[1]}."
        )
    noise = colored_noise(valid.shape[0], (height, width), color, generator).flatten(1).to(valid.device)
    return top_k_per_row(noise, valid, masked_counts(valid, ratio))


def radial_power(values: torch.Tensor, bands: int = 8) -> torch.Tensor:
    """[bands] mean power of `values` [batch, height, width] (mean removed per image) in equal radial frequency
    bands from 0 to 0.5 cycles per element, normalised to sum to 1: where a noise or a mask puts its variation."""
    grid_shape = tuple(values.shape[1:])
    centred = values.float() - values.float().mean(dim=(1, 2), keepdim=True)
    power = torch.fft.rfft2(centred).abs().square().mean(dim=0)
    band = (radial_frequencies(grid_shape) / 0.5 * bands).floor().long()
    inside = band < bands
    sums = torch.zeros(bands).index_add_(0, band[inside], power[inside])
    counts = torch.zeros(bands).index_add_(0, band[inside], torch.ones_like(power[inside]))
    per_band = sums / counts.clamp(min=1)
    return per_band / per_band.sum().clamp(min=math.ulp(1.0))
