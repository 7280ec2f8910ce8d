"""Model cards, hub-ready folders and pushes to the Hugging Face Hub for SMA models.

* `render_model_card` fills the Jinja template shipped in `sma_hf/tools/templates/model_card.md` (`CARD_TEMPLATE`;
  its per-domain text is chosen by `domain`, one of `CARD_DOMAINS`) with the card's YAML metadata, the fine-tuning
  results (the JSON files written by `sma-finetune`) and free-form facts about pretraining.
* `save_hub_folder` writes everything a Hub repo needs (weights, config with the full `auto_map`, the code files, the
  tokenizer or feature extractor, README.md) and swaps the folder into place only once it is complete.
* `push_to_hub` creates the repo if needed and uploads such a folder in one commit.

Results: `results` is a list of the dicts `sma-finetune` writes (`{"task": {...}, "label": ..., "seeds": [...],
"validation": {...}, "test": {metric: {"mean", "std", "values"}}, "command": ...}`). `results[0]` is the published
model's own; so is any later result with the same `model_name_or_path` and `label` on another task. Only those go to
the card's `model-index` (one entry per test metric, holding the mean over seeds); every result, baselines included,
appears in the card's evaluation table as mean ± sample standard deviation over seeds.

Context: the template variables a caller may pass in `context` (all optional; other keys reach the template as is):

    summary        str    a paragraph opening the model description
    data           dict   pretraining data facts (sources, counts, data card path, ...)
    training       dict   training procedure (steps, batch size, learning rate, wall time, hardware, masking, ...)
    model_config   dict   architecture hyper-parameters
    final_losses   dict   final held-out losses
    mask_health    dict   mask-health numbers (how spread out the self-guided masks were at the end)
    mask_figure    str    file name of a figure of the masks of a few held-out examples, in the model folder
    commands       dict[str, str] | list[str] | str   the commands that reproduce pretraining
    repository_url str    where the `sma_hf` code lives (linked from the card)
    install_command str   how to install `sma_hf` (default: `pip install git+<repository_url>` or `pip install sma_hf`)
    input_type     str    "discrete" or "continuous": which processor the loading snippet uses

The dicts become lists of `(name, value)` rows named `data_rows`, `training_rows`, `model_config_rows`,
`final_loss_rows`, `mask_health_rows`; `commands` becomes `command_rows`. Derived from `results`: `has_results`,
`has_model_index`, `results_table` (markdown), `evaluation_commands` (`(label, command)` rows) and
`evaluation_summary` (one sentence). These derived names take precedence over `context` keys of the same name.
"""

import argparse
import ctypes
import json
import math
import os
import shutil
import statistics
import uuid
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from transformers import AutoConfig

from .common import TEMPLATES_DIR, atomic_write, weights_sha256
from .mask_health import (
    COLLAPSE_SCORE_THRESHOLD,
    EASY_MASK_LOSS_RATIO_THRESHOLD,
    MASK_FIGURE_FILE,
    MASK_LEAK_THRESHOLD,
)
from .metrics import display_name, greater_is_better


CARD_TEMPLATE = TEMPLATES_DIR / "model_card.md"
# the domains whose text the template holds
CARD_DOMAINS = ("generic", "chemistry", "peptides", "proteins", "images", "physics")
DOMAIN_TASK_TYPES = {"physics": "tabular-classification", "images": "image-classification"}  # rows that are no text
CUSTOM_CODE_TAG = "custom_code"


# -- results ----------------------------------------------------------------------------------------------------------


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _summarize(block) -> dict | None:
    """`{"mean", "std", "n"}` of one metric block (`{"mean", "std", "values"}`), or None without a finite mean.

    A missing mean or std is computed from `values` (std: the sample standard deviation, as `sma-finetune` writes).
    """
    if not isinstance(block, dict):
        return None
    values = [v for v in (_finite(x) for x in block.get("values") or []) if v is not None]
    mean = _finite(block.get("mean"))
    if mean is None and values:
        mean = statistics.fmean(values)
    if mean is None:
        return None
    std = _finite(block.get("std"))
    if std is None and len(values) >= 2:
        std = statistics.stdev(values)
    return {"mean": mean, "std": std, "n": len(values) if values else None}


