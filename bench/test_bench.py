"""Fast checks of the benchmark's own logic (no nginx, no load); part of `nox -s unit`."""

from __future__ import annotations

import json

import pytest

from bench import report, stats
from bench.run import chat_body, parse_args


@pytest.mark.parametrize("size", [1024, 100 * 1024, 1024 * 1024])
def test_chat_body_has_the_exact_size_and_model_last(size):
    body = chat_body(size, "fast-b")
    assert len(body) == size
    doc = json.loads(body)
    assert list(doc)[-1] == "model" and doc["model"] == "fast-b"


def test_summary_and_paired_ratios_skip_missing_rounds():
    assert stats.summary([3.0, None, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert stats.summary([None])["median"] is None
    # ratios are taken within a round: round 2 (None on one side) is left out
    r = stats.ratio([10.0, None, 30.0], [5.0, 7.0, 10.0])
    assert r == {"median": 2.5, "min": 2.0, "max": 3.0, "n": 2}
    assert stats.diff([1.5, 2.5], [1.0, 1.0])["median"] == 1.0


def test_quick_defaults_are_small_and_always_measure_concurrency_one():
    a = parse_args(["--quick", "--concurrency", "16"])
    assert (a.rounds, a.seconds, a.streams) == (1, 1, 1)
    assert a.concurrency == [1, 16]
    assert parse_args([]).rounds >= 3


def _wrk(rps, p50, p99, cpu=0.02):
    return {
        "rps": rps,
        "requests": int(rps),
        "errors": 0,
        "p50_ms": p50,
        "p90_ms": p99,
        "p99_ms": p99,
        "max_ms": p99,
        "cpu_ms_per_req": cpu,
        "backend_cpu_util": 0.3,
        "rss_mib": 12.0,
    }


def _stream(first, gap, frames=67, sent=67, kind=None, content="a b c"):
    s = {
        "first_event_ms": first,
        "gap_median_ms": gap,
        "gap_min_ms": gap,
        "bursts": 0,
        "frames": frames,
        "complete": True,
        "content": content,
        "sent": sent,
    }
    if kind:
        s["kind"] = kind
    return s


def _result(gateway_rps=(900.0, 950.0), gateway_frames=67):
    arms = ["direct", "nginx", "gateway", "litellm"]
    rps = {"direct": (5000.0, 5200.0), "nginx": (1000.0, 1000.0), "gateway": gateway_rps, "litellm": (20.0, 25.0)}
    p50 = {"direct": 0.1, "nginx": 0.3, "gateway": 0.35, "litellm": 5.0}
    conc = {
        c: {a: [_wrk(rps[a][i] * (1 if c == "1" else 2), p50[a], p50[a] * 2) for i in range(2)] for a in arms}
        for c in ("1", "32")
    }
    body = {
        b: {a: [_wrk(100, p50[a] * k, p50[a] * k) for _ in range(2)] for a in arms}
        for b, k in (("100KB", 2), ("1MB", 10))
    }
    body["1KB"] = conc["1"]
    first = {"direct": 1.0, "nginx": 1.2, "gateway": 1.3, "litellm": 9.0}
    stream = {
        a: [
            [
                _stream(first[a], 20.0, frames=gateway_frames if a == "gateway" else 67),
                _stream(first[a], float("nan"), frames=5, sent=5, kind="ttfe", content="a"),
            ]
            for _ in range(2)
        ]
        for a in arms
    }
    runs = {"concurrency": conc, "body": body, "stream": stream}
    checks = {a: {"1KB": "ok", "100KB": "ok", "1MB": "ok"} for a in arms}
    return report.build(
        runs=runs,
        status={a: "ok" for a in arms},
        checks=checks,
        arms={a: {"label": a, "version": "x"} for a in arms},
        config={
            "quick": False,
            "rounds": 2,
            "seconds": 1,
            "concurrency": [1, 32],
            "streams_per_round": 1,
            "workers_per_proxy": 1,
            "proxy_cpus": [1],
            "load_cpus": [0],
            "backend_cpus": [0],
            "stream": {"deltas": 64, "interval_ms": 20},
        },
        machine={"cpu": "test", "cores": 2, "loadavg_start": (1, 1, 1), "loadavg_end": (1, 1, 1)},
        versions={},
        started="now",
        wall_s=1.0,
        notes=[],
    )


def test_headline_keys_ratios_and_targets():
    res = _result()
    for key in (
        "throughput_ratio_vs_nginx",
        "throughput_ratio_vs_litellm",
        "added_p50_ms",
        "added_p99_ms",
        "stream_first_event_added_ms",
        "stream_frames_ok",
        "body_1mb_added_p50_ms",
    ):
        assert key in res and res[key] is not None, key
    assert res["throughput_ratio_vs_nginx"] == pytest.approx(0.925)  # peak per round: 1800/2000, 1900/2000
    assert res["throughput_ratio_vs_litellm"] == pytest.approx((1800 / 40 + 1900 / 50) / 2)
    assert res["added_p50_ms"] == pytest.approx(0.25)
    assert res["added_p50_ratio_vs_nginx"] == pytest.approx(1.25)
    assert res["stream_first_event_added_ms"] == pytest.approx(0.3)
    assert res["stream_gap_ratio"] == pytest.approx(1.0)
    assert res["targets"]["throughput_ratio_vs_nginx"]["met"] is True
    assert res["targets"]["throughput_ratio_vs_litellm"]["met"] is True
    assert res["targets"]["stream_frames_ok"]["met"] is True
    assert "NOT MET" not in report.tables(res).split("Targets")[1].split("added p99")[0]


def test_a_lost_frame_or_slow_gateway_fails_its_target():
    res = _result(gateway_rps=(500.0, 600.0), gateway_frames=66)
    assert res["stream_frames_ok"] is False
    assert res["targets"]["stream_frames_ok"]["met"] is False
    assert res["targets"]["throughput_ratio_vs_nginx"]["met"] is False
    assert "NOT MET" in report.tables(res)


def test_docs_section_is_replaced_between_the_markers(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Title\n\nintro\n\n{report.BEGIN}\nold table\n{report.END}\n\n## After\n")
    res = _result()
    report.update_docs(doc, "NEW TABLE", res)
    text = doc.read_text()
    assert "NEW TABLE" in text and "old table" not in text
    assert text.startswith("# Title") and text.rstrip().endswith("## After")
    assert text.count(report.BEGIN) == 1
