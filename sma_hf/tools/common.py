"""What the tools share: the presets, task specs and card template shipped with the package, reading a model's
config and processor, the check of input rows, atomic file writes."""

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
from transformers import AutoConfig, AutoFeatureExtractor, AutoTokenizer, PreTrainedConfig
from transformers.utils import logging

from ..configuration_sma import SMAConfig
from ..tokenization_sma import create_byte_tokenizer


logger = logging.get_logger(__name__)


class UsageError(ValueError):
    """Something the user asked for that cannot be done as asked; the console scripts print it as one line."""


class OutputDirInUse(UsageError):
    """`--output_dir` holds what another run wrote (see `check_output_dir`)."""


# package data: `presets/<name>.json` (SMAConfig presets), `tasks/<name>.json` (fine-tuning task specs),
# `templates/` (the model card template and its per-domain text)
RESOURCES_DIR = Path(__file__).resolve().parent
PRESETS_DIR = RESOURCES_DIR / "presets"
TASKS_DIR = RESOURCES_DIR / "tasks"
TEMPLATES_DIR = RESOURCES_DIR / "templates"

# the install line of each optional extra, for the errors that name it
DATA_EXTRA_HINT = 'pip install "sma_hf[data]"'
PHYSICS_EXTRA_HINT = 'pip install "sma_hf[physics]"'

# builders of `datasets` for local files, by extension
FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".txt": "text"}


def shipped_names(folder: Path) -> list[str]:
    return sorted(path.stem for path in folder.glob("*.json"))


def shipped_or_path(name_or_path: str, folder: Path, flag: str) -> Path:
    """A JSON file given by path, or by the name of one shipped in `folder` (`sma-chemistry-small`, `freesolv`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = folder / f"{name_or_path}.json"
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"{flag} {name_or_path!r} is neither a file nor one of the shipped names {shipped_names(folder)}."
    )


def load_sma_config(model_name_or_path: str | None, config_name: str | None) -> SMAConfig:
    """The config of a checkpoint (folder or Hub id), or of a preset (shipped name or JSON path) for a new model."""
    if model_name_or_path is not None:
        config = AutoConfig.from_pretrained(model_name_or_path)
    else:
        path = shipped_or_path(config_name, PRESETS_DIR, "--config_name")
        values = {k: v for k, v in json.loads(path.read_text()).items() if k != "model_type"}
        # a config stores any keyword it is given, so a misspelt field would otherwise be ignored silently
        known = {field.name for field in dataclasses.fields(SMAConfig)} | set(PreTrainedConfig().to_dict())
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"{path} has fields that SMAConfig does not know: {unknown}.")
        config = SMAConfig(**values)
    if not isinstance(config, SMAConfig):
        raise UsageError(f"The model config must be an SMAConfig, got {type(config).__name__}.")
    return config


def check_model_path(model_name_or_path: str | None) -> None:
    """Refuse at once a `--model_name_or_path` that is meant as a local folder and is not one (a Hub lookup would
    wait on the network and then blame it): one that is not a Hub id (`name` or `org/name`), or whose first part is
    a folder here."""
    if model_name_or_path is None:
        return
    path = Path(model_name_or_path).expanduser()
    if path.is_dir():
        return
    parts = model_name_or_path.split("/")
    local = path.is_absolute() or model_name_or_path.startswith(".") or len(parts) > 2 or Path(parts[0]).is_dir()
    if local or path.exists():
        raise UsageError(f"--model_name_or_path {model_name_or_path}: no such model folder.")


def max_input_length(max_seq_length: int | None, config: SMAConfig) -> int:
    """`--max_seq_length`, by default the model's limit; checked against that limit."""
    length = max_seq_length or config.max_position_embeddings
    if not 1 <= length <= config.max_position_embeddings:
        raise UsageError(
            f"--max_seq_length must be in [1, max_position_embeddings={config.max_position_embeddings}], got {length}."
        )
    return length


def check_token_budget(max_tokens_per_batch: int | None, max_length: int) -> None:
    """A token budget must hold the longest input the run feeds the model, or that row would fit no batch."""
    if max_tokens_per_batch is not None and max_tokens_per_batch < max_length:
        raise UsageError(
            f"--max_tokens_per_batch ({max_tokens_per_batch}) is below the longest input this run feeds the model "
            f"({max_length} elements): raise it, or cut inputs shorter with --max_seq_length."
        )