def _task(result: dict) -> dict:
    task = result.get("task")
    if isinstance(task, str):
        return {"name": task}
    return task if isinstance(task, dict) else {}


def _seed_count(result: dict, summary: dict | None) -> int | None:
    if summary is not None and summary["n"]:
        return summary["n"]
    seeds = result.get("seeds")
    return len(seeds) if isinstance(seeds, (list, tuple)) and seeds else None


def _test_metrics(result: dict) -> dict[str, dict]:
    """Metric name -> summary, for the test metrics of `result` that have a finite mean (main metric first)."""
    test = result.get("test") if isinstance(result.get("test"), dict) else {}
    summaries = {name: _summarize(block) for name, block in test.items()}
    summaries = {name: summary for name, summary in summaries.items() if summary is not None}
    main = _task(result).get("metric")
    if main in summaries:
        summaries = {main: summaries.pop(main), **summaries}
    return summaries


def _metric_title(metric: str) -> str:
    return f"{display_name(metric)} {'↑' if greater_is_better(metric) else '↓'}"


def _format_number(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.3f}"
    return f"{value:.3g}"


def _format_summary(summary: dict | None) -> str:
    if summary is None:
        return "—"
    if summary["std"] is None or (summary["n"] or 0) < 2:
        return _format_number(summary["mean"])
    return f"{_format_number(summary['mean'])} ± {_format_number(summary['std'])}"


def _own_result_indices(results: list[dict]) -> list[int]:
    """`results[0]`, plus later results of the same model (same path and label) on tasks not yet covered."""
    if not results:
        return []
    first = results[0]
    key = (first.get("model_name_or_path"), first.get("label"))
    own, tasks = [0], {_task(first).get("name")}
    if key == (None, None):
        return own  # nothing identifies the model: only results[0] is its own
    for index, result in enumerate(results[1:], start=1):
        name = _task(result).get("name")
        if (result.get("model_name_or_path"), result.get("label")) == key and name not in tasks:
            own.append(index)
            tasks.add(name)
    return own


def _default_task_type(pipeline_tag: str | None) -> str:
    # transformers' Trainer files sequence heads under "text-classification" whatever the problem type (GLUE's STS-B
    # regression included); SMA's classification and regression heads are the same AutoModelForSequenceClassification
    return "image-classification" if (pipeline_tag or "").startswith("image") else "text-classification"


def _eval_results(results: list[dict], own: list[int], task_type: str | None, pipeline_tag: str | None):
    eval_results = []
    for index in own:
        result, task = results[index], _task(results[index])
        if not task.get("name"):
            continue  # a result without a task name cannot name its dataset
        problem = task.get("problem_type")
        for metric, summary in _test_metrics(result).items():
            seeds = _seed_count(result, summary)
            eval_results.append(
                EvalResult(
                    task_type=task.get("task_type") or task_type or _default_task_type(pipeline_tag),
                    task_name=problem.replace("_", " ").capitalize() if isinstance(problem, str) else None,
                    dataset_type=task.get("dataset_type") or task["name"],
                    dataset_name=task.get("dataset_name") or task["name"],
                    dataset_split="test",
                    metric_type=metric,
                    metric_name=f"Test {display_name(metric)}"
                    + (f" (mean of {seeds} seeds)" if seeds and seeds > 1 else ""),
                    metric_value=summary["mean"],
                )
            )
    return eval_results


