"""Model cards, hub-ready folders, and a push/download round trip against a loopback fake Hub (tests/fake_hub.py)."""

import json
import os
import re
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import pytest
import torch
import yaml
from conftest import tiny_config
from huggingface_hub import ModelCard, ModelCardData

from sma_hf import SMAFeatureExtractor, SMAForMaskedModeling, SMAForSequenceClassification, create_byte_tokenizer
from sma_hf.tools import hub
from sma_hf.tools.hub import CARD_TEMPLATE, render_model_card, save_hub_folder


pytest_plugins = ["fake_hub"]  # the `fake_hub` fixture: a FakeHub on a free loopback port

DOMAINS = ("chemistry", "peptides", "proteins", "images", "physics")  # those with their own text in the card template


def _result(label, path, task, metrics, seeds=(0, 1, 2)):
    """A results dict as sma-finetune writes it; `metrics` maps a test metric to its per-seed values."""

    def block(values):
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
        return {"mean": mean, "std": std, "values": list(values)}

    return {
        "task": task,
        "model_name_or_path": path,
        "label": label,
        "seeds": list(seeds),
        "validation": {name: block(values) for name, values in metrics.items()},
        "test": {name: block(values) for name, values in metrics.items()},
        "command": f"sma-finetune --task {task['name']} --model {path}",
    }


FREESOLV = {
    "name": "freesolv",
    "description": "FreeSolv hydration free energy (kcal/mol), scaffold split",
    "problem_type": "regression",
    "metric": "rmse",
    "greater_is_better": False,
    "num_train": 513,
    "num_validation": 64,
    "num_test": 65,
}
AMP = dict(FREESOLV, name="amp", description="antimicrobial peptides vs. UniProt peptides",
           problem_type="single_label_classification", metric="roc_auc", greater_is_better=True)  # fmt: skip
LOCALISATION = dict(FREESOLV, name="localisation_clustered", description="subcellular localisation, clustered split",
                    problem_type="single_label_classification", metric="macro_f1", greater_is_better=True)  # fmt: skip
MNIST = dict(FREESOLV, name="mnist", description="MNIST digits", problem_type="single_label_classification",
             metric="accuracy", greater_is_better=True)  # fmt: skip
HIGGS = dict(MNIST, name="higgs", description="signal vs top-pair background, 28 event columns")
# domain -> (task, this model's test values per metric, the baseline's, card_data)
CASES = {
    "chemistry": (
        FREESOLV,
        {"rmse": [2.0, 2.1, 2.3], "mae": [1.4, 1.5, 1.6]},
        {"rmse": [3.1, 3.3, 3.6], "mae": [2.0, 2.2, 2.4]},
        {"license": "apache-2.0", "tags": ["chemistry"], "pipeline_tag": "feature-extraction"},
    ),
    "peptides": (
        AMP,
        {"roc_auc": [0.90, 0.91, 0.93], "accuracy": [0.8, 0.82, 0.84]},
        {"roc_auc": [0.70, 0.75, 0.80], "accuracy": [0.6, 0.65, 0.7]},
        {"license": "apache-2.0", "tags": ["biology"], "pipeline_tag": "text-classification"},
    ),
    "proteins": (
        LOCALISATION,
        {"macro_f1": [0.30, 0.32, 0.31], "accuracy": [0.6, 0.62, 0.61]},
        {"macro_f1": [0.20, 0.22, 0.21], "accuracy": [0.5, 0.52, 0.51]},
        {"license": "apache-2.0", "tags": ["biology", "protein"], "pipeline_tag": "fill-mask"},
    ),
    "images": (
        MNIST,
        {"accuracy": [0.95, 0.96, 0.97]},
        {"accuracy": [0.80, 0.85, 0.90]},
        {"license": "apache-2.0", "tags": ["mnist"], "pipeline_tag": "image-classification", "datasets": ["mnist"]},
    ),
    "physics": (
        HIGGS,
        {"accuracy": [0.66, 0.67, 0.65], "roc_auc": [0.72, 0.73, 0.71]},
        {"accuracy": [0.60, 0.62, 0.58], "roc_auc": [0.66, 0.67, 0.65]},
        {"license": "apache-2.0", "tags": ["physics"]},
    ),
}
CONTEXT = {
    "summary": "Pretrained for 1,000 steps.",
    "data": {"sources": ["corpus A", "corpus B"], "num_train": 123456},
    "training": {"steps": 1000, "batch_size": 32, "learning_rate": 0.0003, "hardware": "2 CPU cores"},
    "final_losses": {"validation_loss": 1.2345},
    "mask_health": {"masked_position_entropy": 0.8765},
    "commands": {"pretrain": "sma-pretrain --config_name sma-chemistry-small"},
}


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("\n---\n", 1)[0][4:])


