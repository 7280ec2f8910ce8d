"""What makes SMA pretraining beat training from scratch on molecules, at a CPU budget? A small study, chosen on
validation only, whose winner becomes the recipe of `benchmarks/chemistry.py` and the `sma-chemistry-small` presets.

    python benchmarks/chemistry_recipe_study.py    # about two hours on 2 CPU cores

Stage 1, the fine-tuning schedule: the base pretraining (the recipe before this study: the presets and
`chemistry.PRETRAIN_ARGS` with 1,500 steps, `BASE_FLAGS`) fine-tuned with
each schedule, next to the same architecture from scratch with the same schedule. Stage 2, the pretraining: with
the best schedule, one change at a time (steps, masking ratio, sampled queries). Every cell: FreeSolv and
solubility, 3 seeds, the full label budget, validation RMSE (the test splits are not read here: the fine-tunes
still report them in their own results files, which this study ignores). The score of a recipe is the mean over
the two tasks of its validation RMSE divided by the best validation RMSE of any from-scratch model of the study
(every schedule tried): below 1, pretraining beats the strongest baseline found. Results:
`benchmarks/results/chemistry/recipe_study.{json,md}`. A run that is stopped and started again reuses the
pretrainings and fine-tunes it finished (the same command line); delete `outputs/recipe_study/` to start afresh.
"""

import json
import shlex
import statistics
import time
from pathlib import Path

import chemistry
from evidence import finetune_once, pretrain_once

from sma_hf.tools.common import PRESETS_DIR, write_json_atomic


SCHEDULES = {
    "lr 3e-4, attention pooling": ["--learning_rate", "3e-4", "--classifier_pooling", "attention"],
    "lr 1e-4, mean pooling": ["--learning_rate", "1e-4", "--classifier_pooling", "mean"],
    "lr 3e-4, mean pooling": ["--learning_rate", "3e-4", "--classifier_pooling", "mean"],
}
# the pretraining the study started from, whatever recipe `chemistry.py` holds now (its winner)
BASE_FLAGS = {"--max_steps": "1500", "--warmup_steps": "150"}
# (description, config overrides, pretraining flag overrides), the likeliest to pay first
PRETRAINING_VARIANTS = [
    ("3,000 steps (base 1,500)", {}, {"--max_steps": "3000", "--warmup_steps": "300"}),
    ("masking ratio 0.15 (base 0.3)", {"masking_ratio": 0.15}, {}),
    ("6 inputs per sampled query (base 3)", {"num_per_query": 6}, {}),
]
# Considered and left out to keep the study within about two hours of CPU: its pretraining and its own
# from-scratch baseline would have taken about half an hour more.
NOT_RUN = ["width 256, 8 heads (base 128, 4)"]
FINETUNE_BASE = ["--num_train_epochs", "30", "--per_device_train_batch_size", "32"]
SEEDS = ["0", "1", "2"]


def with_flags(argv: list[str], overrides: dict[str, str]) -> list[str]:
    argv = list(argv)
    for flag, value in overrides.items():
        argv[argv.index(flag) + 1] = value
    return argv


def pretrain_variant(name: str, overrides: dict, flags: dict, work_dir: Path, data_dir: Path) -> tuple[str, str]:
    base = json.loads((PRESETS_DIR / f"{chemistry.PRESETS['self_guided']}.json").read_text())
    experiment = chemistry.chemistry_experiment(data_dir, smoke=False)
    pretrain_once(
        {**base, **overrides}, with_flags(experiment.pretrain_args, {**BASE_FLAGS, **flags}), work_dir / name
    )
    return str(work_dir / name / "pretrained" / "model"), str(work_dir / name / "config.json")


def validation_rmse(model: list[str], schedule: list[str], out: Path, data_dir: Path) -> dict[str, dict]:
    scores = {}
    for task in chemistry.TASKS:
        argv = [*model, "--task", task, "--data_dir", str(data_dir), "--output_dir", str(out / task),
                "--seeds", *SEEDS, *FINETUNE_BASE, *schedule]  # fmt: skip
        results = finetune_once(argv, out / task)
        scores[task] = {"validation_rmse": results["validation"]["rmse"], "command": results["command"]}
    return scores


def best_scratch(rows: list[dict]) -> dict[str, float]:
    """Per task, the lowest validation RMSE of any from-scratch model in `rows`."""
    return {t: min(row["scratch"][t]["validation_rmse"]["mean"] for row in rows) for t in chemistry.TASKS}


