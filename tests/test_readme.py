"""README's quick start runs as written."""

import os
import re
import subprocess
import sys
from pathlib import Path


README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def run(code, cwd, **env):
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                            env={**os.environ, **env})  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


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