def _escape_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _results_table(results: list[dict], own: list[int]) -> str:
    """Markdown: per task, a table of the test metrics of every result (mean ± std over seeds, number of seeds)."""
    by_task: dict[str, list[int]] = {}
    for index, result in enumerate(results):
        by_task.setdefault(_task(result).get("name") or "unnamed task", []).append(index)
    sections = []
    for name, indices in by_task.items():
        task = next((_task(results[i]) for i in indices if _task(results[i])), {})
        metrics: list[str] = []
        for index in indices:
            metrics += [m for m in _test_metrics(results[index]) if m not in metrics]
        lines = [f"#### {name}" + (f": {task['description']}" if task.get("description") else ""), ""]
        facts = []
        if task.get("problem_type"):
            facts.append(str(task["problem_type"]).replace("_", " ").capitalize())
        counts = [task.get(f"num_{split}") for split in ("train", "validation", "test")]
        if all(isinstance(c, int) for c in counts):
            facts.append(f"{counts[0]:,} / {counts[1]:,} / {counts[2]:,} train / validation / test examples")
        facts.append("test split, mean ± sample standard deviation over seeds")
        summary_line = "; ".join(facts) + "."
        lines += [summary_line[0].upper() + summary_line[1:], ""]
        rows = [["Model", *(_metric_title(m) for m in metrics), "Seeds"], ["---"] * (len(metrics) + 2)]
        for index in indices:
            result = results[index]
            label = _escape_cell(result.get("label") or result.get("model_name_or_path") or f"result {index + 1}")
            if index in own:
                label = f"**{label}** (this model)"
            summaries = _test_metrics(result)
            seeds = _seed_count(result, next(iter(summaries.values()), None))
            rows.append([label, *(_format_summary(summaries.get(m)) for m in metrics), str(seeds or "—")])
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        if not metrics:
            lines.append("")
            lines.append("No test-split metrics were recorded for this task.")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def _evaluation_summary(results: list[dict], own: list[int]) -> str:
    parts = []
    for index in own:
        result, task = results[index], _task(results[index])
        summaries = _test_metrics(result)
        if not summaries or not task.get("name"):
            continue
        metric, summary = next(iter(summaries.items()))
        seeds = _seed_count(result, summary)
        parts.append(
            f"{task['name']} {display_name(metric)} {_format_summary(summary)}"
            + (f" ({seeds} seeds)" if seeds else "")
        )
    return ("Test results after fine-tuning (mean ± std over seeds): " + "; ".join(parts) + ".") if parts else ""


# -- context ----------------------------------------------------------------------------------------------------------


def _format_value(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_format_value(item)}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(item) for item in value)
    return str(value)


def _rows(mapping) -> list[tuple[str, str]]:
    """`(name, value)` pairs of a context dict, formatted for markdown (empty for anything but a non-empty dict)."""
    if not isinstance(mapping, dict):
        return []
    return [
        (_escape_cell(str(key).replace("_", " ")), _escape_cell(_format_value(value)))
        for key, value in mapping.items()
    ]


def _command_rows(commands) -> list[tuple[str, str]]:
    if isinstance(commands, str):
        return [("", commands)]
    if isinstance(commands, dict):
        return [(str(label), str(command)) for label, command in commands.items() if command]
    if isinstance(commands, (list, tuple)):
        return [("", str(command)) for command in commands if command]
    return []


# -- model card -------------------------------------------------------------------------------------------------------


