"""`SMAConfig` as a `@strict` dataclass: typed fields, `Literal` choices, `validate_architecture`, the same keys."""

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import tiny_config
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from transformers import AutoConfig

from sma_hf import SMAConfig


FIXTURES = Path(__file__).parent / "fixtures" / "sma-tiny-v0"

# the keyword defaults of the hand-written `SMAConfig.__init__` before it became a dataclass (commit 016105a)
DEFAULTS_BEFORE_STRICT = {
    "input_type": "discrete", "vocab_size": 262, "pad_token_id": 0, "mask_token_id": 3, "input_channels": 1,
    "embedding_size": 256, "max_position_embeddings": 512, "encoder_type": "cross_attention", "num_latents": 128,
    "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8, "num_cross_attention_heads": 1,
    "intermediate_size": 1024, "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
    "drop_path_rate": 0.0, "initializer_range": 0.02, "layer_norm_eps": 1e-05, "masking_strategy": "self_guided",
    "masking_ratio": 0.15, "num_per_query": 3, "head_aggregation": "mean", "mask_self": False,
    "mask_noise_ratio": 1.0, "normalize_continuous_targets": True, "decoder_hidden_size": 256,
    "decoder_num_attention_heads": 8, "decoder_intermediate_size": 1024, "classifier_pooling": "attention",
}  # fmt: skip


def test_fields_and_defaults_are_those_of_before():
    own_fields = {f.name: f.default for f in dataclasses.fields(SMAConfig)}
    assert {name: own_fields[name] for name in DEFAULTS_BEFORE_STRICT} == DEFAULTS_BEFORE_STRICT
    config = SMAConfig()
    assert {name: getattr(config, name) for name in DEFAULTS_BEFORE_STRICT} == DEFAULTS_BEFORE_STRICT


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"hidden_size": "64"}, r"Field 'hidden_size' expected int, got str \(value: '64'\)"),
        ({"num_latents": 8.0}, r"Field 'num_latents' expected int, got float \(value: 8\.0\)"),
        ({"mask_self": "yes"}, r"Field 'mask_self' expected bool, got str \(value: 'yes'\)"),
        ({"masking_ratio": True}, r"Field 'masking_ratio' expected float, got bool \(value: True\)"),
        ({"input_type": "image"}, r"Field 'input_type' expected one of \('discrete', 'continuous'\), got image"),
        ({"num_latents": 0}, r"field 'num_latents':\s+ValueError: must be a positive integer, got 0"),
    ],
)
def test_wrong_type_choice_or_range_is_refused(overrides, match):
    with pytest.raises(StrictDataclassFieldValidationError, match=match):
        tiny_config(**overrides)


def test_assignment_is_checked_too():
    config = tiny_config()
    config.classifier_pooling = "mean"
    with pytest.raises(StrictDataclassFieldValidationError, match="Field 'classifier_pooling' expected one of"):
        config.classifier_pooling = "cls"
    with pytest.raises(StrictDataclassFieldValidationError, match=r"must be a number in \(0, 1\), got 1\.5"):
        config.masking_ratio = 1.5
    assert config.classifier_pooling == "mean" and config.masking_ratio == 0.3


def test_rules_between_fields_run_at_construction_and_when_saving(tmp_path):
    with pytest.raises(
        StrictDataclassClassValidationError, match="`num_attention_heads`=4 must divide `hidden_size`=30"
    ):
        tiny_config(hidden_size=30)
    config = tiny_config()
    config.mask_self = True  # a field on its own is fine; the rule between fields is checked when saving
    with pytest.raises(
        StrictDataclassClassValidationError, match="`mask_self=True` needs `encoder_type='self_attention'`"
    ):
        config.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"mask_equal_key_norms": True, "mask_selection": "inputs"}, "needs `masking_strategy='self_guided'` and"),
        ({"mask_equal_key_norms": True, "masking_strategy": "random"}, "`mask_selection='positions'`"),
        ({"mask_random_floor": 0.25, "masking_strategy": "random"}, "`mask_random_floor` > 0 needs"),
    ],
)
def test_selection_options_that_would_change_nothing_are_refused(overrides, match):
    with pytest.raises(StrictDataclassClassValidationError, match=match):
        tiny_config(**overrides)
    with pytest.raises(StrictDataclassFieldValidationError, match=r"must be None or a number in \[0, 1\), got 1"):
        tiny_config(mask_random_floor=1)