@pytest.mark.parametrize("domain", DOMAINS)
def test_card_reports_own_results_in_model_index_and_baselines_in_the_body(tmp_path, domain):
    task, own_metrics, baseline_metrics, card_data = CASES[domain]
    results = [
        _result("SMA (self-guided pretraining)", f"outputs/sma-{domain}", task, own_metrics),
        _result("From scratch", "none", task, baseline_metrics),
    ]
    card = render_model_card(domain=domain, model_id=f"org/sma-{domain}", results=results,
                             card_data=card_data, context=CONTEXT)  # fmt: skip
    card.save(tmp_path / "README.md")
    text = (tmp_path / "README.md").read_text(encoding="utf-8")
    metadata = _front_matter(text)
    assert metadata["library_name"] == "transformers" and "custom_code" in metadata["tags"]
    assert metadata["model-index"][0]["name"] == f"sma-{domain}"

    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.library_name == "transformers"
    evals = {e.metric_type: e for e in loaded.data.eval_results}
    assert set(evals) == set(own_metrics)
    expected_task_type = {"images": "image-classification", "physics": "tabular-classification"}.get(
        domain, "text-classification"
    )
    for metric, values in own_metrics.items():
        assert evals[metric].metric_value == pytest.approx(sum(values) / len(values))  # the SMA mean, not the baseline
        assert evals[metric].dataset_split == "test"
        assert evals[metric].dataset_type == task["name"] and evals[metric].task_type == expected_task_type

    body = loaded.text
    baseline = results[1]["test"][task["metric"]]
    assert f"| From scratch | {baseline['mean']:.3f} ± {baseline['std']:.3f} |" in body
    own = results[0]["test"][task["metric"]]
    assert f"**SMA (self-guided pretraining)** (this model) | {own['mean']:.3f} ± {own['std']:.3f} |" in body
    assert results[1]["command"] in body and CONTEXT["commands"]["pretrain"] in body
    assert "| masked position entropy | 0.8765 |" in body and "- **num train:** 123,456" in body
    assert f'AutoModel.from_pretrained("org/sma-{domain}", classifier_pooling="mean")' in body  # package installed
    assert f'AutoModel.from_pretrained("org/sma-{domain}", trust_remote_code=True, classifier_pooling="mean")' in body
    assert "arxiv.org/abs/2402.14789" in body and "No evaluation was run" not in body


@pytest.mark.parametrize("domain", DOMAINS)
def test_card_without_results_says_so_and_has_no_model_index(tmp_path, domain):
    card = render_model_card(domain=domain, model_id="org/sma", results=[],
                             card_data={"license": "apache-2.0", "model_name": "sma"})  # fmt: skip
    assert "model-index" not in str(card) and "model_name" not in str(card)
    assert "No evaluation was run for this model" in card.text
    assert "No mask-health numbers were recorded" in card.text and "±" not in card.text
    card.save(tmp_path / "README.md")
    assert ModelCard.load(tmp_path / "README.md").data.eval_results is None
    # the template also renders through huggingface_hub alone, with none of render_model_card's variables
    plain = ModelCard.from_template(ModelCardData(license="mit"), template_path=str(CARD_TEMPLATE))
    assert plain.data.license == "mit" and "No evaluation was run" in plain.text


@pytest.mark.parametrize("domain", DOMAINS)
def test_card_usage_snippet_runs(tmp_path, domain):
    """The card's "How to use" code (package installed) runs, pointed at a local hub folder instead of a repo id."""
    if domain in ("images", "physics"):
        config = tiny_config(input_type="continuous", input_channels=1, max_position_embeddings=784)
        processor = SMAFeatureExtractor(input_channels=1)
    else:
        config, processor = tiny_config(), create_byte_tokenizer(model_max_length=64)
    folder = tmp_path / "hub"
    card = render_model_card(domain=domain, model_id=str(folder), results=[], card_data={})
    save_hub_folder(SMAForMaskedModeling(config), processor, folder, card)
    snippet = card.text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(compile(snippet, f"{domain}.md", "exec"), namespace)
    assert namespace["embeddings"].shape == (2, config.hidden_size)


