"""Self-guided Masked Autoencoders (SMA) for Hugging Face transformers.

Importing the package registers every SMA class with the Auto classes, so `AutoModel.from_pretrained` and friends
work on SMA checkpoints without `trust_remote_code`.
"""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration_sma import SMAConfig
from .feature_extraction_sma import SMAFeatureExtractor
from .masking_sma import cosine_noise_scale, random_masked_positions, self_guided_masked_positions
from .modeling_sma import (
    SMAForMaskedModeling,
    SMAForSequenceClassification,
    SMAForTokenClassification,
    SMAModel,
    SMAPreTrainedModel,
)
from .tokenization_sma import create_byte_tokenizer
from .training_sma import SMAMaskNoiseCallback


AutoConfig.register("sma", SMAConfig)
for auto_class, model_class in (
    (AutoModel, SMAModel),
    (AutoModelForPreTraining, SMAForMaskedModeling),
    (AutoModelForMaskedLM, SMAForMaskedModeling),
    (AutoModelForSequenceClassification, SMAForSequenceClassification),
    (AutoModelForTokenClassification, SMAForTokenClassification),
):
    auto_class.register(SMAConfig, model_class)
AutoFeatureExtractor.register(SMAConfig, SMAFeatureExtractor)

# saved folders carry the code files, so that they load with trust_remote_code where this package is not installed
SMAConfig.register_for_auto_class()
SMAModel.register_for_auto_class("AutoModel")
SMAForMaskedModeling.register_for_auto_class("AutoModelForMaskedLM")
SMAForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
SMAForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")
SMAFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

__all__ = [
    "SMAConfig",
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
