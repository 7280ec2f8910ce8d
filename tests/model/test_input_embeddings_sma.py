"""`get_input_embeddings` / `set_input_embeddings`: the token embedding or the input projection, in every class."""

import copy

import pytest
import torch
from conftest import INPUT_TYPES, random_inputs, tiny_config
from torch import nn

from sma_hf import SMAForMaskedModeling, SMAForSequenceClassification, SMAForTokenClassification, SMAModel


MODEL_CLASSES = [SMAModel, SMAForMaskedModeling, SMAForSequenceClassification, SMAForTokenClassification]


def first_output(model, inputs):
    out = model(**inputs)
    return out.last_hidden_state if isinstance(model, SMAModel) else out.logits


@pytest.mark.parametrize("input_type", INPUT_TYPES)
@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_set_input_embeddings_replaces_the_module_the_forward_reads(input_type, model_class):
    config = tiny_config(input_type=input_type, num_labels=3)
    model = model_class(config).eval()
    embeddings = model.embeddings if model_class is SMAModel else model.sma.embeddings
    original = model.get_input_embeddings()
    assert original is (embeddings.token_embeddings if input_type == "discrete" else embeddings.input_projection)
    assert type(original) is (nn.Embedding if input_type == "discrete" else nn.Linear)
    inputs = random_inputs(config, 2, 9)
    before = first_output(model, inputs)

    replacement = copy.deepcopy(original)
    with torch.no_grad():
        replacement.weight.mul_(2)
    model.set_input_embeddings(replacement)
    assert model.get_input_embeddings() is replacement
    after = first_output(model, inputs)
    assert not torch.allclose(after, before)
    # the same as changing the original module's weights in place
    with torch.no_grad():
        original.weight.mul_(2)
    model.set_input_embeddings(original)
    torch.testing.assert_close(first_output(model, inputs), after, rtol=0, atol=0)


def test_continuous_input_projection_may_be_any_module():
    config = tiny_config(input_type="continuous", input_channels=3)
    model = SMAModel(config).eval()
    model.set_input_embeddings(nn.Sequential(nn.Linear(3, 16), nn.GELU(), nn.Linear(16, config.embedding_size)))
    out = model(**random_inputs(config, 2, 5))
    assert torch.isfinite(out.last_hidden_state).all()


def test_resize_token_embeddings_goes_through_the_setter():
    config = tiny_config()
    model = SMAModel(config).eval()
    model.resize_token_embeddings(270)
    assert model.get_input_embeddings().num_embeddings == 270 and model.config.vocab_size == 270
    out = model(input_ids=torch.tensor([[10, 265, 269]]))  # ids that only the resized table holds
    assert torch.isfinite(out.last_hidden_state).all()


def test_resize_token_embeddings_of_the_masked_modeling_head_resizes_its_decoder_too():
    model = SMAForMaskedModeling(tiny_config())
    model.resize_token_embeddings(270)
    assert model.get_output_embeddings() is model.decoder.output and model.decoder.output.out_features == 270
    assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    model.train()
    out = model(input_ids=torch.tensor([[10, 265, 269, 30, 40, 50]]), generator=torch.Generator().manual_seed(0))
    assert out.logits.shape[-1] == 270 and torch.isfinite(out.loss)  # targets up to 269 now have a logit
    assert SMAForMaskedModeling(tiny_config(input_type="continuous")).get_output_embeddings() is None
