"""The first layer against a plain reference of it: the same outputs, gradients and masks.

The model's first layer draws its mask first (from the sampled query rows' logits only, by position, or at random)
and then attends through `config._attn_implementation` with the hidden inputs masked out of its keys, over the visible
elements only where a mask of pretraining size was applied. `reference_first_layer` below is the same layer written
as the method reads: every logit and probability materialised, the paper's mask read off every query's logits with
`self_guided_masked_positions`, the masked inputs' logits set to -inf, every element computed and the hidden ones
dropped after the layer. The twin of a model runs it in place of the model's layer, with the same weights.
"""

import copy
import itertools
import math
import types

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
from sma_hf.modeling_sma import SMAEncoderOutput, SMAInputAttention, SMAInputLayer, visible_elements


MODES = list(itertools.product(ENCODER_TYPES, INPUT_TYPES))
HEADS = ["model", "masked_modeling", "masked_modeling_given_mask", "sequence_classification", "token_classification"]
ATOL = 1e-5


def config_for(encoder_type, input_type, **overrides):
    return tiny_config(encoder_type=encoder_type, input_type=input_type, num_labels=3, **overrides)


def reference_first_layer(layer, embeddings, elements, sample_mask, generator=None, position_states=None, **kwargs):
    """`SMAInputLayer.forward` as the method reads (see the module docstring)."""
    config, attention = layer.config, layer.attention
    valid, mask = elements.valid, elements.masked_positions
    normed = layer.input_layer_norm(embeddings)
    if layer.cross_attention:
        residual = layer.latents.expand(embeddings.shape[0], -1, -1)
        queries = layer.latent_layer_norm(residual)
    else:
        residual, queries = embeddings, normed

    def heads(projection, states):
        return projection(states).view(*states.shape[:2], attention.num_heads, -1).transpose(1, 2)

    query, key, value = heads(attention.query, queries), heads(attention.key, normed), heads(attention.value, normed)
    logits = query @ key.transpose(2, 3) * attention.scaling
    if sample_mask:
        if config.masking_strategy == "random":
            mask = random_masked_positions(valid, config.masking_ratio, generator, mask)
        elif position_states is not None:  # the selection by position has its own tests (test_modeling_sma.py)
            positions = layer.input_layer_norm(position_states)
            mask = attention.draw_mask_by_position(positions, valid, mask, generator)
        else:
            mask = self_guided_masked_positions(
                logits.detach(), valid, config.masking_ratio, config.num_per_query,
                queries_are_inputs=not layer.cross_attention, head_aggregation=config.head_aggregation,
                mask_self=config.mask_self, noise=attention.random_share(), generator=generator, already_masked=mask,
            )  # fmt: skip
    probs = logits.masked_fill((~valid | mask)[:, None, None, :], -math.inf).softmax(dim=-1)
    attended = attention.output((probs @ value).transpose(1, 2).flatten(2))
    hidden_states = residual + layer.dropout(attended)
    hidden_states = hidden_states + layer.mlp(layer.mlp_layer_norm(hidden_states))
    if layer.cross_attention:
        return SMAEncoderOutput(hidden_states, mask, None)
    packed, hidden_mask = visible_elements(hidden_states, valid & ~mask, pack=sample_mask or elements.mask_given)
    return SMAEncoderOutput(packed, mask, hidden_mask)