def token_budget_batches(lengths: list[int], max_rows: int, max_tokens: int | None = None) -> list[list[int]]:
    """The indices of `lengths`, in order, cut into consecutive batches of at most `max_rows` rows and, with
    `max_tokens`, at most that many padded elements: rows x the longest row in the batch. Ordered by length, long
    inputs come in small batches and short ones in large ones, for the same memory."""
    batches, current, longest = [], [], 0
    for index, length in enumerate(lengths):
        over_budget = max_tokens is not None and max(longest, length) * (len(current) + 1) > max_tokens
        if current and (len(current) == max_rows or over_budget):
            batches.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, length)
    if current:
        batches.append(current)
    return batches


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


def usable_input(value, config: SMAConfig):
    """`(input, None)` with a row's input in the form the processor takes, or `(None, why it cannot be used)`.

    The one row check of `sma-pretrain` and `sma-finetune`. Discrete inputs are non-blank strings. Continuous inputs
    are a list of elements, each a list of `input_channels` numbers, or, with `input_channels == 1` only, a flat list
    of numbers (one element each). A flat list is never reshaped into several channels: whether it is stored
    element-major or channel-major cannot be told from the row, so it is refused rather than guessed.
    """
    if value is None:
        return None, "missing input"
    if config.input_type == "discrete":
        if not isinstance(value, str):
            return None, "input is not a string"
        if not value.strip():
            return None, "empty input"
        return value, None
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        return None, "input is not numeric"
    if array.ndim == 1 and config.input_channels == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[1] != config.input_channels:
        return None, f"input is not a list of {config.input_channels}-channel elements"
    if len(array) == 0:
        return None, "empty input"
    if not np.isfinite(array).all():
        return None, "non-finite input values"
    return array, None


def check_output_dir(output_dir: str, overwrite: bool, continues: bool, outputs: tuple[str, ...]) -> list[Path]:
    """Check `--output_dir` before any work, so that nothing is lost and nothing is found unwritable at the end.

    Refused: a file, a folder that cannot be made or written, and a folder that already holds files, unless the run
    continues what is there (`continues`: a resume) or `overwrite` (`--overwrite_output_dir`) is given; `overwrite`
    wins. Returns what an overwriting run removes first: the entries of the folder matching `outputs` (the names this
    tool writes, glob patterns), never anything else (the caller removes them, once, with `remove_outputs`).
    """
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output_dir {output_dir} is a file, not a folder.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"--output_dir {output_dir} cannot be written ({error.strerror or error}).") from None
    existing = sorted(entry for entry in path.iterdir() if not entry.name.startswith(".write-test-"))
    if overwrite:
        return sorted({entry for pattern in outputs for entry in path.glob(pattern)})
    if existing and not continues:
        shown = ", ".join(entry.name for entry in existing[:5]) + (", ..." if len(existing) > 5 else "")
        raise OutputDirInUse(
            f"--output_dir {output_dir} already holds files ({shown}); pass --overwrite_output_dir to replace what an "
            "earlier run wrote there, or choose another folder."
        )
    return []


def remove_outputs(paths: list[Path]) -> None:
    """Remove an earlier run's outputs (what `check_output_dir` returned for `--overwrite_output_dir`), saying so."""
    for entry in paths:
        logger.warning(f"--overwrite_output_dir: removing {entry}")
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def weights_sha256(model_name_or_path: str | None) -> str | None:
    """The sha256 of a local checkpoint's weight files, in name order; None from scratch or for a Hub id."""
    if model_name_or_path is None or not Path(model_name_or_path).is_dir():
        return None
    folder, digest = Path(model_name_or_path), hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        _update(digest, path)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    _update(digest, Path(path))
    return digest.hexdigest()


def _update(digest, path: Path):
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)


def refuse_to_cut_elements(longest: int, config: SMAConfig, max_length: int, cut_asked: bool) -> None:
    """Continuous rows longer than `max_length` (the `longest` has that many elements) would lose their last elements,
    features past the positions the model reads: refused, unless `--max_seq_length` asked for the cut (the cut rows
    are then counted). Sequences of tokens are cut and counted as usual."""
    if config.input_type != "continuous" or cut_asked:
        return
    if longest > max_length:
        raise UsageError(
            f"A row has {longest} elements, more than the {max_length} positions the model reads: its last elements "
            f"would be dropped. Pass --max_seq_length {max_length} to cut such rows (they are counted), or use a "
            "config with more positions."
        )


def atomic_write(path: str | os.PathLike, write) -> None:
    """`write(temporary_path)`, then rename the file into place, so that a reader never sees a half-written file and
    an interrupted write leaves the old one (the temporary file is removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike, data):
    write_text_atomic(path, json.dumps(data, indent=2, default=str))
