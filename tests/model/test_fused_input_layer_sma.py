"""The first layer's fused path gives the explicit path's outputs, gradients and masks.

The explicit path is switched on for the whole model with `set_attn_implementation("eager")`: it is the public knob,
it runs the model exactly as before the fused path existed (every first-layer logit and probability materialised, the
mask read off them), and unlike `output_attentions=True` it changes neither the outputs that come back nor the
recording hooks. `output_attentions=True`, which forces the same path per call, is checked on its own below.
"""

import copy
import itertools

import pytest
import torch
from conftest import ENCODER_TYPES, INPUT_TYPES, ragged_attention_mask, random_inputs, tiny_config
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from sma_hf import SMAForMaskedModeling, SMAForSequenceClassification, SMAForTokenClassification, SMAModel
from sma_hf.masking_sma import (
    gather_query_rows,
    masked_positions_from_rows,
    random_masked_positions,
    sample_queries,
    self_guided_masked_positions,
)
from sma_hf.modeling_sma import SMAInputAttention


MODES = list(itertools.product(ENCODER_TYPES, INPUT_TYPES))
HEADS = ["model", "masked_modeling", "masked_modeling_given_mask", "sequence_classification", "token_classification"]
ATOL = 1e-5


def config_for(encoder_type, input_type, **overrides):
    return tiny_config(encoder_type=encoder_type, input_type=input_type, num_labels=3, **overrides)


def explicit_twin(model):
    """The same weights, every first-layer logit computed explicitly (the model as before the fused path)."""
    twin = copy.deepcopy(model)
    twin.set_attn_implementation("eager")
    return twin


class FirstLayerProbabilities:
    """Records what the first layer returned as its probabilities: None on the fused path."""

    def __init__(self, model):
        self.seen = []
        attention = next(module for module in model.modules() if isinstance(module, SMAInputAttention))
        self.handle = attention.register_forward_hook(lambda module, args, output: self.seen.append(output[1]))

    def fused(self) -> bool:
        self.handle.remove()
        assert self.seen
        return all(probs is None for probs in self.seen)


def spread_first_layer_logits(model, std=0.3):
    """Larger query and key weights in the first layer: logits a few units apart, so that the summed probabilities
    of the sampled rows are far apart compared with float rounding and no top-k can flip between matmul shapes."""
    attention = next(module for module in model.modules() if isinstance(module, SMAInputAttention))
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for projection in (attention.query, attention.key):
            projection.weight.copy_(torch.randn(projection.weight.shape, generator=generator) * std)


def head_model(head, config):
    if head == "model":
        return SMAModel(config)
    if head.startswith("masked_modeling"):
        return SMAForMaskedModeling(config)
    if head == "sequence_classification":
        return SMAForSequenceClassification(config)
    return SMAForTokenClassification(config)


def head_inputs(head, config, batch_size, length, side):
    inputs = {
        **random_inputs(config, batch_size, length),
        "attention_mask": ragged_attention_mask(batch_size, length, side),
    }
    generator = torch.Generator().manual_seed(3)
    if head == "masked_modeling_given_mask":
        inputs["masked_positions"] = (torch.rand(batch_size, length, generator=generator) < 0.3) & inputs[
            "attention_mask"
        ].bool()
        inputs["masked_positions"][:, 0] = False  # every row keeps a visible element
    elif head == "sequence_classification":
        inputs["labels"] = torch.randint(config.num_labels, (batch_size,), generator=generator)
    elif head == "token_classification":
        inputs["labels"] = torch.randint(config.num_labels, (batch_size, length), generator=generator)
    return inputs


def compared_outputs(head, out):
    names = ["last_hidden_state", "pooler_output"] if head == "model" else ["logits", "loss"]
    return {name: getattr(out, name) for name in names}


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("encoder_type,input_type", MODES)
def test_eval_outputs_equal_the_explicit_path(encoder_type, input_type, head, side):
    config = config_for(encoder_type, input_type)
    model = head_model(head, config).eval()
    assert model.config._attn_implementation == "sdpa"
    twin = explicit_twin(model)
    inputs = head_inputs(head, config, 4, 14, side)
    recorder = FirstLayerProbabilities(model)
    fused = model(**inputs)
    assert recorder.fused()
    recorder = FirstLayerProbabilities(twin)
    explicit = twin(**inputs)
    assert not recorder.fused()
    for name, value in compared_outputs(head, fused).items():
        torch.testing.assert_close(value, getattr(explicit, name), atol=ATOL, rtol=1e-5, msg=name)
    if head.startswith("masked_modeling"):
        assert torch.equal(fused.mask, explicit.mask)


