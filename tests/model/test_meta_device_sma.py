"""Building on the meta device, as big-model loading and transformers/accelerate utilities do."""

import itertools

import pytest
import torch
from conftest import ENCODER_TYPES, INPUT_TYPES, NEEDS_ACCELERATE, ragged_attention_mask, random_inputs, tiny_config

from sma_hf import SMAForMaskedModeling, SMAForSequenceClassification, SMAForTokenClassification, SMAModel


MODES = list(itertools.product(ENCODER_TYPES, INPUT_TYPES))
MODEL_CLASSES = [SMAModel, SMAForMaskedModeling, SMAForSequenceClassification, SMAForTokenClassification]


def config_for(encoder_type, input_type):
    return tiny_config(encoder_type=encoder_type, input_type=input_type, num_labels=3, drop_path_rate=0.1)


def shapes(model):
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


@pytest.mark.parametrize("encoder_type,input_type", MODES)
@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_builds_on_the_meta_device(encoder_type, input_type, model_class):
    config = config_for(encoder_type, input_type)
    with torch.device("meta"):
        on_meta = model_class(config)
    assert {parameter.device.type for parameter in on_meta.parameters()} == {"meta"}
    assert shapes(on_meta) == shapes(model_class(config))
    # stochastic depth still rises linearly from 0 to drop_path_rate (as torch.linspace did, up to float32 rounding)
    encoder = on_meta.encoder if model_class is SMAModel else on_meta.sma.encoder
    rates = [layer.drop_path.drop_prob for layer in encoder.layers]
    assert rates == pytest.approx(torch.linspace(0, 0.1, config.num_hidden_layers).tolist(), abs=1e-7)


@pytest.mark.parametrize("encoder_type,input_type", MODES)
@NEEDS_ACCELERATE
def test_from_pretrained_with_a_device_map_equals_a_plain_load(tmp_path, encoder_type, input_type):
    config = config_for(encoder_type, input_type)
    inputs = random_inputs(config, 3, 10)
    attention_mask = ragged_attention_mask(3, 10, side="left")
    for model_class in MODEL_CLASSES:
        folder = tmp_path / model_class.__name__
        model_class(config).save_pretrained(folder)
        plain = model_class.from_pretrained(folder).eval()
        mapped = model_class.from_pretrained(folder, device_map="cpu").eval()
        assert {parameter.device.type for parameter in mapped.parameters()} == {"cpu"}
        assert mapped.state_dict().keys() == plain.state_dict().keys()
        for name, tensor in plain.state_dict().items():
            assert torch.equal(mapped.state_dict()[name], tensor), name
        expected, out = plain(**inputs, attention_mask=attention_mask), mapped(**inputs, attention_mask=attention_mask)
        key = "last_hidden_state" if model_class is SMAModel else "logits"
        assert torch.equal(out[key], expected[key])
