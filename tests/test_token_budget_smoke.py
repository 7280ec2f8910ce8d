"""The token-budget benchmark's smoke mode: both batchings pretrain the same steps on generated proteins, some longer
than the model reads, and the run reports their residues per second and peak memory."""

import json

import pytest


@pytest.mark.slow  # two sma-pretrain processes
def test_token_budget_smoke_run(tmp_path, benchmark_script, capsys):
    token_budget = benchmark_script("token_budget")
    output = tmp_path / "r.json"
    results = token_budget.main(["--smoke", "--output", str(output)])

    assert json.loads(output.read_text()) == results
    assert set(results["runs"]) == {"group_by_length", "token_budget"} and results["max_residues"] == 256
    for name, run in results["runs"].items():
        assert run["steps"] == results["steps"] == 5
        assert "--group_by_length" in run["command"] and run["command"].startswith("sma-pretrain ")
        assert run["residues_seen"] > 0 and run["residues_per_s"] > 0 and run["peak_rss_mib"] > 0
        assert run["truncated_rows"] > 0  # the generated pool holds proteins longer than the 256 the model reads
    assert "--max_tokens_per_batch 1024" in results["runs"]["token_budget"]["command"]
    assert "residues per second" in capsys.readouterr().out
