"""Mask health: the collapse numbers and their thresholds, the warning in sma-pretrain's log, the mask figures."""

import logging

import numpy as np
import pytest
import torch
from test_pretraining_sma import corpus, pretrain_args  # noqa: F401  (the `corpus` fixture)

from sma_hf.tools import pretrain
from sma_hf.tools.mask_health import (
    MASK_LEAK_THRESHOLD,
    collapse_score,
    draw_masks,
    figure_png,
    grid_neighbours,
    hidden_content,
    mask_health,
    mask_leak,
    neighbour_share,
)


def test_thresholds_separate_the_measured_collapse_from_the_measured_healthy_run():
    collapsed = {"mask_overlap_self_guided": 0.89, "mask_overlap_random": 0.33, "eval_loss": 1.0,
                 "eval_loss_self_guided": 0.02}  # fmt: skip
    healthy = {"mask_overlap_self_guided": 0.20, "mask_overlap_random": 0.18, "eval_loss": 1.22,
               "eval_loss_self_guided": 1.47}  # fmt: skip
    numbers, warnings = mask_health(collapsed)
    assert numbers["mask_collapse_score"] == pytest.approx(0.56 / 0.67) and numbers["mask_collapsed"] == 1.0
    assert len(warnings) == 2 and "collapsed onto the same positions" in warnings[0] and "easy" in warnings[1]
    numbers, warnings = mask_health(healthy)
    assert numbers["mask_collapse_score"] == pytest.approx(0.02 / 0.82) and numbers["mask_loss_ratio"] > 1
    assert warnings == [] and numbers["mask_collapsed"] == 0.0
    assert collapse_score(0.33, 0.33) == 0.0 and collapse_score(1.0, 0.33) == 1.0
    assert np.isnan(collapse_score(float("nan"), 0.3))


def test_leak_of_token_ids_is_the_total_variation_between_the_hidden_contents():
    random = torch.tensor([5, 6, 7, 8] * 25)
    assert mask_leak(random[torch.randperm(100)], random) == 0.0
    assert mask_leak(torch.tensor([9, 9, 10]), random) == 1.0  # types random masks never hide
    # 40 of 100 hidden elements of one type where random masks hide it 25 times in 100: 0.15 to move elsewhere
    own = torch.tensor([5] * 40 + [6] * 20 + [7] * 20 + [8] * 20)
    assert mask_leak(own, random) == pytest.approx(0.15)
    assert np.isnan(mask_leak(torch.tensor([], dtype=torch.long), random))


def test_leak_of_values_bins_each_channel_at_the_random_masked_deciles():
    generator = torch.Generator().manual_seed(0)
    random = torch.randn(20000, 2, generator=generator)
    assert mask_leak(torch.randn(20000, 2, generator=generator), random) < 0.02  # the same distribution
    low = torch.randn(20000, 2, generator=generator).abs().neg()  # only the lower half of each channel
    assert mask_leak(low, random) == pytest.approx(0.5, abs=0.02)
    # a mass point (background pixels): the deciles collapse into one bin, which masks of only zeros fill
    pixels = torch.cat([torch.zeros(7000, 1), torch.rand(3000, 1, generator=generator) + 0.1])
    assert mask_leak(torch.zeros(500, 1), pixels) == pytest.approx(0.3, abs=0.01)


def test_leak_compares_with_the_same_positions_so_a_preferred_position_is_no_leak():
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(6, 26, (64, 30), generator=generator)
    input_ids[:, 0] = 5  # every sequence starts with the same token, as proteins start with M
    attention_mask = torch.ones_like(input_ids)
    attention_mask[::2, 25:] = 0  # padding is never hidden content
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    first_positions = torch.zeros_like(input_ids, dtype=torch.bool)
    first_positions[:, :4] = True  # a mask that prefers the first positions, whatever they hold
    own, reference = hidden_content(batch, first_positions)
    assert len(own) == len(reference) == 64 * 4 and (own == input_ids[:, :4].flatten()).all()
    assert mask_leak(own, reference) < 0.1  # sampling noise of 256 tokens over 21 ids; content-blind
    one_type = (input_ids == 7) & attention_mask.bool()  # a mask that picks a residue type, wherever it stands
    assert mask_leak(*hidden_content(batch, one_type)) > 0.9