def step(model, inputs, generator_seed=None):
    """Forward + backward; the loss, the mask (if any), the gradients and the generator's state afterwards."""
    model.zero_grad(set_to_none=True)
    generator = None if generator_seed is None else torch.Generator().manual_seed(generator_seed)
    extra = {} if generator is None else {"generator": generator}
    out = model(**inputs, **extra)
    out.loss.backward()
    grads = {name: parameter.grad for name, parameter in model.named_parameters() if parameter.grad is not None}
    return out, grads, None if generator is None else generator.get_state()


def assert_same_step(fused, explicit):
    (out, grads, state), (out_explicit, grads_explicit, state_explicit) = fused, explicit
    torch.testing.assert_close(out.loss, out_explicit.loss, atol=ATOL, rtol=1e-5)
    assert grads.keys() == grads_explicit.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_explicit[name], atol=ATOL, rtol=1e-4, msg=name)
    if state is not None:
        assert torch.equal(state, state_explicit)  # the same draws, in the same order


@pytest.mark.parametrize("encoder_type,input_type", MODES)
@pytest.mark.parametrize(
    "masking",
    ["given", "random", "self_guided_positions", "self_guided_inputs", "self_guided_inputs_random_mix_noise",
     "fine_tuning"],
)  # fmt: skip
def test_training_step_equals_the_explicit_path(encoder_type, input_type, masking):
    """Loss and every gradient of one training step, and the same mask from the same generator."""
    overrides = {}
    if masking == "random":
        overrides = {"masking_strategy": "random"}
    elif masking.startswith("self_guided_inputs"):
        overrides = {"mask_selection": "inputs"}
    if masking.endswith("random_mix_noise"):
        overrides.update(head_aggregation="random_mix", mask_self=encoder_type == "self_attention")
    config = config_for(encoder_type, input_type, **overrides)
    head = "sequence_classification" if masking == "fine_tuning" else "masked_modeling"
    model = head_model(head, config).train()
    model.set_mask_noise_scale(0.5 if masking.endswith("random_mix_noise") else 0.0)
    spread_first_layer_logits(model)
    twin = explicit_twin(model)
    inputs = head_inputs(head, config, 4, 16, "left")
    if masking == "given":
        inputs["masked_positions"] = head_inputs("masked_modeling_given_mask", config, 4, 16, "left")[
            "masked_positions"
        ]
    seed = None if masking in ("given", "fine_tuning") else 5
    recorder = FirstLayerProbabilities(model)
    fused = step(model, inputs, seed)
    # only the paper's selection in cross_attention mode still scores every latent (most of them are sampled)
    assert recorder.fused() == (not (masking.startswith("self_guided_inputs") and encoder_type == "cross_attention"))
    explicit = step(twin, inputs, seed)
    if head == "masked_modeling":
        assert torch.equal(fused[0].mask, explicit[0].mask)
        assert fused[0].mask.any()
    assert_same_step(fused, explicit)


@pytest.mark.parametrize("input_type", INPUT_TYPES)
@pytest.mark.parametrize("aggregation,noise", [("mean", 0.0), ("random_mix", 0.6)])
def test_sampled_rows_path_in_cross_attention_mode_equals_every_query(input_type, aggregation, noise):
    """cross_attention mode scores every latent by default; its sampled-row path (the switch the benchmark flips)
    gives the same masks, draws and step too."""
    config = config_for("cross_attention", input_type, head_aggregation=aggregation, mask_selection="inputs")
    model = SMAForMaskedModeling(config).train()
    model.set_mask_noise_scale(noise)
    spread_first_layer_logits(model)
    twin = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, SMAInputAttention):
            assert module.score_sampled_rows_only is False
            module.score_sampled_rows_only = True
    inputs = head_inputs("masked_modeling", config, 4, 40, "right")
    recorder = FirstLayerProbabilities(model)
    fused = step(model, inputs, 7)
    assert recorder.fused()
    explicit = step(twin, inputs, 7)
    assert torch.equal(fused[0].mask, explicit[0].mask)
    assert_same_step(fused, explicit)


