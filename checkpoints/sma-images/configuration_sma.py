"""Configuration of Self-guided Masked Autoencoders (SMA)."""

from typing import Literal

from huggingface_hub.dataclasses import strict, validated_field
from transformers import PreTrainedConfig


def _checked_field(default, requirement: str, check):
    """A config field whose value must pass `check` beyond its type; `requirement` says what it must be."""

    def validator(value):
        if not check(value):
            raise ValueError(f"must be {requirement}, got {value!r}")

    return validated_field(validator, default=default)


def _positive_int(default: int):
    return _checked_field(default, "a positive integer", lambda value: value >= 1)


def _number_in(default: float, low: float, high: float, *, low_open: bool, high_open: bool):
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def check(value):
        above = low < value if low_open else low <= value
        below = value < high if high_open else value <= high
        return above and below

    return _checked_field(default, f"a number in {interval}", check)


# what `mask_equal_key_norms` and `mask_random_floor` default to with selection by position: the only selection that
# met every mask-health target on all three testbeds of benchmarks/results/mask_selection/study.md
POSITION_SELECTION_DEFAULTS = {"mask_equal_key_norms": True, "mask_random_floor": 0.25}


@strict
class SMAConfig(PreTrainedConfig):
    r"""
    Configuration of an SMA model: an encoder whose first attention layer reads the raw input elements (and chooses
    the mask during pretraining), a stack of self-attention layers, and position-query decoders for per-element
    outputs.

    Args:
        input_type (`str`, defaults to `"discrete"`):
            `"discrete"`: inputs are token ids (`input_ids`, [batch, length]). `"continuous"`: inputs are vectors
            (`inputs`, [batch, length, input_channels]). Only the embedding of the chosen type is built.
        vocab_size (`int`, defaults to 262):
            Number of token ids (discrete inputs). 262 matches the byte tokenizer (256 bytes + 6 special tokens).
        pad_token_id (`int`, defaults to 0):
            Id of the padding token (discrete inputs).
        mask_token_id (`int`, defaults to 3):
            Id of `[MASK]`; positions holding it are always masked (discrete inputs), so `fill-mask` works.
        input_channels (`int`, defaults to 1):
            Values per element (continuous inputs): 1 for a tabular feature, 3 for an RGB pixel.
        embedding_size (`int`, defaults to 256):
            Width of the embedded input elements.
        max_position_embeddings (`int`, defaults to 512):
            Longest input the model accepts (learned absolute positions).
        encoder_type (`str`, defaults to `"cross_attention"`):
            `"cross_attention"`: `num_latents` learned latents read the inputs, then self-attention runs over the
            latents (cost linear in the input length). `"self_attention"`: the first layer is self-attention over the
            inputs; masked and padded elements are then dropped and later layers see only the visible ones.
        num_latents (`int`, defaults to 128):
            Number of latents (`"cross_attention"` only).
        hidden_size (`int`, defaults to 256):
            Width of the latents (`"cross_attention"`) or of the tokens after the first layer (`"self_attention"`,
            where it must equal `embedding_size`).
        num_hidden_layers (`int`, defaults to 4):
            Self-attention layers after the first layer.
        num_attention_heads (`int`, defaults to 8):
            Heads of the self-attention layers (including the first layer in `"self_attention"` mode).
        num_cross_attention_heads (`int`, defaults to 1):
            Heads of the first layer's cross-attention (`"cross_attention"` mode).
        intermediate_size (`int`, defaults to 1024):
            Hidden width of the encoder MLPs.
        hidden_act (`str`, defaults to `"gelu"`):
            Activation of the MLPs.
        hidden_dropout_prob (`float`, defaults to 0.0):
            Dropout on embeddings, residual branches and classifier inputs.
        attention_probs_dropout_prob (`float`, defaults to 0.0):
            Dropout on attention probabilities.
        drop_path_rate (`float`, defaults to 0.0):
            Stochastic depth of the self-attention layers, rising linearly from 0 to this value with depth.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation.
        layer_norm_eps (`float`, defaults to 1e-5):
            Epsilon of the LayerNorms.
        masking_strategy (`str`, defaults to `"self_guided"`):
            How pretraining picks the masked elements: `"self_guided"` (from the first layer's attention) or
            `"random"` (uniform, the BERT/MAE baseline). Both mask exactly round(masking_ratio x valid) elements.
        masking_ratio (`float`, defaults to 0.15):
            Share of the valid elements masked per example during pretraining, in (0, 1).
        mask_selection (`str`, defaults to `"positions"`):
            What a self-guided mask is scored on. `"positions"`: input positions sampled at random per example score
            every input by the first layer's attention between position embeddings alone (the sampled positions'
            keys stand in for queries in `"cross_attention"` mode), so the mask depends on where elements are and
            never on what they are: which elements are masked says nothing of their content beyond their positions.
            `"inputs"`: the first layer's attention over the embedded inputs, content and position, from sampled
            latents (`"cross_attention"`) or input positions (the paper's selection). Its masks can learn to pick
            kinds of content: on proteins they picked residue types, and the visible residues then told the decoder
            which type was missing. A checkpoint saved before this field existed loads with `"inputs"`, the
            selection it was pretrained with.
        mask_equal_key_norms (`bool`, *optional*):
            Selection by position only: rescale every position's key to the keys' mean norm before scoring, so that
            inputs are chosen by the direction of their keys, not by their length (a few long "hub" keys otherwise
            score high against every sampled position and win nearly every example's mask). Defaults to `True` with
            self-guided selection by position, `False` otherwise.
        mask_random_floor (`float`, *optional*):
            Share of every self-guided mask drawn uniformly at random at every step, after the warm-up noise has
            decayed too (the random share is the larger of this and `mask_noise_ratio` x noise scale), in [0, 1).
            Defaults to 0.25 with self-guided selection by position, 0 otherwise (the paper's selection has none).
            Without the two, selection by position settled on one mask for every example on permuted MNIST
            (collapse score 0.82) and drifted that way on proteins; with them it met every mask-health target on
            the three testbeds of the selection study.
        num_per_query (`float`, defaults to 3):
            Expected number of inputs each sampled query contributes to the mask: round(valid x ratio /
            num_per_query) queries are sampled per example.
        head_aggregation (`str`, defaults to `"mean"`):
            How the first layer's heads are combined into the mask score: `"mean"` over heads, or one random head
            per sampled query (`"random_mix"`).
        mask_self (`bool`, defaults to `False`):
            In `"self_attention"` mode, always mask a sampled query's own position.
        mask_noise_ratio (`float`, defaults to 1.0):
            Share of the mask drawn uniformly at random when the noise scale is 1 (see
            [`SMAPreTrainedModel.set_mask_noise_scale`]). The scale is meant to decay from 1 to 0 early in
            pretraining: without this warm-up, self-guided masks can collapse onto trivial elements.
        normalize_continuous_targets (`bool`, defaults to `True`):
            Standardise continuous reconstruction targets per example and channel over the valid elements.
        decoder_hidden_size (`int`, defaults to 256):
            Width of the position-query decoder (reconstruction and per-element heads).
        decoder_num_attention_heads (`int`, defaults to 8):
            Heads of the decoder cross-attention.
        decoder_intermediate_size (`int`, defaults to 1024):
            Hidden width of the decoder MLP.
        classifier_pooling (`str`, defaults to `"attention"`):
            How [`SMAModel`] pools its output into one vector: a learned query attending to the final hidden states
            (`"attention"`) or their mean (`"mean"`).

    As on every `@strict` config of transformers, a field value of the wrong type or outside its choices or range
    raises huggingface_hub's `StrictDataclassFieldValidationError` naming the field, at construction and on
    assignment; the rules between fields (`validate_architecture`) raise `StrictDataclassClassValidationError` at
    construction and in `save_pretrained`. Keys that are no field are stored as they are, as on every
    `PreTrainedConfig`.
    """

    model_type = "sma"

    input_type: Literal["discrete", "continuous"] = "discrete"
    vocab_size: int = _positive_int(262)
    pad_token_id: int | None = 0
    mask_token_id: int | None = 3
    input_channels: int = _positive_int(1)
    embedding_size: int = _positive_int(256)
    max_position_embeddings: int = _positive_int(512)
    encoder_type: Literal["cross_attention", "self_attention"] = "cross_attention"
    num_latents: int = _positive_int(128)
    hidden_size: int = _positive_int(256)
    num_hidden_layers: int = _positive_int(4)
    num_attention_heads: int = _positive_int(8)
    num_cross_attention_heads: int = _positive_int(1)
    intermediate_size: int = _positive_int(1024)
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = _number_in(0.0, 0, 1, low_open=False, high_open=True)
    attention_probs_dropout_prob: float | int = _number_in(0.0, 0, 1, low_open=False, high_open=True)
    drop_path_rate: float | int = _number_in(0.0, 0, 1, low_open=False, high_open=True)
    initializer_range: float | int = _number_in(0.02, 0, float("inf"), low_open=True, high_open=True)
    layer_norm_eps: float | int = _number_in(1e-5, 0, float("inf"), low_open=True, high_open=True)
    masking_strategy: Literal["self_guided", "random"] = "self_guided"
    masking_ratio: float | int = _number_in(0.15, 0, 1, low_open=True, high_open=True)
    mask_selection: Literal["positions", "inputs"] = "positions"
    mask_equal_key_norms: bool | None = None
    mask_random_floor: float | int | None = _checked_field(
        None, "None or a number in [0, 1)", lambda value: value is None or 0 <= value < 1
    )
    num_per_query: float | int = _number_in(3, 1, float("inf"), low_open=False, high_open=True)
    head_aggregation: Literal["mean", "random_mix"] = "mean"
    mask_self: bool = False
    mask_noise_ratio: float | int = _number_in(1.0, 0, 1, low_open=False, high_open=False)
    normalize_continuous_targets: bool = True
    decoder_hidden_size: int = _positive_int(256)
    decoder_num_attention_heads: int = _positive_int(8)
    decoder_intermediate_size: int = _positive_int(1024)
    classifier_pooling: Literal["attention", "mean"] = "attention"

    def __post_init__(self, **kwargs):
        # the options left unset take the defaults of the selection asked for (see the docstring)
        by_position = self.masking_strategy == "self_guided" and self.mask_selection == "positions"
        if self.mask_equal_key_norms is None:
            self.mask_equal_key_norms = by_position and POSITION_SELECTION_DEFAULTS["mask_equal_key_norms"]
        if self.mask_random_floor is None:
            self.mask_random_floor = POSITION_SELECTION_DEFAULTS["mask_random_floor"] if by_position else 0.0
        super().__post_init__(**kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        # a config that `save_pretrained` wrote (it records `transformers_version`) before a selection field existed
        # was pretrained without it: keep its selection, so that its pretraining goes on as it began (the paper's
        # selection before `mask_selection`; no equal key norms and no random floor before those)
        if "transformers_version" in config_dict:
            given = {**config_dict, **kwargs}
            before = {"mask_selection": "inputs", "mask_equal_key_norms": False, "mask_random_floor": 0.0}
            config_dict = {**config_dict, **{name: value for name, value in before.items() if name not in given}}
        # another selection asked for at load time: the options it does not give take that selection's defaults
        selection = {name: kwargs.pop(name) for name in ("mask_selection", "masking_strategy") if name in kwargs}
        if selection:  # given to the constructor, which derives the options from it
            derived = [name for name in POSITION_SELECTION_DEFAULTS if name not in kwargs]
            config_dict = {k: v for k, v in config_dict.items() if k not in derived} | selection
        return super().from_dict(config_dict, **kwargs)

    def validate_architecture(self):
        """The rules between fields (run by `@strict` after `__init__` and by `save_pretrained`)."""
        for width, heads in (
            ("hidden_size", "num_attention_heads"),
            ("hidden_size", "num_cross_attention_heads"),
            ("decoder_hidden_size", "decoder_num_attention_heads"),
        ):
            if getattr(self, width) % getattr(self, heads):
                raise ValueError(f"`{heads}`={getattr(self, heads)} must divide `{width}`={getattr(self, width)}.")
        if self.input_type == "discrete":
            for name in ("pad_token_id", "mask_token_id"):
                value = getattr(self, name)
                if value is None or not 0 <= value < self.vocab_size:
                    raise ValueError(f"`{name}` must be an id in [0, vocab_size={self.vocab_size}), got {value!r}.")
        if self.encoder_type == "self_attention" and self.embedding_size != self.hidden_size:
            raise ValueError(
                "`encoder_type='self_attention'` keeps one token per input element, so `embedding_size` "
                f"({self.embedding_size}) must equal `hidden_size` ({self.hidden_size})."
            )
        if self.mask_self and self.encoder_type != "self_attention":
            raise ValueError(
                "`mask_self=True` needs `encoder_type='self_attention'` (in cross-attention the queries are latents, "
                "not input positions)."
            )
        if self.mask_equal_key_norms and not (
            self.masking_strategy == "self_guided" and self.mask_selection == "positions"
        ):
            raise ValueError(
                "`mask_equal_key_norms=True` rescales the position keys that choose the mask: it needs "
                "`masking_strategy='self_guided'` and `mask_selection='positions'` (it is their default: set it to "
                "False along with another selection)."
            )
        if self.mask_random_floor and self.masking_strategy != "self_guided":
            raise ValueError(
                "`mask_random_floor` > 0 needs `masking_strategy='self_guided'` (random masks are random throughout; "
                "0.25 is the default of selection by position: set it to 0 along with random masks)."
            )
        if self.mask_self and self.masking_strategy != "self_guided":
            raise ValueError(
                "`mask_self=True` needs `masking_strategy='self_guided'` (random masking samples no queries)."
            )


__all__ = ["SMAConfig"]