def render_model_card(
    *,
    model_id: str,
    results: list[dict],
    card_data: dict,
    context: dict | None = None,
    domain: str = "generic",
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Render the model card template with `huggingface_hub.ModelCard.from_template`.

    Args:
        model_id: the repo id (`"org/name"`) the card is written for; used in the title and the loading snippets.
        results: fine-tuning results (see the module docstring); `results[0]` is this model's own. May be empty: the
            card then says that no evaluation was run and has no `model-index`.
        card_data: `ModelCardData` fields (license, tags, datasets, pipeline_tag, base_model, ...).
            `library_name` is always `"transformers"` and the `custom_code` tag is added. An optional `task_type`
            key (not forwarded) sets the model-index task type of results whose task does not name one; the default
            is the domain's (`DOMAIN_TASK_TYPES`), else `"image-classification"` for an `image-*` pipeline tag and
            `"text-classification"` otherwise.
        context: free-form template variables (see the module docstring).
        domain: whose text the shipped template uses, one of `CARD_DOMAINS`.
        template_path: your own Jinja markdown template (front matter `{{ card_data }}`) instead of the shipped one;
            it gets the same variables, `domain` included.
    """
    if domain not in CARD_DOMAINS:
        raise ValueError(f"`domain` must be one of {CARD_DOMAINS}, got {domain!r}.")
    card_data = dict(card_data or {})
    task_type = card_data.pop("task_type", None) or DOMAIN_TASK_TYPES.get(domain)
    tags = card_data.pop("tags", None) or []
    tags = [tags] if isinstance(tags, str) else [str(tag) for tag in tags]
    if CUSTOM_CODE_TAG not in tags:
        tags.append(CUSTOM_CODE_TAG)
    card_data["library_name"] = "transformers"

    results = [result for result in (results or []) if isinstance(result, dict)]
    own = _own_result_indices(results)
    eval_results = _eval_results(results, own, task_type, card_data.get("pipeline_tag"))
    if eval_results:
        card_data.setdefault("model_name", model_id.split("/")[-1])
    else:
        card_data.pop("model_name", None)  # without eval_results it would land in the YAML as a stray key
        card_data.pop("eval_results", None)
    data = ModelCardData(**card_data, tags=tags, eval_results=eval_results or None)

    context = dict(context or {})
    variables = {
        **context,
        "model_id": model_id,
        "domain": domain,
        "has_results": bool(results),
        "has_model_index": bool(eval_results),
        "results_table": _results_table(results, own) if results else "",
        "evaluation_commands": [
            (str(result.get("label") or result.get("model_name_or_path") or ""), str(result["command"]))
            for result in results
            if result.get("command")
        ],
        "evaluation_summary": _evaluation_summary(results, own),
        "data_rows": _rows(context.get("data")),
        "training_rows": _rows(context.get("training")),
        "model_config_rows": _rows(context.get("model_config")),
        "final_loss_rows": _rows(context.get("final_losses")),
        "mask_health_rows": _rows(context.get("mask_health")),
        "command_rows": _command_rows(context.get("commands")),
    }
    return ModelCard.from_template(data, template_path=str(template_path or CARD_TEMPLATE), **variables)


# -- hub-ready folder -------------------------------------------------------------------------------------------------


def _exchange(source: Path, target: Path) -> bool:
    """Atomically swap two paths with Linux `renameat2(RENAME_EXCHANGE)`; False where that is unavailable."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except Exception:  # not glibc >= 2.28 (macOS, Windows, musl): use the two-rename fallback
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), rename_exchange) == 0


