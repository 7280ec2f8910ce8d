"""Speed benchmark of SMA: one run, side by side, medians of repeated timed steps.

Sections:
  1. training-step throughput (forward + backward + AdamW step) of `SMAForMaskedModeling` against transformers'
     `PerceiverForMaskedLM` at matched sizes, on discrete inputs (byte ids, vocabulary 262);
  2. the cost of the mask on the same SMA model: self-guided vs random vs an explicit precomputed mask;
  3. scaling with the input length: step time and peak step memory, `cross_attention` and `self_attention` modes;
  4. inference throughput of `SMAModel` (pooled embeddings, eval mode, no grad);
  5. the machine's own limit: FLOP/s of a large matmul, and the SMA step's achieved FLOP/s as a share of it;
  6. `self_attention` mode against the model a chemist pretrains instead, a RoBERTa masked LM (ChemBERTa's
     architecture), at matched sizes: the pretraining step (`SMAForMaskedModeling` vs `RobertaForMaskedLM`), the
     fine-tuning step (`SMAForSequenceClassification` vs `RobertaForSequenceClassification`), inference throughput
     of both classifiers, and the peak step memory of each;
  7. `cross_attention` mode at the protein preset's shape against the model a protein researcher loads instead,
     ESM-2's architecture (`EsmForMaskedLM`: self-attention over every residue in every layer, rotary positions), at
     matched width, depth, heads and MLP: the pretraining step (SMA's self-guided masks at 15% vs ESM's 15% MLM),
     inference throughput (`SMAModel` vs `EsmModel`) and peak memory, from 512 to 4,096 residues; `--figure`
     draws its time and memory against length.
Sections 6 and 7 also profile one training step of each model (torch.profiler): the shares of its time in matmuls,
attention kernels, layer norms and the rest, and its largest operators.

Every timed step is warmed up first, then repeated; the tables give the median and the spread (min-max). Steps that
are compared with each other run interleaved (one of each per round), so that slow drifts of a shared machine hit
them alike. A speed-up is the ratio of the two medians (what the targets read), shown next to the median of the
per-round ratios and a 95% interval for that median (`speedup`).
`--output` writes everything, raw times included, as JSON.

    python benchmarks/speed.py --output results.json           # full run (a few minutes on 2 CPU cores)
    python benchmarks/speed.py --device cuda --dtype bfloat16  # on a GPU, bf16 autocast
    python benchmarks/speed.py --smoke                         # tiny sizes, a few seconds (CI)
    python benchmarks/speed.py --sections roberta mask_cost    # only some sections (the matmul rate always runs)
    python benchmarks/speed.py --sections esm --figure esm.png # SMA vs ESM-2's architecture (the longest run)
"""

import argparse
import collections
import ctypes
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from transformers import (
    EsmConfig,
    EsmForMaskedLM,
    EsmModel,
    PerceiverConfig,
    PerceiverForMaskedLM,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForSequenceClassification,
)

from sma_hf import SMAConfig, SMAForMaskedModeling, SMAForSequenceClassification, SMAModel
from sma_hf.tools.common import load_sma_config


VOCAB_SIZE = 262  # 256 bytes + 6 special tokens, in SMA's byte tokenizer and in the Perceiver tokenizer alike
FIRST_BYTE_ID = 6  # ids below are special tokens
MASK_TOKEN_ID = 3  # [MASK] in both tokenizers
MASKING_RATIO = 0.15
PERCEIVER_DECODER_HEADS = 8  # hard-coded in PerceiverForMaskedLM
PERCEIVER_DECODER_QK_CHANNELS = 8 * 32  # hard-coded in PerceiverForMaskedLM
# the speed targets against Perceiver, checked at these lengths when they were measured
SPEEDUP_TARGETS = {512: 1.5, 2048: 2.0, 8192: 2.0}
MASK_OVERHEAD_TARGET = 1.05
SCALING_LENGTHS_FOR_TARGET = (2048, 16384)
SCALING_TARGET = 9.0
FLOP_TARGET_LENGTH = 2048
FLOP_FRACTION_TARGET = 0.6  # of the float32 matmul rate (and of the bf16 one for a bf16 run on CPU)
GPU_BF16_FLOP_FRACTION_TARGET = 0.4  # of the bf16 matmul rate on a GPU
# section 6, SMA self_attention mode vs RoBERTa: the chemistry settings' masking, at both models' sizes
PEER_MASKING_RATIO = 0.3  # SMA's masking ratio, and the share of tokens RoBERTa's MLM labels
PEER_NUM_PER_QUERY = 3
PEER_NUM_LABELS = 2
PEER_SPEEDUP_TARGETS = {"pretraining": 1.3, "fine_tuning": 1.0}  # SMA step time / RoBERTa's, at each length below
PEER_TARGET_LENGTHS = (128, 512)
INTERVAL_CONFIDENCE = 0.95  # of the per-round speed-ups' median (`median_interval`)
# section 7, SMA cross_attention mode at the protein preset's shape vs ESM-2's architecture
ESM_PRESET = "sma-protein-small"
ESM_VOCAB_SIZE, ESM_PAD_ID, ESM_MASK_ID, ESM_FIRST_RESIDUE_ID, ESM_RESIDUES = 33, 1, 32, 4, 20  # ESM-2's alphabet
ESM_FLOP_FRACTION_TARGET = 0.4  # SMA's step, of the matmul rate, at each length below
ESM_FLOP_TARGET_LENGTHS = (1024, 2048, 4096)
ESM_MEMORY_TARGET = 0.1  # SMA's peak step memory / ESM's, at this length
ESM_MEMORY_TARGET_LENGTH = 4096
ESM_SCALING_TARGET = 4.5  # SMA's step time(4096) / time(1024)
# operator kinds of a step's time (`time_shares`), by the name of the operator
MATMUL_OPERATORS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm"}
OPERATOR_KINDS = ("matmul", "attention kernel", "layer norm", "other")
SECTIONS = ("perceiver", "mask_cost", "scaling", "inference", "roberta", "esm")

DEFAULTS = dict(
    batch_size=4,
    lengths=[512, 2048, 8192],
    mask_length=2048,
    scaling_lengths=[512, 1024, 2048, 4096, 8192, 16384],
    self_attention_lengths=[128, 256, 512],
    latents=128,
    width=256,
    layers=4,
    heads=8,
    mlp_ratio=4,
    warmup=2,
    repeats=7,
    matmul_size=2048,
    peer_batch_size=16,
    peer_lengths=[128, 512],
    peer_layers=4,
    esm_batch_size=8,
    esm_lengths=[512, 1024, 2048, 4096],
    esm_repeats=3,  # ESM's step at 4,096 residues takes most of a minute on 2 cores
)
SMOKE = dict(
    threads=1,  # tiny ops gain nothing from more, and one thread is not slowed by a busy CI machine's other jobs
    batch_size=2,
    lengths=[64, 128],
    mask_length=128,
    scaling_lengths=[64, 128],
    self_attention_lengths=[32],
    latents=8,
    width=32,
    layers=1,
    heads=4,
    mlp_ratio=2,
    warmup=1,
    repeats=2,
    matmul_size=256,
    peer_batch_size=2,
    peer_lengths=[32],
    peer_layers=2,
    esm_batch_size=2,
    esm_lengths=[32, 64],
    esm_repeats=2,
)


# ----------------------------------------------------------------------------------------------------- model sizes


def sma_config(args, length: int, encoder_type: str = "cross_attention", masking_strategy: str = "self_guided"):
    """SMA at the benchmark's sizes. The decoder is sized like PerceiverForMaskedLM's (8 heads, MLP 1x width). The
    paper's mask selection, which the timings in docs/performance.md were measured with (it scores the latents'
    attention)."""
    return SMAConfig(
        input_type="discrete",
        vocab_size=VOCAB_SIZE,
        encoder_type=encoder_type,
        masking_strategy=masking_strategy,
        mask_selection="inputs",
        masking_ratio=MASKING_RATIO,
        max_position_embeddings=length,
        num_latents=args.latents,
        embedding_size=args.width,
        hidden_size=args.width,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_cross_attention_heads=1,
        intermediate_size=args.mlp_ratio * args.width,
        decoder_hidden_size=args.width,
        decoder_num_attention_heads=PERCEIVER_DECODER_HEADS,
        decoder_intermediate_size=args.width,
    )


