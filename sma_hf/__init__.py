"""Self-guided Masked Autoencoders (SMA) for Hugging Face transformers.

The top level of the package is the model. `configuration_sma.py`, `modeling_sma.py` and `masking_sma.py` (and
`feature_extraction_sma.py` for continuous inputs) travel with every saved checkpoint as its remote code, so they
import each other only with flat relative imports. `tokenization_sma.py` builds a plain `tokenizer.json` (no code
travels with it) and `callbacks_sma.py` holds the `Trainer` callback of the mask warm-up.

`sma_hf.tools` holds the command-line tools (data preparation, pretraining, fine-tuning, model cards and the Hub);
they need the `train` extra: `pip install "sma_hf[train]"`.

Importing the package registers every SMA class with the Auto classes, so `AutoModel.from_pretrained` and friends
work on SMA checkpoints without `trust_remote_code`.
"""

import transformers
from transformers import AutoConfig, AutoFeatureExtractor

from . import modeling_sma
from .callbacks_sma import SMAMaskNoiseCallback
from .configuration_sma import SMAConfig
from .feature_extraction_sma import SMAFeatureExtractor
from .masking_sma import cosine_noise_scale, random_masked_positions, self_guided_masked_positions
from .modeling_sma import (
    SMAElements,
    SMAForMaskedModeling,
    SMAForSequenceClassification,
    SMAForTokenClassification,
    SMAModel,
    SMAPreTrainedModel,
)
from .tokenization_sma import create_byte_tokenizer


def _register_with_auto_classes():
    """One table, `modeling_sma.AUTO_MAP`, says which Auto class loads which head: here in-process, and in every
    saved config.json for loading with trust_remote_code where this package is not installed. Registering a class
    for an Auto class also makes `save_pretrained` copy its code files into the folder."""
    AutoConfig.register("sma", SMAConfig)
    SMAConfig.register_for_auto_class()
    for auto_name, reference in modeling_sma.AUTO_MAP.items():
        if auto_name != "AutoConfig":
            model_class = getattr(modeling_sma, reference.rsplit(".", 1)[1])
            getattr(transformers, auto_name).register(SMAConfig, model_class)
            model_class.register_for_auto_class(auto_name)
    AutoFeatureExtractor.register(SMAConfig, SMAFeatureExtractor)
    SMAFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")


_register_with_auto_classes()

__all__ = [
    "SMAConfig",
    "SMAElements",
    "SMAFeatureExtractor",
    "SMAForMaskedModeling",
    "SMAForSequenceClassification",
    "SMAForTokenClassification",
    "SMAMaskNoiseCallback",
    "SMAModel",
    "SMAPreTrainedModel",
    "cosine_noise_scale",
    "create_byte_tokenizer",
    "random_masked_positions",
    "self_guided_masked_positions",
]