def integer_queries_and_keys(batch, heads, queries, length, head_dim, seed):
    """Small integers: every logit is an exact integer in float32 whatever the matmul's shape or order, so the
    sampled rows' logits equal the full matrix's rows bit for bit; mostly distinct, far apart where they differ."""
    generator = torch.Generator().manual_seed(seed)
    query = torch.randint(-3, 4, (batch, heads, queries, head_dim), generator=generator).float()
    key = torch.randint(-3, 4, (batch, heads, length, head_dim), generator=generator).float()
    return query, key


MASK_OPTIONS = [("mean", False, 0.0, False), ("mean", False, 0.5, True), ("random_mix", False, 0.3, False),
                ("random_mix", True, 0.0, True), ("mean", True, 1.0, False)]  # fmt: skip


@pytest.mark.parametrize(
    "queries_are_inputs,aggregation,mask_self,noise,already",
    [(inputs, *options) for inputs in (False, True) for options in MASK_OPTIONS if inputs or not options[1]],
)  # mask_self needs input queries
def test_masks_from_sampled_rows_equal_masks_from_every_row(
    queries_are_inputs, aggregation, mask_self, noise, already
):
    batch, heads, length, head_dim = 5, 3, 30, 4
    num_queries = length if queries_are_inputs else 12
    valid = torch.arange(length)[None, :] < torch.tensor([30, 26, 17, 9, 4])[:, None]
    already_masked = None
    if already:
        already_masked = (torch.rand(batch, length, generator=torch.Generator().manual_seed(1)) < 0.1) & valid
        already_masked[:, 0] = False
    for seed in range(4):
        query, key = integer_queries_and_keys(batch, heads, num_queries, length, head_dim, seed)
        options = dict(head_aggregation=aggregation, mask_self=mask_self, noise=noise, already_masked=already_masked)
        full_generator = torch.Generator().manual_seed(100 + seed)
        expected = self_guided_masked_positions(
            query @ key.transpose(2, 3), valid, 0.3, 2.0, queries_are_inputs, generator=full_generator, **options
        )
        rows_generator = torch.Generator().manual_seed(100 + seed)
        queries = sample_queries(valid, num_queries, 0.3, 2.0, queries_are_inputs, rows_generator)
        row_scores = gather_query_rows(query, queries.rows) @ key.transpose(2, 3)
        assert row_scores.shape[2] < num_queries or not queries_are_inputs
        mask = masked_positions_from_rows(row_scores, queries, valid, 0.3, generator=rows_generator, **options)
        assert torch.equal(mask, expected)
        assert torch.equal(rows_generator.get_state(), full_generator.get_state())
        # and the draws were real: the generator moved
        assert not torch.equal(rows_generator.get_state(), torch.Generator().manual_seed(100 + seed).get_state())


