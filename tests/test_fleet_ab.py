"""Fleet A/B (issue 22): with several groups of hosts, the arms run at the same time, one per
group, and the rounds turn which arm runs on which group."""

from __future__ import annotations

import json

import pytest
from test_experiment import _exp_traces, cluster_tag, short  # noqa: F401 - a fixture

from tuner.cluster import leftovers
from tuner.errors import TunerError
from tuner.experiment.spec import ExperimentSpec


def test_groups_need_one_arm_each_and_no_backends():
    with pytest.raises(TunerError, match="2 groups run 2 arms at the same time.*gives 1 arms"):
        ExperimentSpec.from_dict({"cluster": {"groups": 2}, "arms": ["kernel"]})
    with pytest.raises(TunerError, match="groups in the spec have no backend hosts"):
        ExperimentSpec.from_dict(
            {"cluster": {"groups": 2, "backends": 1}, "arms": ["kernel", "active"]}
        )
    with pytest.raises(TunerError, match="1 to 20 cluster.client_hosts for each of its 2"):
        ExperimentSpec.from_dict({"cluster": {"server_hosts": ["a", "b"], "client_hosts": ["c"]}})


@pytest.mark.kernel
def test_repeated_rounds_side_by_side_on_three_groups_report_medians_of_per_round_ratios(
    tmp_path,
    tuner_cli,
    cluster_tag,  # noqa: F811 - the fixture
):
    """Three namespace clusters: in each of two rounds the kernel arm, the A/A arm and the
    shadow arm run at the same time under the same load, one per group, each round turning
    which arm runs where; the summary gives medians of per-round ratios with intervals."""
    spec = tmp_path / "ab.toml"
    text = short(cluster_tag).replace("duration_s = 3", "duration_s = 2")
    spec.write_text(text.replace("clients = 2", "clients = 1\ngroups = 3"))
    out = tmp_path / "out"
    arms = ["kernel", "kernel-again", "shadow"]
    r = tuner_cli("experiment", "run", str(spec), "--out", str(out), "--arms", ",".join(arms),
                  "--repeats", "2", "--json", timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["repeats"] == 2 and list(summary["arms"]) == arms
    groups = [summary["arms"][a]["group_rounds"] for a in arms]
    assert groups == [[0, 2], [1, 0], [2, 1]]  # arm i on group i, the order turned in round 2
    starts = [summary["arms"][a]["started_rounds"] for a in arms]
    assert starts[0] == starts[1] == starts[2]  # one load run per round, for every arm
    for arm in ("kernel-again", "shadow"):  # the A/A arm, and one with an agent
        m = summary["arms"][arm]
        assert m["rounds"] == 2
        if m.get("p99_vs_kernel_left_out"):  # a round whose kernel arm overloaded: no ratio
            continue
        assert len(m["p99_vs_kernel_rounds"]) == 2
        lo, hi = sorted(m["p99_vs_kernel_rounds"])
        ci = m["p99_vs_kernel_ci"]  # a 95 % interval over the rounds, around the median
        assert len(ci) == 2 and lo <= ci[0] <= m["p99_vs_kernel"] <= ci[1] <= hi
    for i, started in enumerate(starts[0], start=1):
        one = json.loads((out / f"round-{i}" / "summary.json").read_text())
        assert list(one["arms"]) == arms and (out / f"round-{i}" / "latency_cdf.png").is_file()
        assert all(one["arms"][a]["requests"] > 300 for a in arms)
        # the agent decided while the kernel arms' load ran: the arms overlapped in time
        log = (out / f"round-{i}" / "shadow" / "decisions.jsonl").read_text().splitlines()
        times = [json.loads(x)["t"] for x in log if '"window"' in x]
        assert times and started <= max(times) <= started + 1 + 2 + 5, (started, times[-1])
    total = sum(
        json.loads((out / f"round-{i}" / "summary.json").read_text())["arms"]["kernel"]["requests"]
        for i in (1, 2)
    )
    assert summary["arms"]["kernel"]["requests"] == total
    report = (out / "report.md").read_text()
    assert "p99/kernel per round" in report and "side by side" in report
    assert json.loads((out / "summary.json").read_text()) == summary
    shadow = summary["arms"]["shadow"]  # the learner's record, with its interval over rounds
    assert shadow["mae_vs_baseline"] > 0 and len(shadow["mae_vs_baseline_ci"]) == 2
    assert "horizon_mae_vs_baseline" in shadow and "hotspot_recall" in shadow
    assert "MAE/last value" in report
    assert _exp_traces() == [] and not leftovers(tags=[cluster_tag])