def _check_hub_folder(folder: Path):
    missing = [name for name in ("config.json", "README.md") if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        missing.append("model.safetensors")
    if missing:
        raise RuntimeError(f"the hub folder being written lacks {', '.join(missing)}")
    auto_map = json.loads((folder / "config.json").read_text()).get("auto_map") or {}
    references = [ref for value in auto_map.values() for ref in (value if isinstance(value, list) else [value]) if ref]
    # "modeling_sma.SMAModel", or "org/repo--modeling_sma.SMAModel" for code kept in another repo (not checked)
    code_files = {ref.split(".")[0] + ".py" for ref in references if "--" not in ref}
    if not auto_map or not all((folder / name).is_file() for name in code_files):
        raise RuntimeError("config.json has no auto_map, or a code file it names was not saved")


def save_hub_folder(
    model, processor, output_dir: str | os.PathLike, card: ModelCard | str, extra_files: dict | None = None
) -> Path:
    """Write a folder ready for `push_to_hub`: weights, config, code, tokenizer/feature extractor, README.md.

    `model.save_pretrained` writes `model.safetensors`, `config.json` (its `auto_map` names every SMA head, because
    importing `sma_hf` registers the classes for the Auto classes) and the code files; `processor.save_pretrained`
    (skipped when `processor` is None) the tokenizer or feature extractor; the card becomes README.md.

    Everything is written to a hidden sibling folder first, which then replaces `output_dir` (atomically on Linux,
    otherwise by two renames), so an interrupted run never leaves a half-written folder at `output_dir`. An existing
    `output_dir` must be a saved model folder (it holds config.json) or empty; anything else is refused.
    """
    output_dir = Path(output_dir).absolute()
    if output_dir.is_symlink() or (output_dir.exists() and not output_dir.is_dir()):
        raise FileExistsError(f"{output_dir} exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not (output_dir / "config.json").is_file():
        raise FileExistsError(f"refusing to replace {output_dir}: it is not empty and holds no config.json")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    staging = output_dir.with_name(f".{output_dir.name}.partial-{token}")
    staging.mkdir()  # not tempfile.mkdtemp: its 0700 mode would end up on the published folder
    try:
        model.save_pretrained(staging)
        if processor is not None:
            processor.save_pretrained(staging)
        (card if isinstance(card, ModelCard) else ModelCard(str(card))).save(staging / "README.md")
        for name, data in (extra_files or {}).items():  # files published with the model: bytes, or JSON data
            (staging / name).write_bytes(
                data if isinstance(data, bytes) else json.dumps(data, indent=2, default=str).encode()
            )
        _check_hub_folder(staging)
        if not output_dir.exists():
            os.rename(staging, output_dir)
        elif _exchange(staging, output_dir):
            pass  # `staging` now holds the previous folder, removed below
        else:
            previous = output_dir.with_name(f".{output_dir.name}.previous-{token}")
            os.rename(output_dir, previous)
            try:
                os.rename(staging, output_dir)
            except BaseException:
                os.rename(previous, output_dir)
                raise
            shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


# -- push -------------------------------------------------------------------------------------------------------------


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload SMA model",
) -> str:
    """Create `repo_id` if needed and upload `folder` (from `save_hub_folder`) in one commit; return the commit URL.

    The Hub is the `HF_ENDPOINT` huggingface_hub was imported with; `token` defaults to the saved login or `HF_TOKEN`.
    Files already on the Hub with the same content are not uploaded again (when nothing changed, no commit is made
    and the URL of the current head commit is returned). Files in the repo that are not in `folder` are kept.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a saved model folder (no config.json); see save_hub_folder")
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(
        repo_id=repo_url.repo_id or repo_id, folder_path=folder, commit_message=commit_message, repo_type="model"
    )
    return str(getattr(commit, "commit_url", None) or repo_url)


# -- card context from the pretraining summary and the data card -----------------------------------------------------


def pretraining_card_context(
    summary: dict | None, data_card: dict | None = None, config=None, mask_figure: bool = False
) -> dict:
    """Template variables (see the module docstring) from `pretraining_summary.json`, a corpus's `data_card.json`
    (written by `sma-prepare-data`) and the model's config; `mask_figure`: the folder holds `masks.png`. Anything
    missing is left out of the card."""
    context = {"mask_figure": MASK_FIGURE_FILE} if mask_figure else {}
    if config is not None:
        context["input_type"] = config.input_type
        context["model_config"] = {
            "Inputs": f"{config.input_type}"
            + (f", {config.input_channels} channels" if config.input_type == "continuous" else ""),
            "Encoder": f"{config.encoder_type}, {config.num_hidden_layers} layers, width {config.hidden_size}, "
            f"{config.num_attention_heads} heads"
            + (f", {config.num_latents} latents" if config.encoder_type == "cross_attention" else ""),
            "Maximum length": config.max_position_embeddings,
            "Masking": f"{config.masking_strategy}"
            + (f", selected by {config.mask_selection}" if config.masking_strategy == "self_guided" else "")
            + (", position keys of equal norm" if config.mask_equal_key_norms else "")
            + (f", {config.mask_random_floor:.0%} of each mask random throughout" if config.mask_random_floor else "")
            + f", ratio {config.masking_ratio}, {config.num_per_query} inputs per query, heads "
            f"{config.head_aggregation}" + (", mask_self" if config.mask_self else ""),
        }
    if summary:
        args = summary.get("args", {})
        final = summary.get("final", {})
        batch = f"{summary['train_batch_size_total']} examples"
        if args.get("max_tokens_per_batch"):  # a batch of long inputs holds fewer of them
            batch = f"up to {batch}, at most {args['max_tokens_per_batch']:,} padded elements per device"
        context["training"] = {
            "Steps": f"{summary['steps']} optimizer steps of {batch}",
            "Optimizer": f"AdamW, learning rate {args.get('learning_rate')}, weight decay {args.get('weight_decay')}, "
            f"cosine schedule with {args.get('warmup_steps')} warm-up steps, "
            f"gradient clipping at {args.get('max_grad_norm')}",
            "Mask warm-up": f"a random share of each mask falling from 1 to 0 over the first "
            f"{args.get('mask_noise_warmup_ratio', 0):.0%} of the steps",
            "Precision": "float32"
            if args.get("mixed_precision") in (None, "no")
            else f"{args['mixed_precision']} mixed precision",
            "Hardware": summary.get("hardware"),
            "Wall time": f"{summary['wall_time_s'] / 60:.1f} min",
            "Rows skipped as unusable (counted each epoch)": summary.get("skipped_rows") or 0,
            "Rows truncated to the maximum length (counted each epoch)": summary.get("truncated_rows"),
            "Input elements seen (after truncation)": (
                f"{summary['elements_seen']:,}" if "elements_seen" in summary else None
            ),
        }
        context["training"] = {k: v for k, v in context["training"].items() if v is not None}
        losses = {
            "Reconstruction on seeded random masks (eval_loss)": final.get("eval_loss"),
            "Reconstruction on the model's own self-guided masks": final.get("eval_loss_self_guided"),
            "Training loss (last logging window)": final.get("train_loss"),
        }
        context["final_losses"] = {k: _format_value(v) for k, v in losses.items() if v is not None}
        health = {
            "Mean pairwise overlap (Jaccard) of self-guided masks across examples": final.get(
                "mask_overlap_self_guided"
            ),
            "The same for random masks of the same size": final.get("mask_overlap_random"),
            f"Collapse score (0: as diverse as random masks, 1: one mask for all; collapse at >= "
            f"{COLLAPSE_SCORE_THRESHOLD})": final.get("mask_collapse_score"),
            f"Loss on own masks / loss on random masks (easy masks below {EASY_MASK_LOSS_RATIO_THRESHOLD})": final.get(
                "mask_loss_ratio"
            ),
            f"Leak: how far what the own masks hide is from what random masks hide (total variation; the visible "
            f"elements tell what is missing at >= {MASK_LEAK_THRESHOLD})": final.get("mask_leak"),
        }
        if "mask_collapsed" in final:
            health["At the end of pretraining"] = (
                "collapsed: the self-guided masks are far easier to fill than random ones"
                + (
                    ", the same in every example, or they hide one kind of content"
                    if "mask_leak" in final
                    else " or the same in every example"
                )
                + ", so the objective taught little"
                if final["mask_collapsed"]
                else "healthy"
            )
        context["mask_health"] = {k: _format_value(v) for k, v in health.items() if v is not None}
        if summary.get("command"):
            context["commands"] = [summary["command"]]
    if data_card:
        pretrain = data_card.get("datasets", {}).get("pretrain", {})
        sources = data_card.get("sources", [])
        data = {
            "Files read": "; ".join(f"{s['package']} {s['version']} `{s['file']}`" for s in sources) or None,
            "Rows read": pretrain.get("rows_read"),
            "Removed": ", ".join(
                f"{name.replace('_', ' ')}: {count}" for name, count in pretrain.get("filters", {}).items()
            )
            or None,
            "Rows written": pretrain.get("rows_written"),
            "Split": pretrain.get("split_method"),
            "Pool details": "; ".join(
                f"{key.replace('_', ' ')}: {_format_value(value)}" for key, value in pretrain.get("info", {}).items()
            )
            or None,
            "Notes": " ".join(data_card.get("notes", [])) or None,
            "Data card": f"generated by {data_card.get('generator')}, seed {data_card.get('seed')}",
        }
        context["data"] = {k: v for k, v in data.items() if v is not None}
    return context


def sma_card_data(config, license: str = "apache-2.0", tags=()) -> dict:
    """The card metadata of an SMA checkpoint (`render_model_card` adds `library_name` and `custom_code`)."""
    return {
        "license": license,
        "tags": ["sma", "self-supervised", *tags],
        "pipeline_tag": "fill-mask" if config.input_type == "discrete" else None,
    }


def build_parser() -> argparse.ArgumentParser:
    """The flags of `sma-model-card`."""
    parser = argparse.ArgumentParser(
        prog="sma-model-card", description=main.__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument(
        "--model_dir", required=True, help="A hub-ready folder (from sma-pretrain or save_hub_folder)."
    )
    parser.add_argument("--domain", choices=CARD_DOMAINS, default="generic", help="Whose text the card uses.")
    parser.add_argument("--template", help="Your own Jinja card template instead of the shipped one.")
    parser.add_argument(
        "--model_id", required=True, help="The repo id the card is written for, e.g. org/sma-chemistry."
    )
    parser.add_argument(
        "--results", nargs="*", default=[], help="sma-finetune results.json files; the first is the model's own."
    )
    parser.add_argument("--data_card", help="data_card.json of the pretraining corpus.")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--tags", nargs="*", default=[])
    parser.add_argument("--push_to_hub", action="store_true", help="Then upload the folder to --model_id.")
    parser.add_argument(
        "--keep_card",
        action="store_true",
        help="With --push_to_hub: upload the folder with the card it has (a committed checkpoint's, whose results "
        "files are not at hand) instead of rewriting it.",
    )
    parser.add_argument("--hub_token")
    return parser


def main(argv=None):
    """`sma-model-card`: (re)write the card of a hub-ready folder from its pretraining summary and fine-tuning
    results, and optionally push the folder."""
    parser = build_parser()
    args = parser.parse_args(argv)
    model_dir = Path(args.model_dir)
    if args.keep_card:
        if not args.push_to_hub:
            parser.error("--keep_card only pushes the folder as it is: add --push_to_hub")
        if args.results or args.template or args.data_card:
            parser.error("--keep_card keeps the folder's card: drop --results, --template and --data_card")
        if not (model_dir / "README.md").is_file():
            parser.error(f"--keep_card: {model_dir} has no README.md to keep")
    else:
        for path in args.results[:1]:  # the model's own: fine-tuned from exactly this folder's weights
            recorded = json.loads(Path(path).read_text()).get("model_sha256")
            if recorded != weights_sha256(model_dir):
                parser.error(
                    f"--results {path} was not fine-tuned from the weights in --model_dir {model_dir} (its "
                    f"model_sha256 is {recorded}); the first results file must be this model's own"
                )
        write_card(model_dir, args)
    if args.push_to_hub:
        print(f"Pushed: {push_to_hub(model_dir, args.model_id, token=args.hub_token)}")


def write_card(model_dir: Path, args: argparse.Namespace):
    """`sma-model-card`'s card, from the folder's pretraining summary and the results and data card in `args`."""
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
    summary_path = model_dir / "pretraining_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    data_card = json.loads(Path(args.data_card).read_text()) if args.data_card else None
    results = [json.loads(Path(path).read_text()) for path in args.results]
    card = render_model_card(
        model_id=args.model_id,
        results=results,
        card_data=sma_card_data(config, args.license, args.tags),
        context=pretraining_card_context(summary, data_card, config, (model_dir / MASK_FIGURE_FILE).is_file()),
        domain=args.domain,
        template_path=args.template,
    )
    atomic_write(model_dir / "README.md", card.save)
    print(f"Wrote {model_dir / 'README.md'}")


if __name__ == "__main__":
    main()
