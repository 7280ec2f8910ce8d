"""Checkpoints saved before `SMAConfig` became a `@strict` dataclass load and give the same outputs.

The fixtures in `fixtures/sma-tiny-v0/` were saved by the code of commit 016105a (see `fixtures/make_sma_tiny_v0.py`):
config.json, weights and that commit's code files, and `expected_outputs.safetensors` with the outputs that code gave.
"""

import shutil
from pathlib import Path

import pytest
import torch
from conftest import NEEDS_ACCELERATE, visible_states
from safetensors.torch import load_file, save_file
from test_loading_sma import BLOCK_PACKAGE, run_python
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

import sma_hf
from sma_hf import SMAConfig, SMAForMaskedModeling, SMAForSequenceClassification, SMAModel


FIXTURES = Path(__file__).parent / "fixtures" / "sma-tiny-v0"
FOLDERS = ["discrete-cross-attention", "continuous-self-attention"]
# the head each fixture was saved from (with expected logits)
HEAD_OF = {
    "discrete-cross-attention": "AutoModelForMaskedLM",
    "continuous-self-attention": "AutoModelForSequenceClassification",
}
AUTO_CLASSES = [
    "AutoModel",
    "AutoModelForMaskedLM",
    "AutoModelForPreTraining",
    "AutoModelForSequenceClassification",
    "AutoModelForTokenClassification",
]
TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}


def expected_outputs(folder: str) -> tuple[dict, dict]:
    saved = load_file(FIXTURES / folder / "expected_outputs.safetensors")
    inputs = {name.removeprefix("inputs."): value for name, value in saved.items() if name.startswith("inputs.")}
    return inputs, {name: value for name, value in saved.items() if not name.startswith("inputs.")}


@pytest.mark.parametrize("folder", FOLDERS)
@pytest.mark.parametrize("device_map", [None, pytest.param("cpu", marks=NEEDS_ACCELERATE)])
def test_outputs_are_unchanged_with_the_package(folder, device_map):
    inputs, expected = expected_outputs(folder)
    assert type(SMAConfig.from_pretrained(FIXTURES / folder)) is SMAConfig
    with torch.no_grad():
        model = AutoModel.from_pretrained(FIXTURES / folder, device_map=device_map).eval()
        assert type(model) is SMAModel
        out = model(**inputs)
        # the visible elements' states: the old code packed them, today's leaves them in place without a mask drawn
        torch.testing.assert_close(
            visible_states(out.last_hidden_state, out.hidden_mask),
            visible_states(expected["AutoModel.last_hidden_state"], expected.get("AutoModel.hidden_mask")),
            **TOLERANCE,
        )
        torch.testing.assert_close(out.pooler_output, expected["AutoModel.pooler_output"], **TOLERANCE)
        assert torch.equal(out.mask, expected["AutoModel.mask"])
        if "AutoModel.hidden_mask" in expected:  # in place: the visible slots are the valid elements
            assert torch.equal(out.hidden_mask, inputs["attention_mask"].bool())
        head_name = HEAD_OF[folder]
        auto_class = (
            AutoModelForMaskedLM if head_name == "AutoModelForMaskedLM" else AutoModelForSequenceClassification
        )
        head = auto_class.from_pretrained(FIXTURES / folder, device_map=device_map).eval()
        assert type(head) is (
            SMAForMaskedModeling if head_name == "AutoModelForMaskedLM" else SMAForSequenceClassification
        )
        out = head(**inputs)
        torch.testing.assert_close(out.logits, expected[f"{head_name}.logits"], **TOLERANCE)
        if f"{head_name}.loss" in expected:
            torch.testing.assert_close(out.loss, expected[f"{head_name}.loss"], **TOLERANCE)


@pytest.mark.slow
@pytest.mark.parametrize("folder", FOLDERS)
def test_outputs_are_unchanged_with_remote_code_for_every_head(tmp_path, folder):
    """The old checkpoint (its config.json and weights as saved) with today's code files, and as saved (its own old
    code files), both loaded where `sma_hf` cannot be imported, for every head."""
    inputs, expected = expected_outputs(folder)
    today = tmp_path / "checkpoint-with-todays-code"
    shutil.copytree(FIXTURES / folder, today)
    for name in ("configuration_sma.py", "modeling_sma.py", "masking_sma.py", "feature_extraction_sma.py"):
        if (today / name).is_file():
            shutil.copyfile(Path(sma_hf.__file__).parent / name, today / name)
    assert (today / "config.json").read_bytes() == (FIXTURES / folder / "config.json").read_bytes()
    head_name = HEAD_OF[folder]
    # the heads whose weights the checkpoint holds (the others are new, and only their encoder output is compared)
    with_saved_head = (
        {"AutoModelForMaskedLM", "AutoModelForPreTraining"} if head_name == "AutoModelForMaskedLM" else {head_name}
    )
    save_file({f"inputs.{k}": v for k, v in inputs.items()} | expected, tmp_path / "expected.safetensors")
    stdout = run_python(
        BLOCK_PACKAGE
        + f"""
import itertools, torch, transformers
from safetensors.torch import load_file
saved = load_file({str(tmp_path / "expected.safetensors")!r})
inputs = {{k.removeprefix("inputs."): v for k, v in saved.items() if k.startswith("inputs.")}}
tolerance = {TOLERANCE!r}
for checkpoint, auto_name in itertools.product({[str(today), str(FIXTURES / folder)]!r}, {AUTO_CLASSES!r}):
    model = getattr(transformers, auto_name).from_pretrained(checkpoint, trust_remote_code=True).eval()
    assert "sma_hf" not in type(model).__module__ and type(model).__module__.startswith("transformers_modules.")
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    # every head runs the same encoder: its last hidden state is the base model's output, compared on the visible
    # elements in self_attention mode (the old code packed them; today's leaves them in place without a mask drawn)
    states, expected_states = out.hidden_states[-1], saved["AutoModel.last_hidden_state"]
    if "AutoModel.hidden_mask" in saved:
        old_code = checkpoint == {str(FIXTURES / folder)!r}
        # today's visible slots are the valid ones: this fixture has continuous inputs (no [MASK] tokens)
        states = states[saved["AutoModel.hidden_mask"] if old_code else inputs["attention_mask"].bool()]
        expected_states = expected_states[saved["AutoModel.hidden_mask"]]
    torch.testing.assert_close(states, expected_states, **tolerance)
    if auto_name == "AutoModel":
        torch.testing.assert_close(out.pooler_output, saved["AutoModel.pooler_output"], **tolerance)
    elif auto_name in {sorted(with_saved_head)!r}:
        torch.testing.assert_close(out.logits, saved[{head_name + ".logits"!r}], **tolerance)
    print(auto_name, type(model).__name__)
""",
        HF_HOME=str(tmp_path / "hf_home"),
        HF_HUB_OFFLINE="1",
    )
    assert [line.split()[0] for line in stdout.splitlines()] == AUTO_CLASSES * 2  # today's code, then the old