def test_sampled_queries_are_the_ones_the_full_path_samples():
    valid = torch.arange(20)[None, :] < torch.tensor([20, 11, 3])[:, None]
    queries = sample_queries(valid, 20, 0.3, 3, queries_are_inputs=True, generator=torch.Generator().manual_seed(0))
    assert queries.counts.tolist() == [2, 1, 1]
    assert queries.rows.shape == (3, 2)  # round(20 x 0.3 / 3) slots, from the shapes alone
    for row, count in enumerate(queries.counts.tolist()):
        picked = queries.rows[row][queries.sampled[row]]
        assert len(picked) == count and valid[row, picked].all()
    with pytest.raises(ValueError, match="input positions"):
        sample_queries(valid, 8, 0.3, 3, queries_are_inputs=True)


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_random_masks_need_no_logits_and_draw_the_same(encoder_type):
    config = config_for(encoder_type, "discrete", masking_strategy="random")
    model = SMAForMaskedModeling(config).train()
    inputs = head_inputs("masked_modeling", config, 3, 20, "right")
    generator = torch.Generator().manual_seed(4)
    recorder = FirstLayerProbabilities(model)
    mask = model(**inputs, generator=generator).mask
    assert recorder.fused()
    expected_generator = torch.Generator().manual_seed(4)
    expected = random_masked_positions(inputs["attention_mask"].bool(), config.masking_ratio, expected_generator)
    assert torch.equal(mask, expected)
    assert torch.equal(generator.get_state(), expected_generator.get_state())


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_output_attentions_still_returns_the_first_layers_probabilities(encoder_type):
    config = config_for(encoder_type, "discrete", head_aggregation="random_mix")
    model = SMAForMaskedModeling(config).train()
    model.set_mask_noise_scale(0.0)
    spread_first_layer_logits(model)
    inputs = head_inputs("masked_modeling", config, 3, 12, "right")
    plain = model(**inputs, generator=torch.Generator().manual_seed(2))
    recorded = model(**inputs, generator=torch.Generator().manual_seed(2), output_attentions=True)
    assert torch.equal(plain.mask, recorded.mask)  # the same mask, drawn on the other path
    torch.testing.assert_close(plain.loss, recorded.loss, atol=ATOL, rtol=1e-5)
    first = recorded.attentions[0]
    heads = config.num_cross_attention_heads if encoder_type == "cross_attention" else config.num_attention_heads
    queries = config.num_latents if encoder_type == "cross_attention" else 12
    assert first.shape == (3, heads, queries, 12)
    torch.testing.assert_close(first.sum(dim=-1), torch.ones(3, heads, queries))
    hidden = recorded.mask | ~inputs["attention_mask"].bool()
    assert (first.permute(0, 3, 1, 2)[hidden] == 0).all()  # masked and padded inputs get no attention
    # the explicit twin records the same probabilities
    twin = explicit_twin(model)
    again = twin(**inputs, generator=torch.Generator().manual_seed(2), output_attentions=True)
    torch.testing.assert_close(again.attentions[0], first)


