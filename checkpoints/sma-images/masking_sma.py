"""Mask selection for SMA pretraining, vectorised over the batch.

Every function takes `valid` ([batch, length] bool, True = a real input element, False = padding) and returns a bool
mask of the same shape (True = masked). Counts are exact per example: round(ratio x valid elements), rounding half
to even like Python's `round`, and never all valid elements of a row (at least one stays visible so that attention
over the inputs stays finite). Elements that are `already_masked` (e.g. `[MASK]` tokens) count towards that number
and stay masked. Selection runs in float32 with autocast off: bf16 probabilities are so coarse that rounding ties,
not attention, would pick the mask. All randomness comes from the optional `torch.Generator`, which must live on the
same device as the tensors.
"""

import math
from typing import NamedTuple

import torch


def masked_counts(valid: torch.Tensor, ratio: float, already_masked: torch.Tensor | None = None) -> torch.Tensor:
    """Elements still to mask per example: round(ratio x valid), at most valid - 1, less those masked already."""
    num_valid = valid.sum(dim=1)
    # float64 so that the count equals Python's round(ratio * n) exactly, ties included
    counts = torch.minimum(torch.round(num_valid.double() * ratio).long(), num_valid - 1)
    if already_masked is not None:
        counts = counts - (already_masked & valid).sum(dim=1)
    return counts.clamp(min=0)


