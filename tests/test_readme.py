"""README and docs/: the quick start runs as written, every link resolves, every documented command parses."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest


README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def run(code, cwd, **env):
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                            env={**os.environ, **env})  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.mark.slow
def test_quick_start_runs_and_loads_without_the_package(tmp_path):
    discrete, continuous, remote = python_blocks()
    env = {"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    stdout = run(discrete + "\n" + continuous, tmp_path, **env)
    assert "tensor([3, 2])" in stdout
    assert "tensor([6, 6, 6, 6, 6, 6, 6, 6])" in stdout
    stdout = run(
        "import sys; sys.modules['sma_hf'] = None\n" + remote + "\nprint(type(model).__module__)", tmp_path, **env
    )
    assert stdout.strip().startswith("transformers_modules.")


ROOT = README.parent
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "model_cards").glob("*.md"))]


def anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} does not exist"
        if fragment:
            headings = re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.MULTILINE)
            assert fragment in {anchor(h) for h in headings}, f"{page.name}: no heading for #{fragment}"


def documented_commands():
    """Every `sma-*` command line in the bash blocks of README, docs/ and the model cards (continuation lines
    joined)."""
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                if line.strip().startswith("sma-"):
                    yield pytest.param(shlex.split(line.split("#")[0]), id=f"{page.name}: {line.split()[0]}")


@pytest.mark.parametrize("argv", list(documented_commands()))
def test_documented_commands_parse(argv):
    from sma_hf.tools import finetune, hub, pretrain
    from sma_hf.tools.data import prepare

    parse = {
        "sma-pretrain": pretrain.parse_args,
        "sma-finetune": finetune.parse_args,
        "sma-model-card": hub.build_parser().parse_args,
        "sma-prepare-data": prepare.build_parser().parse_args,
    }
    parse[argv[0]](argv[1:])  # an unknown flag, a missing one or a bad value exits


@pytest.mark.slow
def test_your_own_data_runs_as_written(tmp_path, monkeypatch):
    """README's "Your own data": its commands as written (but for 3 pretraining steps and 1 fine-tuning epoch) on a
    tiny table under its file names: a CSV to a pretrained, fine-tuned and carded model."""
    from sma_hf.tools import finetune, hub, pretrain

    section = README.read_text().split("## Your own data")[1].split("\n## ")[0]
    commands = [
        shlex.split(line)
        for block in re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip()
    ]
    assert [argv[0] for argv in commands] == ["sma-pretrain", "sma-finetune", "sma-model-card"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_data").mkdir()
    sequences = ["MKTAYIAKQRQISFVKSHFSRQ"[i % 7 :] + "ACDEFGHIK"[: 3 + i % 6] for i in range(40)]
    for name, rows in (("pool_train", sequences[:30]), ("pool_validation", sequences[30:])):
        (tmp_path / "my_data" / f"{name}.csv").write_text("sequence\n" + "\n".join(rows) + "\n")
    for split, part in (("train", range(24)), ("validation", range(24, 32)), ("test", range(32, 40))):
        lines = [f"{sequences[i]},{('cytoplasm', 'nucleus')[i % 2]}" for i in part]
        (tmp_path / "my_data" / f"task_{split}.csv").write_text("sequence,label\n" + "\n".join(lines) + "\n")
    runs = {"sma-pretrain": pretrain.main, "sma-finetune": finetune.main, "sma-model-card": hub.main}
    shorter = {"sma-pretrain": ["--max_steps", "3"], "sma-finetune": ["--num_train_epochs", "1"]}
    for program, *argv in commands:
        runs[program]([*argv, *shorter.get(program, [])])  # a repeated flag: the last one counts
    results = (tmp_path / "runs" / "my-task" / "results.json").read_text()
    assert '"metric": "roc_auc"' in results and '"id2label"' not in results
    card = (tmp_path / "runs" / "my-sma" / "model" / "README.md").read_text()
    assert "me/my-sma" in card and "ROC-AUC" in card
    assert (tmp_path / "runs" / "my-task" / "seed-2" / "config.json").read_text().count("nucleus") == 2
