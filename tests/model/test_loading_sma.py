"""Save/load, Auto classes, remote code without the package, the offline Hub cache, and pipelines."""

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from conftest import random_inputs, tiny_config
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    pipeline,
)

from sma_hf import (
    SMAConfig,
    SMAFeatureExtractor,
    SMAForMaskedModeling,
    SMAForSequenceClassification,
    SMAForTokenClassification,
    SMAModel,
    create_byte_tokenizer,
    modeling_sma,
)


# the heads each Auto class loads, as the package's one table says
HEADS = {
    auto_name: getattr(modeling_sma, reference.rsplit(".", 1)[1])
    for auto_name, reference in modeling_sma.AUTO_MAP.items()
    if auto_name != "AutoConfig"
}
FIRST_OUTPUT = {"AutoModel": "last_hidden_state"}  # every other head: logits


def run_python(code: str, **env) -> str:
    """Run `code` in a fresh interpreter; fail the test with its stderr if it fails."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env={**os.environ, **env},
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


BLOCK_PACKAGE = "import sys; sys.modules['sma_hf'] = None  # `import sma_hf` now raises ImportError\n"


def test_auto_classes_resolve():
    # the table, written out once: every other test derives its heads from it
    assert modeling_sma.AUTO_MAP == {
        "AutoConfig": "configuration_sma.SMAConfig",
        "AutoModel": "modeling_sma.SMAModel",
        "AutoModelForPreTraining": "modeling_sma.SMAForMaskedModeling",
        "AutoModelForMaskedLM": "modeling_sma.SMAForMaskedModeling",
        "AutoModelForSequenceClassification": "modeling_sma.SMAForSequenceClassification",
        "AutoModelForTokenClassification": "modeling_sma.SMAForTokenClassification",
    }
    config = tiny_config(num_labels=2)
    assert type(AutoConfig.for_model("sma", hidden_size=64)) is SMAConfig
    for auto_name, model_class in HEADS.items():
        auto_class = getattr(transformers, auto_name)
        assert type(auto_class.from_config(config)) is model_class


@pytest.mark.parametrize("input_type", ["discrete", "continuous"])
def test_save_load_identity_and_complete_auto_map(tmp_path, input_type):
    config = tiny_config(input_type=input_type, num_labels=3)
    inputs = random_inputs(config, 2, 10)
    for auto_name, model_class in HEADS.items():
        model = model_class(config).eval()
        folder = tmp_path / auto_name
        model.save_pretrained(folder)
        saved = json.loads((folder / "config.json").read_text())
        assert set(saved["auto_map"]) == {"AutoConfig", *HEADS}
        assert {"configuration_sma.py", "modeling_sma.py", "masking_sma.py"} <= set(os.listdir(folder))
        reloaded = getattr(transformers, auto_name).from_pretrained(folder).eval()
        assert type(reloaded) is model_class
        assert reloaded.state_dict().keys() == model.state_dict().keys()
        for name, tensor in model.state_dict().items():
            assert torch.equal(reloaded.state_dict()[name], tensor), name
        key = FIRST_OUTPUT.get(auto_name, "logits")
        assert torch.equal(reloaded(**inputs)[key], model(**inputs)[key])


def test_feature_extractor_resolves_through_auto_class(tmp_path):
    SMAFeatureExtractor(input_channels=3).save_pretrained(tmp_path)
    tiny_config().save_pretrained(tmp_path)
    assert type(AutoFeatureExtractor.from_pretrained(tmp_path)) is SMAFeatureExtractor


def test_head_loads_pretrained_encoder(tmp_path):
    config = tiny_config(num_labels=2)
    pretrained = SMAForMaskedModeling(config)
    pretrained.save_pretrained(tmp_path)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    transformers.logging.get_logger("transformers").addHandler(handler)
    try:
        classifier = SMAForSequenceClassification.from_pretrained(tmp_path)
    finally:
        transformers.logging.get_logger("transformers").removeHandler(handler)
    report = "\n".join(record.getMessage() for record in records)
    # the decoder left behind is expected: no line per weight; the new head's weights are still reported
    assert "UNEXPECTED" not in report and "decoder." not in report and "classifier.weight" in report
    encoder = {k: v for k, v in pretrained.state_dict().items() if k.startswith("sma.")}
    for name, tensor in encoder.items():
        assert torch.equal(classifier.state_dict()[name], tensor), name
    # the new head is initialised, not left empty: the pooler query follows N(0, initializer_range)
    assert 0.005 < float(classifier.sma.pooler.query.detach().std()) < 0.05
    tokens = SMAForTokenClassification.from_pretrained(tmp_path)  # the pretraining decoder does not load here
    assert torch.equal(
        tokens.sma.embeddings.position_embeddings.weight, pretrained.sma.embeddings.position_embeddings.weight
    )
    base = SMAModel.from_pretrained(tmp_path)
    assert torch.equal(
        base.embeddings.position_embeddings.weight, pretrained.sma.embeddings.position_embeddings.weight
    )


def _save_reference_folder(folder, config, with_preprocessors=True):
    """Save every head's weights (one shared SMAForMaskedModeling body) and the expected outputs of each head."""
    torch.manual_seed(0)
    model = SMAForTokenClassification(config)  # has the body and a decoder; other heads get fresh head weights
    model.save_pretrained(folder)
    if with_preprocessors:
        if config.input_type == "discrete":
            create_byte_tokenizer(model_max_length=config.max_position_embeddings).save_pretrained(folder)
        else:
            SMAFeatureExtractor(input_channels=config.input_channels).save_pretrained(folder)


