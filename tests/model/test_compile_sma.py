"""torch.compile runs the training step and gives the eager step's loss and gradients."""

import pytest
import torch
from conftest import random_inputs, tiny_config

from sma_hf import SMAForMaskedModeling


pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` leaves it out


def test_compiled_training_step_matches_eager():
    config = tiny_config(encoder_type="cross_attention", num_hidden_layers=1)
    inputs = random_inputs(config, 2, 16)
    masked = torch.zeros(2, 16, dtype=torch.bool)
    masked[:, [2, 5, 11]] = True  # an explicit mask: the compiled and eager steps see the same one
    torch.manual_seed(0)
    model = SMAForMaskedModeling(config).train()

    def step():
        model.zero_grad()
        loss = model(**inputs, masked_positions=masked).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    eager_loss, eager_grads = step()
    compiled_loss, compiled_grads = torch.compile(step)()
    torch.testing.assert_close(compiled_loss, eager_loss, atol=1e-5, rtol=1e-5)
    for compiled, eager in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "encoder_type,selection",
    [("self_attention", "inputs"), ("self_attention", "positions"), ("cross_attention", "positions")],
)
def test_compiled_self_guided_step_on_the_fused_path_matches_eager(encoder_type, selection):
    """The self-guided mask from the sampled rows' logits (the paper's selection in self_attention mode, selection by
    position in both), then sdpa; the generator drives the same draws in the compiled step as in the eager one."""
    config = tiny_config(encoder_type=encoder_type, num_hidden_layers=1, head_aggregation="random_mix",
                         mask_self=encoder_type == "self_attention", mask_selection=selection)  # fmt: skip
    inputs = random_inputs(config, 2, 16)
    torch.manual_seed(0)
    model = SMAForMaskedModeling(config).train()
    model.set_mask_noise_scale(0.5)

    def step(seed):
        model.zero_grad()
        out = model(**inputs, generator=torch.Generator().manual_seed(seed))
        out.loss.backward()
        return out.mask, out.loss.detach(), [p.grad.clone() for p in model.parameters()]

    eager_mask, eager_loss, eager_grads = step(3)
    compiled_mask, compiled_loss, compiled_grads = torch.compile(step)(3)
    assert torch.equal(compiled_mask, eager_mask)
    torch.testing.assert_close(compiled_loss, eager_loss, atol=1e-5, rtol=1e-5)
    for compiled, eager in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-4)
