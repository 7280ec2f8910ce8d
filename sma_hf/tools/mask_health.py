"""Mask health: is the self-guided mask still a mask of each example, or has it collapsed? Numbers and pictures.

At small scale, self-guided masks can stop depending on the example: summing many sampled queries' attention rows
approximates the average attention, and the mask settles on the same positions in every example, often ones that
are trivial to predict (measured on permuted MNIST and on proteins:
`benchmarks/results/mask_selection/protein_probes.md`). Three numbers tell it apart from a healthy mask, all
measured by `sma-pretrain` at every evaluation on the held-out rows:

- the collapse score: how much more the masks of different examples overlap than random masks of the same size do,
  on a scale from 0 (as diverse as random masks) to 1 (one mask for every example);
- the loss ratio: the reconstruction loss on the model's own masks over the loss on random masks. Below 1, the
  masks pick what is easier than average to predict;
- the leak: how far the content of the masked elements is from what the same positions hold in other examples
  (the total variation distance of the two distributions: token ids, or each channel's values binned at the
  reference's deciles). Masks that pick a kind of content tell what they hide: the visible elements lack it, and
  the decoder learns "masked here => the missing kind" (on proteins, masks that picked residue types). Comparing
  with the same positions, not with random masks, keeps masks that merely prefer some positions (the centre of an
  image) from counting as a leak.

`draw_masks` draws the masks of a few examples: highlighted characters for sequences, a grid for grid-shaped
inputs. It serves the TensorBoard images of `sma-pretrain`, the README's figures and the model cards.
"""

import io
import math

import numpy as np
import torch


# Thresholds, from measured runs. A collapsed run (permuted MNIST, 33 sampled queries per image) had masks of
# different examples overlapping 0.89 against 0.33 for random masks: score (0.89 - 0.33) / (1 - 0.33) = 0.84, with a
# reconstruction loss on its own masks near 0. The healthy chemistry run overlapped 0.20 against 0.18 (score 0.02)
# and its own masks were harder to fill than random ones (loss ratio 1.47 / 1.22 = 1.2). Halfway between random and
# identical masks, and half the random-mask loss, are far from both healthy values and well inside the collapse.
COLLAPSE_SCORE_THRESHOLD = 0.5
EASY_MASK_LOSS_RATIO_THRESHOLD = 0.5
# The leak, measured on SwissProt (500 held-out proteins, about 23,700 hidden residues, after a 1,000-step run of
# `benchmarks/mask_selection_study.py`): 0.68 for the paper's selection, whose masks picked residue types (0.68-0.75
# at every evaluation); 0.020 for masks chosen by position and 0.021 for random masks, which is the sampling noise of
# that many residues (it grows as 1/sqrt(hidden elements): about 0.08 for 1,000 residues). 0.1 lies far from both.
MASK_LEAK_THRESHOLD = 0.1
CONTINUOUS_LEAK_BINS = 10
# the figure of a few examples' masks that a hub-ready folder carries (drawn by sma-pretrain, shown in the card)
MASK_FIGURE_FILE = "masks.png"