def top_k_per_row(scores: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The `k[b]` highest-scoring candidates of each row `b`, as a bool mask (fewer if a row has fewer candidates)."""
    scores = scores.masked_fill(~candidates, -math.inf)
    order = scores.argsort(dim=1, descending=True)
    ranks = torch.arange(scores.shape[1], device=scores.device)
    # one sort and a scatter instead of a per-row topk: k differs between rows and needs no host sync this way
    selected = torch.zeros_like(candidates).scatter(1, order, ranks[None, :] < k[:, None])
    return selected & candidates


def _uniform(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=like.device)


def _candidates(valid, already_masked):
    return valid if already_masked is None else valid & ~already_masked


def _with_already_masked(mask, already_masked):
    return mask if already_masked is None else mask | already_masked


def random_masked_positions(
    valid: torch.Tensor,
    ratio: float,
    generator: torch.Generator | None = None,
    already_masked: torch.Tensor | None = None,
) -> torch.Tensor:
    """Uniform random masking (the BERT/MAE baseline) with SMA's exact per-example counts."""
    counts = masked_counts(valid, ratio, already_masked)
    drawn = top_k_per_row(_uniform(valid.shape, valid, generator), _candidates(valid, already_masked), counts)
    return _with_already_masked(drawn, already_masked)


class SampledQueries(NamedTuple):
    """The queries whose attention rows choose a self-guided mask (the first step of `self_guided_masked_positions`).

    rows: [batch, slots] long, query indices; each example's sampled queries first (in index order), then unsampled
        queries filling the remaining slots. `slots` is a bound known from the shapes alone (no host sync).
    sampled: [batch, slots] bool, which slots hold a sampled query.
    counts: [batch] long, the sampled queries per example.
    queries_are_inputs: whether query i is input position i (self-attention mode).
    """

    rows: torch.Tensor
    sampled: torch.Tensor
    counts: torch.Tensor
    queries_are_inputs: bool


def sampled_query_slots(num_queries: int, length: int, ratio: float, num_per_query: float) -> int:
    """Slots for the sampled queries of a batch padded to `length`: round(length x ratio / num_per_query), at least
    1, at most `num_queries`. No example samples more (`valid` is at most `length` per row), so no host sync is
    needed."""
    return min(num_queries, max(1, round(length * ratio / num_per_query)))


def sample_queries(
    valid: torch.Tensor,
    num_queries: int,
    ratio: float,
    num_per_query: float,
    queries_are_inputs: bool = False,
    generator: torch.Generator | None = None,
) -> SampledQueries:
    """Draw round(valid x ratio / num_per_query) queries per example (at least one), uniformly among the valid input
    positions (`queries_are_inputs`) or among all `num_queries` latents. One draw of [batch, num_queries] uniforms."""
    batch_size, length = valid.shape
    if queries_are_inputs:
        if num_queries != length:
            raise ValueError(f"Queries that are input positions must number {length}, got {num_queries}.")
        query_valid = valid
    else:
        query_valid = torch.ones(batch_size, num_queries, dtype=torch.bool, device=valid.device)
    counts = torch.round(valid.sum(dim=1).double() * ratio / num_per_query).long().clamp(min=1)
    sampled = top_k_per_row(_uniform((batch_size, num_queries), valid, generator), query_valid, counts)
    slots = sampled_query_slots(num_queries, length, ratio, num_per_query)
    rows = torch.argsort((~sampled).to(torch.int8), dim=1, stable=True)[:, :slots]
    return SampledQueries(rows, sampled.gather(1, rows), counts, queries_are_inputs)


def gather_query_rows(attention_scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """[batch, heads, queries, length] -> the rows `rows` [batch, slots] of every head: [batch, heads, slots, length].
    Also gathers queries [batch, heads, queries, head_dim] for their rows' scores."""
    batch_size, num_heads, _, last = attention_scores.shape
    return attention_scores.gather(2, rows[:, None, :, None].expand(batch_size, num_heads, -1, last))


def masked_positions_from_rows(
    row_scores: torch.Tensor,
    queries: SampledQueries,
    valid: torch.Tensor,
    ratio: float,
    head_aggregation: str = "mean",
    mask_self: bool = False,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
    already_masked: torch.Tensor | None = None,
) -> torch.Tensor:
    """The second step of `self_guided_masked_positions`: the mask from the attention logits of the sampled queries
    only, `row_scores` [batch, heads, slots, length] for the queries `queries.rows` (detached; any float dtype, the
    selection runs in float32). Draws the heads (`random_mix`) and then the noise part from `generator`."""
    with torch.autocast(valid.device.type, enabled=False):
        batch_size, num_heads, num_slots, _ = row_scores.shape
        if mask_self and not queries.queries_are_inputs:
            raise ValueError("`mask_self=True` needs queries that are input positions (`queries_are_inputs=True`).")
        candidates = _candidates(valid, already_masked)
        row_probs = row_scores.float().masked_fill(~candidates[:, None, None, :], -math.inf).softmax(dim=-1)

        weights = queries.sampled.float()[:, None, :]  # [batch, 1, slots]
        if head_aggregation == "random_mix":
            heads = torch.randint(num_heads, (batch_size, 1, num_slots), generator=generator, device=valid.device)
            weights = weights * (heads == torch.arange(num_heads, device=valid.device)[None, :, None])
        else:
            weights = weights.expand(batch_size, num_heads, num_slots) / num_heads
        scores = torch.einsum("bhqn,bhq->bn", row_probs, weights)
        if mask_self:
            # each sampled row sums to 1, so this bonus puts every sampled position above every other one
            bonus = queries.sampled * (queries.counts[:, None] + 1)
            scores = scores.scatter_add(1, queries.rows, bonus.to(scores.dtype))

        counts = masked_counts(valid, ratio, already_masked)
        num_random = torch.round(counts.double() * noise).long()
        guided = top_k_per_row(scores, candidates, counts - num_random)
        noise_part = top_k_per_row(_uniform(valid.shape, valid, generator), candidates & ~guided, num_random)
        return _with_already_masked(guided | noise_part, already_masked)


def self_guided_masked_positions(
    attention_scores: torch.Tensor,
    valid: torch.Tensor,
    ratio: float,
    num_per_query: float,
    queries_are_inputs: bool = False,
    head_aggregation: str = "mean",
    mask_self: bool = False,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
    already_masked: torch.Tensor | None = None,
) -> torch.Tensor:
    """Self-guided masking from the first layer's attention.

    Two steps, which a caller that can compute the logits of a few query rows cheaply may also run apart, with the
    same random draws in the same order: `sample_queries` (which queries choose the mask), then
    `masked_positions_from_rows` (the mask from those queries' rows of the logits).

    Args:
        attention_scores: [batch, heads, queries, length] attention logits of the first layer (detached). Padded
            inputs are excluded here through `valid`. In self-attention mode the queries are the input positions.
        valid: [batch, length] bool, the real input elements.
        ratio: share of the valid elements to mask.
        num_per_query: expected inputs per sampled query; round(valid x ratio / num_per_query) queries are sampled
            per example (at least one).
        queries_are_inputs: True in self-attention mode, where query i is input position i (only valid positions
            are sampled); False in cross-attention mode, where every query (latent) may be sampled.
        head_aggregation: "mean" over heads, or "random_mix" (one random head per sampled query).
        mask_self: always mask a sampled query's own position (needs `queries_are_inputs`).
        noise: share of the masked elements drawn uniformly at random instead of by score, in [0, 1]
            (the warm-up noise: `mask_noise_ratio x noise scale`).
        generator: drives every random choice.
        already_masked: [batch, length] bool, elements masked anyway; they are excluded from the scores.

    Returns:
        [batch, length] bool mask with exactly min(round(ratio x valid), valid - 1) True entries per row (or all of
        `already_masked`, if that is more).
    """
    queries = sample_queries(valid, attention_scores.shape[2], ratio, num_per_query, queries_are_inputs, generator)
    # only the sampled rows are turned into probabilities, not every query's
    return masked_positions_from_rows(
        gather_query_rows(attention_scores, queries.rows),
        queries,
        valid,
        ratio,
        head_aggregation=head_aggregation,
        mask_self=mask_self,
        noise=noise,
        generator=generator,
        already_masked=already_masked,
    )


def cosine_noise_scale(step: int, warmup_steps: int) -> float:
    """Warm-up noise scale: 1 at step 0, falling on a half cosine to 0 at `warmup_steps`, then 0."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * step / warmup_steps))