def test_one_template_holds_the_text_of_every_domain():
    titles = {"generic": "SMA model", "chemistry": "SMA chemistry model", "peptides": "SMA peptide model",
              "proteins": "SMA protein model", "images": "SMA image model",
              "physics": "SMA particle-physics model"}  # fmt: skip
    assert set(titles) == set(hub.CARD_DOMAINS)
    texts = {domain: render_model_card(domain=domain, model_id="", results=[], card_data={}).text for domain in titles}
    for domain, title in titles.items():
        assert texts[domain].startswith(f"\n# {title}\n") and "## Citation" in texts[domain]
    assert "SMILES strings as UTF-8 bytes" in texts["chemistry"] and "SMILES" not in texts["peptides"]
    assert 'pipeline("fill-mask"' in texts["proteins"] and "fill-mask" not in texts["peptides"]
    assert len(set(texts.values())) == len(texts)
    with pytest.raises(ValueError, match="`domain` must be one of"):
        render_model_card(domain="astronomy", model_id="org/sma", results=[], card_data={})


def test_card_result_edge_cases():
    second_task = dict(FREESOLV, name="lipophilicity", metric="rmse")
    own = _result("SMA", "outputs/sma", FREESOLV, {"rmse": [2.0, 2.2]})
    own["test"]["rmse"].pop("std")  # computed from the values
    own["test"]["broken"] = {"mean": float("nan"), "values": []}  # not finite: neither table nor model-index
    results = [
        own,
        _result("Random masks", "outputs/random", FREESOLV, {"rmse": [2.5]}, seeds=[0]),  # one seed: no ± part
        _result("SMA", "outputs/sma", second_task, {"rmse": [0.9, 1.1]}),  # same model, other task: model-index
        {"task": {"name": "esol"}, "label": "unfinished", "seeds": [0]},  # no test block
    ]
    card = render_model_card(domain="chemistry", model_id="org/sma", results=results,
                             card_data={"tags": ["x"], "task_type": "tabular-regression"})  # fmt: skip
    evals = {(e.dataset_type, e.metric_type): e for e in card.data.eval_results}
    assert set(evals) == {("freesolv", "rmse"), ("lipophilicity", "rmse")}
    assert evals["freesolv", "rmse"].metric_value == pytest.approx(2.1)
    assert {e.task_type for e in evals.values()} == {"tabular-regression"}
    assert "2.100 ± 0.141" in card.text and "| Random masks | 2.500 | 1 |" in card.text
    assert "| unfinished | 1 |" in card.text and "No test-split metrics were recorded" in card.text
    assert re.search(r"\bnan\b", card.text.lower()) is None


# -- save_hub_folder ----------------------------------------------------------------------------------------------


def _tiny_classifier(seed: int) -> SMAForSequenceClassification:
    torch.manual_seed(seed)
    return SMAForSequenceClassification(tiny_config(num_labels=2)).eval()


def _card(model_id="org/sma-tiny") -> ModelCard:
    return render_model_card(domain="chemistry", model_id=model_id, results=[],
                             card_data={"license": "apache-2.0"})  # fmt: skip


def _snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _batch(tokenizer):
    return tokenizer(["CCO", "c1ccccc1O", "N#N"], padding=True, return_tensors="pt")


def test_save_hub_folder_writes_a_complete_reloadable_folder(tmp_path):
    model, tokenizer = _tiny_classifier(0), create_byte_tokenizer(model_max_length=64)
    card = _card()
    folder = save_hub_folder(model, tokenizer, tmp_path / "hub", card)
    assert folder == tmp_path / "hub"
    files = set(os.listdir(folder))
    assert {"model.safetensors", "config.json", "configuration_sma.py", "modeling_sma.py", "masking_sma.py",
            "tokenizer.json", "tokenizer_config.json", "README.md"} <= files  # fmt: skip
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert {"AutoConfig", "AutoModel", "AutoModelForSequenceClassification", "AutoModelForMaskedLM"} <= set(auto_map)
    assert (folder / "README.md").read_text(encoding="utf-8") == str(card)
    assert os.listdir(tmp_path) == ["hub"]  # no staging folder left behind
    reloaded = SMAForSequenceClassification.from_pretrained(folder).eval()
    batch = _batch(tokenizer)
    assert torch.equal(reloaded(**batch).logits, model(**batch).logits)


