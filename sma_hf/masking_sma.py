"""Mask selection for SMA pretraining, vectorised over the batch.

Every function takes `valid` ([batch, length] bool, True = a real input element, False = padding) and returns a bool
mask of the same shape (True = masked). Counts are exact per example: round(ratio x valid elements), rounding half
to even like Python's `round`, and never all valid elements of a row (at least one stays visible so that attention
over the inputs stays finite). All randomness comes from the optional `torch.Generator`, which must live on the same
device as the tensors.
"""

import math

import torch


def masked_counts(valid: torch.Tensor, ratio: float) -> torch.Tensor:
    """Number of elements to mask per example: round(ratio x valid), capped at valid - 1."""
    num_valid = valid.sum(dim=1)
    # float64 so that the count equals Python's round(ratio * n) exactly, ties included
    counts = torch.round(num_valid.double() * ratio).long()
    return torch.minimum(counts, (num_valid - 1).clamp(min=0))


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


def random_masked_positions(
    valid: torch.Tensor, ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Uniform random masking (the BERT/MAE baseline) with SMA's exact per-example counts."""
    return top_k_per_row(_uniform(valid.shape, valid, generator), valid, masked_counts(valid, ratio))


def self_guided_masked_positions(
    attention_probs: torch.Tensor,
    valid: torch.Tensor,
    ratio: float,
    num_per_query: float,
    queries_are_inputs: bool = False,
    head_aggregation: str = "mean",
    mask_self: bool = False,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Self-guided masking from the first layer's attention.

    Args:
        attention_probs: [batch, heads, queries, length] probabilities of the first layer (detached; padded inputs
            carry probability 0). In self-attention mode the queries are the input positions themselves.
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

    Returns:
        [batch, length] bool mask with exactly `masked_counts(valid, ratio)` True entries per row.
    """
    batch_size, num_heads, num_queries, _ = attention_probs.shape
    counts = masked_counts(valid, ratio)
    if mask_self and not queries_are_inputs:
        raise ValueError("`mask_self=True` needs queries that are input positions (`queries_are_inputs=True`).")
    if queries_are_inputs:
        query_valid = valid
    else:
        query_valid = torch.ones(batch_size, num_queries, dtype=torch.bool, device=valid.device)
    num_sampled = torch.round(valid.sum(dim=1).double() * ratio / num_per_query).long().clamp(min=1)
    sampled = top_k_per_row(_uniform((batch_size, num_queries), valid, generator), query_valid, num_sampled)

    weights = sampled.to(attention_probs.dtype)[:, None, :]  # [batch, 1, queries]
    if head_aggregation == "random_mix":
        heads = torch.randint(num_heads, (batch_size, 1, num_queries), generator=generator, device=valid.device)
        weights = weights * (heads == torch.arange(num_heads, device=valid.device)[None, :, None])
    else:
        weights = weights.expand(batch_size, num_heads, num_queries) / num_heads
    scores = torch.einsum("bhqn,bhq->bn", attention_probs, weights)
    if mask_self:
        # each sampled row sums to at most 1, so this bonus puts every sampled position above every other one
        scores = scores + sampled * (num_sampled[:, None] + 1)

    num_random = torch.round(counts.double() * noise).long()
    guided = top_k_per_row(scores, valid, counts - num_random)
    noise_part = top_k_per_row(_uniform(valid.shape, valid, generator), valid & ~guided, num_random)
    return guided | noise_part


def cosine_noise_scale(step: int, warmup_steps: int) -> float:
    """Warm-up noise scale: 1 at step 0, falling on a half cosine to 0 at `warmup_steps`, then 0."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * step / warmup_steps))
