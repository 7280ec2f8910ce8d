"""The speed benchmark's smoke mode runs end to end, and its FLOP counter agrees with independent counts."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import PerceiverForMaskedLM

from sma_hf import SMAConfig, SMAForMaskedModeling


ROOT = Path(__file__).resolve().parents[1]
SPEED_SCRIPT = ROOT / "benchmarks" / "speed.py"


@pytest.fixture(scope="module")
def speed():
    """benchmarks/speed.py as a module (benchmarks/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("speed_benchmark", SPEED_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flop_config(encoder_type="cross_attention", input_type="discrete") -> SMAConfig:
    return SMAConfig(
        input_type=input_type,
        input_channels=3,
        encoder_type=encoder_type,
        num_latents=4,
        embedding_size=16,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        decoder_hidden_size=8,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=24,
        max_position_embeddings=20,
        masking_ratio=0.25,
        # eager attention: FlopCounterMode has no formula for CPU sdpa kernels and would count them as 0
        attn_implementation="eager",
    )


@pytest.mark.slow
def test_smoke_run_writes_every_section(tmp_path, speed):
    output = tmp_path / "r.json"
    completed = subprocess.run(
        [sys.executable, str(SPEED_SCRIPT), "--smoke", "--device", "cpu", "--output", str(output),
         "--figure", str(tmp_path / "esm.png")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "### 1. Training step" in completed.stdout
    assert (tmp_path / "esm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads(output.read_text())

    machine = results["machine"]
    assert machine["processor"] and machine["torch"] and machine["transformers"]
    assert machine["threads"] > 0 and machine["dtype"] == "float32"
    if sys.platform == "linux":
        assert machine["other_cpu_use_at_start"] >= 0 and machine["other_cpu_use_at_end"] >= 0
    assert results["matching_notes"]

    assert results["matmul"]["float32"]["flops_per_s"] > 0
    lengths = results["settings"]["lengths"]
    assert [row["length"] for row in results["training_vs_perceiver"]] == lengths
    for row in results["training_vs_perceiver"]:
        for model in ("sma", "perceiver"):
            assert row[model]["elements_per_s"] > 0 and row[model]["median_s"] > 0
        assert row["speedup"] > 0
        assert 0 < row["per_round"]["low"] <= row["per_round"]["median"] <= row["per_round"]["high"]
        for model in ("sma", "perceiver"):
            assert row[f"{model}_flops_per_step"] > 0 and row[f"{model}_flops_per_s"] > 0
            assert row[f"{model}_fraction_of_matmul"] > 0

    variants = results["mask_cost"]["variants"]
    assert set(variants) == {"self_guided", "random", "explicit"}
    assert all(summary["elements_per_s"] > 0 for summary in variants.values())
    assert all(ratio > 0 for ratio in results["mask_cost"]["time_over_random"].values())

    scaling = results["scaling"]
    assert [row["length"] for row in scaling["cross_attention"]] == results["settings"]["scaling_lengths"]
    assert [row["length"] for row in scaling["self_attention"]] == results["settings"]["self_attention_lengths"]
    for row in scaling["cross_attention"] + scaling["self_attention"]:
        assert row["median_s"] > 0 and row["elements_per_s"] > 0
        if sys.platform == "linux":
            assert row["peak_mib"] > 0

    assert [row["length"] for row in results["inference"]] == lengths
    assert all(row["elements_per_s"] > 0 for row in results["inference"])
    assert any(target["target"].startswith("self-guided") for target in results["targets"])
    for target in results["targets"]:  # speed-ups carry their interval, other targets none
        assert (target["per_round"] is not None) == ("speed-up" in target["target"])
    assert results["elapsed_s"] > 0

    # SMA self_attention mode vs RoBERTa
    assert results["roberta_notes"] and "### 6. SMA self_attention mode vs RoBERTa" in completed.stdout
    assert [row["length"] for row in results["vs_roberta"]] == results["settings"]["peer_lengths"]
    for row in results["vs_roberta"]:
        for task in ("pretraining", "fine_tuning", "inference"):
            assert row[task]["speedup"] > 0
            assert 0 < row[task]["per_round"]["low"] <= row[task]["per_round"]["high"]
            for model in ("sma", "roberta"):
                assert row[task][model]["median_s"] > 0 and row[task][model]["elements_per_s"] > 0
        for task in ("pretraining", "fine_tuning"):
            for model in ("sma", "roberta"):
                assert row[task][model]["flops_per_step"] > 0 and row[task][model]["fraction_of_matmul"] > 0
                if sys.platform == "linux":
                    assert row[task][model]["peak_mib"] > 0

    # SMA cross_attention mode (protein preset) vs ESM-2's architecture
    assert results["esm_notes"] and "### 7. SMA cross_attention mode (protein preset) vs ESM-2" in completed.stdout
    assert [row["length"] for row in results["vs_esm"]] == results["settings"]["esm_lengths"]
    for row in results["vs_esm"]:
        for task in ("pretraining", "inference"):
            assert row[task]["speedup"] > 0 and 0 < row[task]["per_round"]["low"] <= row[task]["per_round"]["high"]
            for model in ("sma", "esm"):
                summary = row[task][model]
                assert summary["median_s"] > 0 and len(summary["times_s"]) == results["settings"]["esm_repeats"]
        for model in ("sma", "esm"):
            assert row["pretraining"][model]["flops_per_step"] > 0
            shares = row["pretraining"][model]["time_shares"]
            assert shares["shares"]["matmul"] > 0 and set(shares["shares"]) == set(speed.OPERATOR_KINDS)
            assert len(shares["largest"]) == 5 and shares["largest"][0]["share"] >= shares["largest"][-1]["share"]
            if sys.platform == "linux":
                assert row["pretraining"][model]["peak_mib"] > 0
        assert row["pretraining"]["esm"]["time_shares"]["shares"]["attention kernel"] > 0  # sdpa in every layer


@pytest.mark.slow
def test_sections_run_alone(tmp_path, speed):
    """One section alone, at a length that the RoBERTa targets name, so that its speed-up targets are evaluated."""
    output = tmp_path / "r.json"
    completed = subprocess.run(
        [sys.executable, str(SPEED_SCRIPT), "--smoke", "--device", "cpu", "--sections", "roberta",
         "--peer-lengths", "128", "--repeats", "6", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(output.read_text())
    assert "vs_roberta" in results and "matmul" in results
    for skipped in ("training_vs_perceiver", "mask_cost", "scaling", "inference"):
        assert skipped not in results
    assert "### 6." in completed.stdout and "### 1." not in completed.stdout

    targets = {target["target"]: target for target in results["targets"]}
    row = results["vs_roberta"][0]
    for task in ("pretraining", "fine_tuning"):
        name = f"self_attention {task.replace('_', '-')} step speed-up over RoBERTa at 128"
        assert targets[name]["measured"] == row[task]["speedup"]
        assert targets[name]["met"] == (row[task]["speedup"] >= speed.PEER_SPEEDUP_TARGETS[task])
        per_round = targets[name]["per_round"]
        assert per_round == row[task]["per_round"] and per_round["coverage"] > 0.95  # 6 rounds reach 95%
        line = next(line for line in completed.stdout.splitlines() if line.startswith(f"| {name} |"))
        assert f"| {per_round['median']:.3f}x ({per_round['low']:.3f}-{per_round['high']:.3f}) |" in line


def test_roberta_peer_has_smas_sizes(speed):
    args = speed.parse_args([])
    length = 512
    sma, roberta = speed.sma_peer_config(args, length), speed.roberta_config(args, length)
    assert sma.encoder_type == "self_attention" and sma.num_hidden_layers + 1 == roberta.num_hidden_layers == 4
    assert sma.hidden_size == sma.embedding_size == roberta.hidden_size == 256
    assert sma.num_attention_heads == roberta.num_attention_heads == 8
    assert sma.intermediate_size == roberta.intermediate_size == 1024
    assert sma.vocab_size == roberta.vocab_size == speed.VOCAB_SIZE
    assert sma.masking_ratio == speed.PEER_MASKING_RATIO == 0.3 and args.peer_batch_size == 16
    assert args.peer_lengths == [128, 512]
    assert roberta.hidden_dropout_prob == sma.hidden_dropout_prob == 0.0
    assert roberta.attention_probs_dropout_prob == sma.attention_probs_dropout_prob == 0.0
    # RoBERTa's MLM input: the same share of ids replaced by [MASK], labelled there only
    inputs = speed.peer_inputs(args, length, "roberta", "pretraining")
    masked = inputs["labels"] != -100
    assert (masked.sum(dim=1) == speed.masked_count(length, 0.3)).all()
    assert (inputs["input_ids"][masked] == speed.MASK_TOKEN_ID).all()


def test_median_interval_is_the_pair_of_order_statistics_with_95_percent_coverage(speed):
    from scipy.stats import binom  # scikit-learn's dependency (the test extra): an independent count

    for n in range(1, 41):
        values = [float(value) for value in range(n, 0, -1)]  # x_(i) = i, given in reverse
        interval = speed.median_interval(values)
        j = round(interval["low"])
        assert interval["high"] == n + 1 - j
        assert interval["coverage"] == pytest.approx(1 - 2 * binom.cdf(j - 1, n, 0.5))
        if n >= 6:  # enough values for 95%: the narrowest such pair, as one more step inward falls short
            assert interval["coverage"] >= 0.95 and 1 - 2 * binom.cdf(j, n, 0.5) < 0.95
        else:
            assert j == 1  # the range
    assert speed.median_interval(list(range(1, 16)))["low"] == 4  # 15 rounds: the 4th and 12th (96.5%)


def test_speedup_pairs_the_rounds(speed):
    """A machine that slows down through the run spreads both models' times, not their per-round ratio."""
    sma = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    result = speed.speedup({"sma": sma, "peer": [1.5 * time for time in sma]}, "sma", "peer")
    assert result["speedup"] == pytest.approx(1.5)
    assert result["per_round"] == pytest.approx({"median": 1.5, "low": 1.5, "high": 1.5, "coverage": 1 - 2 / 2**7})
    # the two estimates part: the medians' ratio is 3 / 2, the per-round ratios are 3, 1 and 2
    result = speed.speedup({"sma": [1.0, 2.0, 3.0], "peer": [3.0, 2.0, 6.0]}, "sma", "peer")
    assert result["speedup"] == 1.5
    assert result["per_round"] == {"median": 2.0, "low": 1.0, "high": 3.0, "coverage": 0.75}


def test_flop_formula_matches_a_hand_count(speed):
    config = flop_config()  # discrete ids, cross_attention
    # batch, length, latents, widths, vocabulary: the letters of the formula's docstring
    B, L, N, E, H, I, D, J, V = 2, 20, 4, 16, 16, 32, 8, 24, 262  # noqa: E741
    first_layer = (
        2 * B * N * H * H  # latent queries
        + 2 * (2 * B * L * E * H)  # keys and values of the inputs
        + 2 * (2 * B * N * L * H)  # scores and probs @ values (all heads together)
        + 2 * B * N * H * H  # output projection
        + 2 * (2 * B * N * H * I)  # MLP in and out
    )
    assert first_layer == 4096 + 40960 + 10240 + 4096 + 16384
    latent_layer = 4 * (2 * B * N * H * H) + 2 * (2 * B * N * N * H) + 2 * (2 * B * N * H * I)
    assert latent_layer == 16384 + 2048 + 16384
    decoder = (
        2 * (2 * B * L * D * D)  # position queries and output projection
        + 2 * (2 * B * N * H * D)  # keys and values of the latents
        + 2 * (2 * B * L * N * D)  # scores and probs @ values
        + 2 * (2 * B * L * D * J)  # MLP
        + 2 * B * L * D * V  # output layer
    )
    assert decoder == 10240 + 4096 + 5120 + 30720 + 167680
    forward = first_layer + 2 * latent_layer + decoder
    assert forward == 363264
    assert speed.sma_forward_flops(config, B, L) == forward
    assert speed.sma_training_flops(config, B, L) == 3 * forward
    # decoding only the 5 masked positions (round(0.25 x 20)): the decoder's per-position terms shrink by 5/20
    P = 5
    decoder_masked_only = (
        2 * (2 * B * P * D * D) + 2 * (2 * B * N * H * D) + 2 * (2 * B * P * N * D) + 2 * (2 * B * P * D * J)
        + 2 * B * P * D * V
    )  # fmt: skip
    assert decoder_masked_only == 2560 + 4096 + 1280 + 7680 + 41920
    forward_masked_only = first_layer + 2 * latent_layer + decoder_masked_only
    assert speed.sma_training_flops(config, B, L, num_decoded=P) == 3 * forward_masked_only


@pytest.mark.parametrize("input_type", ["discrete", "continuous"])
@pytest.mark.parametrize("encoder_type", ["cross_attention", "self_attention"])
def test_flop_formula_matches_torch_flop_counter(speed, encoder_type, input_type):
    """FlopCounterMode counts 2*m*n*k for every mm/addmm/bmm that actually runs, forward and backward. With an explicit
    mask (no mask sampling, whose score sum the formula leaves out) and eager attention, the counts agree exactly.
    The model may decode every position or only the masked ones in training; the logits say which."""
    config = flop_config(encoder_type, input_type)
    batch_size, length = 2, 20
    model = SMAForMaskedModeling(config).train()
    if input_type == "discrete":
        inputs = {"input_ids": torch.randint(6, config.vocab_size, (batch_size, length))}
    else:
        inputs = {"inputs": torch.randn(batch_size, length, config.input_channels)}
    mask = speed.random_mask(batch_size, length, config.masking_ratio)
    num_masked = speed.masked_count(length, config.masking_ratio)
    assert (mask.sum(dim=1) == num_masked).all()

    with FlopCounterMode(display=False) as forward_counter:
        num_decoded = model(**inputs, masked_positions=mask).logits.shape[1]
    assert num_decoded in (length, num_masked)
    expected = speed.sma_forward_flops(config, batch_size, length, num_masked, num_decoded)
    assert forward_counter.get_total_flops() == expected

    with FlopCounterMode(display=False) as step_counter:
        model(**inputs, masked_positions=mask).loss.backward()
    assert step_counter.get_total_flops() == speed.sma_training_flops(config, batch_size, length, num_decoded)


@pytest.mark.parametrize("width", [32, 256])  # 256 = the channels Perceiver's decoder hard-codes for queries and keys
def test_perceiver_flop_formula_matches_torch_flop_counter(speed, width):
    """Perceiver computes every attention eagerly, so FlopCounterMode sees all of its matmuls."""
    args = speed.parse_args(["--smoke", "--width", str(width)])
    length = 16
    model = PerceiverForMaskedLM(speed.perceiver_config(args, length)).train()
    ids = speed.random_ids(args, length)
    mask = speed.random_mask(args.batch_size, length, speed.MASKING_RATIO)
    inputs = {"input_ids": ids.masked_fill(mask, speed.MASK_TOKEN_ID), "labels": ids.masked_fill(~mask, -100)}
    with FlopCounterMode(display=False) as counter:
        model(**inputs).loss.backward()
    assert counter.get_total_flops() == speed.perceiver_training_flops(args, length)
    if width == 256:  # matched sizes: the same matmul work as SMA
        sma_flops = speed.sma_training_flops(speed.sma_config(args, length), args.batch_size, length)
        assert speed.perceiver_training_flops(args, length) == sma_flops


def test_counted_flops_of_the_sdpa_step(speed):
    """`counted_step_flops` counts the CPU sdpa kernels (no formula in torch) as the analytic count does: with an
    explicit mask, a step counts exactly `sma_training_flops`. In self_attention mode the first layer runs over the
    visible elements only: with embedding = hidden width it counts as one more latent layer."""
    args = speed.parse_args(["--smoke"])
    batch_size, length = 2, 20
    mask = speed.random_mask(batch_size, length, 0.25)
    inputs = {"input_ids": torch.randint(6, 262, (batch_size, length)), "masked_positions": mask}

    config = flop_config("cross_attention")
    config._attn_implementation = "sdpa"
    model = SMAForMaskedModeling(config).train()
    assert model.config._attn_implementation == "sdpa"
    num_decoded = model(**inputs).logits.shape[1]
    expected = speed.sma_training_flops(config, batch_size, length, num_decoded)
    assert speed.counted_step_flops(model, inputs, args) == expected

    config = flop_config("self_attention")
    config._attn_implementation = "sdpa"
    model = SMAForMaskedModeling(config).train()
    assert model(**inputs).logits.shape[1] == 5  # only the masked positions are decoded
    B, T, P, H, I, D, J, V = batch_size, 15, 5, 16, 32, 8, 24, 262  # noqa: E741
    latent_layer = 4 * 2 * B * T * H * H + 2 * 2 * B * T * T * H + 2 * 2 * B * T * H * I
    decoder = 2 * 2 * B * P * D * D + 2 * 2 * B * T * H * D + 2 * 2 * B * P * T * D + 2 * 2 * B * P * D * J
    decoder += 2 * B * P * D * V
    forward = (1 + config.num_hidden_layers) * latent_layer + decoder
    assert speed.counted_step_flops(model, inputs, args) == 3 * forward
    assert speed.sma_training_flops(config, batch_size, length, P) == 3 * forward


def test_the_esm_peer_matches_the_protein_preset(speed):
    from sma_hf.tools.common import load_sma_config

    args = speed.parse_args([])
    sma, esm = speed.esm_sma_config(args, 2048), speed.esm_config(args, 2048)
    preset = load_sma_config(None, speed.ESM_PRESET)
    changed = {name for name in SMAConfig.__annotations__ if getattr(sma, name) != getattr(preset, name)}
    assert changed == {"max_position_embeddings", "hidden_dropout_prob", "attention_probs_dropout_prob"}
    assert sma.max_position_embeddings == 2048 and sma.encoder_type == "cross_attention"
    assert (esm.hidden_size, esm.num_attention_heads, esm.intermediate_size) == (
        sma.hidden_size, sma.num_attention_heads, sma.intermediate_size)  # fmt: skip
    assert esm.num_hidden_layers == sma.num_hidden_layers + 1  # SMA's input layer counts as one
    assert esm.position_embedding_type == "rotary" and esm.hidden_dropout_prob == 0.0


def test_operator_kinds(speed):
    """The profile's grouping: matmuls by their aten names, every sdpa kernel as attention, the rest apart."""
    assert {speed.operator_kind(name) for name in ("aten::mm", "aten::addmm", "aten::bmm")} == {"matmul"}
    for name in ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", "aten::_efficient_attention_forward"):
        assert speed.operator_kind(name) == "attention kernel"
    assert speed.operator_kind("aten::native_layer_norm_backward") == "layer norm"
    assert speed.operator_kind("aten::gelu") == speed.operator_kind("aten::matmul") == "other"
