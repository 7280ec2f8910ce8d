"""The checkpoints committed under checkpoints/: each loads offline from a fresh clone, with the package and as remote
code without it, fills masks, and its card and summary show the numbers of the committed experiment."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoFeatureExtractor, AutoModel, AutoTokenizer, pipeline

import sma_hf  # registers the Auto classes


ROOT = Path(__file__).resolve().parents[1]
# checkpoint -> (the experiment whose self-guided arm it is, inputs of its domain, what a masked element may be: for
# discrete inputs only)
PUBLISHED = {
    "sma-protein": ("proteins", ["MKTAYIAKQRQISFVKSHFSRQ", "MSVLTPLLLRGLTGSARRLPVPRAKIHSL"], "ACDEFGHIKLMNPQRSTVWY"),
    "sma-chemistry-small": ("chemistry", ["CC(=O)Oc1ccccc1C(=O)O", "CCN(CC)CC"], "CNOSPFIBrcnos()=#123456789[]@+-Hl"),
    # two events' 28 standardised columns
    "sma-physics": ("physics", torch.randn(2, 28, generator=torch.Generator().manual_seed(0)).tolist(), None),
    # two images' 784 pixels in [0, 1], in the order of the checkpoint's permutation.json
    "sma-images": ("images", torch.rand(2, 784, generator=torch.Generator().manual_seed(0)).tolist(), None),
}
DISCRETE = [name for name, (_, _, alphabet) in PUBLISHED.items() if alphabet is not None]


@pytest.fixture(params=list(PUBLISHED))
def published(request):
    name = request.param
    experiment, inputs, alphabet = PUBLISHED[name]
    record = json.loads((ROOT / "benchmarks" / "results" / experiment / "results.json").read_text())
    return ROOT / "checkpoints" / name, record, inputs, alphabet


def test_carries_the_packages_code(published):
    """The remote code a checkpoint carries is the package's own: a fix to the model reaches the published folders."""
    folder = published[0]
    package = Path(sma_hf.__file__).parent
    for code in sorted(folder.glob("*.py")):
        assert code.read_text() == (package / code.name).read_text(), f"{code} differs from sma_hf/{code.name}"
    assert {code.name for code in folder.glob("*.py")} >= {"configuration_sma.py", "modeling_sma.py"}


def test_loads_offline_with_the_package_and_as_remote_code(published, tmp_path):
    folder, _, inputs, alphabet = published
    processor = (AutoTokenizer if alphabet else AutoFeatureExtractor).from_pretrained(folder)
    batch = processor(inputs, padding=True, return_tensors="pt")
    torch.save(dict(batch), tmp_path / "batch.pt")
    encoder = AutoModel.from_pretrained(folder).eval()
    assert type(encoder).__module__ == "sma_hf.modeling_sma"
    with torch.no_grad():
        torch.save(encoder(**batch).last_hidden_state, tmp_path / "expected.pt")
    code = f"""
    import sys; sys.modules["sma_hf"] = None  # `import sma_hf` now raises ImportError
    import torch
    from transformers import AutoModel
    model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
    assert "sma_hf" not in type(model).__module__, type(model).__module__
    with torch.no_grad():
        states = model(**torch.load({str(tmp_path / "batch.pt")!r})).last_hidden_state
    torch.testing.assert_close(states, torch.load({str(tmp_path / "expected.pt")!r}), rtol=0, atol=0)
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.parametrize("name", DISCRETE)
def test_fill_mask_predicts_elements_of_its_domain(name):
    _, inputs, alphabet = PUBLISHED[name]
    folder = ROOT / "checkpoints" / name
    fill = pipeline("fill-mask", model=str(folder), tokenizer=str(folder))
    for text in inputs:
        middle = len(text) // 2
        predictions = fill(text[:middle] + "[MASK]" + text[middle + 1 :], top_k=3)
        # a trained model puts its best guesses among the characters of its domain; an untrained one among 262 bytes
        assert all(p["token_str"] in alphabet for p in predictions), predictions
        assert predictions[0]["score"] > 1 / len(alphabet)


def test_card_and_summary_show_the_committed_results(published):
    folder, record, _, _ = published
    card = ModelCard.load(folder / "README.md")
    own = {c["task"]["name"]: c for c in record["cells"] if c["arm"] == "self_guided" and c["budget"] == 1.0}
    reported = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    expected = {(task, metric): s["mean"] for task, cell in own.items() for metric, s in cell["test"].items()}
    assert reported == pytest.approx(expected, rel=1e-12)
    summary = json.loads((folder / "pretraining_summary.json").read_text())
    final = record["pretraining"]["self_guided"]["final"]
    assert summary["final"].keys() == final.keys()
    for key, value in final.items():
        both_nan = math.isnan(value) and math.isnan(summary["final"][key])  # a metric a step did not measure
        assert both_nan or math.isclose(summary["final"][key], value, rel_tol=1e-12), key
    assert str(ROOT) not in (folder / "README.md").read_text() + (folder / "pretraining_summary.json").read_text()


def test_physics_checkpoint_says_how_to_make_its_inputs():
    pytest.importorskip("pyarrow")
    from sma_hf.tools.data.physics import FEATURES, LOG_FEATURES

    transform = json.loads((ROOT / "checkpoints" / "sma-physics" / "column_transform.json").read_text())
    assert transform["columns"] == list(FEATURES) and transform["log1p_columns"] == list(LOG_FEATURES)
    assert len(transform["mean"]) == len(transform["std"]) == 28 and min(transform["std"]) > 0
    assert "column_transform.json" in (ROOT / "checkpoints" / "sma-physics" / "README.md").read_text()


def test_image_checkpoint_says_which_pixel_order_it_reads():
    pytest.importorskip("pyarrow")
    from sma_hf.tools.data.images import pixel_permutation

    folder = ROOT / "checkpoints" / "sma-images"
    saved = json.loads((folder / "permutation.json").read_text())
    # the permutation sma-prepare-data --permute_pixels makes from its seed
    expected = pixel_permutation(saved["seed"], 784).tolist()
    assert saved["permutation"] == expected and saved["convention"] == "permuted_pixels[i] = pixels[permutation[i]]"
    assert "permutation.json" in (folder / "README.md").read_text()