@pytest.mark.parametrize("atomic_exchange", [True, False], ids=["renameat2", "two-renames"])
def test_save_hub_folder_replaces_and_survives_a_failed_write(tmp_path, monkeypatch, atomic_exchange):
    exchanges = []
    if atomic_exchange:
        (tmp_path / "probe_a").mkdir(), (tmp_path / "probe_b").mkdir()
        if not hub._exchange(tmp_path / "probe_a", tmp_path / "probe_b"):
            pytest.skip("no renameat2(RENAME_EXCHANGE) here")
        (tmp_path / "probe_a").rmdir(), (tmp_path / "probe_b").rmdir()
        real_exchange = hub._exchange
        monkeypatch.setattr(hub, "_exchange", lambda s, t: exchanges.append(real_exchange(s, t)) or exchanges[-1])
    else:
        monkeypatch.setattr(hub, "_exchange", lambda source, target: False)
    tokenizer, folder = create_byte_tokenizer(model_max_length=64), tmp_path / "hub"
    save_hub_folder(_tiny_classifier(0), tokenizer, folder, _card())
    (folder / "stale.txt").write_text("from an older export")
    second = _tiny_classifier(1)
    save_hub_folder(second, tokenizer, folder, _card("org/second"))
    assert not (folder / "stale.txt").exists() and "org/second" in (folder / "README.md").read_text()
    batch = _batch(tokenizer)
    assert torch.equal(
        SMAForSequenceClassification.from_pretrained(folder).eval()(**batch).logits, second(**batch).logits
    )
    assert sorted(os.listdir(tmp_path)) == ["hub"]
    assert exchanges == ([True] if atomic_exchange else [])

    before = _snapshot(folder)

    def broken_save(self, filepath):
        raise OSError("disk full while writing README.md")

    monkeypatch.setattr(ModelCard, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_hub_folder(_tiny_classifier(2), tokenizer, folder, _card("org/third"))
    assert _snapshot(folder) == before  # the previous export is untouched
    assert sorted(os.listdir(tmp_path)) == ["hub"]  # and the half-written staging folder is gone


def test_save_hub_folder_refuses_to_replace_other_folders(tmp_path):
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "notes.txt").write_text("not a model")
    with pytest.raises(FileExistsError, match="holds no config.json"):
        save_hub_folder(_tiny_classifier(0), None, tmp_path / "outputs", _card())
    assert (tmp_path / "outputs" / "notes.txt").read_text() == "not a model"


# -- the fake Hub and the push round trip ---------------------------------------------------------------------------


def _request(url, method="GET", data=None, headers=None):
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_model_card_cli_pushes_a_folder_with_the_card_it_has(tmp_path, fake_hub, capsys):
    tokenizer = create_byte_tokenizer(model_max_length=64)
    folder = save_hub_folder(_tiny_classifier(0), tokenizer, tmp_path / "out", _card())
    before = _snapshot(folder)
    argv = ["--model_dir", str(folder), "--model_id", "org/kept", "--keep_card", "--push_to_hub"]
    _run(f"from sma_hf.tools import hub; hub.main({argv!r})", _hub_env(fake_hub, tmp_path / "pusher"))
    assert _snapshot(folder) == before  # the card is not rewritten
    assert _snapshot(fake_hub.repo_dir("org/kept")) == before  # and the Hub holds exactly the folder
    (tmp_path / "bare").mkdir()
    for extra, message in [
        (["--model_dir", str(folder), "--keep_card"], "add --push_to_hub"),
        (["--model_dir", str(folder), "--keep_card", "--push_to_hub", "--results", "r.json"], "drop --results"),
        (["--model_dir", str(tmp_path / "bare"), "--keep_card", "--push_to_hub"], "has no README.md to keep"),
    ]:
        with pytest.raises(SystemExit):
            hub.main([*extra, "--model_id", "org/kept"])
        assert message in capsys.readouterr().err