def test_leak_threshold_separates_the_measured_leaking_run_from_the_healthy_one():
    """The leak of the paper's selection on SwissProt (0.68) and of selection by position (0.020) in the same study."""
    healthy = {"mask_overlap_self_guided": 0.2, "mask_overlap_random": 0.18, "eval_loss": 1.2,
               "eval_loss_self_guided": 1.3}  # fmt: skip
    numbers, warnings = mask_health({**healthy, "mask_leak": 0.68})
    assert numbers["mask_collapsed"] == 1.0 and "hide a kind of content" in warnings[0]
    assert "mask_selection='positions'" in warnings[0]
    numbers, warnings = mask_health({**healthy, "mask_leak": 0.020})
    assert warnings == [] and numbers["mask_collapsed"] == 0.0
    assert 0.020 < MASK_LEAK_THRESHOLD < 0.68
    assert mask_health(healthy)[1] == []  # older summaries without the measure


def test_grid_neighbours_follow_the_pixels_through_a_permutation():
    plain = grid_neighbours((3, 4))
    assert sorted(plain[5][plain[5] >= 0]) == [1, 4, 6, 9] and sorted(plain[0][plain[0] >= 0]) == [1, 4]
    permutation = np.random.default_rng(0).permutation(12)  # input position i holds pixel permutation[i]
    permuted = grid_neighbours((3, 4), permutation)
    for position, pixel in enumerate(permutation):
        held = sorted(permutation[permuted[position][permuted[position] >= 0]])
        assert held == sorted(plain[pixel][plain[pixel] >= 0])


def test_neighbour_share_scores_blobs_high_and_random_masks_at_the_ratio():
    neighbours = grid_neighbours((8, 8))
    blob = np.zeros((1, 64), dtype=bool)
    blob[0, [27, 28, 35, 36]] = True  # a 2 x 2 square: each masked pixel has 2 of its 4 neighbours masked
    assert neighbour_share(blob, np.ones_like(blob), neighbours) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    random = np.stack([rng.permutation(64) < 16 for _ in range(2000)])
    assert neighbour_share(random, np.ones_like(random), neighbours) == pytest.approx(15 / 63, abs=0.01)
    valid = np.ones_like(blob)
    valid[0, [26, 29]] = False  # padding neighbours are not counted: left and right of the upper row
    assert neighbour_share(blob, valid, neighbours) == pytest.approx((2 / 3 + 2 / 3 + 2 / 4 + 2 / 4) / 4)
    assert np.isnan(neighbour_share(np.zeros_like(blob), valid, neighbours))


def test_sma_pretrain_warns_when_masks_collapse(corpus, monkeypatch, caplog):  # noqa: F811
    def collapsed_evaluation(model, batches, seed):
        return {"eval_loss": 2.0, "eval_loss_self_guided": 0.1, "mask_overlap_random": 0.3,
                "mask_overlap_self_guided": 0.95}  # fmt: skip

    monkeypatch.setattr(pretrain, "evaluate", collapsed_evaluation)
    with caplog.at_level(logging.WARNING, logger="sma_hf.tools.pretrain"):
        summary = pretrain.pretrain(pretrain.parse_args(pretrain_args(corpus, "collapsed")))
    warnings = [r.getMessage() for r in caplog.records if "collapsed onto the same positions" in r.getMessage()]
    assert [message.split(":")[0] for message in warnings] == ["Step 3", "Step 6"]
    assert summary["final"]["mask_collapsed"] == 1.0


def test_draw_masks_of_sequences_and_grids():
    masks = torch.zeros(2, 70, dtype=torch.bool)
    masks[0, [0, 3]] = masks[1, 65] = True
    figure = draw_masks(["CC(=O)O", "c1ccccc1" * 9], masks, titles=["acetic acid", "long"])
    texts = [t for t in figure.axes[0].texts if t.get_bbox_patch() is not None]  # the highlighted characters
    assert [t.get_text() for t in texts] == ["C", "=", "1"]  # the 66th character, on the second line
    assert figure_png(figure).startswith(b"\x89PNG")
    grid = draw_masks([np.arange(16.0), np.ones(16)], torch.eye(2, 16, dtype=torch.bool), grid_shape=(4, 4))
    image = grid.axes[0].images[0].get_array()
    assert image.shape == (4, 4, 3) and image[0, 0, 0] > image[0, 0, 1]  # the masked pixel is tinted red
    truncated = draw_masks(["ABCDEFGHIJ"], torch.tensor([[True, False, False, True]]))  # the model saw 4 elements
    assert [t.get_text() for t in truncated.axes[0].texts[1:]] == ["A", "B", "C", "D"]
    with pytest.raises(ValueError, match="`examples` has 1 items but `masks` has 2 rows"):
        draw_masks(["C"], masks)