def score(pretrained: dict, reference: dict[str, float]) -> float:
    return statistics.fmean(pretrained[t]["validation_rmse"]["mean"] / reference[t] for t in chemistry.TASKS)


def main():
    started = time.time()
    data_dir, work_dir = chemistry.ROOT / "data", chemistry.ROOT / "outputs" / "recipe_study"
    results_dir = chemistry.ROOT / "benchmarks" / "results" / "chemistry"
    chemistry.prepare_data(data_dir, smoke=False)
    rows = []

    base_model, base_config = pretrain_variant("base", {}, {}, work_dir, data_dir)
    scratch_by_schedule = {}
    for schedule_name, schedule in SCHEDULES.items():
        out = work_dir / "stage1" / schedule_name.replace(" ", "_").replace(",", "")
        scratch = validation_rmse(["--config_name", base_config], schedule, out / "scratch", data_dir)
        pretrained = validation_rmse(["--model_name_or_path", base_model], schedule, out / "sma", data_dir)
        scratch_by_schedule[schedule_name] = scratch
        rows.append({"stage": 1, "pretraining": "base", "schedule": schedule_name, "sma": pretrained,
                     "scratch": scratch})  # fmt: skip
    reference = best_scratch(rows)
    best_schedule = min(rows, key=lambda r: score(r["sma"], reference))["schedule"]

    for name, overrides, flags in PRETRAINING_VARIANTS:
        slug = "".join(c if c.isalnum() else "_" for c in name)[:40]
        model, _ = pretrain_variant(slug, overrides, flags, work_dir, data_dir)
        out = work_dir / "stage2" / slug
        pretrained = validation_rmse(["--model_name_or_path", model], SCHEDULES[best_schedule], out / "sma", data_dir)
        scratch = scratch_by_schedule[best_schedule]  # no variant changes the architecture
        rows.append({"stage": 2, "pretraining": name, "schedule": best_schedule, "sma": pretrained,
                     "scratch": scratch})  # fmt: skip

    reference = best_scratch(rows)
    for row in rows:
        row["score"] = score(row["sma"], reference)
    best = min(rows, key=lambda r: r["score"])
    record = {
        "command": shlex.join(["python", "benchmarks/chemistry_recipe_study.py"]),
        "wall_time_s": round(time.time() - started, 1),
        "seeds": SEEDS,
        "selection": "mean over FreeSolv and solubility of validation RMSE (SMA) / the best validation RMSE of any "
        "from-scratch model of the study",
        "best_scratch_validation_rmse": reference,
        "rows": rows,
        "best": {"pretraining": best["pretraining"], "schedule": best["schedule"], "score": best["score"]},
        "not_run": NOT_RUN,
    }
    write_json_atomic(results_dir / "recipe_study.json", record)
    (results_dir / "recipe_study.md").write_text(study_markdown(record))


def study_markdown(record: dict) -> str:
    lines = ["# Chemistry recipe study (validation only)", ""]
    minutes = record["wall_time_s"] / 60
    lines.append(f"Command: `{record['command']}` (2 CPU cores; its last sitting, which reused the cells of an "
                 f"earlier interrupted one, took {minutes:.0f} min).")  # fmt: skip
    lines.append(f"Score: {record['selection']}; below 1, pretraining beats it. Seeds {', '.join(record['seeds'])}.")
    reference = record["best_scratch_validation_rmse"]
    lines.append("Best from-scratch validation RMSE: " + ", ".join(f"{t} {v:.3f}" for t, v in reference.items()) + ".")
    header = "| stage | pretraining | fine-tuning | FreeSolv val. RMSE, SMA | FreeSolv, scratch | "
    header += "solubility val. RMSE, SMA | solubility, scratch | score |"
    lines += ["", header, "|---" * 8 + "|"]

    def cell(block):
        return f"{block['validation_rmse']['mean']:.3f} ± {block['validation_rmse']['std']:.3f}"

    for row in record["rows"]:
        values = [cell(row[arm][task]) for task in ("freesolv", "solubility") for arm in ("sma", "scratch")]
        lines.append(f"| {row['stage']} | {row['pretraining']} | {row['schedule']} | " + " | ".join(values)
                     + f" | {row['score']:.3f} |")  # fmt: skip
    best = record["best"]
    lines += ["", f"Best: pretraining {best['pretraining']!r}, fine-tuning {best['schedule']!r} (score "
              f"{best['score']:.3f})."]  # fmt: skip
    if record["not_run"]:
        lines.append(f"Left out to keep within about two hours of CPU: {', '.join(record['not_run'])}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