def test_fake_hub_speaks_the_hub_protocol(fake_hub):
    auth = {"Authorization": "Bearer dummy", "Content-Type": "application/json"}
    create = json.dumps({"name": "repo", "organization": "org"}).encode()
    assert _request(f"{fake_hub.url}/api/repos/create", "POST", create)[0] == 401  # writes need a token
    assert _request(f"{fake_hub.url}/api/repos/create", "POST", create, auth)[0] == 200
    status, _, body = _request(f"{fake_hub.url}/api/repos/create", "POST", create, auth)
    assert status == 409 and json.loads(body)["url"] == f"{fake_hub.url}/org/repo"
    file = {"path": "dir/a.txt", "content": "MDEyMzQ1Njc4OQ==", "encoding": "base64"}  # b"0123456789"
    lines = [{"key": "header", "value": {"summary": "add"}}, {"key": "file", "value": file}]
    ndjson = "".join(json.dumps(line) + "\n" for line in lines).encode()
    status, _, body = _request(f"{fake_hub.url}/api/models/org/repo/commit/main", "POST", ndjson, auth)
    commit = json.loads(body)["commitOid"]
    assert status == 200 and (fake_hub.repo_dir("org/repo") / "dir" / "a.txt").read_bytes() == b"0123456789"

    status, headers, _ = _request(f"{fake_hub.url}/org/repo/resolve/main/dir/a.txt", "HEAD")
    assert status == 200 and headers["X-Repo-Commit"] == commit and headers["Content-Length"] == "10"
    assert headers["ETag"].strip('"') == fake_hub.repos["model", "org/repo"].head.files["dir/a.txt"]
    status, headers, body = _request(
        f"{fake_hub.url}/org/repo/resolve/{commit}/dir/a.txt", headers={"Range": "bytes=4-"}
    )
    assert status == 206 and body == b"456789" and headers["Content-Range"] == "bytes 4-9/10"
    status, headers, _ = _request(f"{fake_hub.url}/org/repo/resolve/main/README.md", "HEAD")
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound" and headers["X-Repo-Commit"] == commit
    assert _request(f"{fake_hub.url}/org/absent/resolve/main/a.txt", "HEAD")[1]["X-Error-Code"] == "RepoNotFound"
    assert (
        _request(f"{fake_hub.url}/org/repo/resolve/{'0' * 40}/a.txt", "HEAD")[1]["X-Error-Code"] == "RevisionNotFound"
    )
    tree = json.loads(_request(f"{fake_hub.url}/api/models/org/repo/tree/main")[2])
    assert tree == [{"type": "directory", "oid": "0" * 40, "size": 0, "path": "dir"}]
    assert _request(f"{fake_hub.url}/api/models/org/repo/tree/main/absent")[1]["X-Error-Code"] == "EntryNotFound"
    bad_yaml = json.dumps({"content": "---\n- a list\n---\ntext", "repoType": "model"}).encode()
    assert _request(f"{fake_hub.url}/api/validate-yaml", "POST", bad_yaml, auth)[0] == 400