def perceiver_config(args, length: int) -> PerceiverConfig:
    """PerceiverForMaskedLM matched to `sma_config`: d_model = SMA embedding_size, d_latents = hidden_size, one block
    of num_hidden_layers self-attention layers, the same heads, query/key and value channels and MLP widths."""
    return PerceiverConfig(
        vocab_size=VOCAB_SIZE,
        # its decoder has exactly max_position_embeddings position queries, so this must equal the input length
        max_position_embeddings=length,
        num_latents=args.latents,
        d_latents=args.width,
        d_model=args.width,
        num_blocks=1,
        num_self_attends_per_block=args.layers,
        num_self_attention_heads=args.heads,
        num_cross_attention_heads=1,
        qk_channels=args.width,
        v_channels=args.width,
        self_attention_widening_factor=args.mlp_ratio,
        cross_attention_widening_factor=args.mlp_ratio,
        attention_probs_dropout_prob=0.0,  # SMA's default; Perceiver's is 0.1
    )


def matching_notes(args) -> list[str]:
    """What still differs between the two models at matched sizes (none of it changes the matmul FLOPs by much)."""
    notes = [
        "PerceiverForMaskedLM's decoder is fixed at 8 heads and an MLP of 1x width; the SMA decoder is set to the "
        "same (SMA's own default decoder MLP is 4x).",
        "Perceiver has no masking of its own: it gets the same share of ids replaced by [MASK] (drawn once, outside "
        "the timed step, as a data collator would) and labels on those positions; it still attends to the [MASK] "
        "inputs, as SMA computes but -inf's its masked keys, so both do the same attention work.",
        "Perceiver computes every attention eagerly (its implementation; no sdpa), LayerNorms the decoder's keys, "
        "has no decoder query residual, no final encoder LayerNorm, and ties its output layer to the input embedding "
        "(SMA's output layer is separate: same FLOPs, width x 262 more parameters).",
        "Both models get max_position_embeddings = the input length (Perceiver's decoder needs exactly that).",
    ]
    if args.width != PERCEIVER_DECODER_QK_CHANNELS:
        notes.append(
            f"Perceiver's decoder projects queries and keys to {PERCEIVER_DECODER_QK_CHANNELS} channels whatever the "
            f"width; SMA's decoder uses its width ({args.width})."
        )
    return notes


def sma_peer_config(args, length: int, masking_strategy: str = "self_guided") -> SMAConfig:
    """SMA in `self_attention` mode at RoBERTa's sizes: its input layer plus `peer_layers - 1` self-attention layers
    (as many layers as RoBERTa's), width, heads and MLP of the shared sizes, a decoder of the same width, heads and
    MLP (SMA's defaults at width 256), and the chemistry preset's masking (ratio 0.3, 3 inputs per query, one random
    head per sampled query, sampled positions masked themselves) with the paper's selection, as the timings in
    docs/performance.md."""
    self_guided = masking_strategy == "self_guided"
    return SMAConfig(
        input_type="discrete",
        vocab_size=VOCAB_SIZE,
        encoder_type="self_attention",
        mask_selection="inputs",
        masking_strategy=masking_strategy,
        masking_ratio=PEER_MASKING_RATIO,
        num_per_query=PEER_NUM_PER_QUERY,
        head_aggregation="random_mix" if self_guided else "mean",
        mask_self=self_guided,
        max_position_embeddings=length,
        embedding_size=args.width,
        hidden_size=args.width,
        num_hidden_layers=args.peer_layers - 1,
        num_attention_heads=args.heads,
        intermediate_size=args.mlp_ratio * args.width,
        decoder_hidden_size=args.width,
        decoder_num_attention_heads=args.heads,
        decoder_intermediate_size=args.mlp_ratio * args.width,
        num_labels=PEER_NUM_LABELS,
    )


def roberta_config(args, length: int) -> RobertaConfig:
    """RoBERTa (ChemBERTa's architecture) matched to `sma_peer_config`: `peer_layers` layers, the same width, heads,
    MLP, activation and vocabulary, SMA's dropout (0) and LayerNorm epsilon, and SMA's byte tokenizer's padding id."""
    return RobertaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=args.width,
        num_hidden_layers=args.peer_layers,
        num_attention_heads=args.heads,
        intermediate_size=args.mlp_ratio * args.width,
        hidden_act="gelu",
        # RoBERTa counts positions from padding_idx + 1
        max_position_embeddings=length + 2,
        type_vocab_size=1,
        pad_token_id=0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-5,
        num_labels=PEER_NUM_LABELS,
    )


def roberta_notes(args) -> list[str]:
    """What still differs between SMA (`self_attention` mode) and RoBERTa at the sizes of section 6."""
    return [
        f"Both: {args.peer_layers} layers counting SMA's input layer, width {args.width}, {args.heads} heads, MLP "
        f"{args.mlp_ratio}x width, GELU, vocabulary {VOCAB_SIZE}, batch {args.peer_batch_size}, no padding, dropout "
        "0 (SMA's default; RoBERTa's default 0.1 is set to 0: with attention dropout, CPU sdpa leaves its fused "
        "kernel for the math one in both models), LayerNorm eps 1e-5, sdpa attention.",
        f"Pretraining: SMA draws a self-guided mask of {PEER_MASKING_RATIO:.0%} in its first layer (3 inputs per "
        "sampled query, random_mix heads, mask_self, noise 0, as after the warm-up), drops the masked elements after "
        "it and decodes only the masked positions with its cross-attention decoder (width, heads and MLP as the "
        f"encoder's). RoBERTa gets {PEER_MASKING_RATIO:.0%} of its ids replaced by [MASK] (drawn once, outside the "
        "timed step, as a data collator would; no 80/10/10 split), labels on those positions, runs every position "
        "through every layer and its LM head (dense + GELU + LayerNorm + output tied to the input embedding) over "
        "every position, with the loss on the masked ones.",
        "Fine-tuning: both classify into 2 classes (cross-entropy). SMA masks nothing, pools with one learned query "
        "attending to the final states, then LayerNorm + linear; RoBERTa takes the first token's state through "
        "dense + tanh + linear.",
        "Architecture: SMA is pre-LayerNorm with a final LayerNorm; RoBERTa is post-LayerNorm. RoBERTa adds a "
        "token-type embedding (one type) and counts positions from padding_idx + 1 (max_position_embeddings = "
        "length + 2); SMA's positions count from 0.",
        "Matmul GFLOP/step are counted by torch.utils.flop_counter on one untimed step of each model as it runs "
        "(sdpa counted as its two products forward and four backward; the kernel's recomputation of the logits in "
        "its backward is not counted): SMA's include its mask's logits of the sampled rows and its first layer over "
        "the visible elements only.",
    ]


def esm_sma_config(args, length: int) -> SMAConfig:
    """The protein preset at `length` residues, without dropout (ESM-2 has none; on CPU dropout is a third of
    SMA's step)."""
    config = load_sma_config(None, ESM_PRESET)
    config.max_position_embeddings = length
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    if args.smoke:  # the shape of `esm_config` at the smoke sizes
        config.num_latents, config.embedding_size, config.hidden_size = args.latents, args.width, args.width
        config.intermediate_size = config.decoder_intermediate_size = args.mlp_ratio * args.width
        config.decoder_hidden_size, config.num_attention_heads, config.decoder_num_attention_heads = (
            args.width, args.heads, args.heads)  # fmt: skip
    return config


def esm_config(args, length: int) -> EsmConfig:
    """ESM-2's architecture matched to `esm_sma_config`: as many layers as SMA's input layer plus its latent layers,
    the same width, heads and MLP; ESM-2's alphabet, rotary positions, token dropout and pre-LayerNorm."""
    sma = esm_sma_config(args, length)
    return EsmConfig(
        vocab_size=ESM_VOCAB_SIZE,
        pad_token_id=ESM_PAD_ID,
        mask_token_id=ESM_MASK_ID,
        hidden_size=sma.hidden_size,
        num_hidden_layers=sma.num_hidden_layers + 1,
        num_attention_heads=sma.num_attention_heads,
        intermediate_size=sma.intermediate_size,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=length + 2,
        position_embedding_type="rotary",
        token_dropout=True,
        emb_layer_norm_before=False,
        layer_norm_eps=1e-5,
    )


