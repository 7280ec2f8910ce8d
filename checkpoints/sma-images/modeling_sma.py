"""PyTorch SMA: Self-guided Masked Autoencoders (Xie et al., ICLR 2024) on transformers 5.

The encoder's first attention layer is the only one that reads the raw input elements. During pretraining its
attention chooses which elements to mask (inputs that one query attends to together are masked together): by
default its attention between position embeddings alone, so that the mask cannot pick a kind of content
(`SMAConfig.mask_selection`). The mask is applied in that same layer as -inf on the masked inputs' keys, which is
equivalent to deleting them from the input.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GradientCheckpointingLayer, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import ModelOutput, SequenceClassifierOutput, TokenClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, logging
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_sma import SMAConfig
from .masking_sma import (
    SampledQueries,
    gather_query_rows,
    masked_positions_from_rows,
    random_masked_positions,
    sample_queries,
)


logger = logging.get_logger(__name__)


AUTO_MAP = {
    "AutoConfig": "configuration_sma.SMAConfig",
    "AutoModel": "modeling_sma.SMAModel",
    "AutoModelForPreTraining": "modeling_sma.SMAForMaskedModeling",
    "AutoModelForMaskedLM": "modeling_sma.SMAForMaskedModeling",
    "AutoModelForSequenceClassification": "modeling_sma.SMAForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_sma.SMAForTokenClassification",
}


@dataclass
class SMAModelOutput(ModelOutput):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_latents or num_slots, hidden_size)`):
        Final hidden states: the latents (`cross_attention`), or one slot per input element (`self_attention`). In
        `self_attention` mode the elements stay in place (`num_slots` = sequence length) unless a mask of pretraining
        size was drawn or any `masked_positions` was given; then the visible elements are packed to the front and the
        rest dropped (`num_slots` = the longest row's visible count), as the masked ones need no compute in layers 2
        on.
    pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`, *optional*):
        One vector per example, pooled as `config.classifier_pooling` says.
    mask (`torch.BoolTensor` of shape `(batch_size, sequence_length)`):
        True where an input element was masked (hidden from the encoder).
    hidden_mask (`torch.BoolTensor` of shape `(batch_size, num_slots)`, *optional*):
        `self_attention` mode: True where `last_hidden_state` holds a visible element (False = a padded or masked
        element, or an unused slot; its state is not meant to be read). `None` in `cross_attention` mode, where every
        latent is real.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    mask: torch.BoolTensor | None = None
    hidden_mask: torch.BoolTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SMAMaskedModelingOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `(1,)`):
        Reconstruction loss on the masked valid elements (cross-entropy for token ids, mean squared error for
        continuous values). When nothing is masked (evaluation without `masked_positions` or `[MASK]` tokens), the
        loss is taken over every valid element instead, so that it is always defined.
    logits (`torch.FloatTensor` of shape `(batch_size, num_decoded, vocab_size or input_channels)`):
        Reconstruction of the decoded positions. In evaluation every position is decoded (`num_decoded` is the
        sequence length). In training only the masked positions are, as the loss reads nothing else:
        `logits[b, j]` reconstructs input position `decoded_positions[b, j]`.
    mask (`torch.BoolTensor` of shape `(batch_size, sequence_length)`):
        True where an input element was masked.
    decoded_positions (`torch.LongTensor` of shape `(batch_size, num_decoded)`, *optional*):
        Training only: the input position each row of `logits` reconstructs (the masked positions of each example in
        order, then -1 for unused slots in examples with fewer masked elements).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    mask: torch.BoolTensor | None = None
    decoded_positions: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SMAElements:
    r"""
    The input elements as the encoder and the heads read them, derived once per forward from the forward arguments by
    [`SMAModel.derive_elements`] (a head derives them, uses them, and passes them on to [`SMAModel`]).

    input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
        Token ids (discrete inputs).
    inputs (`torch.FloatTensor` of shape `(batch_size, sequence_length, input_channels)`, *optional*):
        Element values (continuous inputs).
    valid (`torch.BoolTensor` of shape `(batch_size, sequence_length)`):
        True for a real element, False for padding.
    position_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
        The given positions, or by default the positions counted over the valid elements from 0, so that left and
        right padding give the same positions.
    masked_positions (`torch.BoolTensor` of shape `(batch_size, sequence_length)`):
        Valid elements hidden from the encoder whatever mask is drawn: the given `masked_positions` and the positions
        holding `config.mask_token_id`.
    mask_given (`bool`, defaults to `False`):
        Whether `masked_positions` was given (a mask of pretraining size, typically), not only read off `[MASK]`
        tokens. `self_attention` mode then packs the visible elements after its first layer, as for a drawn mask.
    """

    input_ids: torch.LongTensor | None
    inputs: torch.FloatTensor | None
    valid: torch.BoolTensor
    position_ids: torch.LongTensor
    masked_positions: torch.BoolTensor
    mask_given: bool = False


@dataclass
class SMAEncoderOutput:
    """What the input layer hands to the other layers, and the encoder to [`SMAModel`].

    hidden_states: `[batch, slots, hidden_size]`, one slot per latent (`cross_attention` mode) or per element
        (`self_attention` mode; the visible ones packed to the front where a mask of pretraining size was applied).
    mask: `[batch, sequence_length]` bool, the elements hidden from the encoder (given or drawn).
    hidden_mask: `[batch, slots]` bool, which slots hold a visible element; `None` in `cross_attention` mode.
    """

    hidden_states: torch.Tensor
    mask: torch.BoolTensor
    hidden_mask: torch.BoolTensor | None


def key_mask(
    config: SMAConfig,
    queries: torch.Tensor,
    visible_keys: torch.Tensor | None,
    key_states: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """The attention mask that hides the keys where `visible_keys` [batch, keys] is False, in the format of
    `config._attn_implementation`. For sdpa a bool [batch, 1, 1, keys] mask (True = attend) is built directly:
    `create_bidirectional_mask` reads the mask on the host to drop it when nothing is hidden, a sync per mask."""
    if visible_keys is None:
        return None
    if config._attn_implementation == "sdpa":
        return visible_keys[:, None, None, :]
    return create_bidirectional_mask(
        config=config, inputs_embeds=queries, attention_mask=visible_keys, encoder_hidden_states=key_states
    )


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
):
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dim() == 2:  # flash-style padding mask [batch, keys], True = attend
            attention_mask = attention_mask[:, None, None, :].bool()
        if attention_mask.dtype == torch.bool:  # sdpa-style mask, True = attend
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:  # additive mask
            scores = scores + attention_mask
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = F.dropout(probs, p=dropout, training=module.training)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return output, probs


class SMAAttention(nn.Module):
    """Multi-head attention from `query_size`-wide queries onto `key_value_size`-wide inputs; output `query_size`."""

    def __init__(self, config: SMAConfig, query_size: int, key_value_size: int, num_heads: int):
        super().__init__()
        self.config = config
        self.is_causal = False
        self.num_heads = num_heads
        self.head_dim = query_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.query = nn.Linear(query_size, query_size)
        self.key = nn.Linear(key_value_size, query_size)
        self.value = nn.Linear(key_value_size, query_size)
        self.output = nn.Linear(query_size, query_size)

    def _split_heads(self, projection: nn.Linear, states: torch.Tensor) -> torch.Tensor:
        return projection(states).view(*states.shape[:2], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        query = self._split_heads(self.query, hidden_states)
        key = self._split_heads(self.key, key_value_states)
        value = self._split_heads(self.value, key_value_states)
        attention_fn: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        if kwargs.get("output_attentions", False):
            attention_fn = eager_attention_forward  # the fused kernels return no probabilities
        output, probs = attention_fn(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.config.attention_probs_dropout_prob if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        # [batch, queries, heads, head_dim] -> the output projection of the merged heads
        return self.output(output.reshape(*output.shape[:2], -1)), probs


class SMAInputAttention(SMAAttention):
    """The first layer's attention onto the input elements, whose projections also choose the mask.

    The mask is drawn before the layer attends (`SMAInputLayer.draw_mask`): from the logits of the sampled query rows
    only (the paper's selection, `draw_mask`), or from the position embeddings alone (`draw_mask_by_position`). The
    layer then attends like every other one, through `config._attn_implementation`, with the hidden inputs masked
    out of its keys; every logit is materialised only where probabilities are read (`output_attentions`,
    `attn_implementation="eager"`).
    """

    def __init__(self, config: SMAConfig, query_size: int, key_value_size: int, num_heads: int):
        super().__init__(config, query_size, key_value_size, num_heads)
        # set through `SMAPreTrainedModel.set_mask_noise_scale`; 1 = the fully noisy start of the warm-up
        self.mask_noise_scale = 1.0

    def random_share(self) -> float:
        """The share of a self-guided mask drawn at random: the warm-up noise, never below `mask_random_floor`."""
        return max(self.config.mask_random_floor, self.config.mask_noise_ratio * self.mask_noise_scale)

    @torch.no_grad()  # the mask takes no gradient
    def draw_mask(
        self,
        query_states: torch.Tensor,
        key_states: torch.Tensor,
        valid: torch.Tensor,
        already_masked: torch.Tensor,
        generator: torch.Generator | None,
        queries_are_inputs: bool,
    ) -> torch.Tensor:
        """The paper's self-guided mask from the logits of the sampled query rows only: the keys of `key_states` and
        just the sampled rows of `query_states` are projected (the same mask as `self_guided_masked_positions` on
        every row's logits, with the same draws)."""
        queries = self._sample_queries(valid, query_states.shape[1], queries_are_inputs, generator)
        query_rows = self._project_rows(query_states, queries.rows)
        key = self._split_heads(self.key, key_states)
        return self._mask_from_rows(query_rows, key, queries, valid, already_masked, generator)

    @torch.no_grad()  # the mask takes no gradient
    def draw_mask_by_position(
        self,
        position_states: torch.Tensor,
        valid: torch.Tensor,
        already_masked: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Selection by position (`config.mask_selection="positions"`): input positions sampled at random per example
        score every input by this layer's attention between the normalised position embeddings `position_states`
        alone, so the mask depends on where elements are, not on what they are. In `self_attention` mode through
        the query and key projections; in `cross_attention` mode, whose queries are latents, the sampled positions'
        keys stand in for queries (an input scores by the dot products of its key with theirs). Sampling input
        positions rather than latents keeps the masks of different examples apart: the latents, scored on positions
        alone, chose nearly the same inputs in every protein (benchmarks/results/mask_selection/protein_probes.md)."""
        key = self._split_heads(self.key, position_states)
        if self.config.mask_equal_key_norms:
            norms = key.norm(dim=-1, keepdim=True)
            weights = valid[:, None, :, None].to(norms.dtype)  # the mean over real elements: padding changes nothing
            mean_norm = (norms * weights).sum(dim=2, keepdim=True) / weights.sum(dim=2, keepdim=True)
            key = key / norms.clamp(min=torch.finfo(key.dtype).tiny) * mean_norm
        queries = self._sample_queries(valid, position_states.shape[1], True, generator)
        if self.config.encoder_type == "self_attention":
            query_rows = self._project_rows(position_states, queries.rows)
        else:
            query_rows = gather_query_rows(key, queries.rows)
        return self._mask_from_rows(query_rows, key, queries, valid, already_masked, generator)

    def _project_rows(self, states: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The split-head queries of the rows `rows` [batch, slots] of `states` only."""
        gathered = states.gather(1, rows[:, :, None].expand(-1, -1, states.shape[-1]))
        return self._split_heads(self.query, gathered)

    def _sample_queries(self, valid, num_queries, queries_are_inputs, generator) -> SampledQueries:
        config = self.config
        return sample_queries(
            valid, num_queries, config.masking_ratio, config.num_per_query, queries_are_inputs, generator
        )

    def _mask_from_rows(self, query_rows, key, queries, valid, already_masked, generator) -> torch.Tensor:
        """The mask from the split-head queries of the sampled rows and every input's key."""
        config = self.config
        return masked_positions_from_rows(
            torch.matmul(query_rows * self.scaling, key.transpose(2, 3)),
            queries,
            valid,
            config.masking_ratio,
            head_aggregation=config.head_aggregation,
            mask_self=config.mask_self,
            noise=self.random_share(),
            generator=generator,
            already_masked=already_masked,
        )


class SMAMLP(nn.Module):
    def __init__(self, config: SMAConfig, size: int, intermediate_size: int):
        super().__init__()
        self.dense_in = nn.Linear(size, intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.dense_out = nn.Linear(intermediate_size, size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense_out(self.activation(self.dense_in(hidden_states))))


class SMADropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per example during training."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep_prob = 1.0 - self.drop_prob
        keep = torch.rand(hidden_states.shape[0], 1, 1, device=hidden_states.device) < keep_prob
        return hidden_states * keep.to(hidden_states.dtype) / keep_prob


class SMAEmbeddings(nn.Module):
    """Token embedding (discrete) or linear projection (continuous) plus learned absolute positions."""

    def __init__(self, config: SMAConfig):
        super().__init__()
        if config.input_type == "discrete":
            self.token_embeddings = nn.Embedding(config.vocab_size, config.embedding_size, config.pad_token_id)
        else:
            self.input_projection = nn.Linear(config.input_channels, config.embedding_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.embedding_size)
        self.layer_norm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, inputs, position_ids) -> torch.Tensor:
        positions = self.position_embeddings(position_ids)
        if input_ids is not None:
            elements = self.token_embeddings(input_ids)
        else:  # float32 features into a bf16/fp16 model (the projection may be replaced: take the positions' dtype)
            elements = self.input_projection(inputs.to(positions.dtype))
        return self.dropout(self.layer_norm(elements + positions))

    def positions_only(self, position_ids) -> torch.Tensor:
        """The embedding of elements without content, their positions alone: what a mask selected by position is
        scored on (`config.mask_selection="positions"`)."""
        return self.layer_norm(self.position_embeddings(position_ids))


class SMAInputLayer(nn.Module):
    """First encoder layer: latents cross-attend to the inputs, or the inputs self-attend; pre-LayerNorm. A drawn
    mask is chosen first and then hides the masked inputs from the keys, which equals deleting them from the input."""

    def __init__(self, config: SMAConfig):
        super().__init__()
        self.config = config
        self.cross_attention = config.encoder_type == "cross_attention"
        if self.cross_attention:
            self.latents = nn.Parameter(torch.empty(config.num_latents, config.hidden_size))
            self.latent_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            num_heads = config.num_cross_attention_heads
        else:
            num_heads = config.num_attention_heads
        self.input_layer_norm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.attention = SMAInputAttention(config, config.hidden_size, config.embedding_size, num_heads)
        self.mlp_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SMAMLP(config, config.hidden_size, config.intermediate_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        embeddings: torch.Tensor,
        elements: SMAElements,
        sample_mask: bool,
        generator: torch.Generator | None = None,
        position_states: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SMAEncoderOutput:
        """`position_states` (the positions' embedding alone) are what a mask selected by position is scored on."""
        mask = elements.masked_positions
        if sample_mask:
            mask = self.draw_mask(embeddings, elements, position_states, generator)
        visible = elements.valid & ~mask
        if self.cross_attention:
            residual = self.latents.expand(embeddings.shape[0], -1, -1)
            queries, keys = self.latent_layer_norm(residual), self.input_layer_norm(embeddings)
            visible_keys, hidden_mask = visible, None
        else:
            # packed (a mask of pretraining size), the layer runs over the visible elements only: the masked ones are
            # hidden from every key and dropped after this layer anyway
            residual, hidden_mask = visible_elements(embeddings, visible, pack=sample_mask or elements.mask_given)
            queries = keys = self.input_layer_norm(residual)
            visible_keys = hidden_mask
        attended, _ = self.attention(queries, keys, key_mask(self.config, queries, visible_keys, keys), **kwargs)
        hidden_states = residual + self.dropout(attended)
        hidden_states = hidden_states + self.mlp(self.mlp_layer_norm(hidden_states))
        return SMAEncoderOutput(hidden_states, mask, hidden_mask)

    @torch.no_grad()  # the mask takes no gradient
    def draw_mask(
        self,
        embeddings: torch.Tensor,
        elements: SMAElements,
        position_states: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """The mask of `config.masking_strategy`, beside the elements masked anyway: at random, by position
        (`position_states` given), or self-guided from this layer's own queries and keys."""
        config, attention = self.config, self.attention
        valid, already_masked = elements.valid, elements.masked_positions
        if config.masking_strategy == "random":
            return random_masked_positions(valid, config.masking_ratio, generator, already_masked)
        if position_states is not None:
            normed_positions = self.input_layer_norm(position_states)
            return attention.draw_mask_by_position(normed_positions, valid, already_masked, generator)
        keys = self.input_layer_norm(embeddings)
        queries = self.latent_layer_norm(self.latents).expand(keys.shape[0], -1, -1) if self.cross_attention else keys
        return attention.draw_mask(queries, keys, valid, already_masked, generator, not self.cross_attention)


class SMALayer(GradientCheckpointingLayer):
    """Pre-LayerNorm self-attention layer with stochastic depth."""

    def __init__(self, config: SMAConfig, drop_path_rate: float):
        super().__init__()
        self.attention_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = SMAAttention(config, config.hidden_size, config.hidden_size, config.num_attention_heads)
        self.mlp_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SMAMLP(config, config.hidden_size, config.intermediate_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.drop_path = SMADropPath(drop_path_rate)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        normed = self.attention_layer_norm(hidden_states)
        attended, _ = self.attention(normed, normed, attention_mask, **kwargs)
        hidden_states = hidden_states + self.drop_path(self.dropout(attended))
        return hidden_states + self.drop_path(self.mlp(self.mlp_layer_norm(hidden_states)))


class SMAEncoder(nn.Module):
    def __init__(self, config: SMAConfig):
        super().__init__()
        self.config = config
        self.input_layer = SMAInputLayer(config)
        # rising linearly from 0 to drop_path_rate; plain floats, as a tensor here would live on the meta device when
        # the model is built there (big-model loading) and could not be read
        last = max(config.num_hidden_layers - 1, 1)
        drop_path_rates = [config.drop_path_rate * i / last for i in range(config.num_hidden_layers)]
        self.layers = nn.ModuleList(SMALayer(config, rate) for rate in drop_path_rates)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        embeddings: torch.Tensor,
        elements: SMAElements,
        sample_mask: bool,
        generator: torch.Generator | None = None,
        position_states: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SMAEncoderOutput:
        first = self.input_layer(embeddings, elements, sample_mask, generator, position_states, **kwargs)
        hidden_states = first.hidden_states
        attention_mask = key_mask(self.config, hidden_states, first.hidden_mask)
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, **kwargs)
        return SMAEncoderOutput(self.layer_norm(hidden_states), first.mask, first.hidden_mask)


def rows(flags: torch.Tensor) -> list[int]:
    """The indices of the True entries of a [batch] bool tensor (for error messages: a host sync)."""
    return flags.nonzero().flatten().tolist()


def most_kept(keep: torch.Tensor) -> int:
    """The longest row's count of kept positions: a host sync, which the packed shapes need."""
    return int(keep.sum(dim=1).max())


def kept_indices(keep: torch.Tensor, num_slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of each row's kept positions, in order and moved to the front, in `num_slots` slots (at least the
    longest row's count); and which slots hold a kept position."""
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :num_slots]
    return order, keep.gather(1, order)


def visible_elements(hidden_states: torch.Tensor, keep: torch.Tensor, pack: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The elements where `keep` and which slots hold one: packed to the front (`pack`, for a mask of pretraining
    size, whose masked elements then cost nothing in later layers), or left in place with the others hidden from the
    keys (no argsort, no gather, no host sync: fine-tuning and inference, where little or nothing is hidden)."""
    if pack:
        return pack_visible(hidden_states, keep)
    return hidden_states, keep


def pack_visible(hidden_states: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the kept elements of each row to the front (in order) and cut the rows to the longest kept count (at
    least one slot, so that later layers never get an empty sequence)."""
    order, slot_used = kept_indices(keep, max(1, most_kept(keep)))
    packed = hidden_states.gather(1, order[:, :, None].expand(-1, -1, hidden_states.shape[-1]))
    return packed, slot_used


class SMAPooler(nn.Module):
    """One vector per example: a learned query attending to the final hidden states, or their mean."""

    def __init__(self, config: SMAConfig):
        super().__init__()
        self.pooling = config.classifier_pooling
        if self.pooling == "attention":
            self.query = nn.Parameter(torch.empty(1, 1, config.hidden_size))
            self.attention = SMAAttention(config, config.hidden_size, config.hidden_size, config.num_attention_heads)

    def forward(self, hidden_states: torch.Tensor, hidden_mask: torch.Tensor | None) -> torch.Tensor:
        if self.pooling == "mean":
            if hidden_mask is None:
                return hidden_states.mean(dim=1)
            weights = hidden_mask.to(hidden_states.dtype)[:, :, None]
            return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1)
        return self._attention_pooling(hidden_states, hidden_mask)

    def _attention_pooling(self, hidden_states: torch.Tensor, hidden_mask: torch.Tensor | None) -> torch.Tensor:
        """`self.attention` from the one learned query onto the hidden states, with the key and value projections
        folded into that query: q . (W_k h + b_k) = (W_k^T q) . h + q . b_k, and sum_i p_i (W_v h_i + b_v) =
        W_v (sum_i p_i h_i) + b_v, as the probabilities sum to 1. The same result as projecting every state to a key
        and a value (2 x width^2 multiply-adds per state, a tenth of a layer's work), for heads x width per state."""
        attention = self.attention
        num_heads, head_dim = attention.num_heads, attention.head_dim
        query = attention.query(self.query[0, 0]).view(num_heads, head_dim) * attention.scaling
        folded_query = torch.einsum("hd,hdi->hi", query, attention.key.weight.view(num_heads, head_dim, -1))
        folded_bias = (query * attention.key.bias.view(num_heads, head_dim)).sum(dim=-1)
        scores = torch.matmul(hidden_states, folded_query.transpose(0, 1)) + folded_bias  # [batch, states, heads]
        if hidden_mask is not None:
            scores = scores.masked_fill(~hidden_mask[:, :, None], -math.inf)
        probs = F.softmax(scores, dim=1, dtype=torch.float32).to(hidden_states.dtype)
        if self.training and attention.config.attention_probs_dropout_prob > 0:
            probs = F.dropout(probs, p=attention.config.attention_probs_dropout_prob)
        context = torch.einsum("bnh,bni->bhi", probs, hidden_states)  # each head's weighted mean of the states
        values = torch.einsum("bhi,hdi->bhd", context, attention.value.weight.view(num_heads, head_dim, -1))
        values = values + attention.value.bias.view(num_heads, head_dim)
        return attention.output(values.reshape(hidden_states.shape[0], -1))


class SMADecoder(nn.Module):
    """One query per input position (its position embedding) cross-attends to the encoder output."""

    def __init__(self, config: SMAConfig, output_size: int):
        super().__init__()
        self.config = config
        size = config.decoder_hidden_size
        self.query_embeddings = nn.Embedding(config.max_position_embeddings, size)
        self.query_layer_norm = nn.LayerNorm(size, eps=config.layer_norm_eps)
        self.attention = SMAAttention(config, size, config.hidden_size, config.decoder_num_attention_heads)
        self.mlp_layer_norm = nn.LayerNorm(size, eps=config.layer_norm_eps)
        self.mlp = SMAMLP(config, size, config.decoder_intermediate_size)
        self.output_layer_norm = nn.LayerNorm(size, eps=config.layer_norm_eps)
        self.output = nn.Linear(size, output_size)

    def forward(self, hidden_states, hidden_mask, position_ids) -> torch.Tensor:
        return self.output(self.element_states(hidden_states, hidden_mask, position_ids))

    def element_states(self, hidden_states, hidden_mask, position_ids) -> torch.Tensor:
        """One vector per queried position, `[batch, positions, decoder_hidden_size]`: what the output layer reads."""
        queries = self.query_embeddings(position_ids)
        attention_mask = key_mask(self.config, queries, hidden_mask, hidden_states)
        attended, _ = self.attention(self.query_layer_norm(queries), hidden_states, attention_mask)
        decoded = queries + attended
        decoded = decoded + self.mlp(self.mlp_layer_norm(decoded))
        return self.output_layer_norm(decoded)


class SMAPreTrainedModel(PreTrainedModel):
    config: SMAConfig
    base_model_prefix = "sma"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    accepts_loss_kwargs = False  # losses are means over their own elements; Trainer scales for accumulation
    _no_split_modules = ["SMAInputLayer", "SMALayer", "SMADecoder"]
    _supports_sdpa = True
    _supports_flash_attn = False  # not measured on a GPU yet
    _supports_flex_attn = False
    # an encoder or a classifier loaded from a pretraining checkpoint leaves its reconstruction decoder behind, as
    # meant: not worth a line per weight in the load report
    _keys_to_ignore_on_load_unexpected = [r"^decoder\."]
    _can_record_outputs = {
        "hidden_states": SMALayer,
        "attentions": [
            OutputRecorder(SMAInputAttention, index=1, layer_name="input_layer"),
            OutputRecorder(SMAAttention, index=1, layer_name="layers"),
        ],
    }

    def __init__(self, config: SMAConfig, *args, **kwargs):
        # fields assigned one at a time since the config was made may break a rule between them
        config.validate()
        super().__init__(config, *args, **kwargs)
        # the Trainer and pipelines look up the main input by this name
        self.main_input_name = "input_ids" if config.input_type == "discrete" else "inputs"
        # a saved folder must name every head, so that each loads with trust_remote_code where the package is absent
        config.auto_map = {**AUTO_MAP, **(getattr(config, "auto_map", None) or {})}

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, SMAInputLayer) and module.cross_attention:
            init.normal_(module.latents, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, SMAPooler) and module.pooling == "attention":
            init.normal_(module.query, mean=0.0, std=self.config.initializer_range)

    def set_mask_noise_scale(self, scale: float):
        """Set the warm-up noise scale of the self-guided mask (1 = `mask_noise_ratio` of it is random, 0 = none).

        Pretraining should lower it from 1 to 0 early on (see `masking_sma.cosine_noise_scale`): without the warm-up,
        self-guided masks can collapse onto elements that are trivial to predict.
        """
        if not 0.0 <= scale <= 1.0:
            raise ValueError(f"`scale` must be in [0, 1], got {scale!r}.")
        for module in self.modules():
            if isinstance(module, SMAInputAttention):
                module.mask_noise_scale = float(scale)


class SMAModel(SMAPreTrainedModel):
    def __init__(self, config: SMAConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = SMAEmbeddings(config)
        self.encoder = SMAEncoder(config)
        self.pooler = SMAPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The token embedding (discrete inputs) or the input projection (continuous inputs)."""
        if self.config.input_type == "discrete":
            return self.embeddings.token_embeddings
        return self.embeddings.input_projection

    def set_input_embeddings(self, value: nn.Module):
        if self.config.input_type == "discrete":
            self.embeddings.token_embeddings = value
        else:
            self.embeddings.input_projection = value

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        masked_positions: torch.BoolTensor | None = None,
        sample_mask: bool = False,
        generator: torch.Generator | None = None,
        elements: SMAElements | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SMAModelOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
            Token ids (`config.input_type == "discrete"`). Positions holding `config.mask_token_id` are masked.
        inputs (`torch.FloatTensor` of shape `(batch_size, sequence_length, input_channels)`):
            Element values (`config.input_type == "continuous"`).
        attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
            1 for real elements, 0 for padding (left or right).
        position_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Positions of the elements; by default counted over the real elements from 0.
        masked_positions (`torch.BoolTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Elements to mask (True = masked). Overrides `sample_mask`.
        sample_mask (`bool`, defaults to `False`):
            Draw a mask with `config.masking_strategy` (pretraining). [`SMAForMaskedModeling`] sets it in training.
        generator (`torch.Generator`, *optional*):
            Drives the random choices of the mask, for reproducible masks.
        elements (`SMAElements`, *optional*):
            What [`SMAModel.derive_elements`] made of the five input arguments above, instead of them. The heads pass
            this, so that the inputs are checked and derived once per forward.
        """
        if elements is None:
            sample_mask = sample_mask and masked_positions is None  # an explicit mask overrides the strategy
            elements = self.derive_elements(input_ids, inputs, attention_mask, position_ids, masked_positions)
        elif any(value is not None for value in (input_ids, inputs, attention_mask, position_ids, masked_positions)):
            raise ValueError("Pass `elements` or the input arguments it is derived from, not both (one is ignored).")
        embeddings = self.embeddings(elements.input_ids, elements.inputs, elements.position_ids)
        encoded = self.encoder(
            embeddings, elements, sample_mask, generator, self.position_states(elements, sample_mask), **kwargs
        )
        pooled = self.pooler(encoded.hidden_states, encoded.hidden_mask) if self.pooler is not None else None
        return SMAModelOutput(
            last_hidden_state=encoded.hidden_states,
            pooler_output=pooled,
            mask=encoded.mask,
            hidden_mask=encoded.hidden_mask,
        )

    @torch.no_grad()  # the mask takes no gradient
    def position_states(self, elements: SMAElements, sample_mask: bool) -> torch.Tensor | None:
        """What a mask selected by position is scored on (`config.mask_selection="positions"`): the positions'
        embedding alone. `None` when no such mask is drawn."""
        config = self.config
        if sample_mask and config.masking_strategy == "self_guided" and config.mask_selection == "positions":
            return self.embeddings.positions_only(elements.position_ids)
        return None

    def derive_elements(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        masked_positions: torch.BoolTensor | None = None,
    ) -> SMAElements:
        """Check the input arguments of `forward` and derive the [`SMAElements`] that the encoder and the heads read.

        Raises a `ValueError` or `TypeError` naming the argument for anything the model cannot use.
        """
        self._check_arguments(input_ids, inputs, attention_mask, position_ids, masked_positions)
        reference = input_ids if input_ids is not None else inputs
        if attention_mask is None:
            valid = torch.ones(reference.shape[:2], dtype=torch.bool, device=reference.device)
        else:
            valid = attention_mask.bool()
        if position_ids is None:  # counted over the valid elements, so that left and right padding give the same
            position_ids = (valid.long().cumsum(dim=1) - 1).clamp(min=0)
        mask_given = masked_positions is not None
        if masked_positions is None:
            masked_positions = torch.zeros_like(valid)
        if input_ids is not None:
            masked_positions = masked_positions | (input_ids == self.config.mask_token_id)
        elements = SMAElements(input_ids, inputs, valid, position_ids, masked_positions & valid, mask_given)
        # reading the values costs a host sync and breaks a torch.compile graph, so a compiled model skips it
        if not torch.compiler.is_compiling():
            self._check_values(elements, attention_mask)
        return elements

    def _check_arguments(self, input_ids, inputs, attention_mask, position_ids, masked_positions):
        """What the arguments are: which ones, their shapes and dtypes. These read no values (no host sync)."""
        config = self.config
        # with both, one would be ignored silently
        if (input_ids is None) == (inputs is None):
            raise ValueError("Pass exactly one of `input_ids` (discrete inputs) and `inputs` (continuous inputs).")
        # the other one has no embedding here: an AttributeError from inside the embeddings otherwise
        expected, other = ("input_ids", "inputs") if config.input_type == "discrete" else ("inputs", "input_ids")
        if (input_ids if config.input_type == "discrete" else inputs) is None:
            raise ValueError(
                f"This model takes `{expected}` (config.input_type={config.input_type!r}), not `{other}`."
            )
        # the shapes below are read from these: an unnamed error deep inside otherwise
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"`input_ids` must be [batch, length], got shape {tuple(input_ids.shape)}.")
            if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
                raise TypeError(f"`input_ids` must hold integer ids, got dtype {input_ids.dtype}.")
            shape = tuple(input_ids.shape)
        else:
            if inputs.dim() != 3 or inputs.shape[-1] != config.input_channels:
                raise ValueError(
                    f"`inputs` must be [batch, length, input_channels={config.input_channels}], "
                    f"got shape {tuple(inputs.shape)}."
                )
            # integer values would be cast to floats silently
            if not inputs.dtype.is_floating_point:
                raise TypeError(f"`inputs` must be floating point, got dtype {inputs.dtype}.")
            shape = tuple(inputs.shape[:2])
        # the default positions would run past the position tables: an error about the length, not the positions
        if shape[1] > config.max_position_embeddings:
            raise ValueError(
                f"Sequences of length {shape[1]} are longer than max_position_embeddings="
                f"{config.max_position_embeddings}; truncate them or use a model with more positions."
            )
        # another shape could broadcast silently (one row for the whole batch)
        for name, value in (("attention_mask", attention_mask), ("position_ids", position_ids)):
            if value is not None and value.shape != shape:
                raise ValueError(f"`{name}` must have shape {shape}, got {tuple(value.shape)}.")
        # the same, and an integer mask would be inverted bitwise (~1 == -2), not logically
        if masked_positions is not None and (masked_positions.shape != shape or masked_positions.dtype != torch.bool):
            raise ValueError(
                f"`masked_positions` must be a bool tensor of shape {shape}, "
                f"got {masked_positions.dtype} {tuple(masked_positions.shape)}."
            )

    def _check_values(self, elements: SMAElements, attention_mask: torch.Tensor | None):
        """What the arguments hold, read in one host sync. A message is put together only once its check failed."""
        config = self.config
        input_ids, valid, positions = elements.input_ids, elements.valid, elements.position_ids
        checks = []  # (failed, message), in the order in which they are reported

        def check(failed: torch.Tensor, message: Callable[[], str]):
            checks.append((failed, message))

        if input_ids is not None:
            # outside the embedding table: a device-side assert on CUDA, which ends the process
            check(
                ((input_ids < 0) | (input_ids >= config.vocab_size)).any(),
                lambda: (
                    f"`input_ids` holds ids outside [0, vocab_size={config.vocab_size}): "
                    f"min {int(input_ids.min())}, max {int(input_ids.max())}."
                ),
            )
        else:
            # a NaN reaches every output of its example, through padding too (0 x NaN in the attention)
            check(~torch.isfinite(elements.inputs).all(), lambda: "`inputs` holds NaN or infinite values.")
        if attention_mask is not None and attention_mask.dtype != torch.bool:
            # other values would count as real elements and shift the default positions: a silently wrong result
            check(
                ((attention_mask != 0) & (attention_mask != 1)).any(),
                lambda: "`attention_mask` must hold only 0 (padding) and 1 (real element).",
            )
        # a row with nothing to attend to: softmax over no key is NaN
        empty = ~valid.any(dim=1)
        check(empty.any(), lambda: f"`attention_mask` rows {rows(empty)} have no valid element.")
        # outside the position tables (embeddings and decoder queries): a device-side assert on CUDA
        check(
            ((positions < 0) | (positions >= config.max_position_embeddings)).any(),
            lambda: f"`position_ids` must lie in [0, max_position_embeddings={config.max_position_embeddings}).",
        )
        # the same NaN when the mask hides every valid element of a row (a drawn mask always leaves one visible)
        hidden = ~(valid & ~elements.masked_positions).any(dim=1)
        check(
            hidden.any(),
            lambda: f"The mask hides every valid element of rows {rows(hidden)}; keep at least one visible.",
        )
        failed = torch.stack([flag for flag, _ in checks]).tolist()  # the one host sync
        for is_failed, (_, message) in zip(failed, checks):
            if is_failed:
                raise ValueError(message())


class SMAForMaskedModeling(SMAPreTrainedModel):
    """SMA pretraining: mask (self-guided or random), encode the visible elements, reconstruct the masked ones."""

    def __init__(self, config: SMAConfig):
        super().__init__(config)
        self.sma = SMAModel(config, add_pooling_layer=False)
        output_size = config.vocab_size if config.input_type == "discrete" else config.input_channels
        self.decoder = SMADecoder(config, output_size)
        self.post_init()

    def get_output_embeddings(self):
        """The decoder's output layer over the vocabulary (discrete inputs), so that `resize_token_embeddings` resizes
        it with the input table; it is not tied to the input embedding (their widths differ)."""
        return self.decoder.output if self.config.input_type == "discrete" else None

    def set_output_embeddings(self, value: nn.Module):
        self.decoder.output = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        masked_positions: torch.BoolTensor | None = None,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SMAMaskedModelingOutput:
        r"""
        masked_positions (`torch.BoolTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Elements to mask (True = masked) instead of drawing a mask. In training mode a mask is drawn with
            `config.masking_strategy` unless this is given; in evaluation nothing is masked unless this is given or
            `input_ids` hold `[MASK]` tokens.
        labels (`torch.Tensor`, *optional*):
            Reconstruction targets, shaped like the inputs: token ids `[batch, length]` (-100 = ignore) or values
            `[batch, length, input_channels]`. Defaults to the inputs themselves (self-supervised pretraining); give
            them when the inputs hold `[MASK]` tokens whose true ids are known.
        generator (`torch.Generator`, *optional*):
            Drives the random choices of the mask.
        """
        elements = self.sma.derive_elements(input_ids, inputs, attention_mask, position_ids, masked_positions)
        outputs = self.sma(
            elements=elements, sample_mask=self.training and masked_positions is None, generator=generator, **kwargs
        )
        valid = elements.valid
        if self.training:
            # the loss reads only the masked positions, so only those are decoded (decoding every position took
            # about half of the training step at 15% masking)
            num_masked = most_kept(outputs.mask)
            if num_masked == 0 and not torch.compiler.is_compiling():
                logger.warning_once(
                    "No element was masked in a training batch (its sequences are too short for masking_ratio="
                    f"{self.config.masking_ratio}); its loss is 0."
                )
            decoded, loss_positions = kept_indices(outputs.mask, max(1, num_masked))
            decoded_positions = decoded.masked_fill(~loss_positions, -1)
        else:  # every position; without a mask the loss is plain reconstruction, so that it is always defined
            decoded = torch.arange(valid.shape[1], device=valid.device).expand(valid.shape)
            loss_positions = torch.where(outputs.mask.any(), outputs.mask, valid)
            decoded_positions = None
        logits = self.decoder(outputs.last_hidden_state, outputs.hidden_mask, elements.position_ids.gather(1, decoded))
        targets = self._reconstruction_targets(elements, labels)
        index = decoded if targets.dim() == 2 else decoded[:, :, None].expand(-1, -1, targets.shape[-1])
        loss = self._reconstruction_loss(logits, targets.gather(1, index), loss_positions, labels is not None)
        return SMAMaskedModelingOutput(
            loss=loss,
            logits=logits,
            mask=outputs.mask,
            decoded_positions=decoded_positions,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def element_embeddings(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
    ) -> torch.FloatTensor:
        r"""
        One vector per input element, `[batch, length, decoder_hidden_size]`, in both encoder modes: each element's
        position query of the reconstruction decoder attending to the encoder output, with nothing masked (what the
        decoder reads to reconstruct that element). In `cross_attention` mode the encoder's own output is one vector
        per latent, not per element (`SMAModel`'s `last_hidden_state`, and so `pipeline("feature-extraction")`);
        in `self_attention` mode it is one per element too. Padding positions get vectors as well: leave them out
        with `attention_mask`. Call it in evaluation mode (dropout off) for the same vectors every time.
        """
        elements = self.sma.derive_elements(input_ids, inputs, attention_mask, position_ids)
        encoded = self.sma(elements=elements)  # no mask is drawn: every element is visible
        return self.decoder.element_states(encoded.last_hidden_state, encoded.hidden_mask, elements.position_ids)

    def _reconstruction_targets(self, elements: SMAElements, labels):
        """Token ids (-100 = ignore) or float32 values, shaped like the inputs; standardised if so configured."""
        input_ids, inputs, valid = elements.input_ids, elements.inputs, elements.valid
        if input_ids is not None:
            if labels is None:
                return input_ids
            if labels.shape != input_ids.shape or labels.dtype.is_floating_point:
                raise ValueError(
                    f"`labels` must be integer ids shaped like `input_ids` {tuple(input_ids.shape)}, "
                    f"got {labels.dtype} {tuple(labels.shape)}."
                )
            return labels
        if labels is None:
            labels = inputs
        elif labels.shape != inputs.shape or not labels.dtype.is_floating_point:
            raise ValueError(
                f"`labels` must be float values shaped like `inputs` {tuple(inputs.shape)}, "
                f"got {labels.dtype} {tuple(labels.shape)}."
            )
        # a NaN target makes the loss NaN; padding is never a target, and is zeroed below
        elif not torch.compiler.is_compiling() and (~torch.isfinite(labels) & valid[:, :, None]).any():
            raise ValueError("`labels` holds NaN or infinite values.")
        # whatever padding holds must not reach the sums below (0 x NaN is NaN)
        targets = labels.float().masked_fill(~valid[:, :, None], 0.0)
        if self.config.normalize_continuous_targets:
            weights = valid[:, :, None].to(targets.dtype)
            count = weights.sum(dim=1, keepdim=True)
            mean = (targets * weights).sum(dim=1, keepdim=True) / count
            variance = ((targets - mean) ** 2 * weights).sum(dim=1, keepdim=True) / count
            targets = (targets - mean) / (variance + 1e-6).sqrt()
        return targets

    def _reconstruction_loss(self, logits, targets, loss_positions, labels_given: bool):
        """Mean loss over `loss_positions` (0 when there are none, so that a batch without a mask adds nothing)."""
        if self.config.input_type == "discrete":
            loss_positions = loss_positions & (targets != -100)
            # an evaluation loss of 0 over nothing would read as a perfect score; only given labels can be all -100
            check = labels_given and not self.training and not torch.compiler.is_compiling()
            if check and not loss_positions.any():
                raise ValueError("No masked position has a label (all are -100); the loss would be undefined.")
            per_position = F.cross_entropy(
                logits.float().transpose(1, 2), targets.masked_fill(~loss_positions, 0), reduction="none"
            )
        else:
            per_position = ((logits.float() - targets) ** 2).mean(dim=-1)
        weights = loss_positions.to(per_position.dtype)
        return (per_position * weights).sum() / weights.sum().clamp(min=1)


class SMAForSequenceClassification(SMAPreTrainedModel):
    """Pooled SMA encoder + LayerNorm + linear layer: regression, single-label or multi-label classification."""

    def __init__(self, config: SMAConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.sma = SMAModel(config, add_pooling_layer=True)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutput:
        r"""
        labels (`torch.Tensor`, *optional*):
            `problem_type="regression"`: float `[batch]` or `[batch, num_labels]`; `"single_label_classification"`:
            integer class ids `[batch]`; `"multi_label_classification"`: 0/1 `[batch, num_labels]` (with one
            label, also the binary case with one logit). When `config.problem_type` is unset it is inferred once:
            one label means regression, integer labels mean single-label, anything else multi-label.
        """
        elements = self.sma.derive_elements(input_ids, inputs, attention_mask, position_ids)
        outputs = self.sma(elements=elements, **kwargs)
        logits = self.classifier(self.dropout(self.layer_norm(outputs.pooler_output)))
        loss = self._loss(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def _loss(self, logits, labels):
        """The loss of `config.problem_type`. Each label check reads the values once (one host sync), and none runs
        while compiling; they prevent a NaN loss (non-finite labels) or a device-side assert (class ids)."""
        config, batch_size = self.config, logits.shape[0]
        checking = not torch.compiler.is_compiling()
        if config.problem_type is None:
            if self.num_labels == 1:
                config.problem_type = "regression"
            elif not labels.dtype.is_floating_point and labels.dim() == 1:
                config.problem_type = "single_label_classification"
            else:
                config.problem_type = "multi_label_classification"

        if config.problem_type == "regression":
            if not labels.dtype.is_floating_point:
                raise ValueError(
                    f"problem_type='regression' needs float `labels`, got {labels.dtype}. For a binary task use "
                    "num_labels=2, or problem_type='multi_label_classification' with one label (one logit, BCE)."
                )
            if labels.numel() != batch_size * self.num_labels or labels.shape[0] != batch_size:
                raise ValueError(
                    f"problem_type='regression' needs `labels` of shape ({batch_size}, {self.num_labels}) "
                    f"or ({batch_size},) for one label, got {tuple(labels.shape)}."
                )
            if checking and not torch.isfinite(labels).all():
                raise ValueError("`labels` holds NaN or infinite values.")
            return F.mse_loss(logits.float(), labels.float().view(batch_size, self.num_labels))
        if config.problem_type == "single_label_classification":
            if labels.dtype.is_floating_point or labels.shape != (batch_size,):
                raise ValueError(
                    f"problem_type='single_label_classification' needs integer class ids of shape ({batch_size},), "
                    f"got {labels.dtype} {tuple(labels.shape)}."
                )
            if checking and ((labels < 0) | (labels >= self.num_labels)).any():
                raise ValueError(f"`labels` must be class ids in [0, num_labels={self.num_labels}).")
            return F.cross_entropy(logits.float(), labels)
        if config.problem_type == "multi_label_classification":
            if labels.numel() != batch_size * self.num_labels or labels.shape[0] != batch_size:
                raise ValueError(
                    f"problem_type='multi_label_classification' needs 0/1 `labels` of shape "
                    f"({batch_size}, {self.num_labels}), got {tuple(labels.shape)}."
                )
            labels = labels.float().view(batch_size, self.num_labels)
            if checking and ((labels != 0) & (labels != 1)).any():  # NaN and infinities are neither
                raise ValueError("problem_type='multi_label_classification' needs `labels` that are 0 or 1.")
            return F.binary_cross_entropy_with_logits(logits.float(), labels)
        raise ValueError(f"Unknown `config.problem_type` {config.problem_type!r}.")


class SMAForTokenClassification(SMAPreTrainedModel):
    """One prediction per input element through the position-query decoder (single-label cross-entropy)."""

    def __init__(self, config: SMAConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.sma = SMAModel(config, add_pooling_layer=False)
        # not named `decoder`: a pretraining checkpoint's decoder has another output size and must not load here
        self.classifier = SMADecoder(config, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TokenClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Class id of each element; -100 (and padding) is ignored.
        """
        elements = self.sma.derive_elements(input_ids, inputs, attention_mask, position_ids)
        outputs = self.sma(elements=elements, **kwargs)
        logits = self.classifier(outputs.last_hidden_state, outputs.hidden_mask, elements.position_ids)
        loss = self._loss(logits, labels, elements.valid) if labels is not None else None
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def _loss(self, logits, labels, valid):
        if labels.shape != logits.shape[:2] or labels.dtype.is_floating_point:
            raise ValueError(
                f"`labels` must be integer class ids of shape {tuple(logits.shape[:2])}, "
                f"got {labels.dtype} {tuple(labels.shape)}."
            )
        labels = labels.masked_fill(~valid, -100)  # padding is never a target
        ignored = labels == -100
        out_of_range = ~ignored & ((labels < 0) | (labels >= self.num_labels))
        # one host sync for both: no target makes the mean loss NaN; a class id outside the logits is a device-side
        # assert on CUDA
        nothing_to_learn, any_out_of_range = torch.stack([ignored.all(), out_of_range.any()]).tolist()
        if nothing_to_learn:
            raise ValueError("Every `labels` entry is -100 or padding; the loss would be undefined.")
        if any_out_of_range:
            raise ValueError(f"`labels` must be class ids in [0, num_labels={self.num_labels}) or -100.")
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)


__all__ = [
    "SMAElements",
    "SMAForMaskedModeling",
    "SMAForSequenceClassification",
    "SMAForTokenClassification",
    "SMAModel",
    "SMAPreTrainedModel",
]