def reference_twin(model):
    """The same weights, with `reference_first_layer` in place of the model's first layer."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if isinstance(module, SMAInputLayer):
            module.forward = types.MethodType(reference_first_layer, module)
    return twin


class FirstLayerProbabilities:
    """Records what the first layer's attention returned as its probabilities: None through sdpa."""

    def __init__(self, model):
        self.seen = []
        attention = next(module for module in model.modules() if isinstance(module, SMAInputAttention))
        self.handle = attention.register_forward_hook(lambda module, args, output: self.seen.append(output[1]))

    def materialised(self) -> bool:
        self.handle.remove()
        assert self.seen
        return all(probs is not None for probs in self.seen)


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


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("encoder_type,input_type", MODES)
def test_eval_outputs_equal_the_reference(encoder_type, input_type, head, side, attn_implementation):
    config = config_for(encoder_type, input_type, attn_implementation=attn_implementation)
    model = head_model(head, config).eval()
    twin = reference_twin(model)
    inputs = head_inputs(head, config, 4, 14, side)
    recorder = FirstLayerProbabilities(model)
    out = model(**inputs)
    # probabilities are materialised only where they are read: eager attention, output_attentions
    assert recorder.materialised() == (attn_implementation == "eager")
    reference = twin(**inputs)
    for name, value in compared_outputs(head, out).items():
        torch.testing.assert_close(value, getattr(reference, name), atol=ATOL, rtol=1e-5, msg=name)
    if head.startswith("masked_modeling"):
        assert torch.equal(out.mask, reference.mask)


def step(model, inputs, generator_seed=None):
    """Forward + backward; the loss, the mask (if any), the gradients and the generator's state afterwards."""
    model.zero_grad(set_to_none=True)
    generator = None if generator_seed is None else torch.Generator().manual_seed(generator_seed)
    extra = {} if generator is None else {"generator": generator}
    out = model(**inputs, **extra)
    out.loss.backward()
    grads = {name: parameter.grad for name, parameter in model.named_parameters() if parameter.grad is not None}
    return out, grads, None if generator is None else generator.get_state()


def assert_same_step(model_step, reference_step):
    (out, grads, state), (out_reference, grads_reference, state_reference) = model_step, reference_step
    torch.testing.assert_close(out.loss, out_reference.loss, atol=ATOL, rtol=1e-5)
    assert grads.keys() == grads_reference.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_reference[name], atol=ATOL, rtol=1e-4, msg=name)
    if state is not None:
        assert torch.equal(state, state_reference)  # the same draws, in the same order


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("encoder_type,input_type", MODES)
@pytest.mark.parametrize(
    "masking",
    ["given", "random", "self_guided_positions", "self_guided_inputs", "self_guided_inputs_random_mix_noise",
     "fine_tuning"],
)  # fmt: skip
def test_training_step_equals_the_reference(encoder_type, input_type, masking, attn_implementation):
    """Loss and every gradient of one training step, and the same mask from the same generator."""
    overrides = {"attn_implementation": attn_implementation}
    if masking == "random":
        overrides["masking_strategy"] = "random"
    elif masking.startswith("self_guided_inputs"):
        overrides["mask_selection"] = "inputs"
    if masking.endswith("random_mix_noise"):
        overrides.update(head_aggregation="random_mix", mask_self=encoder_type == "self_attention")
    config = config_for(encoder_type, input_type, **overrides)
    head = "sequence_classification" if masking == "fine_tuning" else "masked_modeling"
    model = head_model(head, config).train()
    model.set_mask_noise_scale(0.5 if masking.endswith("random_mix_noise") else 0.0)
    spread_first_layer_logits(model)
    twin = reference_twin(model)
    length = 40 if encoder_type == "cross_attention" else 16  # most latents sampled at 16: few rows left out
    inputs = head_inputs(head, config, 4, length, "left")
    if masking == "given":
        inputs["masked_positions"] = head_inputs("masked_modeling_given_mask", config, 4, length, "left")[
            "masked_positions"
        ]
    seed = None if masking in ("given", "fine_tuning") else 5
    out = step(model, inputs, seed)
    reference = step(twin, inputs, seed)
    if head == "masked_modeling":
        assert torch.equal(out[0].mask, reference[0].mask)
        assert out[0].mask.any()
    assert_same_step(out, reference)


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
    mask = model(**inputs, generator=generator).mask
    expected_generator = torch.Generator().manual_seed(4)
    expected = random_masked_positions(inputs["attention_mask"].bool(), config.masking_ratio, expected_generator)
    assert torch.equal(mask, expected)
    assert torch.equal(generator.get_state(), expected_generator.get_state())


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_output_attentions_returns_the_first_layers_probabilities(encoder_type):
    """The same mask and loss with and without probabilities; they come over the inputs (cross_attention) or over
    the visible elements packed to the front (self_attention, as the later layers' do), padding and masks excluded."""
    config = config_for(encoder_type, "discrete", head_aggregation="random_mix", mask_selection="inputs")
    model = SMAForMaskedModeling(config).train()
    model.set_mask_noise_scale(0.0)
    spread_first_layer_logits(model)
    inputs = head_inputs("masked_modeling", config, 3, 12, "right")
    plain = model(**inputs, generator=torch.Generator().manual_seed(2))
    recorded = model(**inputs, generator=torch.Generator().manual_seed(2), output_attentions=True)
    assert torch.equal(plain.mask, recorded.mask)
    torch.testing.assert_close(plain.loss, recorded.loss, atol=ATOL, rtol=1e-5)
    first = recorded.attentions[0]
    visible = inputs["attention_mask"].bool() & ~recorded.mask
    if encoder_type == "cross_attention":
        heads, queries, keys = config.num_cross_attention_heads, config.num_latents, 12
        attended = visible
    else:
        heads, queries = config.num_attention_heads, int(visible.sum(dim=1).max())
        keys = queries
        attended = torch.arange(keys)[None, :] < visible.sum(dim=1)[:, None]
    assert first.shape == (3, heads, queries, keys)
    torch.testing.assert_close(first.sum(dim=-1), torch.ones(3, heads, queries))
    assert (first.permute(0, 3, 1, 2)[~attended] == 0).all()
    assert len(recorded.attentions) == 1 + config.num_hidden_layers


