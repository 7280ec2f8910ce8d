import math

import pytest
import torch

from sma_hf.masking_sma import (
    cosine_noise_scale,
    masked_counts,
    random_masked_positions,
    self_guided_masked_positions,
    top_k_per_row,
)


def ragged_valid(lengths, total):
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


def attention_scores(batch, heads, queries, length, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, heads, queries, length, generator=generator) * 3


def probs_of(scores, valid):
    return scores.masked_fill(~valid[:, None, None, :], -math.inf).softmax(dim=-1)


@pytest.mark.parametrize("ratio", [0.15, 0.3, 0.5, 0.75])
def test_counts_match_python_round_and_leave_one_visible(ratio):
    lengths = list(range(1, 41))
    valid = ragged_valid(lengths, 40)
    expected = [min(round(ratio * n), n - 1) for n in lengths]
    assert masked_counts(valid, ratio).tolist() == expected


def test_top_k_per_row_picks_the_highest_candidates():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]])
    candidates = torch.tensor([[True, True, True, False], [True, True, True, True]])
    picked = top_k_per_row(scores, candidates, torch.tensor([2, 1]))
    assert picked.tolist() == [[False, True, True, False], [True, False, False, False]]


@pytest.mark.parametrize("strategy", ["random", "self_guided"])
@pytest.mark.parametrize("queries_are_inputs", [False, True])
def test_exact_counts_and_padding_never_masked(strategy, queries_are_inputs):
    lengths = [30, 17, 5, 2, 1, 23]
    valid = ragged_valid(lengths, 30)
    if strategy == "random":
        mask = random_masked_positions(valid, 0.3, torch.Generator().manual_seed(1))
    else:
        queries = 30 if queries_are_inputs else 8
        scores = attention_scores(len(lengths), 4, queries, 30)
        mask = self_guided_masked_positions(
            scores, valid, 0.3, 3, queries_are_inputs=queries_are_inputs, head_aggregation="random_mix",
            mask_self=queries_are_inputs, noise=0.4, generator=torch.Generator().manual_seed(1),
        )  # fmt: skip
    assert mask.sum(dim=1).tolist() == [min(round(0.3 * n), n - 1) for n in lengths]
    assert not (mask & ~valid).any()


def test_self_guided_without_noise_is_the_exact_top_k_of_summed_rows():
    valid = ragged_valid([12, 9], 12)
    scores = attention_scores(2, 1, 12, 12, seed=3)
    probs = probs_of(scores, valid)
    # one query per example is sampled (round(n * 0.25 / 3) = 1), so the mask is that query's top-3 (or top-2) inputs
    generator = torch.Generator().manual_seed(5)
    mask = self_guided_masked_positions(scores, valid, 0.25, 3, queries_are_inputs=True, generator=generator)
    sampled = top_k_per_row(torch.rand(2, 12, generator=torch.Generator().manual_seed(5)), valid, torch.tensor([1, 1]))
    for row, count in enumerate([3, 2]):
        query = int(sampled[row].nonzero())
        expected = set(probs[row, 0, query].topk(count).indices.tolist())
        assert set(mask[row].nonzero().flatten().tolist()) == expected


def test_mean_aggregation_sums_sampled_rows_averaged_over_heads():
    valid = torch.ones(1, 10, dtype=torch.bool)
    scores = attention_scores(1, 3, 4, 10, seed=7)
    probs = probs_of(scores, valid)
    # ratio 0.6 -> 6 masked, round(10 * 0.6 / 1.5) = 4 queries: every latent is sampled
    mask = self_guided_masked_positions(scores, valid, 0.6, 1.5, generator=torch.Generator().manual_seed(0))
    expected = probs[0].mean(dim=0).sum(dim=0).topk(6).indices
    assert set(mask[0].nonzero().flatten().tolist()) == set(expected.tolist())