def test_config_output_attentions_with_eager_attention_records_the_first_layer():
    config = config_for("self_attention", "discrete", output_attentions=True, attn_implementation="eager")
    model = SMAModel(config).eval()
    out = model(**random_inputs(config, 2, 10))
    assert out.attentions[0].shape == (2, config.num_attention_heads, 10, 10)


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_bf16_autocast_on_the_fused_path(encoder_type):
    """Under bf16 autocast the fused path runs in bf16 and the mask is still chosen in float32 (the same mask as
    the explicit path's under the same autocast, when the logits are far apart). The paper's selection: selection by
    position draws the mask before either path runs."""
    config = config_for(encoder_type, "discrete", masking_ratio=0.15, mask_selection="inputs")
    model = SMAForMaskedModeling(config).train()
    model.set_mask_noise_scale(0.0)
    spread_first_layer_logits(model, std=1.0)
    for module in model.modules():
        if isinstance(module, SMAInputAttention):
            module.score_sampled_rows_only = True
    inputs = random_inputs(config, 3, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**inputs, generator=torch.Generator().manual_seed(0))
        explicit = explicit_twin(model)(**inputs, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert float((out.mask & explicit.mask).sum() / explicit.mask.sum()) > 0.9


def test_eager_attention_is_the_explicit_path_everywhere():
    config = config_for("self_attention", "continuous", attn_implementation="eager")
    model = SMAForSequenceClassification(config).eval()
    recorder = FirstLayerProbabilities(model)
    model(**random_inputs(config, 2, 9))
    assert not recorder.fused()


def test_fused_first_layer_masks_keys_only(monkeypatch):
    """The fused path hands sdpa one bool mask over the keys, [batch, 1, 1, inputs]: memory linear in the inputs."""
    config = config_for("self_attention", "discrete")
    model = SMAModel(config).eval()
    seen = []
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def spy(module, query, key, value, attention_mask, **kwargs):
        if isinstance(module, SMAInputAttention):
            seen.append(attention_mask)
        return sdpa(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._local_mapping, "sdpa", spy)
    attention_mask = ragged_attention_mask(3, 11)
    model(**random_inputs(config, 3, 11), attention_mask=attention_mask)
    (mask,) = seen
    assert mask.dtype == torch.bool and mask.shape == (3, 1, 1, 11)
    assert torch.equal(mask[:, 0, 0], attention_mask.bool())


def test_explicit_twin_has_the_same_weights_and_its_own_config():
    """A guard for the comparisons in this file."""
    model = SMAForMaskedModeling(config_for("cross_attention", "discrete"))
    twin = explicit_twin(model)
    for (name, parameter), (_, other) in zip(model.named_parameters(), twin.named_parameters()):
        assert torch.equal(parameter, other), name
    assert model.config._attn_implementation == "sdpa" and twin.config._attn_implementation == "eager"


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_attention_pooling_with_folded_projections_equals_the_attention_module(encoder_type, attn_implementation):
    """The pooler folds its key and value projections into its one query: the same pooled vector and gradients as
    `SMAAttention` projecting every state, padding included."""
    config = config_for(encoder_type, "continuous", attn_implementation=attn_implementation)
    pooler = SMAForSequenceClassification(config).sma.pooler.train()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # away from the initialisation's tiny values, where every score is about equal
        pooler.query.copy_(torch.randn(pooler.query.shape, generator=generator))
        for parameter in pooler.attention.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    states = torch.randn(3, 9, config.hidden_size, generator=generator, requires_grad=True)
    hidden_mask = torch.ones(3, 9, dtype=torch.bool)
    hidden_mask[1, 5:] = False
    hidden_mask[2, :2] = False
    pooled = pooler(states, hidden_mask)
    query = pooler.query.expand(3, -1, -1)
    mask = create_bidirectional_mask(
        config=config, inputs_embeds=query, attention_mask=hidden_mask, encoder_hidden_states=states
    )
    reference = pooler.attention(query, states, mask)[0][:, 0]
    torch.testing.assert_close(pooled, reference, atol=ATOL, rtol=1e-5)
    names = ["states", *(name for name, _ in pooler.named_parameters())]
    parameters = [states, *pooler.parameters()]
    grads = torch.autograd.grad(pooled.square().sum(), parameters)
    reference_grads = torch.autograd.grad(reference.square().sum(), parameters)
    scale = max(float(grad.abs().max()) for grad in reference_grads)
    for name, grad, reference_grad in zip(names, grads, reference_grads):
        if name == "attention.key.bias":
            # it shifts every score of a head alike, which the softmax ignores: 0 up to rounding in both
            assert max(float(grad.abs().max()), float(reference_grad.abs().max())) < 1e-4 * scale
        else:  # float32 rounding relative to the gradients' size (large random weights here)
            torch.testing.assert_close(grad, reference_grad, atol=ATOL * scale, rtol=1e-4, msg=name)
    # padding content changes nothing
    changed = states.detach().clone()
    changed[~hidden_mask] = 1e3
    torch.testing.assert_close(pooler(changed, hidden_mask), pooled, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("sample", [False, True])
def test_self_attention_first_layer_runs_over_the_visible_elements_only(sample):
    """On the fused path the mask comes first, and the first layer's queries, keys, values and MLP see only the
    visible elements, packed to the front (the explicit path computes every element and drops the hidden ones
    after the layer)."""
    config = config_for("self_attention", "discrete")
    model = SMAForMaskedModeling(config).train()
    inputs = head_inputs("masked_modeling", config, 3, 20, "left")
    if not sample:
        inputs["masked_positions"] = head_inputs("masked_modeling_given_mask", config, 3, 20, "left")[
            "masked_positions"
        ]
    attention = model.sma.encoder.input_layer.attention
    shapes = []
    handle = attention.register_forward_hook(lambda module, args, output: shapes.append(args[0].shape[1]))
    out = model(**inputs, generator=torch.Generator().manual_seed(0))
    handle.remove()
    visible = inputs["attention_mask"].bool() & ~out.mask
    assert shapes == [int(visible.sum(dim=1).max())] and shapes[0] < 20