def _run(code: str, env: dict) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def _hub_env(hub, home) -> dict:
    """The environment of a client process: huggingface_hub reads HF_ENDPOINT when it is imported."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_TOKEN="dummy",
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HOME=str(home),
        HF_HUB_CACHE=str(home / "hub"),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    return env


BLOCK_PACKAGE = "import sys; sys.modules['sma_hf'] = None  # `import sma_hf` now raises ImportError\n"


@pytest.mark.slow
def test_push_and_download_round_trip_through_the_fake_hub(tmp_path, fake_hub):
    model, tokenizer = _tiny_classifier(0), create_byte_tokenizer(model_max_length=64)
    folder = save_hub_folder(model, tokenizer, tmp_path / "export", _card())
    batch = dict(_batch(tokenizer))
    torch.save({"batch": batch, "logits": model(**batch).logits}, tmp_path / "expected.pt")

    stdout = _run(
        f"""
        import sma_hf
        from sma_hf.tools.hub import push_to_hub
        url = push_to_hub({str(folder)!r}, "org/sma-tiny")
        print(url)
        print(push_to_hub({str(folder)!r}, "org/sma-tiny", commit_message="again"))  # nothing changed: no commit
        model = sma_hf.SMAForSequenceClassification.from_pretrained({str(folder)!r})
        model.push_to_hub("org/other")  # transformers' own push
        """,
        _hub_env(fake_hub, tmp_path / "pusher"),
    )
    first, second = stdout.split()
    head = fake_hub.repos["model", "org/sma-tiny"].head
    assert first == second == f"{fake_hub.url}/org/sma-tiny/commit/{head.oid}"
    assert head.message == "Upload SMA model"
    assert _snapshot(fake_hub.repo_dir("org/sma-tiny")) == _snapshot(folder)  # exactly the folder, byte for byte
    assert {"config.json", "model.safetensors", "modeling_sma.py", "README.md"} <= set(
        os.listdir(fake_hub.repo_dir("org/other"))
    )
    assert ModelCard.load(fake_hub.repo_dir("org/other") / "README.md").data.library_name == "transformers"

    load = f"""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        for repo in ("org/sma-tiny", "org/other"):
            model = AutoModelForSequenceClassification.from_pretrained(repo, {{kwargs}}).eval()
            # not bitwise: this process may run another number of threads than the one that computed `expected`
            torch.testing.assert_close(model(**expected["batch"]).logits, expected["logits"], rtol=0, atol=1e-6)
            print(repo, type(model).__module__)
        tokenizer = AutoTokenizer.from_pretrained("org/sma-tiny", trust_remote_code=True)
        assert tokenizer(["CCO"])["input_ids"] == [[ord("C") + 6, ord("C") + 6, ord("O") + 6, 5]]
        """
    installed = _run("import sma_hf\n" + textwrap.dedent(load).format(kwargs=""), _hub_env(fake_hub, tmp_path / "a"))
    assert installed.split()[1::2] == ["sma_hf.modeling_sma"] * 2
    remote = _run(BLOCK_PACKAGE + textwrap.dedent(load).format(kwargs="trust_remote_code=True"),
                  _hub_env(fake_hub, tmp_path / "b"))  # fmt: skip
    assert all(module.startswith("transformers_modules.org.") for module in remote.split()[1::2])
    # the request sequence of the first push (HF_CONVENTIONS.md §5), in order
    expected_sequence = iter([("POST", "/api/repos/create"), ("POST", "/api/validate-yaml"),
                              ("POST", "/api/models/org/sma-tiny/preupload/main"),
                              ("POST", "/api/models/org/sma-tiny/commit/main")])  # fmt: skip
    step = next(expected_sequence)
    for request in fake_hub.requests:
        if request == step:
            step = next(expected_sequence, None)
    assert step is None


def test_card_names_every_selection_option_of_the_masks():
    plain = tiny_config(mask_equal_key_norms=False, mask_random_floor=0.0)
    plain = hub.pretraining_card_context(None, None, plain)["model_config"]["Masking"]
    config = tiny_config()  # selection by position, with the defaults' equal key norms and random floor
    masking = hub.pretraining_card_context(None, None, config)["model_config"]["Masking"]
    assert "selected by positions" in plain and "equal norm" not in plain and "random throughout" not in plain
    assert "position keys of equal norm" in masking and "25% of each mask random throughout" in masking


def test_card_says_a_token_budget_caps_the_batches():
    summary = {"steps": 10, "train_batch_size_total": 32, "wall_time_s": 60, "args": {"max_tokens_per_batch": 16384}}
    capped = hub.pretraining_card_context(summary, None, tiny_config())["training"]["Steps"]
    assert capped == "10 optimizer steps of up to 32 examples, at most 16,384 padded elements per device"
    summary["args"] = {"max_tokens_per_batch": None}
    assert hub.pretraining_card_context(summary, None, tiny_config())["training"]["Steps"] == (
        "10 optimizer steps of 32 examples"
    )


def test_model_card_cli_takes_as_own_results_only_those_of_the_folders_weights(tmp_path, capsys):
    """The first --results file is "this model" in the card and its model-index: it must name the folder's weights
    (`model_sha256`, which sma-finetune records); results of another checkpoint are refused and the card is kept."""
    from sma_hf.tools.common import weights_sha256

    tokenizer = create_byte_tokenizer(model_max_length=64)
    folder = save_hub_folder(_tiny_classifier(0), tokenizer, tmp_path / "model", _card())
    other = save_hub_folder(_tiny_classifier(1), tokenizer, tmp_path / "other", _card())
    task = {"name": "freesolv", "problem_type": "regression", "metric": "rmse"}
    for name, sha in (("own", weights_sha256(folder)), ("other", weights_sha256(other)), ("unrecorded", None)):
        result = _result(name, str(folder), task, {"rmse": [1.0, 1.1, 1.2]}) | {"model_sha256": sha}
        (tmp_path / f"{name}.json").write_text(json.dumps(result))
    assert weights_sha256(folder) != weights_sha256(other)
    argv = ["--model_dir", str(folder), "--model_id", "org/tiny", "--domain", "chemistry", "--results"]
    card = (folder / "README.md").read_text()
    for name in ("other", "unrecorded"):
        with pytest.raises(SystemExit):
            hub.main([*argv, str(tmp_path / f"{name}.json")])
        assert "was not fine-tuned from the weights in --model_dir" in capsys.readouterr().err
        assert (folder / "README.md").read_text() == card
    hub.main([*argv, str(tmp_path / "own.json"), str(tmp_path / "other.json")])  # another model's, as a comparison
    assert (folder / "README.md").read_text() != card
