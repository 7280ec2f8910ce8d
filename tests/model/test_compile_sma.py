"""torch.compile runs the training step and gives the eager step's loss and gradients."""

import torch
from conftest import random_inputs, tiny_config

from sma_hf import SMAForMaskedModeling


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
