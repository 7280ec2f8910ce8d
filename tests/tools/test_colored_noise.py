"""ColorMAE's masks: exact counts, the spectrum of each filter, and `sma-pretrain --mask_noise_color`."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import sma_hf.tools.pretrain as pretraining
from sma_hf.masking_sma import masked_counts
from sma_hf.tools.colored_noise import (
    GREEN_BAND_CENTER,
    NOISE_COLORS,
    colored_noise,
    colored_noise_masked_positions,
    radial_power,
)


GRID = (32, 32)  # the lowest of 8 bands holds a few frequencies besides the constant term
BANDS = 8


def _spectra(make) -> dict[str, torch.Tensor]:
    return {color: radial_power(make(color, torch.Generator().manual_seed(0)), BANDS) for color in NOISE_COLORS}


@pytest.mark.parametrize("color", NOISE_COLORS)
def test_masks_have_the_exact_count_and_never_mask_padding(color):
    valid = torch.ones(6, GRID[0] * GRID[1], dtype=torch.bool)
    valid[1, -40:] = False  # a padded row
    valid[2, 1:] = False  # one valid element: it stays visible
    mask = colored_noise_masked_positions(valid, 0.3, GRID, color, torch.Generator().manual_seed(1))
    assert torch.equal(mask.sum(dim=1), masked_counts(valid, 0.3))
    assert not (mask & ~valid).any()
    again = colored_noise_masked_positions(valid, 0.3, GRID, color, torch.Generator().manual_seed(1))
    assert torch.equal(mask, again)  # the generator decides everything


def test_each_filter_puts_its_power_where_its_colour_says():
    noise = _spectra(lambda color, generator: colored_noise(400, GRID, color, generator))
    white, pink, blue, green = (noise[color] for color in NOISE_COLORS)
    assert white.max() / white.min() < 1.3  # flat
    assert pink[0] > 2 * white[0] and pink[-1] < white[-1] / 2 and (pink[1:].diff() < 0).all()
    assert blue[-1] > 1.5 * white[-1] and blue[0] < white[0] / 2 and (blue.diff() > 0).all()
    assert int(green.argmax()) == int(GREEN_BAND_CENTER / 0.5 * BANDS) and green.max() > 0.4
    assert green[-3:].sum() < 0.01  # nothing left at the highest frequencies


def test_the_thresholded_masks_keep_the_spectrum_and_group_into_blobs():
    valid = torch.ones(400, GRID[0] * GRID[1], dtype=torch.bool)

    def masks(color, generator):
        return colored_noise_masked_positions(valid, 0.5, GRID, color, generator).view(-1, *GRID)

    spectra = _spectra(masks)
    assert spectra["pink"][0] > spectra["white"][0] > spectra["blue"][0]
    assert spectra["blue"][-1] > spectra["white"][-1] > spectra["pink"][-1]
    assert int(spectra["green"].argmax()) == int(GREEN_BAND_CENTER / 0.5 * BANDS)

    def neighbour_share(color):  # of a masked element's right and lower neighbours, the share masked too
        grid = masks(color, torch.Generator().manual_seed(0)).float()
        together = (grid[:, 1:, :] * grid[:, :-1, :]).sum() + (grid[:, :, 1:] * grid[:, :, :-1]).sum()
        pairs = grid[:, :-1, :].sum() + grid[:, :, :-1].sum()
        return float(together / pairs)

    shares = {color: neighbour_share(color) for color in NOISE_COLORS}
    assert abs(shares["white"] - 0.5) < 0.02  # uniformly random: as likely as any other element
    assert shares["green"] > shares["pink"] > shares["white"] > shares["blue"]
    rates = masks("white", torch.Generator().manual_seed(2)).float().mean(dim=0)
    assert float((rates - 0.5).abs().max()) < 0.1  # no position preferred


def test_bad_arguments_name_what_was_expected():
    valid = torch.ones(2, 10, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"`grid_shape` \(4, 4\) holds 16 elements, but the inputs have 10"):
        colored_noise_masked_positions(valid, 0.5, (4, 4), "green")
    with pytest.raises(ValueError, match="`color` must be one of .*got 'red'"):
        colored_noise_masked_positions(valid, 0.5, (2, 5), "red")


TINY_IMAGES = dict(
    input_type="continuous", input_channels=1, max_position_embeddings=16, encoder_type="cross_attention",
    num_latents=4, embedding_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    intermediate_size=32, decoder_hidden_size=16, decoder_num_attention_heads=2, decoder_intermediate_size=32,
    masking_strategy="random", masking_ratio=0.25,
)  # fmt: skip


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("validation", 8)):
        rows = rng.random((count, 16), dtype=np.float32).tolist()
        pq.write_table(pa.table({"pixels": rows}), tmp_path / f"{split}.parquet")
    (tmp_path / "config.json").write_text(json.dumps(TINY_IMAGES))
    return tmp_path


def _args(folder, *extra):
    return [
        "--config_name", str(folder / "config.json"), "--train_file", str(folder / "train.parquet"),
        "--validation_file", str(folder / "validation.parquet"), "--output_dir", str(folder / "out"),
        "--max_steps", "3", "--per_device_train_batch_size", "4", "--eval_steps", "3", "--report_to", "none",
        "--mask_grid_shape", "4", "4", *extra,
    ]  # fmt: skip


def test_pretraining_trains_on_the_noise_masks(images, monkeypatch):
    seen = []

    def recording(valid, ratio, grid_shape, color, generator=None):
        mask = colored_noise_masked_positions(valid, ratio, grid_shape, color, generator)
        seen.append((color, grid_shape, mask))
        return mask

    monkeypatch.setattr(pretraining, "colored_noise_masked_positions", recording)
    forwarded = []
    original_forward = pretraining.SMAForMaskedModeling.forward

    def forward(self, *args, **kwargs):
        if self.training:
            forwarded.append(kwargs.get("masked_positions"))
        return original_forward(self, *args, **kwargs)

    monkeypatch.setattr(pretraining.SMAForMaskedModeling, "forward", forward)
    summary = pretraining.pretrain(pretraining.parse_args(_args(images, "--mask_noise_color", "green")))
    assert summary["args"]["mask_noise_color"] == "green" and len(seen) == len(forwarded) == 3
    for (color, grid_shape, mask), given in zip(seen, forwarded):
        assert color == "green" and grid_shape == (4, 4) and given is mask
        assert mask.sum(dim=1).tolist() == [4] * 4  # round(0.25 x 16) per image


@pytest.mark.parametrize(
    "change, message",
    [
        ({"masking_strategy": "self_guided"}, "--mask_noise_color replaces the model's masks.*got 'self_guided'"),
        ({"max_position_embeddings": 20}, r"--mask_grid_shape 4 4 holds 16 elements, but training rows have \[20\]"),
    ],
)
def test_noise_masks_refuse_what_they_cannot_mask(images, change, message):
    (images / "config.json").write_text(json.dumps({**TINY_IMAGES, **change}))
    if "max_position_embeddings" in change:  # rows of 20 elements in a 4 x 4 grid
        rows = np.zeros((24, 20), dtype=np.float32).tolist()
        pq.write_table(pa.table({"pixels": rows}), images / "train.parquet")
    with pytest.raises(SystemExit, match=f"sma-pretrain: error: {message}"):
        pretraining.main(_args(images, "--mask_noise_color", "green"))


def test_the_colour_needs_the_grid(images, capsys):
    args = _args(images, "--mask_noise_color", "pink")
    grid = args.index("--mask_grid_shape")
    with pytest.raises(SystemExit):
        pretraining.main(args[:grid] + args[grid + 3 :])
    assert "--mask_noise_color filters noise in the images' grid" in capsys.readouterr().err


def test_resuming_noise_mask_pretraining_reaches_the_same_weights(images, monkeypatch):
    from safetensors.torch import load_file

    def args(output, *extra):
        return [*_args(images, "--mask_noise_color", "pink", "--max_steps", "4", "--save_steps", "2"),
                "--output_dir", str(images / output), *extra]  # fmt: skip

    pretraining.main(args("straight"))
    real_save = pretraining.save_checkpoint

    def save_then_die(*save_args):
        real_save(*save_args)
        raise KeyboardInterrupt("killed after the checkpoint of step 2")

    monkeypatch.setattr(pretraining, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pretraining.main(args("interrupted"))
    monkeypatch.setattr(pretraining, "save_checkpoint", real_save)
    pretraining.main(args("interrupted", "--resume_from_checkpoint", "latest"))
    expected = load_file(images / "straight" / "model" / "model.safetensors")
    resumed = load_file(images / "interrupted" / "model" / "model.safetensors")
    for name, tensor in expected.items():  # the same noise masks after the resume: torch's state is restored
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)
    with pytest.raises(SystemExit, match="other settings \\(mask_noise_color: 'pink' -> 'green'\\)"):
        pretraining.main([*args("interrupted", "--resume_from_checkpoint", "latest"), "--mask_noise_color", "green"])