def esm_notes(args) -> list[str]:
    """What still differs between SMA (`cross_attention`, protein preset) and ESM-2's architecture in section 7."""
    sma = esm_sma_config(args, args.esm_lengths[0])
    return [
        f"Both: width {sma.hidden_size}, {sma.num_attention_heads} heads, MLP {sma.intermediate_size}, GELU, "
        f"{sma.num_hidden_layers + 1} layers (SMA: its input layer onto {sma.num_latents} latents, one head, then "
        f"{sma.num_hidden_layers} latent self-attention layers; ESM: {sma.num_hidden_layers + 1} self-attention "
        f"layers over every residue), batch {args.esm_batch_size}, no padding, dropout 0, sdpa attention.",
        f"Pretraining: SMA draws its self-guided mask of {sma.masking_ratio:.0%} by position (the preset's "
        f"selection: {sma.num_per_query:g} inputs per sampled position, {sma.mask_random_floor:.0%} of each mask "
        "random, no warm-up noise as after the warm-up), drops the masked residues after its first layer and decodes "
        f"only the masked positions (decoder width {sma.decoder_hidden_size}, {sma.decoder_num_attention_heads} "
        f"heads, MLP {sma.decoder_intermediate_size}); ESM gets the same share of its residues replaced by <mask> "
        "(drawn once, outside the timed step), labels on those, every residue through every layer and its LM head.",
        f"Vocabularies: SMA's byte tokenizer ({VOCAB_SIZE} ids), ESM-2's alphabet ({ESM_VOCAB_SIZE}); random "
        "residues for both. Positions: SMA learned absolute embeddings, ESM rotary.",
        "Inference: `SMAModel` (pooled output) and `EsmModel` (last hidden states, no pooler), eval mode, no grad.",
    ]


# --------------------------------------------------------------------------------------------------- FLOP counting


def sma_forward_flops(
    config: SMAConfig, batch_size: int, length: int, num_masked: int = 0, num_decoded: int | None = None
) -> int:
    """Matmul FLOPs of one forward pass of `SMAForMaskedModeling`: 2*m*n*k for every [m, k] @ [k, n] product.

    With B = batch_size, L = length, C = input_channels, E = embedding_size, H = hidden_size, I = intermediate_size,
    D = decoder_hidden_size, J = decoder_intermediate_size, V = vocab_size (discrete) or input_channels (continuous),
    K = inputs the first layer reads = L (cross_attention) or the L - num_masked visible ones (self_attention),
    Q = queries of the first layer = num_latents (cross_attention) or K (self_attention),
    T = tokens after the first layer = num_latents (cross_attention) or K (self_attention),
    P = positions the decoder reconstructs = num_decoded (default L; fewer where only the masked ones are decoded):

        embedding       2BLCE                                  (continuous only; discrete ids are a table lookup)
        first layer     2BQHH (q) + 2*2BKEH (k, v) + 2*2BQKH (scores, probs @ v) + 2BQHH (output) + 2*2BQHI (MLP)
        each of the num_hidden_layers latent layers:
                        4*2BTHH (q, k, v, output) + 2*2BTTH (scores, probs @ v) + 2*2BTHI (MLP)
        decoder         2*2BPDD (q, output) + 2*2BTHD (k, v) + 2*2BPTD (scores, probs @ v) + 2*2BPDJ (MLP) + 2BPDV

    The number of heads does not enter: h heads of width H/h together cost as much as one of width H. Elementwise
    work (LayerNorms, softmax, GELU, residual adds, masking, the loss) is ignored, and so is the score sum of
    self-guided masking (under no_grad: the keys and the sampled query rows' scores).
    """
    B, L, E, H, I = batch_size, length, config.embedding_size, config.hidden_size, config.intermediate_size  # noqa: E741
    D, J = config.decoder_hidden_size, config.decoder_intermediate_size
    P = length if num_decoded is None else num_decoded
    V = config.vocab_size if config.input_type == "discrete" else config.input_channels
    if config.encoder_type == "cross_attention":
        K, Q, T = L, config.num_latents, config.num_latents
    else:
        K = Q = T = L - num_masked
    embedding = input_projection_flops(config, batch_size, length)
    first_layer = 2 * B * Q * H * H + 2 * 2 * B * K * E * H + 2 * 2 * B * Q * K * H + 2 * B * Q * H * H
    first_layer += 2 * 2 * B * Q * H * I
    latent_layer = 4 * 2 * B * T * H * H + 2 * 2 * B * T * T * H + 2 * 2 * B * T * H * I
    decoder = 2 * 2 * B * P * D * D + 2 * 2 * B * T * H * D + 2 * 2 * B * P * T * D + 2 * 2 * B * P * D * J
    decoder += 2 * B * P * D * V
    return embedding + first_layer + config.num_hidden_layers * latent_layer + decoder


def input_projection_flops(config: SMAConfig, batch_size: int, length: int) -> int:
    """The continuous input projection, 2BLCE (0 for discrete ids, a table lookup)."""
    if config.input_type == "discrete":
        return 0
    return 2 * batch_size * length * config.input_channels * config.embedding_size


def sma_training_flops(config: SMAConfig, batch_size: int, length: int, num_decoded: int | None = None) -> int:
    """Matmul FLOPs of one training step, with the training mask's round(masking_ratio x L) elements removed after
    the first layer in `self_attention` mode and `num_decoded` positions decoded (default all L; a model that decodes
    only the masked ones, all that its loss reads, decodes round(masking_ratio x L)). See `sma_forward_flops` for
    the forward formula:

        3 x forward - 2BLCE

    The backward pass computes two products per forward product (the gradients of both operands), except for the
    continuous input projection, whose input (the data) needs no gradient. The optimizer step is elementwise.
    """
    forward = sma_forward_flops(config, batch_size, length, masked_count(length, config.masking_ratio), num_decoded)
    return 3 * forward - input_projection_flops(config, batch_size, length)


def perceiver_training_flops(args, length: int) -> int:
    """Matmul FLOPs of one `PerceiverForMaskedLM` training step at the sizes of `perceiver_config`.

    They equal those of SMA decoding every position at the sizes of `sma_config` (same projections, attention
    products, MLPs and output layer), except that Perceiver's decoder projects its queries and keys to 256 channels
    (hard-coded) instead of the width D: with B = batch, L = length, N = latents, that adds
    (256 - D) x (2BLD + 2BND + 2BLN) per forward pass (query projection, key projection, scores), times 3 for the
    step. At width 256 the two counts are equal.
    """
    B, L, N, D = args.batch_size, length, args.latents, args.width
    extra = (PERCEIVER_DECODER_QK_CHANNELS - D) * (2 * B * L * D + 2 * B * N * D + 2 * B * L * N)
    return sma_training_flops(sma_config(args, length), B, L) + 3 * extra  # Perceiver decodes every position


# ---------------------------------------------------------------------------------------------------- measurements


def log(message: str):
    """Progress on stderr, so that stdout holds only the tables."""
    print(message, file=sys.stderr, flush=True)


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(steps: dict[str, Callable[[], object]], runs: int, device: torch.device):
    for _ in range(runs):
        for step in steps.values():
            step()
    synchronize(device)