def test_random_mix_takes_one_head_per_query():
    """Head 0 attends to inputs 0-2, head 1 to inputs 5-7: each mask is one head's group, never a blend."""
    draws, length = 400, 10
    scores = torch.full((draws, 2, 4, length), -10.0)
    scores[:, 0, :, 0:3] = 10.0
    scores[:, 1, :, 5:8] = 10.0
    valid = torch.ones(draws, length, dtype=torch.bool)
    # ratio 0.3 -> 3 masked; num_per_query 3 -> one sampled query per example
    mask = self_guided_masked_positions(scores, valid, 0.3, 3, head_aggregation="random_mix",
                                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    first, second = mask[:, 0:3].all(dim=1), mask[:, 5:8].all(dim=1)
    assert (first ^ second).all()
    assert 0.4 < float(first.float().mean()) < 0.6
    # the mean blends heads: head 0 spreads over 0-3 (1/4 each), head 1 over 5-6 (1/2 each) -> 5, 6 and one of 0-3
    scores = torch.full((draws, 2, 4, length), -10.0)
    scores[:, 0, :, 0:4] = 10.0
    scores[:, 1, :, 5:7] = 10.0
    mean = self_guided_masked_positions(scores, valid, 0.3, 3, generator=torch.Generator().manual_seed(0))
    assert mean[:, 5:7].all() and (mean[:, 0:4].sum(dim=1) == 1).all()


def test_already_masked_elements_count_and_are_not_scored():
    valid = torch.ones(2, 10, dtype=torch.bool)
    already = torch.zeros(2, 10, dtype=torch.bool)
    already[:, 0:2] = True
    scores = torch.zeros(2, 1, 4, 10)
    scores[..., 0:5] = 10.0  # attention favours inputs 0-4; 0 and 1 are masked anyway
    mask = self_guided_masked_positions(scores, valid, 0.5, 5, already_masked=already,
                                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert mask[:, 0:5].all() and mask.sum().item() == 10
    drawn = random_masked_positions(valid, 0.5, torch.Generator().manual_seed(0), already_masked=already)
    assert drawn[:, 0:2].all() and drawn.sum(dim=1).tolist() == [5, 5]


def test_mask_self_masks_the_sampled_queries():
    valid = torch.ones(4, 20, dtype=torch.bool)
    scores = attention_scores(4, 2, 20, 20)
    generator = torch.Generator().manual_seed(2)
    mask = self_guided_masked_positions(
        scores, valid, 0.3, 3, queries_are_inputs=True, mask_self=True, generator=generator
    )
    # the queries are drawn first from the same generator: round(20 * 0.3 / 3) = 2 per row
    sampled = top_k_per_row(torch.rand(4, 20, generator=torch.Generator().manual_seed(2)), valid, torch.full((4,), 2))
    assert (mask | ~sampled).all()


def test_mask_self_needs_input_queries():
    valid = torch.ones(1, 6, dtype=torch.bool)
    with pytest.raises(ValueError, match="mask_self"):
        self_guided_masked_positions(attention_scores(1, 1, 6, 6), valid, 0.5, 1, mask_self=True)


def test_seeded_masks_reproduce_and_seeds_differ():
    valid = ragged_valid([40, 33, 25], 40)
    scores = attention_scores(3, 2, 8, 40)

    def draw(seed):
        return self_guided_masked_positions(
            scores,
            valid,
            0.3,
            3,
            head_aggregation="random_mix",
            noise=0.5,
            generator=torch.Generator().manual_seed(seed),
        )

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))
    assert torch.equal(random_masked_positions(valid, 0.3, torch.Generator().manual_seed(4)),
                       random_masked_positions(valid, 0.3, torch.Generator().manual_seed(4)))  # fmt: skip


def test_full_noise_is_uniform_random():
    """At noise 1 the self-guided mask ignores attention: each position is masked with the same frequency."""
    length, draws = 20, 4000
    valid = torch.ones(draws, length, dtype=torch.bool)
    # attention concentrated on the first 6 inputs: without noise these would always be masked
    scores = torch.full((draws, 1, 8, length), -5.0)
    scores[..., :6] = 5.0
    mask = self_guided_masked_positions(scores, valid, 0.3, 3, noise=1.0, generator=torch.Generator().manual_seed(0))
    assert (mask.sum(dim=1) == 6).all()
    frequency = mask.float().mean(dim=0)
    # each position is masked with probability 0.3; binomial standard error over 4000 draws is 0.0072
    assert (frequency - 0.3).abs().max() < 0.04
    # and it is chi-square consistent with uniform (19 degrees of freedom; 99.9% quantile 43.8)
    counts = mask.sum(dim=0).double()
    expected = counts.sum() / length
    assert float(((counts - expected) ** 2 / expected).sum()) < 43.8
    # no noise: always exactly the 6 favoured inputs
    guided = self_guided_masked_positions(scores, valid, 0.3, 3, noise=0.0, generator=torch.Generator().manual_seed(0))
    assert guided[:, :6].all() and not guided[:, 6:].any()


def test_cosine_noise_scale():
    assert cosine_noise_scale(0, 100) == 1.0
    assert cosine_noise_scale(50, 100) == pytest.approx(0.5)
    assert cosine_noise_scale(100, 100) == 0.0
    assert cosine_noise_scale(5, 0) == 0.0
    values = [cosine_noise_scale(step, 100) for step in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
