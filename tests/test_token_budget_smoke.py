"""The token-budget benchmark's smoke mode: both batchings pretrain the same steps on generated proteins, some longer
than the model reads, alternating, and the run reports their elements per second and peak memory."""

import json

import pytest


@pytest.mark.slow  # two sma-pretrain processes
def test_token_budget_smoke_run(tmp_path, benchmark_script, capsys):
    token_budget = benchmark_script("token_budget")
    output = tmp_path / "r.json"
    results = token_budget.main(["--smoke", "--rounds", "1", "--output", str(output)])

    assert json.loads(output.read_text()) == results
    assert output.with_suffix(".md").read_text().strip() == capsys.readouterr().out.strip()
    assert set(results["runs"]) == {"group_by_length", "token_budget"} and results["max_residues"] == 256
    for name, (run,) in results["runs"].items():
        assert run["steps"] == results["steps"] == 5
        assert run["command"].startswith("sma-pretrain ") and "--group_by_length" in run["command"]
        assert run["elements_per_s"] == pytest.approx(run["elements_seen"] / run["wall_time_s"])
        assert run["elements_seen"] > 0 and run["peak_rss_mib"] > 100  # the pretraining process's, torch loaded
        assert run["truncated_rows"] > 0  # the generated pool holds proteins longer than the 256 the model reads
    assert "--max_tokens_per_batch 1024" in results["runs"]["token_budget"][0]["command"]
    assert "--max_tokens_per_batch" not in results["runs"]["group_by_length"][0]["command"]
    budget, plain = results["runs"]["token_budget"][0], results["runs"]["group_by_length"][0]
    assert results["ratio_per_round"] == pytest.approx([budget["elements_per_s"] / plain["elements_per_s"]])
