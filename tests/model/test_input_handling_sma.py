"""Input handling: the inputs are checked and derived once per forward, with as few host syncs as the shapes need."""

import traceback

import pytest
import torch
from conftest import ENCODER_TYPES, INPUT_TYPES, ragged_attention_mask, random_inputs, tiny_config
from torch.utils._python_dispatch import TorchDispatchMode

from sma_hf import SMAForMaskedModeling, SMAForSequenceClassification, SMAForTokenClassification, SMAModel


MODEL_CLASSES = [SMAModel, SMAForMaskedModeling, SMAForSequenceClassification, SMAForTokenClassification]


class HostSyncs(TorchDispatchMode):
    """Records each read that makes a CUDA host wait for the device, and whether transformers' mask code made it.

    Counted: reading a value (`.item()`, `bool()`, `int()`: `aten._local_scalar_dense`; `.tolist()`, patched since on
    the CPU it reaches no aten op) and ops whose output shape depends on the data (`nonzero`, boolean indexing).
    """

    def __init__(self):
        super().__init__()
        self.syncs = []  # True where transformers.masking_utils made the read

    def record(self):
        self.syncs.append(any(frame.filename.endswith("masking_utils.py") for frame in traceback.extract_stack()))

    def __enter__(self):
        self.tolist, mode = torch.Tensor.tolist, self

        def tolist(tensor):
            mode.record()
            return mode.tolist(tensor)

        torch.Tensor.tolist = tolist
        return super().__enter__()

    def __exit__(self, *args):
        torch.Tensor.tolist = self.tolist
        return super().__exit__(*args)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        ops = torch.ops.aten
        if (
            func.overloadpacket in (ops._local_scalar_dense, ops.nonzero, ops.masked_select)
            or func.overloadpacket is ops.index
            and any(i is not None and i.dtype == torch.bool for i in args[1])
        ):
            self.record()
        return func(*args, **(kwargs or {}))


def count_syncs(model, **inputs) -> tuple[int, int]:
    """(SMA's own host syncs, those of transformers' mask creation) in one forward, after a warm-up forward."""
    model(**inputs)
    with HostSyncs() as mode:
        model(**inputs)
    return mode.syncs.count(False), mode.syncs.count(True)


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
@pytest.mark.parametrize("input_type", INPUT_TYPES)
def test_host_syncs_per_forward(encoder_type, input_type):
    """One sync reads every checked value; the others are the ones the packed shapes need.

    Self-attention mode packs the visible elements only where a mask is drawn (one sync for the longest row); the key
    masks are built without transformers' `create_bidirectional_mask`, which reads a padding mask on the host to drop
    it where it holds no padding. Before the input handling was reworked (commit 016105a) these forwards took 7 to 12
    SMA syncs.
    """
    config = tiny_config(encoder_type=encoder_type, input_type=input_type, num_labels=3)
    inputs = random_inputs(config, 4, 12)
    attention_mask = ragged_attention_mask(4, 12)
    packing = int(encoder_type == "self_attention")
    masked_modeling = SMAForMaskedModeling(config)
    sequence = SMAForSequenceClassification(config)
    tokens = SMAForTokenClassification(config)
    with torch.no_grad():
        assert count_syncs(SMAModel(config).eval(), **inputs) == (1, 0)
        assert count_syncs(SMAModel(config).eval(), **inputs, attention_mask=attention_mask) == (1, 0)
        assert count_syncs(masked_modeling.eval(), **inputs, attention_mask=attention_mask) == (1, 0)
        assert count_syncs(sequence.eval(), **inputs, attention_mask=attention_mask) == (1, 0)
    # training decodes the masked positions only: one more sync for their longest row
    assert count_syncs(masked_modeling.train(), **inputs, attention_mask=attention_mask) == (2 + packing, 0)
    # given labels are checked in one sync
    labels = torch.tensor([0, 1, 2, 1])
    assert count_syncs(sequence.train(), **inputs, attention_mask=attention_mask, labels=labels) == (2, 0)
    token_labels = torch.randint(0, 3, (4, 12))
    assert count_syncs(tokens.train(), **inputs, attention_mask=attention_mask, labels=token_labels) == (2, 0)


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
@pytest.mark.parametrize("training", [False, True])
def test_inputs_are_derived_once_per_forward(monkeypatch, model_class, training):
    config = tiny_config(encoder_type="self_attention", num_labels=3)
    model = model_class(config).train(training)
    calls = []
    derive = SMAModel.derive_elements

    def counted(self, *args, **kwargs):
        calls.append(type(self))
        return derive(self, *args, **kwargs)

    monkeypatch.setattr(SMAModel, "derive_elements", counted)
    model(**random_inputs(config, 2, 8), attention_mask=ragged_attention_mask(2, 8, side="left"))
    assert calls == [SMAModel]


def test_heads_use_the_positions_the_model_derived():
    """Default positions count valid elements only; a head decodes at the positions its encoder embedded."""
    config = tiny_config(encoder_type="self_attention", num_labels=3)
    model = SMAForTokenClassification(config).eval()
    inputs = random_inputs(config, 1, 6)
    attention_mask = torch.tensor([[0, 0, 1, 1, 1, 1]])
    default = model(**inputs, attention_mask=attention_mask).logits
    explicit = model(**inputs, attention_mask=attention_mask, position_ids=torch.tensor([[0, 0, 0, 1, 2, 3]])).logits
    torch.testing.assert_close(default, explicit, rtol=0, atol=0)


def test_derived_elements_and_input_arguments_are_not_mixed():
    config = tiny_config()
    model = SMAModel(config).eval()
    inputs = random_inputs(config, 2, 5)
    elements = model.derive_elements(**inputs)
    torch.testing.assert_close(model(elements=elements).last_hidden_state, model(**inputs).last_hidden_state)
    with pytest.raises(ValueError, match="Pass `elements` or the input arguments"):
        model(elements=elements, attention_mask=torch.ones(2, 5))