def test_config_output_attentions_records_every_layer():
    # (transformers refuses `output_attentions` in the config of an sdpa model)
    config = config_for("self_attention", "discrete", output_attentions=True, attn_implementation="eager")
    model = SMAModel(config).eval()
    out = model(**random_inputs(config, 2, 10))
    assert [tuple(probs.shape) for probs in out.attentions] == [(2, config.num_attention_heads, 10, 10)] * 3


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_bf16_autocast(encoder_type):
    """Under bf16 autocast the layer runs in bf16 and the mask is still chosen in float32 (the reference's mask under
    the same autocast, when the logits are far apart)."""
    config = config_for(encoder_type, "discrete", masking_ratio=0.15, mask_selection="inputs")
    model = SMAForMaskedModeling(config).train()
    model.set_mask_noise_scale(0.0)
    spread_first_layer_logits(model, std=1.0)
    inputs = random_inputs(config, 3, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**inputs, generator=torch.Generator().manual_seed(0))
        reference = reference_twin(model)(**inputs, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert float((out.mask & reference.mask).sum() / reference.mask.sum()) > 0.9


def test_first_layer_masks_keys_only(monkeypatch):
    """The first layer hands sdpa one bool mask over the keys, [batch, 1, 1, inputs]: memory linear in the inputs."""
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


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_reference_twin_has_the_same_weights_and_runs_the_reference(encoder_type):
    """A guard for the comparisons in this file: the twin runs the reference, the model its own layer."""
    model = SMAForMaskedModeling(config_for(encoder_type, "discrete"))
    twin = reference_twin(model)
    for (name, parameter), (_, other) in zip(model.named_parameters(), twin.named_parameters()):
        assert torch.equal(parameter, other), name
    assert twin.sma.encoder.input_layer.forward.__func__ is reference_first_layer
    assert model.sma.encoder.input_layer.forward.__func__ is SMAInputLayer.forward


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
    """The mask comes first, and the first layer's queries, keys, values and MLP see only the visible elements, packed
    to the front (the reference computes every element and drops the hidden ones after the layer)."""
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
