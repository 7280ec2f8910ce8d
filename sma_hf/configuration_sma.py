"""Configuration of Self-guided Masked Autoencoders (SMA)."""

from transformers import PreTrainedConfig


INPUT_TYPES = ("discrete", "continuous")
ENCODER_TYPES = ("cross_attention", "self_attention")
MASKING_STRATEGIES = ("self_guided", "random")
HEAD_AGGREGATIONS = ("mean", "random_mix")
CLASSIFIER_POOLINGS = ("attention", "mean")


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
    """

    model_type = "sma"

    def __init__(
        self,
        input_type="discrete",
        vocab_size=262,
        pad_token_id=0,
        mask_token_id=3,
        input_channels=1,
        embedding_size=256,
        max_position_embeddings=512,
        encoder_type="cross_attention",
        num_latents=128,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_cross_attention_heads=1,
        intermediate_size=1024,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0,
        initializer_range=0.02,
        layer_norm_eps=1e-5,
        masking_strategy="self_guided",
        masking_ratio=0.15,
        num_per_query=3,
        head_aggregation="mean",
        mask_self=False,
        mask_noise_ratio=1.0,
        normalize_continuous_targets=True,
        decoder_hidden_size=256,
        decoder_num_attention_heads=8,
        decoder_intermediate_size=1024,
        classifier_pooling="attention",
        **kwargs,
    ):
        self.input_type = input_type
        self.vocab_size = vocab_size
        self.pad_token_id = pad_token_id
        self.mask_token_id = mask_token_id
        self.input_channels = input_channels
        self.embedding_size = embedding_size
        self.max_position_embeddings = max_position_embeddings
        self.encoder_type = encoder_type
        self.num_latents = num_latents
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_cross_attention_heads = num_cross_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.masking_strategy = masking_strategy
        self.masking_ratio = masking_ratio
        self.num_per_query = num_per_query
        self.head_aggregation = head_aggregation
        self.mask_self = mask_self
        self.mask_noise_ratio = mask_noise_ratio
        self.normalize_continuous_targets = normalize_continuous_targets
        self.decoder_hidden_size = decoder_hidden_size
        self.decoder_num_attention_heads = decoder_num_attention_heads
        self.decoder_intermediate_size = decoder_intermediate_size
        self.classifier_pooling = classifier_pooling
        super().__init__(**kwargs)
        self._check_values()

    def _check_values(self):
        def choice(name, allowed):
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}.")

        def positive_int(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")

        def in_range(name, low, high, low_open, high_open):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
            if not ok:
                interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
                raise ValueError(f"`{name}` must be a number in {interval}, got {value!r}.")

        def divides(width_name, heads_name):
            if getattr(self, width_name) % getattr(self, heads_name):
                raise ValueError(
                    f"`{heads_name}`={getattr(self, heads_name)} must divide `{width_name}`={getattr(self, width_name)}."
                )

        choice("input_type", INPUT_TYPES)
        choice("encoder_type", ENCODER_TYPES)
        choice("masking_strategy", MASKING_STRATEGIES)
        choice("head_aggregation", HEAD_AGGREGATIONS)
        choice("classifier_pooling", CLASSIFIER_POOLINGS)
        for name in (
            "vocab_size", "input_channels", "embedding_size", "max_position_embeddings", "num_latents", "hidden_size",
            "num_hidden_layers", "num_attention_heads", "num_cross_attention_heads", "intermediate_size",
            "decoder_hidden_size", "decoder_num_attention_heads", "decoder_intermediate_size",
        ):  # fmt: skip
            positive_int(name)
        in_range("masking_ratio", 0, 1, True, True)
        in_range("num_per_query", 1, float("inf"), False, True)
        in_range("mask_noise_ratio", 0, 1, False, False)
        in_range("hidden_dropout_prob", 0, 1, False, True)
        in_range("attention_probs_dropout_prob", 0, 1, False, True)
        in_range("drop_path_rate", 0, 1, False, True)
        in_range("initializer_range", 0, float("inf"), True, True)
        in_range("layer_norm_eps", 0, float("inf"), True, True)
        divides("hidden_size", "num_attention_heads")
        divides("hidden_size", "num_cross_attention_heads")
        divides("decoder_hidden_size", "decoder_num_attention_heads")
        if self.input_type == "discrete":
            for name in ("pad_token_id", "mask_token_id"):
                value = getattr(self, name)
                if not isinstance(value, int) or not 0 <= value < self.vocab_size:
                    raise ValueError(f"`{name}` must be an id in [0, vocab_size={self.vocab_size}), got {value!r}.")
        if self.encoder_type == "self_attention":
            if self.embedding_size != self.hidden_size:
                raise ValueError(
                    "`encoder_type='self_attention'` keeps one token per input element, so `embedding_size` "
                    f"({self.embedding_size}) must equal `hidden_size` ({self.hidden_size})."
                )
        elif self.mask_self:
            raise ValueError(
                "`mask_self=True` needs `encoder_type='self_attention'` (in cross-attention the queries are latents, "
                "not input positions)."
            )
        if self.mask_self and self.masking_strategy != "self_guided":
            raise ValueError("`mask_self=True` needs `masking_strategy='self_guided'` (random masking samples no queries).")


__all__ = ["SMAConfig"]