def pairwise_mask_overlap(mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean Jaccard overlap of the masks of every pair of examples, over the positions valid in both.

    Self-guided masks that stop depending on the example (a collapse seen at small scale) overlap far more than
    random masks of the same size.
    """
    masked = (mask & valid).float()
    valid = valid.float()
    intersection = masked @ masked.T
    union = masked @ valid.T + valid @ masked.T - intersection
    pairs = ~torch.eye(len(mask), dtype=torch.bool, device=mask.device) & (union > 0)
    if not pairs.any():
        return torch.tensor(float("nan"))
    return (intersection[pairs] / union[pairs]).mean()


def collapse_score(overlap_self_guided: float, overlap_random: float) -> float:
    """0 when self-guided masks of different examples overlap as little as random masks, 1 when they are identical."""
    if not (math.isfinite(overlap_self_guided) and math.isfinite(overlap_random)) or overlap_random >= 1:
        return float("nan")
    return (overlap_self_guided - overlap_random) / (1.0 - overlap_random)


def hidden_content(batch: dict, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What `mask` hides in `batch` (token ids [n] or values [n, channels]), and, as the reference `mask_leak` compares
    it with, what the same positions hold in the batch's next example (valid elements only)."""
    content = batch["input_ids"] if "input_ids" in batch else batch["inputs"]
    valid = batch["attention_mask"].bool() if "attention_mask" in batch else torch.ones_like(mask)
    return content[mask & valid], content[mask.roll(1, dims=0) & valid]


def mask_leak(own: torch.Tensor, reference: torch.Tensor) -> float:
    """Total variation distance between the content the model's own masks hide (`own`) and the content the same
    positions hold in other examples (`reference`, see `hidden_content`): token ids [n] (discrete inputs), or values
    [n, channels] (continuous inputs), where each channel is binned at the deciles of its reference values and the
    distances are averaged over channels. 0: the masks hide whatever stands at their positions; 1: content that never
    stands there otherwise."""
    if len(own) == 0 or len(reference) == 0:
        return float("nan")
    if own.dim() == 1:
        size = int(max(own.max(), reference.max())) + 1
        own_share = torch.bincount(own, minlength=size) / len(own)
        reference_share = torch.bincount(reference, minlength=size) / len(reference)
        return 0.5 * float((own_share - reference_share).abs().sum())
    distances = []
    for own_values, reference_values in zip(own.double().T.contiguous(), reference.double().T.contiguous()):
        quantiles = torch.linspace(0, 1, CONTINUOUS_LEAK_BINS + 1, dtype=torch.float64)
        edges = torch.unique(torch.quantile(reference_values, quantiles)[1:-1])  # a mass point (many zeros): one bin
        own_share = torch.bincount(torch.bucketize(own_values, edges), minlength=len(edges) + 1) / len(own_values)
        reference_bins = torch.bucketize(reference_values, edges)
        reference_share = torch.bincount(reference_bins, minlength=len(edges) + 1) / len(reference_values)
        distances.append(0.5 * float((own_share - reference_share).abs().sum()))
    return float(np.mean(distances))


def mask_health(metrics: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """The health numbers of an evaluation (`mask_collapse_score`, `mask_loss_ratio`, `mask_collapsed`: 1.0 when a
    threshold is crossed, the leak included where `metrics` has `mask_leak`) and a warning for each threshold
    crossed, saying what to try."""
    score = collapse_score(metrics["mask_overlap_self_guided"], metrics["mask_overlap_random"])
    ratio = metrics["eval_loss_self_guided"] / metrics["eval_loss"] if metrics["eval_loss"] > 0 else float("nan")
    warnings = []
    if score >= COLLAPSE_SCORE_THRESHOLD:
        warnings.append(
            f"self-guided masks have collapsed onto the same positions in every example: they overlap "
            f"{metrics['mask_overlap_self_guided']:.2f} against {metrics['mask_overlap_random']:.2f} for random masks "
            f"(collapse score {score:.2f} >= {COLLAPSE_SCORE_THRESHOLD}). Sample fewer queries (a larger "
            "num_per_query), keep the warm-up noise on longer (--mask_noise_warmup_ratio), or lower masking_ratio."
        )
    if ratio < EASY_MASK_LOSS_RATIO_THRESHOLD:
        warnings.append(
            f"self-guided masks pick what is easy to predict: the loss on them is {ratio:.2f} of the loss on random "
            f"masks (< {EASY_MASK_LOSS_RATIO_THRESHOLD}). The model may be learning to fill trivial positions; try "
            "the remedies for a collapse."
        )
    leak = metrics.get("mask_leak", float("nan"))
    if leak >= MASK_LEAK_THRESHOLD:
        warnings.append(
            f"self-guided masks hide a kind of content: what they mask differs from what the same positions hold in "
            f"other examples by {leak:.2f} (total variation, >= {MASK_LEAK_THRESHOLD}), so the visible elements "
            "tell what is missing. Masks selected by position (mask_selection='positions') cannot pick content."
        )
    numbers = {"mask_collapse_score": score, "mask_loss_ratio": ratio, "mask_collapsed": float(bool(warnings))}
    return numbers, warnings


def grid_neighbours(grid_shape: tuple[int, int], permutation=None) -> np.ndarray:
    """[height x width, 4] input positions of each position's 4 neighbours in the grid (-1: none). With
    `permutation` (the inputs are `pixels[permutation]`), the neighbours in the true grid of the pixel each input
    position holds: the geometry a model of permuted pixels is not told."""
    height, width = grid_shape
    pixels = np.arange(height * width) if permutation is None else np.asarray(permutation)
    where = np.empty(height * width, dtype=np.int64)  # pixel -> the input position holding it
    where[pixels] = np.arange(height * width)
    rows, columns = np.divmod(pixels, width)
    neighbours = np.full((height * width, 4), -1)
    for k, (dr, dc) in enumerate(((-1, 0), (1, 0), (0, -1), (0, 1))):
        inside = (0 <= rows + dr) & (rows + dr < height) & (0 <= columns + dc) & (columns + dc < width)
        neighbours[inside, k] = where[(rows[inside] + dr) * width + columns[inside] + dc]
    return neighbours


def neighbour_share(mask, valid, neighbours: np.ndarray) -> float:
    """Mask coherence: over every masked element of every example, the mean share of its valid neighbours that are
    masked too (`neighbours` [length, k]: each position's neighbours, -1 for none). Random masks score about the
    masking ratio; masks of contiguous blobs score near 1."""
    mask, valid = np.asarray(mask, dtype=bool), np.asarray(valid, dtype=bool)
    exists = neighbours >= 0
    around = np.where(exists, neighbours, 0)
    around_valid = valid[:, around] & exists  # [batch, length, k]
    around_masked = (mask[:, around] & around_valid).sum(axis=2)
    counts = around_valid.sum(axis=2)
    chosen = mask & valid & (counts > 0)
    return float((around_masked[chosen] / counts[chosen]).mean()) if chosen.any() else float("nan")


@torch.no_grad()
def self_guided_masks(model, batch: dict, seed: int = 0) -> torch.Tensor:
    """The masks `model` (an `SMAForMaskedModeling`) draws for `batch` as at the end of pretraining: its masking
    strategy, no warm-up noise, a seeded generator. [batch, length] bool."""
    noise_scales = [m.mask_noise_scale for m in model.modules() if hasattr(m, "mask_noise_scale")]
    model.set_mask_noise_scale(0.0)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    try:
        return model.sma(**{k: v.to(device) for k, v in batch.items()}, sample_mask=True, generator=generator).mask
    finally:
        model.set_mask_noise_scale(noise_scales[0] if noise_scales else 1.0)


def draw_masks(examples, masks, *, grid_shape=None, titles=None, characters_per_line: int = 64):
    """A matplotlib figure of the masks of a few examples.

    Args:
        examples: one item per example. A string (one element per character) or a list of per-element labels (e.g.
            the bytes of a tokenizer) is drawn as highlighted characters; an array of element values with
            `grid_shape` is drawn as that grid (an image), masked elements tinted.
        masks: [batch, length] booleans (True = masked), aligned with the elements; positions past an example's end
            (padding, a trailing [SEP]) are ignored.
        grid_shape: `(height, width)` of grid-shaped inputs, elements in row-major order.
        titles: one title per example (optional).
        characters_per_line: where sequences wrap.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed: the figure is saved or logged
    from matplotlib import pyplot as plt

    masks = np.asarray(masks.cpu() if isinstance(masks, torch.Tensor) else masks, dtype=bool)
    if len(examples) != len(masks):
        raise ValueError(f"`examples` has {len(examples)} items but `masks` has {len(masks)} rows.")
    titles = list(titles) if titles is not None else [None] * len(examples)
    if grid_shape is not None:
        height, width = grid_shape
        figure, axes = plt.subplots(1, len(examples), figsize=(2.2 * len(examples), 2.4), squeeze=False)
        for ax, values, mask, title in zip(axes[0], examples, masks, titles):
            image = _tinted(np.asarray(values, dtype=np.float32).reshape(height * width, -1), mask)
            ax.imshow(image.reshape(height, width, 3), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if title:
                ax.set_title(title, fontsize=8)
        figure.tight_layout()
        return figure
    if not isinstance(examples[0], str) and not isinstance(list(examples[0])[0], str):  # values without a grid
        figure, axes = plt.subplots(len(examples), 1, figsize=(8, 0.5 * len(examples) + 0.4), squeeze=False)
        for ax, values, mask, title in zip(axes[:, 0], examples, masks, titles):
            values = np.asarray(values, dtype=np.float32)[: len(mask)]  # a truncated example: what the model saw
            image = _tinted(values.reshape(len(values), -1), mask)  # one cell per element, in order
            ax.imshow(image[None], aspect="auto", interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(title or "", fontsize=8, loc="left")
        figure.tight_layout()
        return figure

    rows = []  # (example index, characters of one line, their mask)
    for index, (example, mask) in enumerate(zip(examples, masks)):
        elements = list(example)[: len(mask)]  # a truncated example: what the model saw
        for start in range(0, len(elements), characters_per_line):
            rows.append((index, elements[start : start + characters_per_line], mask[start : start + len(elements)]))
    figure = plt.figure(figsize=(0.14 * characters_per_line + 0.5, 0.32 * (len(rows) + len(examples)) + 0.3))
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    line_height = 1.0 / (len(rows) + len(examples) + 1)
    y, previous = 1.0 - line_height, None
    for index, elements, mask in rows:
        if index != previous:
            label = titles[index] or f"example {index}"
            ax.text(0.01, y, label, fontsize=7, color="0.4", va="center", transform=ax.transAxes)
            y -= line_height
            previous = index
        for column, (element, masked) in enumerate(zip(elements, mask)):
            ax.text(
                0.02 + column / (characters_per_line + 2),
                y,
                element if element.strip() else "·",
                fontsize=9,
                family="monospace",
                va="center",
                transform=ax.transAxes,
                color="white" if masked else "black",
                bbox={"boxstyle": "square,pad=0.15", "facecolor": "#c0392b", "edgecolor": "none"} if masked else None,
            )
        y -= line_height
    return figure


def _tinted(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[elements, 3] grey levels of the elements' mean values (scaled to [0, 1]), the masked ones tinted red."""
    values = values.mean(axis=1)
    image = np.repeat(((values - values.min()) / (np.ptp(values) or 1.0))[:, None], 3, axis=1)
    tint = mask[: len(values)]
    image[tint] = 0.35 * image[tint] + 0.65 * np.array([0.85, 0.1, 0.1])
    return image


def figure_png(figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    from matplotlib import pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()