@pytest.mark.slow
@pytest.mark.parametrize("input_type", ["discrete", "continuous"])
def test_every_head_loads_with_remote_code_without_the_package(tmp_path, input_type):
    config = tiny_config(input_type=input_type, num_labels=2)
    folder = tmp_path / "checkpoint"
    _save_reference_folder(folder, config)
    inputs = random_inputs(config, 2, 7)
    torch.save(inputs, tmp_path / "inputs.pt")
    expected = {}
    for auto_name in HEADS:
        torch.manual_seed(0)  # heads missing from the checkpoint are initialised from this seed on both sides
        model = getattr(transformers, auto_name).from_pretrained(folder).eval()
        expected[auto_name] = model(**inputs)[FIRST_OUTPUT.get(auto_name, "logits")]
    torch.save(expected, tmp_path / "expected.pt")
    preprocessor = (
        "from transformers import AutoTokenizer\n"
        "tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)  # no tokenizer code: tokenizer.json\n"
        "assert type(tok).__module__.startswith('transformers.')\n"
        "assert tok('CCO')['input_ids'] == [ord('C') + 6, ord('C') + 6, ord('O') + 6, 5]\n"
        if input_type == "discrete"
        else "from transformers import AutoFeatureExtractor\n"
        "fe = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)\n"
        "assert type(fe).__name__ == 'SMAFeatureExtractor' and 'sma_hf' not in type(fe).__module__\n"
        "assert fe([[[1.0, 2.0, 3.0]]], return_tensors='pt')['inputs'].shape == (1, 1, 3)\n"
    )
    stdout = run_python(
        BLOCK_PACKAGE
        + f"""
import torch, transformers
folder = {str(folder)!r}
inputs, expected = torch.load({str(tmp_path / "inputs.pt")!r}), torch.load({str(tmp_path / "expected.pt")!r})
for name, reference in expected.items():
    torch.manual_seed(0)
    model = getattr(transformers, name).from_pretrained(folder, trust_remote_code=True).eval()
    assert "sma_hf" not in type(model).__module__, type(model).__module__
    out = model(**inputs)
    torch.testing.assert_close(out[0] if name == "AutoModel" else out.logits, reference, rtol=0, atol=0)
    print(name, type(model).__name__)
{preprocessor}""",
        HF_HOME=str(tmp_path / "hf_home"),
        HF_HUB_OFFLINE="1",
    )
    assert stdout.count("\n") == len(HEADS)
    assert "AutoModelForTokenClassification SMAForTokenClassification" in stdout


