"""`Trainer` support for SMA pretraining (needs only transformers)."""

from transformers import TrainerCallback

from .masking_sma import cosine_noise_scale


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
