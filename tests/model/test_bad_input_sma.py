"""Every input the model cannot use raises a clear error naming the argument."""

import math

import pytest
import torch
from conftest import tiny_config
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError

from sma_hf import SMAConfig, SMAForMaskedModeling, SMAForSequenceClassification, SMAForTokenClassification, SMAModel


@pytest.fixture(scope="module")
def discrete():
    return SMAForMaskedModeling(tiny_config()).eval()


@pytest.fixture(scope="module")
def continuous():
    return SMAForMaskedModeling(tiny_config(input_type="continuous", input_channels=3)).eval()


IDS = torch.randint(6, 262, (2, 5))
VALUES = torch.randn(2, 5, 3)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({}, ValueError, "exactly one of `input_ids`"),
        ({"input_ids": IDS, "inputs": VALUES}, ValueError, "exactly one of `input_ids`"),
        ({"inputs": VALUES}, ValueError, "takes `input_ids`"),
        ({"input_ids": IDS[0]}, ValueError, r"`input_ids` must be \[batch, length\]"),
        ({"input_ids": IDS.float()}, TypeError, "`input_ids` must hold integer ids"),
        (
            {"input_ids": IDS.masked_fill(IDS == IDS[0, 0], 262)},
            ValueError,
            r"`input_ids` holds ids outside \[0, vocab_size=262\)",
        ),
        ({"input_ids": -IDS}, ValueError, "`input_ids` holds ids outside"),
        ({"input_ids": torch.randint(6, 262, (1, 65))}, ValueError, "longer than max_position_embeddings=64"),
        (
            {"input_ids": IDS, "attention_mask": torch.ones(2, 4)},
            ValueError,
            r"`attention_mask` must have shape \(2, 5\)",
        ),
        ({"input_ids": IDS, "attention_mask": torch.full((2, 5), 2)}, ValueError, "`attention_mask` must hold only 0"),
        (
            {"input_ids": IDS, "attention_mask": torch.tensor([[1] * 5, [0] * 5])},
            ValueError,
            r"`attention_mask` rows \[1\] have no valid element",
        ),
        ({"input_ids": IDS, "position_ids": torch.full((2, 5), 64)}, ValueError, "`position_ids` must lie in"),
        (
            {"input_ids": IDS, "masked_positions": torch.ones(2, 5)},
            ValueError,
            "`masked_positions` must be a bool tensor",
        ),
        (
            {"input_ids": IDS, "masked_positions": torch.ones(2, 5, dtype=torch.bool)},
            ValueError,
            "hides every valid element of rows",
        ),
        ({"input_ids": IDS, "labels": IDS.float()}, ValueError, "`labels` must be integer ids"),
        ({"input_ids": IDS, "labels": IDS[:, :4]}, ValueError, "`labels` must be integer ids shaped like"),
        (
            {
                "input_ids": IDS,
                "masked_positions": torch.eye(5, dtype=torch.bool)[:2],
                "labels": torch.full((2, 5), -100),
            },
            ValueError,
            "No masked position has a label",
        ),
    ],
)
def test_discrete_bad_inputs(discrete, kwargs, error, match):
    with pytest.raises(error, match=match):
        discrete(**kwargs)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"input_ids": IDS}, ValueError, "takes `inputs`"),
        ({"inputs": VALUES[..., :2]}, ValueError, r"`inputs` must be \[batch, length, input_channels=3\]"),
        ({"inputs": VALUES[0]}, ValueError, r"`inputs` must be \[batch, length, input_channels=3\]"),
        ({"inputs": VALUES.long()}, TypeError, "`inputs` must be floating point"),
        (
            {"inputs": VALUES.index_put((torch.tensor([1]), torch.tensor([2])), torch.tensor(math.nan))},
            ValueError,
            "NaN or infinite",
        ),
        ({"inputs": VALUES.index_put((torch.tensor([0]),), torch.tensor(math.inf))}, ValueError, "NaN or infinite"),
        (
            {"inputs": VALUES, "labels": VALUES[:, :3]},
            ValueError,
            "`labels` must be float values shaped like `inputs`",
        ),
        ({"inputs": VALUES, "labels": VALUES.long()}, ValueError, "`labels` must be float values"),
        (
            {"inputs": VALUES, "labels": VALUES.index_put((torch.tensor([0]),), torch.tensor(math.inf))},
            ValueError,
            "`labels` holds NaN or infinite",
        ),
    ],
)
def test_continuous_bad_inputs(continuous, kwargs, error, match):
    with pytest.raises(error, match=match):
        continuous(**kwargs)