def _offline_hub_cache(root, repo_id, folder):
    """Lay `folder` out as the Hugging Face cache holds a downloaded snapshot of `repo_id`."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)


@pytest.mark.slow
def test_from_pretrained_through_offline_hub_cache(tmp_path):
    config = tiny_config(num_labels=2)
    folder = tmp_path / "checkpoint"
    _save_reference_folder(folder, config)
    _offline_hub_cache(tmp_path / "hub", "org/sma-tiny", folder)
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    code = """
import torch, transformers
tokenizer = transformers.AutoTokenizer.from_pretrained("org/sma-tiny", trust_remote_code=True)
batch = tokenizer(["CCO", "c1ccccc1"], padding=True, return_tensors="pt")
for name in {heads!r}:
    model = getattr(transformers, name).from_pretrained("org/sma-tiny", {kwargs}).eval()
    out = model(**batch)
    first = out.last_hidden_state if name == "AutoModel" else out.logits
    print(name, type(model).__name__, type(model).__module__.split(".")[0], *first.shape)
"""
    heads = list(HEADS)
    installed = run_python("import sma_hf\n" + code.format(heads=heads, kwargs=""), **env).splitlines()
    remote = run_python(BLOCK_PACKAGE + code.format(heads=heads, kwargs="trust_remote_code=True"), **env).splitlines()
    assert [line.split()[:3] for line in installed] == [[name, HEADS[name].__name__, "sma_hf"] for name in heads]
    assert installed[0].split()[3:] == ["2", str(config.num_latents), str(config.hidden_size)]
    for package, remote_line in zip(installed, remote):  # every head, the same class and output shape
        assert remote_line.split()[2] == "transformers_modules"
        assert remote_line.split()[:2] + remote_line.split()[3:] == package.split()[:2] + package.split()[3:]
    load_absent = "import sma_hf, transformers; transformers.AutoModel.from_pretrained('org/absent')"
    missing = subprocess.run(
        [sys.executable, "-c", load_absent], capture_output=True, text=True, env={**os.environ, **env}
    )
    assert missing.returncode != 0 and "OSError" in missing.stderr


def test_fill_mask_pipeline_fills_mask(tmp_path):
    config = tiny_config()
    model = SMAForMaskedModeling(config).eval()
    tokenizer = create_byte_tokenizer(model_max_length=config.max_position_embeddings)
    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer)
    results = fill("CC[MASK]C(=O)O", top_k=3)
    assert len(results) == 3
    encoded = tokenizer("CC[MASK]C(=O)O", return_tensors="pt")
    position = int((encoded["input_ids"][0] == config.mask_token_id).nonzero())
    probs = model(**encoded).logits[0, position].softmax(-1)
    top = probs.topk(3)
    assert [r["token"] for r in results] == top.indices.tolist()
    for result, score in zip(results, top.values.tolist()):
        assert result["score"] == pytest.approx(score, rel=1e-5)
        assert result["sequence"] == "CC" + result["token_str"] + "C(=O)O"
    # the [MASK] position is hidden from the encoder: what stood there changes nothing
    assert model(**encoded).mask[0, position]


def test_a_pretraining_checkpoints_mean_pooled_vector_is_the_same_at_every_load(tmp_path):
    """Per-sequence vectors from a pretraining checkpoint: `classifier_pooling="mean"` gives the same vector at every
    load; the attention pooler, which pretraining does not train, is drawn anew at each load (why README pools by
    the mean)."""
    config = tiny_config()
    SMAForMaskedModeling(config).save_pretrained(tmp_path)
    inputs = random_inputs(config, 2, 12)
    pooled = [SMAModel.from_pretrained(tmp_path, classifier_pooling="mean").eval()(**inputs).pooler_output
              for _ in range(2)]  # fmt: skip
    assert torch.equal(*pooled)
    attention = [SMAModel.from_pretrained(tmp_path).eval()(**inputs).pooler_output for _ in range(2)]
    assert not torch.equal(*attention)