def time_runs(steps: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per run of each step; `repeats` rounds, each running every step once (interleaved)."""
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def measure(steps: dict[str, Callable[[], object]], args) -> dict[str, list[float]]:
    warm_up(steps, args.warmup, args.device)
    return time_runs(steps, args.repeats, args.device)


def summarize(times: list[float], elements: int) -> dict:
    """Median and spread of the step times, and the throughput in input elements per second."""
    median = statistics.median(times)
    return {
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
        "elements_per_s": elements / median,
        "elements_per_s_min": elements / max(times),
        "elements_per_s_max": elements / min(times),
    }


def median_interval(values: list[float], confidence: float = INTERVAL_CONFIDENCE) -> dict:
    """A distribution-free interval for the median of independent `values`: the order statistics x_(j) and
    x_(n+1-j) with the largest j whose coverage, 1 - 2 P(Binomial(n, 1/2) < j), is still at least `confidence`
    (at 15 values: the 4th and 12th, 96.5%); with too few values for `confidence`, the range and its coverage."""
    ordered, n = sorted(values), len(values)

    def coverage(j: int) -> float:
        return 1 - 2 * sum(math.comb(n, below) for below in range(j)) / 2**n

    j = 1
    # j <= n + 1 - j keeps the lower order statistic at or below the upper one
    while 2 * (j + 1) <= n + 1 and coverage(j + 1) >= confidence:
        j += 1
    return {"low": ordered[j - 1], "high": ordered[n - j], "coverage": coverage(j)}


def speedup(times: dict[str, list[float]], model: str, peer: str) -> dict:
    """How much faster `model` runs than `peer`: the ratio of their median times (what the targets read), and the
    per-round ratios' median with a 95% interval for it (`median_interval`). Each round times both back to back, so
    that a slow spell of the machine hits both alike; the two estimates agree when the machine is steady and part
    when it drifts. The interval says how far this run's rounds pin the ratio down, not how far another run (another
    state of a shared host) may land."""
    per_round = [peer_time / model_time for peer_time, model_time in zip(times[peer], times[model])]
    return {
        "speedup": statistics.median(times[peer]) / statistics.median(times[model]),
        "per_round": {"median": statistics.median(per_round), **median_interval(per_round)},
    }


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


class PeakMemory:
    """Peak memory a block of work adds to what was resident before it, in MiB (`.peak_mib`).

    CUDA: `torch.cuda.max_memory_allocated` over the block minus the allocation at its start. CPU (Linux): the
    process's resident-set high-water mark over the block minus the resident size at its start. The high-water mark
    is reset at the start through /proc/self/clear_refs (Linux >= 4.0), after glibc's `malloc_trim` has returned freed
    heap memory to the system, so that memory freed by earlier sections is neither counted nor silently reused.
    Elsewhere `.peak_mib` stays None.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mib = None

    def __enter__(self):
        gc.collect()
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        elif sys.platform == "linux" and platform.libc_ver()[0] == "glibc":
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            self.start = _status_kib("VmRSS") * 1024
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")  # resets VmHWM to the current resident size
        else:
            self.start = None
        return self

    def __exit__(self, *exc_info):
        synchronize(self.device)
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.start is not None:
            peak = _status_kib("VmHWM") * 1024
        else:
            return
        self.peak_mib = (peak - self.start) / 2**20


# ----------------------------------------------------------------------------------------------------------- steps


