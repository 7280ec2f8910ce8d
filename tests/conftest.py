import importlib
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from sma_hf import SMAConfig


# transformers loads with a device map through accelerate, which the plain install does not bring
NEEDS_ACCELERATE = pytest.mark.skipif(
    importlib.util.find_spec("accelerate") is None, reason="device_map needs accelerate (the train extra)"
)
ENCODER_TYPES = ("cross_attention", "self_attention")
INPUT_TYPES = ("discrete", "continuous")
STRATEGIES = ("self_guided", "random")


def tiny_config(**overrides) -> SMAConfig:
    """A model small enough for many forward passes per test on a CPU."""
    values = dict(
        embedding_size=32,
        hidden_size=32,
        num_latents=8,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_cross_attention_heads=2,
        intermediate_size=64,
        decoder_hidden_size=32,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=64,
        max_position_embeddings=64,
        input_channels=3,
        masking_ratio=0.3,
    )
    values.update(overrides)
    return SMAConfig(**values)


def random_inputs(config: SMAConfig, batch_size: int, length: int, seed: int = 0) -> dict:
    """`input_ids` (ordinary bytes, never special ids) or `inputs` matching the config."""
    generator = torch.Generator().manual_seed(seed)
    if config.input_type == "discrete":
        return {"input_ids": torch.randint(6, config.vocab_size, (batch_size, length), generator=generator)}
    return {"inputs": torch.randn(batch_size, length, config.input_channels, generator=generator)}


def ragged_attention_mask(batch_size: int, length: int, side: str = "right") -> torch.Tensor:
    """Rows with length, length - 3, length - 6, ... valid elements (at least 2), padded on `side`."""
    mask = torch.zeros(batch_size, length, dtype=torch.long)
    for row in range(batch_size):
        valid = max(length - 3 * row, 2)
        if side == "right":
            mask[row, :valid] = 1
        else:
            mask[row, length - valid :] = 1
    return mask


def visible_states(states: torch.Tensor, hidden_mask: torch.Tensor | None) -> torch.Tensor:
    """The states of the visible elements, [num_visible, width] in row order, however the slots are laid out
    (in place or packed; see `SMAModelOutput.hidden_mask`); all of them where there is no `hidden_mask`."""
    return states if hidden_mask is None else states[hidden_mask]


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture
def benchmark_script(monkeypatch):
    """Import a script of benchmarks/ (a folder of scripts, not a package) afresh by name, with the datasets library's
    sleep at thread shutdown turned off."""
    import datasets.config

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))

    def load(name: str):
        monkeypatch.delitem(sys.modules, name, raising=False)
        return importlib.import_module(name)

    return load
