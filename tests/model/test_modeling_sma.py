import itertools

import pytest
import torch
from conftest import (
    ENCODER_TYPES,
    INPUT_TYPES,
    ragged_attention_mask,
    random_inputs,
    tiny_config,
    visible_states,
)

from sma_hf import SMAForMaskedModeling, SMAForSequenceClassification, SMAForTokenClassification, SMAModel
from sma_hf.masking_sma import sample_queries


MODES = list(itertools.product(ENCODER_TYPES, INPUT_TYPES))


def config_for(encoder_type, input_type, **overrides):
    return tiny_config(encoder_type=encoder_type, input_type=input_type, **overrides)


def select(inputs: dict, index) -> dict:
    return {name: value[index] for name, value in inputs.items()}


def assert_same_visible_outputs(output, reference):
    """The same states of the visible elements (in place or packed) and the same pooled output."""
    torch.testing.assert_close(
        visible_states(output.last_hidden_state, output.hidden_mask),
        visible_states(reference.last_hidden_state, reference.hidden_mask),
        atol=1e-5,
        rtol=0,
    )
    torch.testing.assert_close(output.pooler_output, reference.pooler_output, atol=1e-5, rtol=0)


@pytest.mark.parametrize("encoder_type,input_type", MODES)
@pytest.mark.parametrize("strategy,selection,options", [
    ("self_guided", "positions", {}), ("self_guided", "inputs", {}), ("random", "positions", {}),
    ("self_guided", "positions", {"mask_equal_key_norms": True, "mask_random_floor": 0.25}),
])  # fmt: skip
def test_training_masks_exact_counts_and_never_padding(encoder_type, input_type, strategy, selection, options):
    config = config_for(encoder_type, input_type, masking_strategy=strategy, head_aggregation="random_mix",
                        mask_self=encoder_type == "self_attention" and strategy == "self_guided",
                        mask_selection=selection, **options)  # fmt: skip
    model = SMAForMaskedModeling(config).train()
    model.set_mask_noise_scale(0.5)
    attention_mask = ragged_attention_mask(5, 24, side="left")
    out = model(**random_inputs(config, 5, 24), attention_mask=attention_mask)
    valid_counts = attention_mask.sum(dim=1).tolist()
    assert out.mask.sum(dim=1).tolist() == [round(0.3 * n) for n in valid_counts]
    assert not (out.mask & ~attention_mask.bool()).any()
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("encoder_type,input_type", MODES)
def test_loss_only_on_masked_valid_elements(encoder_type, input_type):
    # target standardisation reads every valid element; the test below checks it ignores padding
    config = config_for(encoder_type, input_type, normalize_continuous_targets=False)
    model = SMAForMaskedModeling(config).train()
    attention_mask = ragged_attention_mask(3, 16)
    inputs = random_inputs(config, 3, 16)
    generator = torch.Generator().manual_seed(0)
    out = model(**inputs, attention_mask=attention_mask, generator=generator)
    # labels that differ only outside the masked positions give the same loss
    name = "input_ids" if input_type == "discrete" else "inputs"
    labels = inputs[name].clone()
    scrambled = random_inputs(config, 3, 16, seed=9)[name]
    labels[~out.mask] = scrambled[~out.mask]
    again = model(**inputs, attention_mask=attention_mask, labels=labels, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.mask, out.mask)
    assert torch.allclose(again.loss, out.loss, atol=1e-6)
    # and a label change at a masked position changes it
    labels[out.mask] = scrambled[out.mask]
    changed = model(**inputs, attention_mask=attention_mask, labels=labels, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(changed.loss, out.loss)


@pytest.mark.parametrize("encoder_type,input_type", MODES)
def test_padding_content_changes_nothing(encoder_type, input_type):
    config = config_for(encoder_type, input_type)
    model = SMAForMaskedModeling(config).train()
    attention_mask = ragged_attention_mask(3, 16)
    inputs, other = random_inputs(config, 3, 16), random_inputs(config, 3, 16, seed=9)
    padding = ~attention_mask.bool()
    changed = {}
    for name, value in inputs.items():
        where = padding[..., None] if value.dim() == 3 else padding
        changed[name] = torch.where(where, other[name], value)
    first = model(**inputs, attention_mask=attention_mask, generator=torch.Generator().manual_seed(0))
    second = model(**changed, attention_mask=attention_mask, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first.mask, second.mask)
    torch.testing.assert_close(first.loss, second.loss, atol=1e-6, rtol=0)


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
@pytest.mark.parametrize("input_type", INPUT_TYPES)
def test_masking_equals_deleting_equals_padding(encoder_type, input_type):
    config = config_for(encoder_type, input_type)
    model = SMAModel(config).eval()
    length = 12
    inputs = random_inputs(config, 1, length)
    masked = torch.zeros(1, length, dtype=torch.bool)
    masked[0, [1, 4, 5, 9]] = True
    keep = ~masked[0]
    positions = torch.arange(length)[None, :]

    with_mask = model(**inputs, masked_positions=masked)
    deleted = model(**select(inputs, (slice(None), keep)), position_ids=positions[:, keep])
    as_padding = model(**inputs, attention_mask=keep[None, :].long(), position_ids=positions)
    other = random_inputs(config, 1, length, seed=5)
    name = next(iter(inputs))
    replaced = dict(inputs)
    replaced[name] = torch.where(
        masked[..., None] if input_type == "continuous" else masked, other[name], inputs[name]
    )
    with_other_content = model(**replaced, masked_positions=masked)

    for out in (deleted, as_padding, with_other_content):
        assert_same_visible_outputs(out, with_mask)
    assert with_mask.mask.tolist() == masked.tolist()


@pytest.mark.parametrize("input_type", INPUT_TYPES)
def test_self_attention_packs_the_visible_elements_only_for_a_mask_of_pretraining_size(input_type):
    """Without a drawn or given mask the elements stay in place (padding hidden from the keys); with one they are
    packed to the front. Either way each visible element's state is the one it has in its row alone."""
    config = config_for("self_attention", input_type)
    model = SMAModel(config).eval()
    inputs = random_inputs(config, 3, 9)
    attention_mask = ragged_attention_mask(3, 9, side="left")
    masked = torch.zeros(3, 9, dtype=torch.bool)
    masked[:, [6, 7]] = True

    in_place = model(**inputs, attention_mask=attention_mask)
    packed = model(**inputs, attention_mask=attention_mask, masked_positions=masked)
    assert in_place.last_hidden_state.shape[1] == 9
    assert torch.equal(in_place.hidden_mask, attention_mask.bool())
    assert packed.last_hidden_state.shape[1] == 7  # the longest row's visible count
    assert packed.hidden_mask.sum(dim=1).tolist() == (attention_mask.bool() & ~masked).sum(dim=1).tolist()
    for output, hidden in ((in_place, torch.zeros_like(masked)), (packed, masked)):
        for row in range(3):
            keep = attention_mask[row].bool() & ~hidden[row]
            positions = (attention_mask[row].cumsum(dim=0) - 1)[keep][None, :]  # the defaults of the full row
            alone = model(**select(inputs, (slice(row, row + 1), keep)), position_ids=positions)
            states = visible_states(output.last_hidden_state[row : row + 1], output.hidden_mask[row : row + 1])
            torch.testing.assert_close(states, alone.last_hidden_state[0], atol=1e-5, rtol=0)


def test_mask_tokens_stay_in_place_and_equal_the_same_given_mask():
    """`[MASK]` tokens hide their elements without packing (fill-mask reads every position); the visible states and
    the pooled output are those of the same positions given as `masked_positions` (packed)."""
    config = config_for("self_attention", "discrete")
    model = SMAModel(config).eval()
    input_ids = random_inputs(config, 2, 10)["input_ids"]
    masked = torch.zeros(2, 10, dtype=torch.bool)
    masked[0, [2, 5]] = True
    masked[1, [0, 7, 8]] = True

    with_tokens = model(input_ids=input_ids.masked_fill(masked, config.mask_token_id))
    given = model(input_ids=input_ids, masked_positions=masked)
    assert with_tokens.last_hidden_state.shape[1] == 10
    assert torch.equal(with_tokens.hidden_mask, ~masked)
    assert given.last_hidden_state.shape[1] == 8
    assert_same_visible_outputs(with_tokens, given)


@pytest.mark.parametrize("encoder_type,input_type", MODES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_invariance(encoder_type, input_type, side):
    config = config_for(encoder_type, input_type)
    model = SMAForTokenClassification(config).eval()
    base = SMAModel(config).eval()
    inputs = random_inputs(config, 1, 10)
    padded = {
        name: torch.cat([value, value[:, :5]], dim=1) if side == "right" else torch.cat([value[:, :5], value], dim=1)
        for name, value in inputs.items()
    }
    attention_mask = torch.ones(1, 15, dtype=torch.long)
    attention_mask[0, 10:] = 0 if side == "right" else 1
    if side == "left":
        attention_mask[0, :5] = 0
    real = slice(0, 10) if side == "right" else slice(5, 15)

    logits = model(**inputs).logits
    padded_logits = model(**padded, attention_mask=attention_mask).logits
    torch.testing.assert_close(padded_logits[:, real], logits, atol=1e-5, rtol=0)
    pooled = base(**inputs).pooler_output
    torch.testing.assert_close(base(**padded, attention_mask=attention_mask).pooler_output, pooled, atol=1e-5, rtol=0)


@pytest.mark.parametrize("encoder_type,input_type", MODES)
def test_seeded_masks_reproduce_and_differ(encoder_type, input_type):
    config = config_for(encoder_type, input_type)
    model = SMAForMaskedModeling(config).train()
    inputs = random_inputs(config, 4, 30)

    def mask(seed):
        return model(**inputs, generator=torch.Generator().manual_seed(seed)).mask

    assert torch.equal(mask(3), mask(3))
    assert not torch.equal(mask(3), mask(4))


def test_noise_scale_switches_between_guided_and_random():
    config = config_for("cross_attention", "discrete", mask_noise_ratio=1.0)
    model = SMAForMaskedModeling(config).train()
    inputs = random_inputs(config, 8, 40)
    generator_seeds = range(6)
    model.set_mask_noise_scale(0.0)
    guided = [model(**inputs, generator=torch.Generator().manual_seed(s)).mask for s in generator_seeds]
    model.set_mask_noise_scale(1.0)
    noisy = [model(**inputs, generator=torch.Generator().manual_seed(s)).mask for s in generator_seeds]
    # scale 1 draws every mask uniformly: two draws overlap about as random sets do (0.3 of the masked elements)
    overlap = lambda a, b: float((a & b).sum() / a.sum())  # noqa: E731
    assert overlap(noisy[0], noisy[1]) < 0.5
    # the guided masks follow the attention of an untrained model, which the draw only partly changes (selection by
    # position draws the sampled positions; the scores that rank the inputs stay)
    assert overlap(guided[0], guided[1]) > overlap(noisy[0], noisy[1])
    with pytest.raises(ValueError, match="scale"):
        model.set_mask_noise_scale(1.5)


@pytest.mark.parametrize("encoder_type,input_type", MODES)
def test_no_masking_in_evaluation_unless_asked(encoder_type, input_type):
    config = config_for(encoder_type, input_type)
    model = SMAForMaskedModeling(config).eval()
    inputs = random_inputs(config, 2, 10)
    out = model(**inputs)
    assert not out.mask.any()
    assert torch.isfinite(out.loss)  # defined over every valid element when nothing is masked
    masked = torch.zeros(2, 10, dtype=torch.bool)
    masked[:, 3] = True
    assert torch.equal(model(**inputs, masked_positions=masked).mask, masked)
    # an explicit mask also overrides the strategy in training
    assert torch.equal(model.train()(**inputs, masked_positions=masked).mask, masked)


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
@pytest.mark.parametrize("strategy,selection", [("self_guided", "positions"), ("self_guided", "inputs"),
                                                ("random", "positions")])  # fmt: skip
def test_mask_tokens_count_towards_the_drawn_mask(encoder_type, strategy, selection):
    config = config_for(encoder_type, "discrete", masking_strategy=strategy, mask_selection=selection)
    model = SMAForMaskedModeling(config).train()
    input_ids = random_inputs(config, 30, 20)["input_ids"]
    input_ids[:, :4] = config.mask_token_id  # 4 [MASK] tokens, fewer than round(0.3 x 20) = 6
    input_ids[0, :19] = config.mask_token_id  # all but one: nothing more may be masked
    short = input_ids[:, 17:].clone()
    short[:, :2] = config.mask_token_id  # rows of 3 with 2 [MASK]: round(0.9) = 1 is already exceeded
    out = model(input_ids=input_ids, generator=torch.Generator().manual_seed(0))
    assert out.mask.sum(dim=1).tolist() == [19] + [6] * 29
    assert out.mask[:, :4].all() and torch.isfinite(out.loss)
    out = model(input_ids=short, generator=torch.Generator().manual_seed(0))
    assert out.mask.sum(dim=1).tolist() == [2] * 30 and torch.isfinite(out.loss)


@pytest.mark.parametrize("encoder_type,input_type", MODES)
def test_bf16_autocast_trains_and_keeps_the_float32_mask(encoder_type, input_type):
    config = config_for(encoder_type, input_type, masking_ratio=0.15, mask_self=encoder_type == "self_attention")
    model = SMAForMaskedModeling(config).train()
    model.set_mask_noise_scale(0.0)
    inputs = random_inputs(config, 4, 64)
    reference = model(**inputs, generator=torch.Generator().manual_seed(0)).mask
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**inputs, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    # selection runs in float32: only logits rounded to bf16 by the matmul can move it
    assert float((out.mask & reference).sum() / reference.sum()) > 0.9


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_continuous_float32_inputs_into_a_bf16_model(encoder_type):
    config = config_for(encoder_type, "continuous")
    model = SMAForMaskedModeling(config).to(torch.bfloat16).eval()
    out = model(**random_inputs(config, 2, 10))
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)


def top_k_of_first_layer_attention(model, inputs, k: int) -> list:
    """The k inputs with the most first-layer attention, summed over every query and averaged over heads."""
    first_layer = model.eval()(**inputs, output_attentions=True).attentions[0]  # no mask in evaluation
    return first_layer.mean(dim=1).sum(dim=1).topk(k, dim=1).indices.sort(dim=1).values.tolist()


def test_self_guided_mask_is_the_top_k_of_the_first_layer_attention():
    """The paper's selection, noise 0 and every latent sampled: the mask is the top-k of the summed, head-averaged
    first-layer attention."""
    config = config_for(
        "cross_attention", "continuous", masking_ratio=0.4, num_per_query=1.0, mask_selection="inputs"
    )  # 8 queries >= 8 latents
    model = SMAForMaskedModeling(config)
    inputs = random_inputs(config, 3, 20)
    expected = top_k_of_first_layer_attention(model, inputs, 8)
    model.train().set_mask_noise_scale(0.0)
    mask = model(**inputs).mask
    assert mask.nonzero()[:, 1].view(3, 8).tolist() == expected


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
@pytest.mark.parametrize("equal_key_norms", [False, True])
def test_position_selected_mask_is_the_top_k_of_the_sampled_positions_attention_on_positions_alone(
    encoder_type, equal_key_norms
):
    """Selection by position, no random share: input positions are sampled per example, and the mask is the top-k of
    their summed, head-averaged attention onto every input, computed from the position embeddings and the first layer's
    projections alone (the sampled positions' keys stand in for queries in cross_attention mode); with
    `mask_equal_key_norms`, every key rescaled to the mean norm of the row's keys first."""
    config = config_for(encoder_type, "continuous", masking_ratio=0.4, num_per_query=1.0,
                        mask_equal_key_norms=equal_key_norms, mask_random_floor=0.0)  # fmt: skip
    assert config.mask_selection == "positions"  # the default
    model = SMAForMaskedModeling(config).train()
    model.set_mask_noise_scale(0.0)
    valid = ragged_attention_mask(3, 20).bool()
    generator = torch.Generator().manual_seed(5)
    mask = model(**random_inputs(config, 3, 20), attention_mask=valid.long(), generator=generator).mask
    embeddings, layer = model.sma.embeddings, model.sma.encoder.input_layer
    attention, heads = layer.attention, layer.attention.num_heads
    positions = layer.input_layer_norm(embeddings.layer_norm(embeddings.position_embeddings(torch.arange(20))))
    keys = attention.key(positions).view(20, heads, -1).transpose(0, 1)  # [heads, inputs, head_dim]
    queries = attention.query(positions).view(20, heads, -1).transpose(0, 1)
    if encoder_type == "cross_attention":
        queries = keys
    sampled = sample_queries(valid, 20, 0.4, 1.0, queries_are_inputs=True, generator=torch.Generator().manual_seed(5))
    for row in range(3):
        n = int(valid[row].sum())
        rows = sampled.rows[row][sampled.sampled[row]]
        assert len(rows) == round(n * 0.4) and (rows < n).all()  # sampled among the row's valid inputs
        row_keys, row_queries = keys[:, :n], queries
        if equal_key_norms:
            norms = row_keys.norm(dim=-1, keepdim=True)
            row_keys = row_keys / norms * norms.mean(dim=1, keepdim=True)
            row_queries = row_keys if encoder_type == "cross_attention" else queries
        logits = row_queries[:, rows] @ row_keys.transpose(1, 2) * attention.scaling
        scores = logits.softmax(dim=-1).mean(dim=0).sum(dim=0)
        expected = scores.topk(round(n * 0.4)).indices.sort().values
        assert mask[row].nonzero().flatten().tolist() == expected.tolist()


@pytest.mark.parametrize("encoder_type,input_type", MODES)
@pytest.mark.parametrize("output_attentions", [False, True])
def test_position_selected_masks_do_not_depend_on_the_content(encoder_type, input_type, output_attentions):
    """Same positions and generator, other content: the same mask with selection by position (with and without the
    first layer's probabilities); the paper's selection, scored on the content too, moves."""
    attention_mask = ragged_attention_mask(4, 24)
    masks = {}
    for selection in ("positions", "inputs"):
        config = config_for(encoder_type, input_type, mask_selection=selection, head_aggregation="random_mix",
                            mask_self=encoder_type == "self_attention")  # fmt: skip
        model = SMAForMaskedModeling(config).train()
        model.set_mask_noise_scale(0.0)
        masks[selection] = [
            model(**random_inputs(config, 4, 24, seed=seed), attention_mask=attention_mask,
                  generator=torch.Generator().manual_seed(3), output_attentions=output_attentions).mask
            for seed in range(4)
        ]  # fmt: skip
    assert all(torch.equal(mask, masks["positions"][0]) for mask in masks["positions"])
    assert masks["positions"][0].sum(dim=1).tolist() == [round(0.3 * n) for n in attention_mask.sum(dim=1).tolist()]
    assert not all(torch.equal(mask, masks["inputs"][0]) for mask in masks["inputs"])


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_equal_key_norms_choose_by_direction_not_length(encoder_type):
    """With `mask_equal_key_norms`, lengthening some positions' keys (a "hub") changes no mask; without it, it does."""
    masks = {}
    for equal in (False, True):
        config = config_for(encoder_type, "discrete", mask_equal_key_norms=equal, mask_self=False)
        model = SMAForMaskedModeling(config).train()
        model.set_mask_noise_scale(0.0)
        inputs = {**random_inputs(config, 4, 24), "attention_mask": ragged_attention_mask(4, 24)}
        draw = lambda: model(**inputs, generator=torch.Generator().manual_seed(1)).mask  # noqa: E731
        before = draw()
        key = model.sma.encoder.input_layer.attention.key
        lengths = torch.ones(24, 1)
        lengths[::5] = 8.0
        # (the layer's own attention, over the visible elements only in self_attention mode, is scaled too: harmless)
        key.register_forward_hook(lambda module, args, output: output * lengths[: output.shape[1]])
        masks[equal] = (before, draw())
    assert torch.equal(*masks[True]) and not torch.equal(*masks[False])


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_random_floor_is_the_warm_up_noise_that_never_decays(encoder_type):
    """`mask_random_floor` f after the warm-up draws the masks that noise share f draws during it, with the same
    generator; the warm-up noise above the floor wins."""
    inputs = {"attention_mask": ragged_attention_mask(4, 24)}

    def mask(noise_scale, **overrides):
        config = config_for(encoder_type, "discrete", **overrides)
        torch.manual_seed(0)
        model = SMAForMaskedModeling(config).train()
        model.set_mask_noise_scale(noise_scale)
        return model(**random_inputs(config, 4, 24), **inputs, generator=torch.Generator().manual_seed(2)).mask

    floor = mask(0.0, mask_random_floor=0.5)
    assert torch.equal(floor, mask(1.0, mask_noise_ratio=0.5))
    assert not torch.equal(floor, mask(0.0))
    assert torch.equal(mask(1.0, mask_random_floor=0.25), mask(1.0))  # noise share 1 > 0.25


def test_training_batch_with_nothing_to_mask_has_zero_loss():
    config = config_for("cross_attention", "discrete", masking_ratio=0.15)
    model = SMAForMaskedModeling(config).train()
    out = model(input_ids=torch.randint(6, 262, (4, 3)))  # round(0.45) = 0 masked per row
    assert not out.mask.any() and out.loss.item() == 0.0
    out.loss.backward()  # still part of the graph: DDP sees every parameter
    eval_loss = model.eval()(input_ids=torch.randint(6, 262, (4, 3))).loss
    assert eval_loss > 0


@pytest.mark.parametrize("encoder_type,input_type", MODES)
def test_training_decodes_only_masked_positions(encoder_type, input_type):
    """Training logits are the full decode's logits at the masked positions, and give the same loss."""
    config = config_for(encoder_type, input_type)
    model = SMAForMaskedModeling(config)
    inputs = random_inputs(config, 3, 16)
    attention_mask = ragged_attention_mask(3, 16, side="left")
    masked = torch.zeros(3, 16, dtype=torch.bool)
    masked[0, [3, 4, 9]] = True
    masked[1, [12]] = True
    masked[2, [8, 15]] = True
    train = model.train()(**inputs, attention_mask=attention_mask, masked_positions=masked)
    assert train.decoded_positions.tolist() == [[3, 4, 9], [12, -1, -1], [8, 15, -1]]
    full = model.eval()(**inputs, attention_mask=attention_mask, masked_positions=masked)
    assert full.decoded_positions is None and full.logits.shape[1] == 16
    used = train.decoded_positions >= 0
    torch.testing.assert_close(train.logits[used], full.logits[masked], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(train.loss, full.loss, atol=1e-5, rtol=1e-5)


def test_mask_token_is_masked():
    config = config_for("cross_attention", "discrete")
    model = SMAModel(config).eval()
    input_ids = random_inputs(config, 2, 10)["input_ids"]
    input_ids[0, 2] = config.mask_token_id
    out = model(input_ids=input_ids)
    assert out.mask.nonzero().tolist() == [[0, 2]]


@pytest.mark.parametrize("encoder_type,input_type", MODES)
def test_tiny_model_overfits_tiny_batch(encoder_type, input_type):
    config = config_for(encoder_type, input_type, masking_ratio=0.25)
    model = SMAForMaskedModeling(config).train()
    model.set_mask_noise_scale(0.5)  # half-random masks, so that every element is sometimes visible
    # Continuous cross-attention models sit on a plateau for ~600 steps before they tell two random examples apart
    # (the latents start as near-uniform averages of the inputs), so continuous runs overfit a single example.
    inputs = random_inputs(config, 2 if input_type == "discrete" else 1, 16)
    steps = 300
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=steps)
    losses = []
    for _ in range(steps):
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.1 * sum(losses[:3]) / 3, (losses[:3], losses[-10:])


@pytest.mark.parametrize("encoder_type,input_type", MODES)
@pytest.mark.parametrize(
    "model_class", [SMAForMaskedModeling, SMAForSequenceClassification, SMAForTokenClassification]
)
def test_every_parameter_gets_a_gradient(encoder_type, input_type, model_class):
    """An unused parameter breaks DDP with activation checkpointing."""
    config = config_for(encoder_type, input_type, num_labels=3)
    model = model_class(config).train()
    assert hasattr(model.sma.embeddings, "token_embeddings") == (input_type == "discrete")
    assert hasattr(model.sma.embeddings, "input_projection") == (input_type == "continuous")
    out = model(**random_inputs(config, 2, 12))
    (out.loss if out.loss is not None else out.logits.sum()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    if input_type == "discrete":  # the [PAD] row of the embedding is never read here, but the tensor has a gradient
        assert "sma.embeddings.token_embeddings.weight" not in missing
    assert missing == []


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_sdpa_eager_and_checkpointing_agree(encoder_type):
    config = config_for(encoder_type, "discrete", num_labels=2)
    inputs = random_inputs(config, 3, 14)
    attention_mask = ragged_attention_mask(3, 14)
    labels = torch.tensor([0, 1, 1])
    torch.manual_seed(1)
    reference = SMAForSequenceClassification(config)
    assert reference.config._attn_implementation == "sdpa"
    results = []
    for implementation, checkpointing in [("sdpa", False), ("eager", False), ("sdpa", True)]:
        model = SMAForSequenceClassification(config)
        model.load_state_dict(reference.state_dict())
        model.set_attn_implementation(implementation)
        if checkpointing:
            model.activation_checkpointing_enable()
        model.train()
        out = model(**inputs, attention_mask=attention_mask, labels=labels)
        out.loss.backward()
        results.append((out.logits.detach(), [p.grad.clone() for p in model.parameters()]))
    for logits, grads in results[1:]:
        torch.testing.assert_close(logits, results[0][0], atol=1e-5, rtol=1e-5)
        for grad, expected in zip(grads, results[0][1]):
            torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_outputs_hidden_states_and_attentions(encoder_type):
    config = config_for(encoder_type, "discrete")
    model = SMAModel(config).eval()
    attention_mask = ragged_attention_mask(2, 12)
    out = model(**random_inputs(config, 2, 12), attention_mask=attention_mask, output_hidden_states=True,
                output_attentions=True)  # fmt: skip
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    assert len(out.attentions) == config.num_hidden_layers + 1
    first = out.attentions[0]
    heads = config.num_cross_attention_heads if encoder_type == "cross_attention" else config.num_attention_heads
    queries = config.num_latents if encoder_type == "cross_attention" else 12
    assert first.shape == (2, heads, queries, 12)
    torch.testing.assert_close(first.sum(-1), torch.ones_like(first.sum(-1)))
    assert (first[1, ..., 9:] == 0).all()  # padding gets no attention
    assert isinstance(model(**random_inputs(config, 2, 12), return_dict=False), tuple)
    if encoder_type == "self_attention":
        assert out.hidden_mask.tolist() == attention_mask.bool().tolist()
        assert out.last_hidden_state.shape == (2, 12, config.hidden_size)
    else:
        assert out.hidden_mask is None and out.last_hidden_state.shape == (2, config.num_latents, config.hidden_size)


@pytest.mark.parametrize("pooling", ["attention", "mean"])
@pytest.mark.parametrize(
    "problem_type,labels",
    [
        ("regression", torch.tensor([0.5, -1.0, 2.0])),
        ("single_label_classification", torch.tensor([0, 2, 1])),
        ("multi_label_classification", torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 0]])),
    ],
)
def test_sequence_classification_losses(pooling, problem_type, labels):
    num_labels = 1 if problem_type == "regression" else 3
    config = config_for("cross_attention", "continuous", classifier_pooling=pooling, num_labels=num_labels)
    model = SMAForSequenceClassification(config)
    inputs = random_inputs(config, 3, 9)
    out = model(**inputs, labels=labels)
    assert model.config.problem_type == problem_type
    assert out.logits.shape == (3, num_labels)
    logits = out.logits
    if problem_type == "regression":
        expected = torch.nn.functional.mse_loss(logits[:, 0], labels)
    elif problem_type == "single_label_classification":
        expected = torch.nn.functional.cross_entropy(logits, labels)
    else:
        expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(model.eval()(**inputs).logits, logits)  # the head never masks, even in training


