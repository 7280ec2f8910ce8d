"""The console scripts. Each checks that the `train` extra is installed before it imports its tool, so that a plain
`pip install sma_hf` (the model alone) answers with one line naming what to install instead of a traceback."""

import importlib
import importlib.metadata
import sys

from packaging.requirements import Requirement


def missing_train_requirements() -> list[str]:
    """The distributions of the `train` extra (as pyproject.toml lists them) that are not installed."""
    missing = []
    for line in importlib.metadata.requires("sma_hf") or []:
        requirement = Requirement(line)
        if requirement.marker is None or not requirement.marker.evaluate({"extra": "train"}):
            continue
        try:
            importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement.name)
    return missing


def _run(program: str, module: str):
    missing = missing_train_requirements()
    if missing:
        sys.exit(f"{program} needs the train extra (missing: {', '.join(missing)}): pip install 'sma_hf[train]'")
    importlib.import_module(f"sma_hf.tools.{module}").main()


def prepare_data():
    _run("sma-prepare-data", "data")


def pretrain():
    _run("sma-pretrain", "pretrain")


def finetune():
    _run("sma-finetune", "finetune")


def model_card():
    _run("sma-model-card", "hub")