@pytest.mark.parametrize(
    "selection,expected",
    [
        ({}, (True, 0.25)),  # selection by position, the default: the study's remedies
        ({"mask_selection": "inputs"}, (False, 0.0)),  # the paper's selection, as the paper made it
        ({"masking_strategy": "random"}, (False, 0.0)),
        ({"mask_random_floor": 0.0}, (True, 0.0)),  # a value given is kept
        ({"mask_selection": "inputs", "mask_random_floor": 0.1}, (False, 0.1)),
    ],
)
def test_selection_options_default_to_what_the_study_chose_for_the_selection(tmp_path, selection, expected):
    config = tiny_config(**selection)
    assert (config.mask_equal_key_norms, config.mask_random_floor) == expected
    config.save_pretrained(tmp_path)  # written out, so that a checkpoint keeps them whatever the defaults become
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["mask_equal_key_norms"], saved["mask_random_floor"]) == expected


def test_a_config_saved_before_the_remedies_keeps_selecting_without_them(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    for name in ("mask_equal_key_norms", "mask_random_floor"):
        del saved[name]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = SMAConfig.from_pretrained(tmp_path)
    assert (config.mask_selection, config.mask_equal_key_norms, config.mask_random_floor) == ("positions", False, 0.0)


def test_continuous_models_need_no_token_ids():
    config = tiny_config(input_type="continuous", pad_token_id=None, mask_token_id=None)
    assert config.pad_token_id is None
    with pytest.raises(
        StrictDataclassClassValidationError, match=r"`pad_token_id` must be an id in \[0, vocab_size=262\)"
    ):
        tiny_config(pad_token_id=None)


def test_save_load_round_trip_keeps_every_key(tmp_path):
    config = tiny_config(encoder_type="self_attention", input_type="continuous", mask_self=True, num_labels=4)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert set(DEFAULTS_BEFORE_STRICT) <= set(saved)  # fields at their default are written too
    reloaded = SMAConfig.from_pretrained(tmp_path)
    assert type(reloaded) is SMAConfig and reloaded.to_dict() == config.to_dict()


@pytest.mark.parametrize("folder", ["discrete-cross-attention", "continuous-self-attention"])
def test_config_saved_before_strict_loads_and_saves_the_same_keys(tmp_path, folder):
    before = json.loads((FIXTURES / folder / "config.json").read_text())
    config = SMAConfig.from_pretrained(FIXTURES / folder)
    assert {name: getattr(config, name) for name in DEFAULTS_BEFORE_STRICT} == {
        name: before[name] for name in DEFAULTS_BEFORE_STRICT
    }
    # it was pretrained with the paper's selection, which it keeps; a config written by hand gets the default
    assert config.mask_selection == "inputs"
    assert SMAConfig.from_dict({k: v for k, v in before.items() if k != "transformers_version"}).mask_selection == (
        "positions"
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    added_since = {"mask_selection": "inputs", "mask_equal_key_norms": False, "mask_random_floor": 0.0}
    assert {name: saved.pop(name) for name in added_since} == added_since  # the old behaviour, written out
    assert {**saved, "transformers_version": None} == {**before, "transformers_version": None}
    assert SMAConfig.from_pretrained(tmp_path).mask_selection == "inputs"


def test_a_bad_value_in_config_json_is_refused(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "encoder_type": "perceiver"}))
    with pytest.raises(StrictDataclassFieldValidationError, match="Field 'encoder_type' expected one of"):
        SMAConfig.from_pretrained(tmp_path)


def test_auto_config_and_unknown_keys():
    config = AutoConfig.for_model("sma", hidden_size=64, num_attention_heads=4)
    assert type(config) is SMAConfig and config.hidden_size == 64
    # like every PreTrainedConfig, a key that is no field is stored, not refused: list the fields to catch a typo
    assert SMAConfig(masking_ration=0.2).masking_ration == 0.2
    assert "masking_ration" not in {f.name for f in dataclasses.fields(SMAConfig)}
    assert set(DEFAULTS_BEFORE_STRICT) <= {f.name for f in dataclasses.fields(SMAConfig)}


@pytest.mark.parametrize(
    "override,expected",
    [
        ({"mask_selection": "inputs"}, ("inputs", False, 0.0)),
        ({"masking_strategy": "random"}, ("positions", False, 0.0)),
        ({"mask_selection": "inputs", "mask_random_floor": 0.1}, ("inputs", False, 0.1)),
        ({}, ("positions", True, 0.25)),
    ],
)
def test_another_selection_at_load_time_takes_its_own_defaults(tmp_path, override, expected):
    """A checkpoint saved with selection by position (equal key norms and floor 0.25 written out), loaded with
    another selection: the options it does not give follow that selection, so the config is valid as loaded."""
    tiny_config().save_pretrained(tmp_path)
    config = SMAConfig.from_pretrained(tmp_path, **override)
    assert (config.mask_selection, config.mask_equal_key_norms, config.mask_random_floor) == expected
    config.validate()


def test_assigning_another_selection_says_which_default_stands_in_the_way():
    config = tiny_config()
    config.masking_strategy = "random"
    with pytest.raises(StrictDataclassClassValidationError, match="it is their default: set it to False"):
        config.validate()
