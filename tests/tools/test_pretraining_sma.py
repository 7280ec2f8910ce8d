"""sma-pretrain: streaming, exact resume, atomic checkpoints, clear errors, and 2 processes."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

import sma_hf.tools.pretrain as pretraining
from sma_hf.tools.common import token_budget_batches
from sma_hf.tools.mask_health import pairwise_mask_overlap
from sma_hf.tools.pretrain import main


pytest_plugins = ["fake_hub"]  # the `fake_hub` fixture: a loopback Hub for `--dataset_name`


TINY_CONFIG = dict(
    input_type="discrete", encoder_type="self_attention", max_position_embeddings=64, embedding_size=32,
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, decoder_hidden_size=32,
    decoder_num_attention_heads=4, decoder_intermediate_size=64, hidden_dropout_prob=0.1, masking_ratio=0.3,
    num_per_query=3, head_aggregation="random_mix", mask_self=True,
)  # fmt: skip


def smiles_rows(count: int, start: int = 0) -> list[str]:
    """Distinct SMILES-like strings of varied length."""
    atoms = ["C", "N", "O", "c1ccccc1", "C(=O)", "Cl", "[nH]"]
    return [
        f"{i}" + "".join(atoms[(i * i + 3 * j) % len(atoms)] for j in range(3 + i % 9))
        for i in range(start, start + count)
    ]


def write_shards(folder: Path, rows: list[str], num_shards: int, column: str = "smiles"):
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(num_shards):
        part = rows[shard::num_shards]
        pq.write_table(pa.table({column: part}), folder / f"train-{shard:05d}-of-{num_shards:05d}.parquet")


@pytest.fixture(autouse=True)
def _no_stream_shutdown_sleep(monkeypatch):
    # datasets sleeps 5 s whenever a multi-shard stream's iterator closes (a pyarrow thread-shutdown workaround);
    # the tiny corpora here end an epoch every few steps
    import datasets.config

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


@pytest.fixture
def corpus(tmp_path):
    write_shards(tmp_path / "data" / "four_shards", smiles_rows(40), 4)
    write_shards(tmp_path / "data" / "three_shards", smiles_rows(33, start=100), 3)
    pq.write_table(pa.table({"smiles": smiles_rows(12, start=500)}), tmp_path / "data" / "validation.parquet")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY_CONFIG))
    return tmp_path


def pretrain_args(corpus: Path, output_dir: str, *extra: str) -> list[str]:
    return [
        "--config_name", str(corpus / "config.json"),
        "--train_file", str(corpus / "data" / "four_shards" / "*.parquet"),
        "--validation_file", str(corpus / "data" / "validation.parquet"),
        "--output_dir", str(corpus / output_dir), "--max_steps", "6", "--per_device_train_batch_size", "8",
        "--gradient_accumulation_steps", "2", "--learning_rate", "1e-3", "--warmup_steps", "2",
        "--save_steps", "3", "--eval_steps", "3", "--logging_steps", "1", "--report_to", "none",
        "--shuffle_buffer_size", "8", *extra,
    ]  # fmt: skip


def test_pretraining_exports_a_loadable_model(corpus):
    args = pretrain_args(corpus, "run")
    args[args.index("--report_to") + 1] = "tensorboard"
    main(args)
    out = corpus / "run"
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    summary = json.loads((out / "pretraining_summary.json").read_text())
    assert summary["steps"] == 6 and summary["num_processes"] == 1
    assert summary["train_batch_size_total"] == 16
    for name in ("eval_loss", "eval_loss_self_guided", "mask_overlap_random", "mask_overlap_self_guided", "mask_leak"):
        assert torch.isfinite(torch.tensor(summary["final"][name])), name
    # noise warm-up over the first 25% of the 6 steps, then self-guided masks only
    noise = [entry["mask_noise_scale"] for entry in summary["history"]]
    assert noise[0] == 1.0 and noise[-1] == 0.0
    for name in ("model.safetensors", "config.json", "modeling_sma.py", "tokenizer.json", "README.md",
                 "pretraining_summary.json"):  # fmt: skip
        assert (out / "model" / name).is_file(), name
    card = (out / "model" / "README.md").read_text()
    assert "No evaluation was run" in card and f"{summary['final']['eval_loss']:.4g}" in card
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(out / "model")
    assert model.config.auto_map["AutoModelForSequenceClassification"].endswith("SMAForSequenceClassification")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-3"]
    # mask health: scalars and a figure of the masks at each evaluation (steps 3 and 6), the figure in the card
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((out / "logs").rglob("events.out.tfevents.*")).parent)).Reload()
    assert [event.step for event in events.Images("mask_health/masks")] == [3, 6]
    assert [event.step for event in events.Scalars("mask_collapse_score")] == [3, 6]
    assert [event.step for event in events.Scalars("mask_leak")] == [3, 6]
    assert summary["final"]["mask_collapsed"] in (0.0, 1.0) and "mask_loss_ratio" in summary["final"]
    assert (out / "model" / "masks.png").read_bytes().startswith(b"\x89PNG")
    assert "![The self-guided masks of held-out examples](masks.png)" in card and "Collapse score" in card
    assert f"{summary['final']['mask_leak']:.4g}" in card.split("Leak:")[1].splitlines()[0]


@pytest.mark.parametrize("extra", [(), ("--max_tokens_per_batch", "96")], ids=["rows", "token_budget"])
def test_resume_reaches_the_same_parameters(corpus, monkeypatch, extra):
    main(pretrain_args(corpus, "straight", "--group_by_length", *extra))
    expected = load_file(corpus / "straight" / "model" / "model.safetensors")

    real_save = pretraining.save_checkpoint

    def save_then_die(accelerator, output_dir, step, position):
        real_save(accelerator, output_dir, step, position)
        # a later checkpoint that was being written when the process died: never picked up
        (output_dir / "checkpoints" / ".partial-checkpoint-5").mkdir()
        raise KeyboardInterrupt("killed after the checkpoint of step 3")

    monkeypatch.setattr(pretraining, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        main(pretrain_args(corpus, "interrupted", "--group_by_length", *extra))
    monkeypatch.setattr(pretraining, "save_checkpoint", real_save)
    assert pretraining.latest_checkpoint(corpus / "interrupted").name == "checkpoint-3"

    main(pretrain_args(corpus, "interrupted", "--group_by_length", *extra, "--resume_from_checkpoint", "latest"))
    resumed = load_file(corpus / "interrupted" / "model" / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)
    # the resumed run's history covers the whole run, with the same losses as the uninterrupted one
    straight = json.loads((corpus / "straight" / "pretraining_summary.json").read_text())["history"]
    resumed = json.loads((corpus / "interrupted" / "pretraining_summary.json").read_text())["history"]
    assert [h["step"] for h in resumed] == [1, 2, 3, 4, 5, 6]
    for name in ("train_loss", "eval_loss"):
        ours = [h.get(name, 0.0) for h in resumed]
        assert ours == pytest.approx([h.get(name, 0.0) for h in straight], abs=1e-6), name


def test_streams_json_and_a_named_column(corpus):
    rows = [{"id": i, "text": s} for i, s in enumerate(smiles_rows(20))] + [{"id": 99, "text": ""}]
    path = corpus / "data" / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    args = pretrain_args(corpus, "json", "--train_file", str(path), "--input_column", "text")
    args[args.index("--validation_file") : args.index("--validation_file") + 2] = []
    from transformers.testing_utils import CaptureLogger

    with CaptureLogger(pretraining.logger) as captured:
        summary = main_summary(args)
    assert "No held-out data" in captured.out  # said, not silently skipped
    assert summary["steps"] == 6
    # 21 rows (one empty) in batches of 8 over 12 batches: several epochs, and the empty row is counted once
    assert summary["final"]["epoch"] >= 2 and summary["skipped_rows"] == {"empty input": 1}


@pytest.mark.parametrize("group_size, max_tokens", [(1, None), (3, None), (3, 30)])
def test_batches_cover_each_epoch_and_resume_anywhere(corpus, group_size, max_tokens):
    from sma_hf import SMAConfig, create_byte_tokenizer

    tokenizer = create_byte_tokenizer(model_max_length=64)
    builder = pretraining.BatchBuilder(tokenizer, SMAConfig(**TINY_CONFIG), "smiles", max_seq_length=12)
    args = pretraining.parse_args(pretrain_args(corpus, "unused"))
    stream = pretraining.rank_stream(pretraining.load_stream(args.data, "train"), 0, 8, rank=0, world_size=1)

    def take(position, count):
        """`count` batches from `position` on (rows as text), and the epoch each came from."""
        batches = pretraining.training_batches(stream, builder, 3, position, group_size, 0, max_tokens)
        taken, epochs = [], []
        for _ in range(count):
            batch = next(batches)
            taken.append(tuple(tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)))
            epochs.append(position.epoch)
            if max_tokens is not None:  # rows x the longest row's ids ([SEP] included, cut at 12)
                assert batch["input_ids"].numel() <= max_tokens
        return taken, epochs

    position = pretraining.DataPosition()
    reference, epochs = take(position, 40 if max_tokens is None else 70)  # 40 rows in batches of at most 3: 2+ epochs
    for epoch in (0, 1):
        rows = [row for batch, e in zip(reference, epochs) if e == epoch for row in batch]
        assert sorted(rows) == sorted(r[:11] for r in smiles_rows(40))  # each row once (cut to 11 bytes + [SEP])
    if max_tokens is None:
        assert epochs.count(0) == 14  # 40 rows in batches of 3
    else:  # the budget splits batches of long rows: more of them
        assert epochs.count(0) > 14
    two_epochs = pretraining.DataPosition()
    take(two_epochs, epochs.count(0) + epochs.count(1))
    assert two_epochs.truncated == sum(len(r) + 1 > 12 for r in smiles_rows(40))  # each row once, not per epoch
    assert two_epochs.elements_seen == 2 * sum(min(len(r) + 1, 12) for r in smiles_rows(40))
    if group_size > 1 and max_tokens is None:  # each window of 3 batches is sorted by length before it is cut
        for window in range(4):
            batches = sorted(reference[3 * window : 3 * window + 3], key=lambda b: min(map(len, b)))
            for shorter, longer in zip(batches, batches[1:]):
                assert max(map(len, shorter)) <= min(map(len, longer))
    for stop in (1, 5, 13, 14, 20):
        position = pretraining.DataPosition()
        take(position, stop)
        resumed = pretraining.DataPosition()
        resumed.load_state_dict(position.state_dict())
        assert take(resumed, 10)[0] == reference[stop : stop + 10], f"resume after {stop} batches"


def test_token_budget_batches_are_greedy_runs_within_both_caps():
    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(1, 30, size=rng.integers(1, 40)).tolist()
        max_rows, max_tokens = int(rng.integers(1, 8)), int(rng.integers(30, 120))
        batches = token_budget_batches(lengths, max_rows, max_tokens)
        assert [i for batch in batches for i in batch] == list(range(len(lengths)))  # each row once, in order
        for batch, following in zip(batches, batches[1:] + [None]):
            longest = max(lengths[i] for i in batch)
            assert len(batch) <= max_rows and longest * len(batch) <= max_tokens
            if following is not None:  # the next row did not fit: a cap was reached
                grown = max(longest, lengths[following[0]]) * (len(batch) + 1)
                assert len(batch) == max_rows or grown > max_tokens
    assert token_budget_batches([5, 5, 5], 2) == [[0, 1], [2]]  # no budget: batches of max_rows


def main_summary(argv):
    return pretraining.pretrain(pretraining.parse_args(argv))


@pytest.mark.parametrize(
    "change, message",
    [
        (("--train_file", "/nonexistent/*.parquet"), "matches no file"),
        (("--input_column", "sequence"), "'sequence' is not a column"),
        (("--max_seq_length", "65"), "--max_seq_length must be in"),
        (("--max_steps", "0"), "--max_steps must be >= 1"),
        (("--max_tokens_per_batch", "0"), "--max_tokens_per_batch must be >= 1"),
        (("--max_tokens_per_batch", "20"), r"--max_tokens_per_batch \(20\) is below the longest input .* \(64 "),
        (("--push_to_hub",), "--push_to_hub needs --hub_model_id"),
        (("--model_card_template", "/nonexistent.md"), "Model card template /nonexistent.md does not exist"),
        (("--config_name", "sma-nonexistent"), "neither a file nor one of the shipped names.*sma-chemistry-small"),
    ],
)
def test_bad_arguments_fail_before_training(corpus, change, message, capsys):
    args = pretrain_args(corpus, "bad")
    flag = change[0]
    if flag in args and len(change) == 2:
        args[args.index(flag) + 1] = change[1]
    else:
        args += list(change)
    # what the command line alone tells: one line on stderr and exit status 2; the rest: an error before step 1
    with pytest.raises((ValueError, FileNotFoundError, SystemExit)) as error:
        main(args)
    if error.type is SystemExit:  # the parser's (status 2, after the usage) or the run's (the message itself)
        line = capsys.readouterr().err.strip().splitlines()[-1] if error.value.code == 2 else str(error.value.code)
        assert re.search(message, line) and line.startswith("sma-pretrain: error:"), line
    else:
        assert re.search(message, str(error.value))
    assert not (corpus / "bad" / "checkpoints").exists()


def test_empty_training_data_is_an_error(corpus):
    empty = corpus / "data" / "empty.parquet"
    pq.write_table(pa.table({"smiles": pa.array([], pa.string())}), empty)
    args = pretrain_args(corpus, "empty")
    args[args.index("--train_file") + 1] = str(empty)
    with pytest.raises(SystemExit, match="sma-pretrain: error: .*training data is empty"):
        main(args)


def test_resume_with_other_settings_is_an_error(corpus):
    main(pretrain_args(corpus, "first"))
    with pytest.raises(
        SystemExit, match="sma-pretrain: error: .*other settings \\(per_device_train_batch_size: 8 -> 4\\)"
    ):
        main(
            pretrain_args(corpus, "first", "--resume_from_checkpoint", "latest", "--per_device_train_batch_size", "4")
        )
    # the preset changed since: the checkpoint's weights were trained as another model
    config = json.loads((corpus / "config.json").read_text())
    (corpus / "config.json").write_text(json.dumps({**config, "mask_random_floor": 0.1}))
    with pytest.raises(SystemExit, match="model_config.mask_random_floor: 0.25 -> 0.1"):
        main(pretrain_args(corpus, "first", "--resume_from_checkpoint", "latest"))


@pytest.mark.slow
def test_a_hub_token_is_never_published(corpus, fake_hub):
    # the token reaches huggingface_hub (create_repo before training) but not the summary, the card or the logs
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=fake_hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(corpus / "hf_home"), OMP_NUM_THREADS="1")
    args = pretrain_args(corpus, "secret", "--push_to_hub", "--hub_model_id", "org/pushed", "--hub_token", "hf_SECRET")
    args[args.index("--report_to") + 1] = "tensorboard"
    command = [sys.executable, "-m", "sma_hf.tools.pretrain", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (fake_hub.repo_dir("org/pushed") / "model.safetensors").is_file()
    published = [p for p in (corpus / "secret").rglob("*") if p.is_file()]
    published += [p for p in fake_hub.repo_dir("org/pushed").rglob("*") if p.is_file()]
    assert not [p for p in published if b"hf_SECRET" in p.read_bytes()]
    assert "--hub_token '***'" in json.loads((corpus / "secret" / "pretraining_summary.json").read_text())["command"]
    # the pushed model loads back by its repo id
    load = "import sma_hf, transformers; transformers.AutoModelForMaskedLM.from_pretrained('org/pushed')"
    result = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_mismatched_config_is_an_error(corpus):
    config = json.loads((corpus / "config.json").read_text())
    (corpus / "config.json").write_text(json.dumps({**config, "vocab_size": 100}))
    with pytest.raises(SystemExit, match="sma-pretrain: error: .*vocab_size"):
        main(pretrain_args(corpus, "mismatch"))
    (corpus / "config.json").write_text(json.dumps({**config, "masking_ration": 0.2}))  # a misspelt field
    with pytest.raises(SystemExit, match="sma-pretrain: error: .*does not know: \\['masking_ration'\\]"):
        main(pretrain_args(corpus, "mismatch"))


def test_unusable_training_rows_are_an_error_not_an_endless_loop(corpus):
    path = corpus / "data" / "numbers.parquet"
    pq.write_table(pa.table({"smiles": [1, 2, 3]}), path)
    args = pretrain_args(corpus, "numbers")
    args[args.index("--train_file") + 1] = str(path)
    with pytest.raises(
        SystemExit, match="sma-pretrain: error: .*No training row of this rank is usable.*input is not a string"
    ):
        main(args)


def test_pairwise_mask_overlap():
    valid = torch.ones(3, 4, dtype=torch.bool)
    same = torch.tensor([[1, 1, 0, 0]] * 3, dtype=torch.bool)
    assert pairwise_mask_overlap(same, valid) == 1.0
    disjoint = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.bool)
    assert pairwise_mask_overlap(disjoint, valid) == 0.0
    # only positions valid in both examples count: row 1 is padded where row 0 masks position 3
    valid = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    mask = torch.tensor([[1, 0, 0, 1], [1, 0, 0, 0]], dtype=torch.bool)
    assert pairwise_mask_overlap(mask, valid) == 1.0


@pytest.mark.slow
def test_two_processes_see_every_example_once_and_resume_exactly(corpus):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    out = corpus / "distributed"
    out.mkdir()
    command = [
        accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", str(Path(__file__).with_name("distributed_pretraining.py")),
        str(corpus / "data"), str(corpus / "config.json"), str(out),
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    # gloo sometimes aborts at exit after a correct run, so the results are checked, not only the exit code
    coverage = json.loads((out / "coverage.json").read_text())
    for name, rows in (("four_shards", smiles_rows(40)), ("three_shards", smiles_rows(33, start=100))):
        rank0, rank1 = coverage[name]
        assert rank0 and rank1, f"{name}: a rank saw nothing"
        assert sorted(rank0 + rank1) == sorted(rows), f"{name}: not every row exactly once"
    assert (out / "run" / "pretraining_summary.json").is_file(), result.stderr[-3000:]
    summary = json.loads((out / "run" / "pretraining_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["steps"] == 3
    assert summary["train_batch_size_total"] == 8
    assert (out / "run" / "checkpoints" / "checkpoint-2" / "random_states_1.pkl").is_file()
    assert (out / "run" / "model" / "model.safetensors").is_file()
    # stopped after the checkpoint of step 3 and resumed on 2 ranks with different data positions: same parameters
    assert (out / "resume.json").is_file(), result.stderr[-3000:]
    assert json.loads((out / "resume.json").read_text())["max_abs_difference"] <= 1e-6


@pytest.mark.slow
def test_streams_a_hub_dataset_by_name(corpus, fake_hub):
    """`--dataset_name org/smiles` against a loopback Hub serving a dataset repo of parquet shards."""
    repo, _ = fake_hub.create_repo("dataset", "org/smiles", private=False)
    shards = sorted((corpus / "data" / "four_shards").glob("*.parquet"))
    additions = {f"data/{path.name}": path.read_bytes() for path in shards}
    additions["data/validation-00000-of-00001.parquet"] = (corpus / "data" / "validation.parquet").read_bytes()
    fake_hub.apply_commit(repo, "add data", None, additions, [], [])
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=fake_hub.url, HF_TOKEN="dummy", HF_HOME=str(corpus / "hf_home"), OMP_NUM_THREADS="1")
    out = corpus / "hub_run"
    command = [
        sys.executable, "-m", "sma_hf.tools.pretrain", "--config_name", str(corpus / "config.json"),
        "--dataset_name", "org/smiles", "--output_dir", str(out), "--max_steps", "3",
        "--per_device_train_batch_size", "8", "--eval_steps", "3", "--report_to", "none",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "pretraining_summary.json").read_text())
    assert summary["steps"] == 3 and "eval_loss" in summary["final"]  # the repo's validation split was found


@pytest.mark.parametrize("token_args", [["--hub_token", "hf_X"], ["--hub-token", "hf_X"], ["--hub_token=hf_X"],
                                        ["--hub-token=hf_X"]])  # fmt: skip
def test_every_spelling_of_the_hub_token_is_redacted(corpus, token_args):
    argv = pretrain_args(corpus, "unused") + token_args
    assert pretraining.parse_args(argv).hub.hub_token == "hf_X"
    assert "hf_X" not in pretraining.redacted_command(argv)
    with pytest.raises(SystemExit):  # an abbreviation would escape the redaction: refused
        pretraining.parse_args(pretrain_args(corpus, "unused") + ["--hub_tok", "hf_X"])


def test_resume_with_another_gradient_accumulation_still_steps(corpus):
    main(pretrain_args(corpus, "accumulation"))  # accumulation 2: 6 micro-batches up to the checkpoint of step 3
    at_checkpoint = load_file(corpus / "accumulation" / "checkpoints" / "checkpoint-3" / "model.safetensors")
    argv = pretrain_args(corpus, "accumulation", "--resume_from_checkpoint", "latest")
    argv[argv.index("--gradient_accumulation_steps") + 1] = "4"  # 6 is no multiple of 4
    argv[argv.index("--max_steps") + 1] = "4"
    main(argv)
    after = load_file(corpus / "accumulation" / "model" / "model.safetensors")
    assert any(not torch.equal(after[name], tensor) for name, tensor in at_checkpoint.items())  # step 4 stepped