def test_token_classification_ignores_padding_and_minus_100():
    config = config_for("self_attention", "discrete", num_labels=4)
    model = SMAForTokenClassification(config)
    attention_mask = ragged_attention_mask(2, 8)
    labels = torch.randint(0, 4, (2, 8))
    labels[0, 0] = -100
    out = model(**random_inputs(config, 2, 8), attention_mask=attention_mask, labels=labels)
    assert out.logits.shape == (2, 8, 4)
    keep = attention_mask.bool() & (labels != -100)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits[keep], labels[keep]))


@pytest.mark.parametrize("encoder_type,input_type", MODES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_element_embeddings_are_one_per_element_padding_invariant_and_what_reconstruction_reads(
    encoder_type, input_type, side
):
    """`element_embeddings`: [batch, length, decoder_hidden_size] in both modes (cross_attention's encoder output is
    one vector per latent), the same for an element whatever the padding, and the vectors the decoder's output layer
    maps to the evaluation logits."""
    config = config_for(encoder_type, input_type)
    model = SMAForMaskedModeling(config).eval()
    inputs = random_inputs(config, 1, 10)
    embeddings = model.element_embeddings(**inputs)
    assert embeddings.shape == (1, 10, config.decoder_hidden_size)
    torch.testing.assert_close(model.decoder.output(embeddings), model(**inputs).logits, atol=1e-5, rtol=0)
    pad = {name: value[:, :4] for name, value in inputs.items()}
    padded = {name: torch.cat([value, pad[name]] if side == "right" else [pad[name], value], dim=1)
              for name, value in inputs.items()}  # fmt: skip
    attention_mask = torch.ones(1, 14, dtype=torch.long)
    attention_mask[0, 10:] = 0 if side == "right" else 1
    attention_mask[0, :4] = 1 if side == "right" else 0
    real = slice(0, 10) if side == "right" else slice(4, 14)
    padded_embeddings = model.element_embeddings(**padded, attention_mask=attention_mask)
    torch.testing.assert_close(padded_embeddings[:, real], embeddings, atol=1e-5, rtol=0)
    assert torch.equal(model.element_embeddings(**inputs), embeddings)  # deterministic in evaluation mode