@pytest.mark.parametrize(
    "problem_type,num_labels,labels,match",
    [
        ("regression", 1, torch.tensor([0, 1]), "needs float `labels`"),
        ("regression", 1, torch.tensor([[0.5, 1.0, 2.0]]), r"needs `labels` of shape \(2, 1\)"),
        ("single_label_classification", 3, torch.tensor([0.0, 1.0]), "needs integer class ids"),
        ("single_label_classification", 3, torch.tensor([0, 3]), r"class ids in \[0, num_labels=3\)"),
        ("multi_label_classification", 3, torch.tensor([1, 0]), r"needs 0/1 `labels` of shape \(2, 3\)"),
        ("multi_label_classification", 3, torch.tensor([[1, 0, 2], [0, 0, 1]]), "that are 0 or 1"),
        ("regression", 1, torch.tensor([0.5, math.nan]), "`labels` holds NaN or infinite"),
    ],
)
def test_sequence_classification_bad_labels(problem_type, num_labels, labels, match):
    model = SMAForSequenceClassification(tiny_config(num_labels=num_labels, problem_type=problem_type))
    with pytest.raises(ValueError, match=match):
        model(input_ids=IDS, labels=labels)


def test_binary_labels_with_one_logit_are_not_regressed():
    """The authors' release trained 0/1 labels with MSE; here integer labels with one output are refused."""
    model = SMAForSequenceClassification(tiny_config(num_labels=1))
    with pytest.raises(ValueError, match="For a binary task use num_labels=2"):
        model(input_ids=IDS, labels=torch.tensor([0, 1]))


def test_token_classification_bad_labels():
    model = SMAForTokenClassification(tiny_config(num_labels=3))
    with pytest.raises(ValueError, match=r"`labels` must be integer class ids of shape \(2, 5\)"):
        model(input_ids=IDS, labels=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"class ids in \[0, num_labels=3\) or -100"):
        model(input_ids=IDS, labels=torch.full((2, 5), 3))
    with pytest.raises(ValueError, match="Every `labels` entry is -100"):
        model(input_ids=IDS, labels=torch.full((2, 5), -100))


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"input_type": "image"}, "Field 'input_type' expected one of"),
        ({"encoder_type": "perceiver"}, "Field 'encoder_type' expected one of"),
        ({"masking_strategy": "span"}, "Field 'masking_strategy' expected one of"),
        ({"head_aggregation": "max"}, "Field 'head_aggregation' expected one of"),
        ({"classifier_pooling": "cls"}, "Field 'classifier_pooling' expected one of"),
        ({"masking_ratio": 0.0}, r"field 'masking_ratio':\s+ValueError: must be a number in \(0, 1\)"),
        ({"masking_ratio": 1.0}, r"field 'masking_ratio':\s+ValueError: must be a number in \(0, 1\)"),
        ({"mask_noise_ratio": 1.5}, r"field 'mask_noise_ratio':\s+ValueError: must be a number in \[0, 1\]"),
        ({"num_per_query": 0.5}, r"field 'num_per_query':\s+ValueError: must be a number in"),
        ({"hidden_size": "64"}, "Field 'hidden_size' expected int"),
        ({"num_latents": 0}, r"field 'num_latents':\s+ValueError: must be a positive integer"),
        ({"num_hidden_layers": 0}, r"field 'num_hidden_layers':\s+ValueError: must be a positive integer"),
        ({"hidden_size": 30}, "`num_attention_heads`=4 must divide `hidden_size`=30"),
        ({"num_cross_attention_heads": 3}, "`num_cross_attention_heads`=3 must divide `hidden_size`=32"),
        ({"decoder_num_attention_heads": 5}, "`decoder_num_attention_heads`=5 must divide"),
        ({"encoder_type": "self_attention", "embedding_size": 48}, "must equal `hidden_size`"),
        ({"mask_self": True}, "`mask_self=True` needs `encoder_type='self_attention'`"),
        (
            {"encoder_type": "self_attention", "mask_self": True, "masking_strategy": "random"},
            "`mask_self=True` needs `masking_strategy='self_guided'`",
        ),
        ({"mask_token_id": 262}, r"`mask_token_id` must be an id in \[0, vocab_size=262\)"),
        ({"drop_path_rate": 1.0}, r"field 'drop_path_rate':\s+ValueError: must be a number in"),
    ],
)
def test_config_rejects_impossible_values(overrides, match):
    # a field on its own is checked by its type and validator, a rule between fields by `validate_architecture`
    expected = StrictDataclassClassValidationError if "`" in match else StrictDataclassFieldValidationError
    with pytest.raises(expected, match=match):
        tiny_config(**overrides)


def test_config_round_trip(tmp_path):
    config = tiny_config(encoder_type="self_attention", input_type="continuous", mask_self=True, num_labels=4)
    config.save_pretrained(tmp_path)
    reloaded = SMAConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()
    assert reloaded.num_labels == 4 and reloaded.model_type == "sma"
    assert type(SMAModel(reloaded).embeddings.input_projection) is torch.nn.Linear
