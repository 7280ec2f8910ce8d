"""Mask health: the collapse numbers and their thresholds, the warning in sma-pretrain's log, the mask figures."""

import logging

import numpy as np
import pytest
import torch
from test_pretraining_sma import corpus, pretrain_args  # noqa: F401  (the `corpus` fixture)

from sma_hf.tools import pretrain
from sma_hf.tools.mask_health import collapse_score, draw_masks, figure_png, mask_health


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
    with pytest.raises(ValueError, match="`examples` has 1 items but `masks` has 2 rows"):
        draw_masks(["C"], masks)
