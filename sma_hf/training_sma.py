"""Training helpers shared by `sma-pretrain`, `sma-finetune` and `Trainer` users."""

import inspect
import json
import os
from pathlib import Path

from transformers import AutoConfig, AutoFeatureExtractor, AutoTokenizer, PreTrainedConfig, TrainerCallback
from transformers.utils import logging

from .configuration_sma import SMAConfig
from .masking_sma import cosine_noise_scale
from .tokenization_sma import create_byte_tokenizer


logger = logging.get_logger(__name__)

# builders of `datasets` for local files, by extension
FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".txt": "text"}


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
            values = {k: v for k, v in json.load(f).items() if k != "model_type"}
        # a config stores any keyword it is given, so a misspelt field would otherwise be ignored silently
        known = set(inspect.signature(SMAConfig.__init__).parameters) | set(PreTrainedConfig().to_dict())
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{config_name} has fields that SMAConfig does not know: {unknown}.")
        config = SMAConfig(**values)
    if not isinstance(config, SMAConfig):
        raise ValueError(f"The model config must be an SMAConfig, got {type(config).__name__}.")
    return config


def max_input_length(max_seq_length: int | None, config: SMAConfig) -> int:
    """`--max_seq_length`, by default the model's limit; checked against that limit."""
    length = max_seq_length or config.max_position_embeddings
    if not 1 <= length <= config.max_position_embeddings:
        raise ValueError(
            f"--max_seq_length must be in [1, max_position_embeddings={config.max_position_embeddings}], got {length}."
        )
    return length


def load_processor(model_name_or_path: str | None, config: SMAConfig):
    """The checkpoint's tokenizer or feature extractor; a new byte tokenizer (discrete inputs) or None (continuous
    inputs: the caller fits a `SMAFeatureExtractor` on its data) for a new model or a local folder without one."""
    if config.input_type == "discrete":
        auto_class, files = AutoTokenizer, ("tokenizer.json", "tokenizer_config.json")
    else:
        auto_class, files = AutoFeatureExtractor, ("preprocessor_config.json",)
    if model_name_or_path is not None:
        folder = Path(model_name_or_path)
        if not folder.is_dir() or any((folder / name).is_file() for name in files):
            return auto_class.from_pretrained(model_name_or_path)  # a broken processor is an error, not a fallback
        logger.warning(f"{model_name_or_path} holds no {' or '.join(files)}; using a new processor.")
    if config.input_type == "discrete":
        return create_byte_tokenizer(model_max_length=config.max_position_embeddings)
    return None


def write_json_atomic(path: str | os.PathLike, data):
    """Write JSON under a temporary name and rename it, so that a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2, default=str))
    os.replace(partial, path)
