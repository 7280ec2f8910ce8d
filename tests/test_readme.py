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