def random_ids(args, length: int, seed: int = 0, batch_size: int | None = None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (args.batch_size if batch_size is None else batch_size, length)
    return torch.randint(FIRST_BYTE_ID, VOCAB_SIZE, shape, generator=generator).to(args.device)


def masked_count(length: int, ratio: float) -> int:
    """Elements SMA masks per example of `length` valid elements: round(ratio x length), at least one left visible."""
    return min(round(ratio * length), length - 1)


def random_mask(batch_size: int, length: int, ratio: float, seed: int = 1) -> torch.Tensor:
    """Uniform random bool mask (True = masked) with SMA's exact count per example, drawn on the CPU."""
    order = torch.rand(batch_size, length, generator=torch.Generator().manual_seed(seed)).argsort(dim=1)
    mask = torch.zeros(batch_size, length, dtype=torch.bool)
    return mask.scatter_(1, order[:, : masked_count(length, ratio)], True)


def autocast(args):
    return torch.autocast(args.device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")


def training_step(model: torch.nn.Module, inputs: dict, args) -> Callable[[], None]:
    """A step function: forward (under autocast for bf16), backward, AdamW step, zero_grad."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with autocast(args):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def build_sma(config: SMAConfig, args) -> SMAForMaskedModeling:
    torch.manual_seed(0)  # the same weights for every model built from the same sizes
    model = SMAForMaskedModeling(config).to(args.device).train()
    model.set_mask_noise_scale(0.0)  # pretraining after the warm-up: the mask is fully self-guided
    return model


def sma_step(args, length: int, **config_overrides) -> tuple[Callable[[], None], int]:
    """A training step of a fresh SMA model, and its matmul FLOPs, counted analytically (`sma_training_flops`); how
    many positions the model decodes in training (all, or only the masked ones its loss reads) is read off the logits
    of one untimed forward pass."""
    config = sma_config(args, length, **config_overrides)
    model = build_sma(config, args)
    inputs = {"input_ids": random_ids(args, length)}
    with torch.no_grad(), autocast(args):
        num_decoded = model(**inputs).logits.shape[1]
    flops = sma_training_flops(config, args.batch_size, length, num_decoded)
    return training_step(model, inputs, args), flops


def peer_inputs(args, length: int, model_name: str, task: str) -> dict:
    """The same ids for both models; RoBERTa's MLM input has PEER_MASKING_RATIO of them replaced by [MASK]."""
    ids = random_ids(args, length, batch_size=args.peer_batch_size)
    if task == "pretraining":
        if model_name == "sma":
            return {"input_ids": ids}  # SMA draws its own mask
        mask = random_mask(args.peer_batch_size, length, PEER_MASKING_RATIO).to(args.device)
        return {"input_ids": ids.masked_fill(mask, MASK_TOKEN_ID), "labels": ids.masked_fill(~mask, -100)}
    labels = torch.randint(PEER_NUM_LABELS, (args.peer_batch_size,), generator=torch.Generator().manual_seed(2))
    return {"input_ids": ids, "labels": labels.to(args.device)}


def peer_model(args, length: int, model_name: str, task: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if model_name == "sma":
        config = sma_peer_config(args, length)
        model = (SMAForMaskedModeling if task == "pretraining" else SMAForSequenceClassification)(config)
    else:
        config = roberta_config(args, length)
        model = (RobertaForMaskedLM if task == "pretraining" else RobertaForSequenceClassification)(config)
    model = model.to(args.device)
    if model_name == "sma" and task == "pretraining":
        model.set_mask_noise_scale(0.0)  # after the warm-up: the mask is fully self-guided
    return model


def esm_inputs(args, length: int, model_name: str, task: str) -> dict:
    """Random residues; ESM's pretraining input has SMA's masking ratio of them replaced by <mask>, labels on
    those."""
    if model_name == "sma":
        return {"input_ids": random_ids(args, length, batch_size=args.esm_batch_size)}
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(ESM_FIRST_RESIDUE_ID, ESM_FIRST_RESIDUE_ID + ESM_RESIDUES, (args.esm_batch_size, length),
                        generator=generator).to(args.device)  # fmt: skip
    if task == "inference":
        return {"input_ids": ids}
    mask = random_mask(args.esm_batch_size, length, esm_sma_config(args, length).masking_ratio).to(args.device)
    return {"input_ids": ids.masked_fill(mask, ESM_MASK_ID), "labels": ids.masked_fill(~mask, -100)}


def esm_peer_model(args, length: int, model_name: str, task: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if model_name == "sma":
        config = esm_sma_config(args, length)
        model = SMAForMaskedModeling(config) if task == "pretraining" else SMAModel(config)
    else:
        config = esm_config(args, length)
        model = EsmForMaskedLM(config) if task == "pretraining" else EsmModel(config, add_pooling_layer=False)
    model = model.to(args.device)
    if model_name == "sma" and task == "pretraining":
        model.set_mask_noise_scale(0.0)  # after the warm-up (the preset's random floor stays)
    return model


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # two products per forward product, as for every other matmul here (the kernel's recomputation of the logits,
    # which is work of the kernel, not of the model, is left out, as for the CUDA kernels in the analytic counts)
    return 2 * sdpa_flop_count(query_shape, key_shape, value_shape)


# torch.utils.flop_counter has formulas for the CUDA sdpa kernels only
CPU_SDPA_FLOP_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
}


def counted_step_flops(model: torch.nn.Module, inputs: dict, args) -> int:
    """Matmul FLOPs of one forward + backward as it runs (sdpa included, the mask's logits too), counted by
    torch.utils.flop_counter: 2*m*n*k per [m, k] @ [k, n] product, backward products included. Leaves no gradients."""
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOP_FORMULAS) as counter, autocast(args):
        model(**inputs).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def perceiver_step(args, length: int) -> Callable[[], None]:
    torch.manual_seed(0)
    model = PerceiverForMaskedLM(perceiver_config(args, length)).to(args.device).train()
    ids, mask = random_ids(args, length), random_mask(args.batch_size, length, MASKING_RATIO).to(args.device)
    inputs = {"input_ids": ids.masked_fill(mask, MASK_TOKEN_ID), "labels": ids.masked_fill(~mask, -100)}
    return training_step(model, inputs, args)


# -------------------------------------------------------------------------------------------------------- sections


def bench_matmul(args) -> dict:
    """FLOP/s of an n x n @ n x n matmul in float32 (and in bfloat16 when the run uses it)."""
    n = args.matmul_size
    results = {}
    for dtype_name in dict.fromkeys(["float32", args.dtype]):
        log(f"matmul, {dtype_name}, n = {n}")
        dtype = getattr(torch, dtype_name)
        generator = torch.Generator().manual_seed(0)
        a, b = (torch.randn(n, n, generator=generator).to(args.device, dtype) for _ in range(2))
        times = measure({"matmul": lambda: a @ b}, args)["matmul"]
        median = statistics.median(times)
        results[dtype_name] = {
            "size": n,
            "flops_per_s": 2 * n**3 / median,
            "flops_per_s_min": 2 * n**3 / max(times),
            "flops_per_s_max": 2 * n**3 / min(times),
            "times_s": times,
        }
    return results


def bench_vs_perceiver(args, matmul_flops_per_s: float) -> list[dict]:
    """Training steps of both models, interleaved, per length; achieved FLOP/s from the analytic counts."""
    rows = []
    for length in args.lengths:
        log(f"training step, SMA vs Perceiver, length {length}")
        sma_training, flops = sma_step(args, length)
        steps = {"sma": sma_training, "perceiver": perceiver_step(args, length)}
        times = measure(steps, args)
        elements = args.batch_size * length
        sma, perceiver = summarize(times["sma"], elements), summarize(times["perceiver"], elements)
        perceiver_flops = perceiver_training_flops(args, length)
        rows.append({
            "length": length,
            "batch_size": args.batch_size,
            "sma": sma,
            "perceiver": perceiver,
            **speedup(times, "sma", "perceiver"),
            "sma_flops_per_step": flops,
            "sma_flops_per_s": flops / sma["median_s"],
            "sma_fraction_of_matmul": flops / sma["median_s"] / matmul_flops_per_s,
            "perceiver_flops_per_step": perceiver_flops,
            "perceiver_flops_per_s": perceiver_flops / perceiver["median_s"],
            "perceiver_fraction_of_matmul": perceiver_flops / perceiver["median_s"] / matmul_flops_per_s,
        })  # fmt: skip
        del steps, sma_training
    return rows


def bench_mask_cost(args) -> dict:
    """The same SMA model (same weights) with its mask drawn self-guided, drawn at random, or given precomputed."""
    length = args.mask_length
    log(f"cost of the mask, length {length}")
    ids = random_ids(args, length)
    explicit_mask = random_mask(args.batch_size, length, MASKING_RATIO).to(args.device)
    variants = {
        "self_guided": (sma_config(args, length, masking_strategy="self_guided"), {"input_ids": ids}),
        "random": (sma_config(args, length, masking_strategy="random"), {"input_ids": ids}),
        "explicit": (sma_config(args, length), {"input_ids": ids, "masked_positions": explicit_mask}),
    }
    steps = {name: training_step(build_sma(config, args), inputs, args) for name, (config, inputs) in variants.items()}
    times = measure(steps, args)
    results = {name: summarize(times[name], args.batch_size * length) for name in steps}
    random_median = results["random"]["median_s"]
    return {
        "length": length,
        "batch_size": args.batch_size,
        "variants": results,
        "time_over_random": {name: result["median_s"] / random_median for name, result in results.items()},
    }


def step_memory(steps: dict[str, Callable[[], object]], args) -> dict[str, float | None]:
    """Peak memory of one (warm) run of each step, each in its own window, in MiB."""
    peaks = {}
    for name, step in steps.items():
        with PeakMemory(args.device) as memory:
            step()
        peaks[name] = memory.peak_mib
    return peaks


def operator_kind(name: str) -> str:
    if name in MATMUL_OPERATORS:
        return "matmul"
    if "scaled_dot_product" in name or "flash_attention" in name or "efficient_attention" in name:
        return "attention kernel"
    return "layer norm" if "layer_norm" in name else "other"


def time_shares(step: Callable[[], object], args) -> dict:
    """Where one (warm) run of `step` spends its time, from torch.profiler's own time per operator: the shares of
    matmuls, attention kernels, layer norms and the rest (elementwise work, copies, the optimizer's updates, the
    mask), and the five operators that take the most. The profiler's overhead per operator inflates small ones."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        step()
        synchronize(args.device)
    on_gpu = args.device.type == "cuda"
    # on a GPU the kernels are listed beside the operators that launched them (with the same time), and
    # record_function annotations carry their children's device time: only the operators count
    events = [
        event for event in profiler.key_averages()
        if event.device_type == DeviceType.CPU and not (on_gpu and event.is_user_annotation)
    ]  # fmt: skip
    by_operator = {
        event.key: event.self_device_time_total if on_gpu else event.self_cpu_time_total for event in events
    }
    total = sum(by_operator.values())
    kinds = collections.Counter()
    for name, spent in by_operator.items():
        kinds[operator_kind(name)] += spent
    largest = sorted(by_operator.items(), key=lambda item: -item[1])[:5]
    return {
        "shares": {kind: kinds[kind] / total for kind in OPERATOR_KINDS},
        "largest": [{"operator": name, "share": spent / total} for name, spent in largest],
    }


def compared_training_steps(models: dict, inputs: dict, elements: int, args, timing, matmul_flops_per_s) -> dict:
    """Two models' training steps (`models` and `inputs` keyed by name, SMA's first): interleaved times (`timing`'s
    warm-up and repeats), the peak memory of one step each, the matmul FLOPs of one step each (counted) and their
    share of the matmul rate, where one step of each spends its time (`time_shares`), and SMA's speed-up."""
    steps = {name: training_step(models[name], inputs[name], args) for name in models}
    times = measure(steps, timing)
    peaks = step_memory(steps, args)
    shares = {name: time_shares(step, args) for name, step in steps.items()}
    flops = {name: counted_step_flops(models[name], inputs[name], args) for name in models}
    result = {}
    for name in models:
        summary = summarize(times[name], elements)
        result[name] = {
            **summary,
            "peak_mib": peaks[name],
            "flops_per_step": flops[name],
            "flops_per_s": flops[name] / summary["median_s"],
            "fraction_of_matmul": flops[name] / summary["median_s"] / matmul_flops_per_s,
            "time_shares": shares[name],
        }
    return {**result, **speedup(times, *models)}


def bench_vs_roberta(args, matmul_flops_per_s: float) -> list[dict]:
    """SMA (`self_attention`) vs RoBERTa per length: pretraining and fine-tuning steps (interleaved, then the peak
    memory of one step each, then the matmul FLOPs of one step each, counted) and inference throughput
    (interleaved)."""
    rows = []
    for length in args.peer_lengths:
        elements = args.peer_batch_size * length
        row = {"length": length, "batch_size": args.peer_batch_size}
        for task in ("pretraining", "fine_tuning"):
            log(f"{task} step, SMA vs RoBERTa, length {length}")
            models = {name: peer_model(args, length, name, task).train() for name in ("sma", "roberta")}
            inputs = {name: peer_inputs(args, length, name, task) for name in models}
            row[task] = compared_training_steps(models, inputs, elements, args, args, matmul_flops_per_s)
            del models
        log(f"inference, SMA vs RoBERTa, length {length}")
        models = {name: peer_model(args, length, name, "fine_tuning").eval() for name in ("sma", "roberta")}
        ids = random_ids(args, length, batch_size=args.peer_batch_size)

        def classify(model):
            def run():
                with torch.inference_mode(), autocast(args):
                    return model(input_ids=ids).logits

            return run

        times = measure({name: classify(model) for name, model in models.items()}, args)
        inference = {name: summarize(times[name], elements) for name in models}
        inference.update(speedup(times, "sma", "roberta"))
        row["inference"] = inference
        rows.append(row)
        del models
    return rows


def bench_vs_esm(args, matmul_flops_per_s: float) -> list[dict]:
    """SMA (`cross_attention`, protein preset) vs ESM-2's architecture per length: the pretraining step (interleaved,
    then the peak memory of one step each, where one step of each spends its time, and the matmul FLOPs of one step
    each, counted) and inference throughput (interleaved)."""
    timing = argparse.Namespace(**{**vars(args), "repeats": args.esm_repeats})
    rows = []
    for length in args.esm_lengths:
        elements = args.esm_batch_size * length
        log(f"pretraining step, SMA vs ESM, length {length}")
        models = {name: esm_peer_model(args, length, name, "pretraining").train() for name in ("sma", "esm")}
        inputs = {name: esm_inputs(args, length, name, "pretraining") for name in models}
        pretraining = compared_training_steps(models, inputs, elements, args, timing, matmul_flops_per_s)
        del models
        log(f"inference, SMA vs ESM, length {length}")
        models = {name: esm_peer_model(args, length, name, "inference").eval() for name in ("sma", "esm")}
        inputs = {name: esm_inputs(args, length, name, "inference") for name in models}

        def embed(model, batch):
            def run():
                with torch.inference_mode(), autocast(args):
                    return model(**batch)

            return run

        times = measure({name: embed(models[name], inputs[name]) for name in models}, timing)
        inference = {name: summarize(times[name], elements) for name in models}
        inference.update(speedup(times, "sma", "esm"))
        rows.append({"length": length, "batch_size": args.esm_batch_size, "pretraining": pretraining,
                     "inference": inference})  # fmt: skip
        del models
    return rows


def bench_scaling(args, matmul_flops_per_s: float) -> dict:
    """Step time, achieved FLOP/s and peak step memory per length, one fresh model per length (warm-up outside the
    memory window)."""
    results = {}
    for encoder_type, lengths in (
        ("cross_attention", args.scaling_lengths), ("self_attention", args.self_attention_lengths)
    ):  # fmt: skip
        rows = []
        for length in lengths:
            log(f"scaling, {encoder_type}, length {length}")
            step, flops = sma_step(args, length, encoder_type=encoder_type)
            warm_up({"sma": step}, args.warmup, args.device)
            with PeakMemory(args.device) as memory:
                times = time_runs({"sma": step}, args.repeats, args.device)["sma"]
            summary = summarize(times, args.batch_size * length)
            rows.append({
                "length": length,
                **summary,
                "flops_per_step": flops,
                "flops_per_s": flops / summary["median_s"],
                "fraction_of_matmul": flops / summary["median_s"] / matmul_flops_per_s,
                "peak_mib": memory.peak_mib,
            })  # fmt: skip
            del step
        results[encoder_type] = rows
    return results


def bench_inference(args) -> list[dict]:
    """`SMAModel` pooled embeddings in eval mode under `torch.inference_mode`."""
    rows = []
    for length in args.lengths:
        log(f"inference, length {length}")
        torch.manual_seed(0)
        model = SMAModel(sma_config(args, length)).to(args.device).eval()
        ids = random_ids(args, length)

        def embed():
            with torch.inference_mode(), autocast(args):
                return model(input_ids=ids).pooler_output

        times = measure({"embed": embed}, args)["embed"]
        rows.append({"length": length, "batch_size": args.batch_size, **summarize(times, args.batch_size * length)})
    return rows


def machine_description(args) -> dict:
    if args.device.type == "cuda":
        processor = torch.cuda.get_device_name(args.device)
    else:
        processor = platform.processor() or platform.machine()
        if os.path.exists("/proc/cpuinfo"):
            with open("/proc/cpuinfo") as cpuinfo:
                names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
            processor = names[0] if names else processor
    return {
        "device": str(args.device),
        "processor": processor,
        "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **machine_load("start"),
    }


def other_cpu_use(interval: float = 0.5) -> float | None:
    """CPUs kept busy by other processes while this one sleeps for `interval` seconds (Linux /proc/stat), or None."""
    if not os.path.exists("/proc/stat"):
        return None

    def busy_and_total():
        with open("/proc/stat") as stat:
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
        total = user + nice + system + idle + iowait + irq + softirq + steal
        return total - idle - iowait, total

    busy_before, total_before = busy_and_total()
    time.sleep(interval)
    busy_after, total_after = busy_and_total()
    return round(os.cpu_count() * (busy_after - busy_before) / max(total_after - total_before, 1), 2)


def machine_load(when: str) -> dict:
    """Other processes' CPU use now, and the 1/5/15-minute load averages (which include this run's own work): timings
    taken while other processes compete for the cores are slow and noisy, multi-threaded ones the most."""
    load = [round(value, 2) for value in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {f"other_cpu_use_at_{when}": other_cpu_use(), f"load_average_at_{when}": load}


# --------------------------------------------------------------------------------------------------------- targets


def evaluate_targets(results: dict) -> list[dict]:
    """The targets against Perceiver, as far as this run measured the lengths they name."""
    targets = []

    def add(name, measured, goal, met, per_round=None):
        targets.append({"target": name, "measured": measured, "goal": goal, "met": met, "per_round": per_round})

    by_length = {row["length"]: row for row in results.get("training_vs_perceiver", [])}
    for length, goal in SPEEDUP_TARGETS.items():
        if length in by_length:
            row = by_length[length]
            name = f"training speed-up over Perceiver at {length}"
            add(name, row["speedup"], f">= {goal}x", row["speedup"] >= goal, row["per_round"])
    if "mask_cost" in results:
        overhead = results["mask_cost"]["time_over_random"]["self_guided"]
        add(
            f"self-guided / random step time at {results['mask_cost']['length']}",
            overhead, f"<= {MASK_OVERHEAD_TARGET}", overhead <= MASK_OVERHEAD_TARGET,
        )  # fmt: skip
    for row in results.get("vs_roberta", []):
        if row["length"] in PEER_TARGET_LENGTHS:
            for task, goal in PEER_SPEEDUP_TARGETS.items():
                result = row[task]
                name = f"self_attention {task.replace('_', '-')} step speed-up over RoBERTa at {row['length']}"
                add(name, result["speedup"], f">= {goal}x", result["speedup"] >= goal, result["per_round"])
    esm = {row["length"]: row for row in results.get("vs_esm", [])}
    for length in ESM_FLOP_TARGET_LENGTHS:
        if length in esm:
            fraction = esm[length]["pretraining"]["sma"]["fraction_of_matmul"]
            name = f"SMA protein-shape step FLOP/s / {results['machine']['dtype']} matmul FLOP/s at {length}"
            add(name, fraction, f">= {ESM_FLOP_FRACTION_TARGET}", fraction >= ESM_FLOP_FRACTION_TARGET)
    if ESM_MEMORY_TARGET_LENGTH in esm:
        peaks = esm[ESM_MEMORY_TARGET_LENGTH]["pretraining"]
        if peaks["sma"]["peak_mib"] and peaks["esm"]["peak_mib"]:
            share = peaks["sma"]["peak_mib"] / peaks["esm"]["peak_mib"]
            name = f"SMA peak step memory / ESM's at {ESM_MEMORY_TARGET_LENGTH}"
            add(name, share, f"<= {ESM_MEMORY_TARGET}", share <= ESM_MEMORY_TARGET)
    if 1024 in esm and 4096 in esm:
        ratio = esm[4096]["pretraining"]["sma"]["median_s"] / esm[1024]["pretraining"]["sma"]["median_s"]
        add("SMA protein-shape step time(4096) / time(1024)", ratio, f"<= {ESM_SCALING_TARGET}",
            ratio <= ESM_SCALING_TARGET)  # fmt: skip
    cross = {row["length"]: row["median_s"] for row in results.get("scaling", {}).get("cross_attention", [])}
    short, long = SCALING_LENGTHS_FOR_TARGET
    if short in cross and long in cross:
        ratio = cross[long] / cross[short]
        add(f"cross_attention time({long}) / time({short})", ratio, f"<= {SCALING_TARGET}", ratio <= SCALING_TARGET)
    if FLOP_TARGET_LENGTH in by_length:
        machine = results["machine"]
        gpu_bf16 = machine["device"].startswith("cuda") and machine["dtype"] == "bfloat16"
        goal = GPU_BF16_FLOP_FRACTION_TARGET if gpu_bf16 else FLOP_FRACTION_TARGET
        fraction = by_length[FLOP_TARGET_LENGTH]["sma_fraction_of_matmul"]
        name = f"SMA step FLOP/s / {machine['dtype']} matmul FLOP/s at {FLOP_TARGET_LENGTH}"
        add(name, fraction, f">= {goal}", fraction >= goal)
    return targets


# -------------------------------------------------------------------------------------------------------- printing


def _rate(summary: dict, key: str = "elements_per_s") -> str:
    return f"{summary[key]:,.0f} ({summary[key + '_min']:,.0f}-{summary[key + '_max']:,.0f})"


def _ms(summary: dict) -> str:
    return f"{summary['median_s'] * 1e3:,.1f} ({summary['min_s'] * 1e3:,.1f}-{summary['max_s'] * 1e3:,.1f})"


def _per_round(per_round: dict, digits: int = 2) -> str:
    """The per-round speed-ups' median and its interval, with the coverage where too few rounds give less than
    INTERVAL_CONFIDENCE."""
    short = f", {per_round['coverage']:.0%}" if per_round["coverage"] < INTERVAL_CONFIDENCE else ""
    return f"{per_round['median']:.{digits}f}x ({per_round['low']:.{digits}f}-{per_round['high']:.{digits}f}{short})"


def _mib(value) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def _time_share_lines(rows: list[dict], task: str, names: dict[str, str]) -> list[str]:
    """A table of where one training step of each model spends its time (`time_shares`), per length."""
    lines = [
        f"Where one {task.replace('_', '-')} step spends its time (torch.profiler, each operator's own time):",
        "",
        f"| model | length | {' | '.join(OPERATOR_KINDS)} | largest operators |",
        "|---|---:|" + "---:|" * len(OPERATOR_KINDS) + "---|",
    ]
    for row in rows:
        for name, label in names.items():
            shares = row[task][name]["time_shares"]
            largest = ", ".join(f"{op['operator']} {op['share']:.0%}" for op in shares["largest"][:3])
            kinds = " | ".join(f"{shares['shares'][kind]:.0%}" for kind in OPERATOR_KINDS)
            lines.append(f"| {label} | {row['length']} | {kinds} | {largest} |")
    return lines + [""]


def markdown(results: dict) -> str:
    machine, settings = results["machine"], results["settings"]
    lines = [
        "## SMA speed benchmark",
        "",
        f"Machine: {machine['processor']} ({machine['logical_cpus']} logical CPUs), device {machine['device']}, "
        f"{machine['threads']} torch threads, {machine['dtype']}; torch {machine['torch']}, "
        f"transformers {machine['transformers']}; CPUs busy with other work at start "
        f"{machine['other_cpu_use_at_start']}, load average {machine['load_average_at_start']}.",
        "",
        f"Sizes (sections 1-5): {settings['latents']} latents, width {settings['width']} (embedding = latent = "
        f"decoder width), {settings['layers']} latent self-attention layers, {settings['heads']} heads (1 "
        f"cross-attention head, 8 decoder heads), MLP {settings['mlp_ratio']}x width (decoder MLP 1x), vocabulary "
        f"{VOCAB_SIZE}, batch {settings['batch_size']}, masking ratio {MASKING_RATIO}. {settings['warmup']} warm-up "
        f"runs, {settings['repeats']} timed; medians with (min-max). Speed-up: the ratio of the medians; per round: "
        "the median of the per-round ratios (one step of each model per round) with a 95% interval for it.",
        "",
    ]
    if "training_vs_perceiver" in results:
        lines += [
            "Matched-size notes:",
            *[f"- {note}" for note in results["matching_notes"]],
            "",
            "### 1. Training step (forward + backward + AdamW), SMA vs PerceiverForMaskedLM",
            "",
            "| length | SMA elements/s | Perceiver elements/s | SMA speed-up | per round (95% interval) "
            "| GFLOP/step SMA, Perceiver | SMA GFLOP/s (of matmul) | Perceiver GFLOP/s (of matmul) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in results["training_vs_perceiver"]:
            lines.append(
                f"| {row['length']} | {_rate(row['sma'])} | {_rate(row['perceiver'])} | {row['speedup']:.2f}x "
                f"| {_per_round(row['per_round'])} "
                f"| {row['sma_flops_per_step'] / 1e9:,.1f}, {row['perceiver_flops_per_step'] / 1e9:,.1f} "
                f"| {row['sma_flops_per_s'] / 1e9:,.1f} ({row['sma_fraction_of_matmul']:.0%}) "
                f"| {row['perceiver_flops_per_s'] / 1e9:,.1f} ({row['perceiver_fraction_of_matmul']:.0%}) |"
            )
        lines += [
            "",
            "Matmul FLOPs are counted analytically (`sma_training_flops`, `perceiver_training_flops`). Where the two "
            "counts are equal (width 256, SMA decoding every position), SMA's speed-up cannot exceed 1 / Perceiver's "
            "share of the matmul rate; where SMA decodes only the masked positions, its count is the lower one.",
            "",
        ]
    if "mask_cost" in results:
        mask = results["mask_cost"]
        lines += [
            f"### 2. Cost of the mask (SMA, length {mask['length']}, same weights)",
            "",
            "| mask | step ms | elements/s | time / random |",
            "|---|---:|---:|---:|",
        ]
        for name, summary in mask["variants"].items():
            lines.append(f"| {name} | {_ms(summary)} | {_rate(summary)} | {mask['time_over_random'][name]:.3f} |")
        lines.append("")
    if "scaling" in results:
        lines += [
            "### 3. Scaling with input length (SMA training step)",
            "",
            "| mode | length | step ms | elements/s | GFLOP/s (of matmul) | peak step memory MiB "
            "| time / time(first) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for mode, rows in results["scaling"].items():
            for row in rows:
                lines.append(
                    f"| {mode} | {row['length']} | {_ms(row)} | {_rate(row)} "
                    f"| {row['flops_per_s'] / 1e9:,.1f} ({row['fraction_of_matmul']:.0%}) | {_mib(row['peak_mib'])} "
                    f"| {row['median_s'] / rows[0]['median_s']:.2f} |"
                )
        lines.append("")
    if "inference" in results:
        lines += [
            "### 4. Inference (SMAModel pooled embeddings, eval, no grad)",
            "",
            "| length | batch ms | elements/s |",
            "|---:|---:|---:|",
            *[f"| {row['length']} | {_ms(row)} | {_rate(row)} |" for row in results["inference"]],
            "",
        ]
    lines += [
        "### 5. Machine limit (n x n matmul)",
        "",
        "| dtype | n | GFLOP/s |",
        "|---|---:|---:|",
    ]
    for dtype_name, matmul in results["matmul"].items():
        rate = (
            f"{matmul['flops_per_s'] / 1e9:,.1f} "
            f"({matmul['flops_per_s_min'] / 1e9:,.1f}-{matmul['flops_per_s_max'] / 1e9:,.1f})"
        )
        lines.append(f"| {dtype_name} | {matmul['size']} | {rate} |")
    lines.append("")
    if "vs_roberta" in results:
        lines += [
            "### 6. SMA self_attention mode vs RoBERTa (ChemBERTa's architecture)",
            "",
            f"Batch {settings['peer_batch_size']}, {settings['peer_layers']} layers (SMA: input layer + "
            f"{settings['peer_layers'] - 1}), width {settings['width']}, {settings['heads']} heads, MLP "
            f"{settings['mlp_ratio']}x, vocabulary {VOCAB_SIZE}, masking ratio {PEER_MASKING_RATIO}. Speed-up = "
            "RoBERTa's median time / SMA's; per round: the per-round ratios' median (95% interval). Peak memory: one "
            "step each, in its own window.",
            "",
            "Matched-size notes:",
            *[f"- {note}" for note in results["roberta_notes"]],
            "",
            "| step | length | SMA ms | RoBERTa ms | SMA speed-up | per round (95% interval) "
            "| peak MiB SMA, RoBERTa | GFLOP/step SMA, RoBERTa | GFLOP/s SMA, RoBERTa (of matmul) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for task, label in (("pretraining", "pretraining (MLM)"), ("fine_tuning", "fine-tuning (classification)")):
            for row in results["vs_roberta"]:
                sma, roberta = row[task]["sma"], row[task]["roberta"]
                lines.append(
                    f"| {label} | {row['length']} | {_ms(sma)} | {_ms(roberta)} | {row[task]['speedup']:.2f}x "
                    f"| {_per_round(row[task]['per_round'])} "
                    f"| {_mib(sma['peak_mib'])}, {_mib(roberta['peak_mib'])} "
                    f"| {sma['flops_per_step'] / 1e9:,.1f}, {roberta['flops_per_step'] / 1e9:,.1f} "
                    f"| {sma['flops_per_s'] / 1e9:,.1f} ({sma['fraction_of_matmul']:.0%}), "
                    f"{roberta['flops_per_s'] / 1e9:,.1f} ({roberta['fraction_of_matmul']:.0%}) |"
                )
        lines += [
            "",
            "| inference (classifier logits, eval, no grad) | length | SMA elements/s | RoBERTa elements/s "
            "| SMA speed-up | per round (95% interval) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row in results["vs_roberta"]:
            inference = row["inference"]
            lines.append(
                f"| | {row['length']} | {_rate(inference['sma'])} | {_rate(inference['roberta'])} "
                f"| {inference['speedup']:.2f}x | {_per_round(inference['per_round'])} |"
            )
        lines.append("")
        for task in ("pretraining", "fine_tuning"):
            lines += _time_share_lines(results["vs_roberta"], task, {"sma": "SMA", "roberta": "RoBERTa"})
    if "vs_esm" in results:
        lines += [
            "### 7. SMA cross_attention mode (protein preset) vs ESM-2's architecture",
            "",
            f"Batch {settings['esm_batch_size']}, {settings['esm_repeats']} timed steps after "
            f"{settings['warmup']} untimed ones. Speed-up = ESM's median time / SMA's. Peak memory: one step each.",
            "",
            "Matched-size notes:",
            *[f"- {note}" for note in results["esm_notes"]],
            "",
            "| residues | SMA ms | ESM ms | SMA speed-up | per round (95% interval) | peak MiB SMA, ESM "
            "| GFLOP/step SMA, ESM | GFLOP/s SMA, ESM (of matmul) | inference residues/s SMA, ESM "
            "| inference speed-up |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in results["vs_esm"]:
            step, inference = row["pretraining"], row["inference"]
            sma, esm = step["sma"], step["esm"]
            lines.append(
                f"| {row['length']} | {_ms(sma)} | {_ms(esm)} | {step['speedup']:.2f}x "
                f"| {_per_round(step['per_round'])} "
                f"| {_mib(sma['peak_mib'])}, {_mib(esm['peak_mib'])} "
                f"| {sma['flops_per_step'] / 1e9:,.1f}, {esm['flops_per_step'] / 1e9:,.1f} "
                f"| {sma['flops_per_s'] / 1e9:,.1f} ({sma['fraction_of_matmul']:.0%}), "
                f"{esm['flops_per_s'] / 1e9:,.1f} ({esm['fraction_of_matmul']:.0%}) "
                f"| {_rate(inference['sma'])}, {_rate(inference['esm'])} | {inference['speedup']:.2f}x |"
            )
        lines.append("")
        lines += _time_share_lines(results["vs_esm"], "pretraining", {"sma": "SMA", "esm": "ESM"})
    lines += [
        "### Targets",
        "",
        "Met = the measured value (for a speed-up, the ratio of the medians) meets the goal. Where a speed-up's "
        "per-round interval holds the goal, this run cannot tell the target met from missed.",
        "",
        "| target | measured | per round (95% interval) | goal | met |",
        "|---|---:|---:|---:|---|",
    ]
    for target in results["targets"]:
        met = "yes" if target["met"] else "no"
        per_round = target["per_round"]
        interval = "" if per_round is None else _per_round(per_round, digits=3)
        lines.append(f"| {target['target']} | {target['measured']:.3f} | {interval} | {target['goal']} | {met} |")
    lines += [
        "",
        f"Elapsed: {results['elapsed_s']:.0f} s; at the end, CPUs busy with other work "
        f"{machine['other_cpu_use_at_end']}, load average {machine['load_average_at_end']}.",
    ]
    return "\n".join(lines)


def draw_esm_figure(rows: list[dict], path: Path):
    """Section 7 against the number of residues, log-log: the pretraining step's median time (with its min-max), the
    inference time per batch, the peak memory of a pretraining step; SMA and ESM side by side."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    lengths = [row["length"] for row in rows]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for name, label, color in (("sma", "SMA (cross_attention)", "tab:blue"), ("esm", "ESM-2 architecture", "tab:red")):
        step = [row["pretraining"][name] for row in rows]
        median = [s["median_s"] for s in step]
        spread = [[m - s["min_s"] for m, s in zip(median, step)], [s["max_s"] - m for m, s in zip(median, step)]]
        axes[0].errorbar(lengths, median, yerr=spread, marker="o", label=label, color=color, capsize=3)
        inference = [row["batch_size"] * row["length"] / row["inference"][name]["elements_per_s"] for row in rows]
        axes[1].plot(lengths, inference, marker="o", label=label, color=color)
        peaks = [row["pretraining"][name]["peak_mib"] for row in rows]
        if all(peak is not None for peak in peaks):
            axes[2].plot(lengths, peaks, marker="o", label=label, color=color)
    titles = ("pretraining step (s)", "inference, one batch (s)", "peak memory of a pretraining step (MiB)")
    for axis, title in zip(axes, titles):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(lengths, [str(length) for length in lengths])
        axis.set_xlabel("residues per sequence")
        axis.set_title(title)
        axis.grid(alpha=0.3, which="both")
    axes[0].legend()
    figure.suptitle(f"SMA vs ESM-2's architecture at matched width and depth, batch {rows[0]['batch_size']}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ------------------------------------------------------------------------------------------------------------ main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="bfloat16: autocast")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds (for CI)")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument("--figure", type=Path, help="draw section 7 (time and memory against residues) here, as PNG")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lengths", type=int, nargs="+", help="lengths of sections 1 and 4")
    parser.add_argument("--mask-length", type=int, help="length of section 2")
    parser.add_argument("--scaling-lengths", type=int, nargs="+", help="cross_attention lengths of section 3")
    parser.add_argument("--self-attention-lengths", type=int, nargs="+", help="self_attention lengths of section 3")
    parser.add_argument("--latents", type=int)
    parser.add_argument("--width", type=int, help="embedding = latent = decoder width")
    parser.add_argument("--layers", type=int, help="latent self-attention layers")
    parser.add_argument("--heads", type=int, help="heads of the latent self-attention layers")
    parser.add_argument("--mlp-ratio", type=int, help="encoder MLP width / width")
    parser.add_argument("--warmup", type=int, help="untimed runs before timing")
    parser.add_argument("--repeats", type=int, help="timed runs")
    parser.add_argument("--matmul-size", type=int, help="n of the n x n reference matmul")
    parser.add_argument("--peer-batch-size", type=int, help="batch of section 6 (self_attention)")
    parser.add_argument("--peer-lengths", type=int, nargs="+", help="lengths of section 6 (self_attention)")
    parser.add_argument("--peer-layers", type=int, help="layers of section 6, counting SMA's input layer")
    parser.add_argument("--esm-batch-size", type=int, help="batch of section 7 (SMA vs ESM)")
    parser.add_argument("--esm-lengths", type=int, nargs="+", help="residues of section 7")
    parser.add_argument("--esm-repeats", type=int, help="timed runs of section 7")
    parser.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="what to run (default: all)"
    )
    parser.set_defaults(**DEFAULTS)
    args = parser.parse_args(argv)
    if args.smoke:  # tiny defaults; flags given explicitly still win
        parser.set_defaults(**SMOKE)
        args = parser.parse_args(argv)
    if args.figure and "esm" not in args.sections:
        parser.error("--figure draws section 7: add esm to --sections.")
    args.device = torch.device(args.device)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    settings = {key: value for key, value in vars(args).items() if key not in ("device", "output", "figure")}
    results = {"machine": machine_description(args), "settings": settings, "matching_notes": matching_notes(args)}
    busy, threads = results["machine"]["other_cpu_use_at_start"], torch.get_num_threads()
    if args.device.type == "cpu" and busy is not None and busy + threads > os.cpu_count() + 0.25:
        log(
            f"warning: other processes keep {busy} of the {os.cpu_count()} CPUs busy and this run uses {threads} "
            "threads: the timings will be slow and noisy (multi-threaded ones the most)"
        )
    results["matmul"] = bench_matmul(args)
    reference = results["matmul"][args.dtype]["flops_per_s"]
    if "perceiver" in args.sections:
        results["training_vs_perceiver"] = bench_vs_perceiver(args, reference)
    if "mask_cost" in args.sections:
        results["mask_cost"] = bench_mask_cost(args)
    if "scaling" in args.sections:
        results["scaling"] = bench_scaling(args, reference)
    if "inference" in args.sections:
        results["inference"] = bench_inference(args)
    if "roberta" in args.sections:
        results["roberta_notes"] = roberta_notes(args)
        results["vs_roberta"] = bench_vs_roberta(args, reference)
    if "esm" in args.sections:
        results["esm_notes"] = esm_notes(args)
        results["vs_esm"] = bench_vs_esm(args, reference)
    results["targets"] = evaluate_targets(results)
    results["elapsed_s"] = time.perf_counter() - start
    results["machine"].update(machine_load("end"))
    print(markdown(results))
    if args.output:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    if args.figure and "vs_esm" in results:
        draw_esm_figure(results["vs_esm"], args.figure)
    return results


if __name__ == "__main__":
    main()
