"""Training helpers shared by `sma-pretrain`, `sma-finetune` and `Trainer` users."""

import json

from transformers import AutoConfig, AutoFeatureExtractor, AutoTokenizer, TrainerCallback

from .configuration_sma import SMAConfig
from .masking_sma import cosine_noise_scale
from .tokenization_sma import create_byte_tokenizer


class SMAMaskNoiseCallback(TrainerCallback):
    """Lowers the self-guided mask's warm-up noise from 1 to 0 on a half cosine over the first part of training.

    The scale follows `state.global_step`, so a resumed run continues where it stopped (the scale itself is not saved
    with the model: a freshly loaded model starts at 1).

    Args:
        warmup_ratio (`float`, defaults to 0.25):
            Share of `max_steps` over which the noise decays (0.25 in the SMA release).
    """

    def __init__(self, warmup_ratio: float = 0.25):
        if not 0.0 <= warmup_ratio <= 1.0:
            raise ValueError(f"`warmup_ratio` must be in [0, 1], got {warmup_ratio!r}.")
        self.warmup_ratio = warmup_ratio

    def _apply(self, state, model):
        scale = cosine_noise_scale(state.global_step, round(self.warmup_ratio * state.max_steps))
        model.set_mask_noise_scale(scale)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._apply(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._apply(state, model)


def load_sma_config(model_name_or_path: str | None, config_name: str | None) -> SMAConfig:
    """The config of a checkpoint (folder or Hub id), or of an `SMAConfig` JSON file for training from scratch."""
    if model_name_or_path is not None:
        config = AutoConfig.from_pretrained(model_name_or_path)
    else:
        with open(config_name) as f:
            config = SMAConfig(**{k: v for k, v in json.load(f).items() if k != "model_type"})
    if not isinstance(config, SMAConfig):
        raise ValueError(f"The model config must be an SMAConfig, got {type(config).__name__}.")
    return config


def load_processor(model_name_or_path: str | None, config: SMAConfig):
    """The checkpoint's tokenizer or feature extractor; else a new byte tokenizer (discrete inputs) or None
    (continuous inputs: the caller fits a `SMAFeatureExtractor` on its data)."""
    if model_name_or_path is not None:
        auto_class = AutoTokenizer if config.input_type == "discrete" else AutoFeatureExtractor
        try:
            return auto_class.from_pretrained(model_name_or_path)
        except (OSError, ValueError):
            pass
    if config.input_type == "discrete":
        return create_byte_tokenizer(model_max_length=config.max_position_embeddings)
    return None
