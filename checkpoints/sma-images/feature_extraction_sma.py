"""Feature extractor for continuous SMA inputs: sequences of elements, each a vector of `input_channels` floats."""

import numbers

import numpy as np
from transformers import BatchFeature, SequenceFeatureExtractor
from transformers.utils import PaddingStrategy, to_numpy


class SMAFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Turns continuous examples into padded float32 `inputs` of shape [batch, length, input_channels] plus an
    `attention_mask` of shape [batch, length] (1 = real element, 0 = padding).

    Example forms (numpy arrays, torch tensors or nested lists):
        - a sequence `[N, input_channels]` (N elements x channels);
        - a 1-D `[N]` when `input_channels == 1`, e.g. a tabular row with one element per feature;
        - with `is_image=True`, an image `[H, W]` (`input_channels == 1`) or `[H, W, C]` (`C == input_channels`),
          flattened row-major into H*W elements, so pixel (r, c) becomes element `r * W + c`.

    One example or a batch? The rule depends only on the container and its rank, never on sizes:
        - a list or tuple of numbers is one 1-D example; any other list or tuple is a batch, one item per example
          (so a single `[N, C]` example given as nested lists must be wrapped in a list, or passed as an array);
        - an array or tensor is one example if its rank is an example's rank (1 or 2; with `is_image=True`, 2 or
          3) and a batch of equal-sized examples if it has one more dimension (3; with `is_image=True`, 4).
          A tabular batch `[B, F]` is therefore read as one `[N, C]` example: pass `list(rows)` instead.

    Args:
        input_channels (`int`, defaults to 1):
            Number of floats per element; also the `feature_size`.
        padding_value (`float`, defaults to 0.0):
            Value written into padded positions.
        do_normalize (`bool`, defaults to `False`):
            Standardise each channel with `channel_mean` / `channel_std` before padding. Set by `fit`.
        channel_mean (`list[float]`, *optional*):
            Per-channel mean, computed by `fit`.
        channel_std (`list[float]`, *optional*):
            Per-channel standard deviation, computed by `fit`.
        padding_side (`str`, defaults to `"right"`):
            `"right"` or `"left"`.
    """

    model_input_names = ["inputs", "attention_mask"]

    def __init__(
        self,
        input_channels=1,
        padding_value=0.0,
        do_normalize=False,
        channel_mean=None,
        channel_std=None,
        padding_side="right",
        **kwargs,
    ):
        if not isinstance(input_channels, int) or input_channels < 1:
            raise ValueError(f"input_channels must be a positive int, got {input_channels!r}")
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        # The base class saves `feature_size` and `sampling_rate` to preprocessor_config.json, so they come back here
        # on reload. feature_size is always input_channels; continuous inputs have no sampling rate.
        kwargs.pop("feature_size", None)
        super().__init__(
            feature_size=input_channels,
            sampling_rate=kwargs.pop("sampling_rate", None),
            padding_value=padding_value,
            padding_side=padding_side,
            **kwargs,
        )
        self.input_channels = input_channels
        self.do_normalize = do_normalize
        self.channel_mean = channel_mean
        self.channel_std = channel_std

    def __call__(
        self,
        examples,
        padding=True,
        max_length=None,
        truncation=False,
        pad_to_multiple_of=None,
        return_attention_mask=True,
        return_tensors=None,
        is_image=False,
        **kwargs,
    ) -> BatchFeature:
        """
        Standardise (if `do_normalize`), truncate and pad one example or a batch (see the class docstring for the
        accepted forms and the one-vs-batch rule).

        Args:
            examples: one example or a batch of examples.
            padding (`bool` or `str`, defaults to `True`):
                `True`/`"longest"` pads to the longest example, `"max_length"` to `max_length`, `False`/`"do_not_pad"`
                leaves a list of arrays of different lengths.
            max_length (`int`, *optional*): target length for `padding="max_length"` and `truncation=True`.
            truncation (`bool`, defaults to `False`): keep only the first `max_length` elements of each example.
            pad_to_multiple_of (`int`, *optional*): round the padded length up to a multiple of this.
            return_attention_mask (`bool`, defaults to `True`): also return `attention_mask`.
            return_tensors (`str`, *optional*): `"pt"` or `"np"`; lists of arrays if unset.
            is_image (`bool`, defaults to `False`): read examples as `[H, W]` / `[H, W, C]` images.
        """
        if kwargs:
            raise TypeError(f"SMAFeatureExtractor got unexpected keyword arguments {sorted(kwargs)}.")
        arrays = self._to_arrays(examples, is_image)
        if self.do_normalize:
            mean, std = self._normalization_stats()
            arrays = [((x - mean) / std).astype(np.float32) for x in arrays]

        if truncation:
            if max_length is None:
                raise ValueError("truncation=True needs max_length")
            arrays = [x[:max_length] for x in arrays]

        return BatchFeature(
            self._pad_arrays(arrays, padding, max_length, pad_to_multiple_of, return_attention_mask),
            tensor_type=return_tensors,
        )

    def pad(
        self,
        processed_features,
        padding=True,
        max_length=None,
        pad_to_multiple_of=None,
        return_attention_mask=True,
        return_tensors=None,
    ) -> BatchFeature:
        """
        Pad examples that `__call__` already standardised and truncated (with `padding=False`), given as a list of
        dicts or a dict of lists: what transformers' collators call, so that `DataCollatorWithPadding(extractor)`
        batches continuous examples. `inputs` (and `attention_mask`) are padded as `__call__` pads them; `labels`
        whose rows hold one value per element are padded to the same length with -100, the index losses ignore; any
        other field (one value per example) is stacked.
        """
        if isinstance(processed_features, (list, tuple)):
            processed_features = {key: [row[key] for row in processed_features] for key in processed_features[0]}
        arrays = [np.asarray(x, dtype=np.float32).reshape(len(x), -1) for x in processed_features["inputs"]]
        data = self._pad_arrays(arrays, padding, max_length, pad_to_multiple_of, return_attention_mask)
        lengths = [len(x) for x in arrays]
        for key, rows in processed_features.items():
            if key in ("inputs", "attention_mask"):  # padded above, or not asked for
                continue
            per_element = key in ("labels", "label") and all(
                np.ndim(row) == 1 and len(row) == n for row, n in zip(rows, lengths)
            )
            data[key] = self._pad_rows(rows, data["inputs"].shape[1], -100) if per_element else np.asarray(rows)
        return BatchFeature(data, tensor_type=return_tensors)

    def _pad_arrays(self, arrays, padding, max_length, pad_to_multiple_of, return_attention_mask) -> dict:
        """`inputs` [batch, length, input_channels] and `attention_mask`, padded on `padding_side` (the base class's
        `pad` reads feature_size == 1 as scalar values; here every element is an [input_channels] vector)."""
        strategy = self._get_padding_strategies(padding=padding, max_length=max_length)
        if strategy == PaddingStrategy.DO_NOT_PAD:
            data = {"inputs": arrays}
            if return_attention_mask:
                data["attention_mask"] = [np.ones(len(x), dtype=np.int64) for x in arrays]
            return data

        lengths = [len(x) for x in arrays]
        if strategy == PaddingStrategy.LONGEST:
            length = max(lengths)
        else:
            length = max_length
            too_long = [i for i, n in enumerate(lengths) if n > max_length]
            if too_long:
                raise ValueError(
                    f"example {too_long[0]} has {lengths[too_long[0]]} elements, more than max_length={max_length}; "
                    "pass truncation=True to cut it"
                )
        if pad_to_multiple_of is not None:
            length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
        data = {"inputs": self._pad_rows(arrays, length, self.padding_value, np.float32)}
        if return_attention_mask:
            data["attention_mask"] = self._pad_rows([np.ones(n, dtype=np.int64) for n in lengths], length, 0)
        return data

    def _pad_rows(self, rows, length: int, value, dtype=None) -> np.ndarray:
        """Rows of different lengths (and equal trailing shape) in one array of `length`, on `padding_side`."""
        first = np.asarray(rows[0], dtype=dtype)
        padded = np.full((len(rows), length, *first.shape[1:]), value, dtype=dtype or first.dtype)
        for i, row in enumerate(rows):
            n = len(row)
            padded[i, slice(0, n) if self.padding_side == "right" else slice(length - n, length)] = row
        return padded

    def fit(self, examples, is_image=False):
        """
        Compute per-channel mean and std over all elements of all examples (same forms as `__call__`), store them as
        `channel_mean` / `channel_std`, turn on `do_normalize` and return `self`.
        """
        elements = np.concatenate(self._to_arrays(examples, is_image)).astype(np.float64)
        std = elements.std(axis=0)
        # A constant channel has std 0; dividing by 1 instead just centres it rather than producing inf/NaN.
        std[std == 0] = 1.0
        self.channel_mean = elements.mean(axis=0).tolist()
        self.channel_std = std.tolist()
        self.do_normalize = True
        return self

    def _normalization_stats(self):
        if self.channel_mean is None or self.channel_std is None:
            raise ValueError(
                "do_normalize=True needs channel_mean and channel_std; call fit(examples) or pass them to __init__"
            )
        mean = np.asarray(self.channel_mean, dtype=np.float64)
        std = np.asarray(self.channel_std, dtype=np.float64)
        if mean.shape != (self.input_channels,) or std.shape != (self.input_channels,):
            raise ValueError(
                f"channel_mean and channel_std must have input_channels={self.input_channels} values each, "
                f"got {mean.size} and {std.size}"
            )
        if not (np.all(np.isfinite(mean)) and np.all(std > 0) and np.all(np.isfinite(std))):
            raise ValueError("channel_mean must be finite and channel_std finite and > 0")
        return mean, std

    def _to_arrays(self, examples, is_image):
        """Apply the one-vs-batch rule and return a list of validated float32 arrays of shape [N, input_channels]."""
        example_ranks = (2, 3) if is_image else (1, 2)
        if isinstance(examples, (list, tuple)):
            if len(examples) == 0:
                raise ValueError("examples is empty: expected one example or a non-empty batch")
            is_batch = not all(isinstance(v, numbers.Number) for v in examples)
            batch = list(examples) if is_batch else [examples]
        else:
            array = to_numpy(examples)
            if not isinstance(array, np.ndarray):
                raise TypeError(
                    f"examples must be a numpy array, torch tensor, list or tuple, got {type(examples).__name__}"
                )
            batch = list(array) if array.ndim == example_ranks[-1] + 1 else [array]
        return [self._to_elements(example, i, is_image) for i, example in enumerate(batch)]

    def _to_elements(self, example, index, is_image):
        """Validate one example and reshape it to [N, input_channels] float32."""
        try:
            x = np.asarray(to_numpy(example))
        except ValueError as err:  # ragged nested lists
            raise ValueError(f"example {index} is not a rectangular array: {err}") from None
        if x.dtype.kind not in "biuf":
            raise TypeError(f"examples must be numeric, got dtype {x.dtype} in example {index}")

        channels = self.input_channels
        if is_image:
            if x.ndim == 2 and channels == 1:
                x = x.reshape(-1, 1)
            elif x.ndim == 3 and x.shape[2] == channels:
                x = x.reshape(-1, channels)  # row-major: pixel (r, c) -> element r * W + c
            else:
                raise ValueError(
                    f"expected an image [H, W] (input_channels=1) or [H, W, {channels}], "
                    f"got shape {list(x.shape)} in example {index}"
                )
        elif x.ndim == 1:
            if channels != 1:
                raise ValueError(
                    f"a 1-D example needs input_channels=1, but input_channels={channels} (example {index}); "
                    f"pass it as [N, {channels}]"
                )
            x = x.reshape(-1, 1)
        elif x.ndim == 2:
            if x.shape[1] != channels:
                raise ValueError(
                    f"expected input_channels={channels} values per element, got {x.shape[1]} in example {index}"
                )
        else:
            raise ValueError(
                f"expected an example [N, {channels}] or [N], got shape {list(x.shape)} in example {index}"
            )

        if len(x) == 0:
            raise ValueError(f"example {index} is empty: it needs at least one element")
        x = x.astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"example {index} contains NaN or inf")
        return x
