"""Summaries, the stdout/markdown tables, the JSON result, the plot, the docs section."""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

from .arms import ORDER
from .stats import diff, fmt, med, ratio, summary

TARGETS = {
    # key: (description, comparison, threshold)
    "throughput_ratio_vs_nginx": ("throughput >= 0.90 x plain nginx", ">=", 0.90),
    "throughput_ratio_vs_litellm": ("throughput >= 20 x LiteLLM", ">=", 20.0),
    "added_p50_ratio_vs_nginx": ("added p50 at c=1 <= 1.5 x plain nginx's", "<=", 1.5),
    "added_p99_ms": ("added p99 at c=1 <= 1 ms", "<=", 1.0),
    "stream_first_event_added_ms": ("stream: added time to first event <= 1 ms (p50)", "<=", 1.0),
    "stream_gap_ratio": ("stream: inter-event gap ratio >= 0.95", ">=", 0.95),
    "stream_frames_ok": ("stream: every frame delivered", "==", True),
    "body_1mb_route_ok": ("1 MB body: routed to the right backend", "==", True),
    "body_1mb_added_p50_ms": ("1 MB body: added p50 <= 5 ms", "<=", 5.0),
}


def _vals(rounds: list[dict], key: str) -> list[float | None]:
    return [None if "error" in r or r.get("errors") else r.get(key) for r in rounds]


def _stream_round(entries: list[dict], reference: str | None) -> dict:
    """One round of one arm: full streams (gaps, frames, text) and short ones (first event only)."""
    ok = [s for s in entries if "error" not in s]
    full = [s for s in entries if s.get("kind") != "ttfe"]
    full_ok = [s for s in full if "error" not in s]

    def m(k, items):
        vals = [s[k] for s in items if s.get(k) is not None and math.isfinite(s[k])]
        return statistics.median(vals) if vals else None

    return {
        "first_event_ms": m("first_event_ms", ok),
        "gap_median_ms": m("gap_median_ms", full_ok),
        "bursts": sum(s.get("bursts", 0) for s in full_ok),
        "frames_ok": bool(full)
        and len(ok) == len(entries)
        and all(s.get("frames") == s.get("sent") and s["complete"] for s in ok),
        "content_ok": bool(full)
        and len(full_ok) == len(full)
        and all(reference is not None and s.get("content") == reference and s["complete"] for s in full_ok),
        "frames": [f"{s.get('frames')}/{s.get('sent')}" for s in full],
        "errors": [s["error"] for s in entries if "error" in s],
    }


def build(*, runs, status, checks, arms, config, machine, versions, started, wall_s, notes) -> dict:
    names = [a for a in ORDER if a in arms]
    conc = runs["concurrency"]
    cs = sorted(conc, key=int)
    results: dict = {"concurrency": {}, "body": {}, "stream": {}}
    for c in cs:
        for arm, rounds in conc[c].items():
            results["concurrency"].setdefault(c, {})[arm] = {
                k: summary(_vals(rounds, k))
                for k in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_req", "backend_cpu_util", "rss_mib")
            }
            results["concurrency"][c][arm]["failed_rounds"] = sum(1 for r in rounds if "error" in r or r.get("errors"))
    for body, per_arm in runs["body"].items():
        for arm, rounds in per_arm.items():
            results["body"].setdefault(body, {})[arm] = {
                k: summary(_vals(rounds, k)) for k in ("rps", "p50_ms", "p99_ms")
            }
    ref = next(
        (
            s.get("content")
            for r in runs["stream"].get("direct", [])
            for s in r
            if s.get("content") and s.get("kind") != "ttfe"
        ),
        None,
    )
    stream_rounds = {arm: [_stream_round(s, ref) for s in rs] for arm, rs in runs["stream"].items()}
    for arm, rs in stream_rounds.items():
        results["stream"][arm] = {
            "first_event_ms": summary([r["first_event_ms"] for r in rs]),
            "gap_median_ms": summary([r["gap_median_ms"] for r in rs]),
            "bursts": sum(r["bursts"] for r in rs),
            "frames_ok": bool(rs) and all(r["frames_ok"] for r in rs),
            "content_ok": bool(rs) and all(r["content_ok"] for r in rs),
            "frames": [f for r in rs for f in r["frames"]],
            "errors": [e for r in rs for e in r["errors"]],
        }

    def peak(arm):  # per round: the best throughput over the concurrency sweep
        per_c = [_vals(conc[c].get(arm, []), "rps") for c in cs]
        return [max((v for v in vals if v is not None), default=None) for vals in zip(*per_c)] if per_c else []

    def lat(arm, key, c="1"):
        return _vals(conc.get(c, {}).get(arm, []), key)

    def blat(arm, body, key="p50_ms"):
        return _vals(runs["body"].get(body, {}).get(arm, []), key)

    def srounds(arm, key):
        return [r[key] for r in stream_rounds.get(arm, [])]

    top = cs[-1] if cs else None
    per_arm = {}
    for arm in names:
        a = {
            "peak_rps": summary(peak(arm)),
            "p50_ms_c1": summary(lat(arm, "p50_ms")),
            "p99_ms_c1": summary(lat(arm, "p99_ms")),
        }
        if "nginx" in names:
            a["throughput_ratio_vs_nginx"] = ratio(peak(arm), peak("nginx"))
        if "litellm" in names:
            a["throughput_ratio_vs_litellm"] = ratio(peak(arm), peak("litellm"))
        if "direct" in names:
            a["throughput_ratio_vs_direct"] = ratio(peak(arm), peak("direct"))
            a["added_p50_ms"] = diff(lat(arm, "p50_ms"), lat("direct", "p50_ms"))
            a["added_p99_ms"] = diff(lat(arm, "p99_ms"), lat("direct", "p99_ms"))
            for body in ("1KB", "100KB", "1MB"):
                a[f"body_{body.lower()}_added_p50_ms"] = diff(blat(arm, body), blat("direct", body))
            a["stream_first_event_added_ms"] = diff(srounds(arm, "first_event_ms"), srounds("direct", "first_event_ms"))
            a["stream_gap_ratio"] = ratio(srounds(arm, "gap_median_ms"), srounds("direct", "gap_median_ms"))
        a["stream_frames_ok"] = results["stream"].get(arm, {}).get("frames_ok")
        a["stream_bursts"] = results["stream"].get(arm, {}).get("bursts")
        a["body_1mb_route_ok"] = checks.get(arm, {}).get("1MB") == "ok"
        if top:
            a["cpu_ms_per_req"] = results["concurrency"][top].get(arm, {}).get("cpu_ms_per_req")
            a["rss_mib"] = summary([r.get("rss_mib") for c in cs for r in conc[c].get(arm, []) if "error" not in r])
        per_arm[arm] = a
    if "nginx" in per_arm and "direct" in names:
        for arm in names:
            per_arm[arm]["added_p50_ratio_vs_nginx"] = ratio(
                paired_diff(lat(arm, "p50_ms"), lat("direct", "p50_ms")),
                paired_diff(lat("nginx", "p50_ms"), lat("direct", "p50_ms")),
            )

    # What a feature costs: the gateway against itself without it, paired per round (same noise).
    costs = {}
    top_c = cs[-1] if cs else None
    for other, what in (("gateway-nousage", "usage accounting"), ("baseline", "everything since the baseline")):
        if other in names and "gateway" in names and top_c:
            costs[other] = {
                "what": what,
                "cpu_us_per_req": summary(
                    [
                        d * 1000
                        for d in paired_diff(
                            _vals(conc[top_c].get("gateway", []), "cpu_ms_per_req"),
                            _vals(conc[top_c].get(other, []), "cpu_ms_per_req"),
                        )
                        if d is not None
                    ]
                ),
                "throughput_ratio": ratio(peak("gateway"), peak(other)),
            }

    gw = per_arm.get("gateway", {})
    head = {
        "throughput_ratio_vs_nginx": med(gw.get("throughput_ratio_vs_nginx")),
        "throughput_ratio_vs_litellm": med(gw.get("throughput_ratio_vs_litellm")),
        "added_p50_ms": med(gw.get("added_p50_ms")),
        "added_p99_ms": med(gw.get("added_p99_ms")),
        "added_p50_ratio_vs_nginx": med(gw.get("added_p50_ratio_vs_nginx")),
        "nginx_added_p50_ms": med(per_arm.get("nginx", {}).get("added_p50_ms")),
        "nginx_added_p99_ms": med(per_arm.get("nginx", {}).get("added_p99_ms")),
        "stream_first_event_added_ms": med(gw.get("stream_first_event_added_ms")),
        "stream_gap_ratio": med(gw.get("stream_gap_ratio")),
        "stream_frames_ok": gw.get("stream_frames_ok"),
        "body_1mb_added_p50_ms": med(gw.get("body_1mb_added_p50_ms")),
        "body_1mb_route_ok": gw.get("body_1mb_route_ok"),
        "gateway_cpu_ms_per_req": med(gw.get("cpu_ms_per_req")),
        "gateway_rss_mib": (gw.get("rss_mib") or {}).get("max"),
    }
    targets = {}
    for key, (desc, op, want) in TARGETS.items():
        val = head.get(key)
        met = None if val is None else (val >= want if op == ">=" else val <= want if op == "<=" else val == want)
        targets[key] = {"target": desc, "value": val, "met": met}
    return {
        "schema": 1,
        "started": started,
        "wall_s": wall_s,
        **head,
        "targets": targets,
        "machine": machine,
        "versions": versions,
        "config": config,
        "arms": arms,
        "arm_status": status,
        "route_checks": checks,
        "per_arm": per_arm,
        "costs": costs,
        "results": results,
        "notes": notes,
        "raw": runs,
    }


def paired_diff(a, b):
    return [None if x is None or y is None else x - y for x, y in zip(a, b)]


# ---- text ---------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def tables(res: dict) -> str:
    arms = [a for a in ORDER if a in res["arms"]]
    label = {a: f"{a} ({res['arms'][a]['label']})" for a in arms}
    conc, body, stream, per = (
        res["results"]["concurrency"],
        res["results"]["body"],
        res["results"]["stream"],
        res["per_arm"],
    )
    cs = sorted(conc, key=int)
    cfg = res["config"]
    out = [
        f"Gateway benchmark, {res['started']}: {cfg['rounds']} round(s) x {cfg['seconds']} s per run, "
        f"proxy on cpu {cfg['proxy_cpus']}, wrk on {cfg['load_cpus']}, backends on {cfg['backend_cpus']}, "
        f"{cfg['workers_per_proxy']} worker(s) per proxy. Median of round medians (min..max over rounds).",
        "",
    ]
    out.append("Throughput, 1 KB chat body, non-streaming (requests/s)")
    rows = []
    for a in arms:
        rows.append(
            [
                label[a],
                *[fmt(conc[c].get(a, {}).get("rps"), 0) for c in cs],
                fmt(per[a].get("throughput_ratio_vs_nginx")),
                fmt(per[a].get("throughput_ratio_vs_litellm"), 1),
            ]
        )
    out += [_table(["arm", *[f"c={c}" for c in cs], "peak / nginx", "peak / LiteLLM"], rows), ""]
    out.append("Latency p50 / p99 by concurrency (ms)")
    rows = [
        [
            label[a],
            *[
                f"{fmt(conc[c].get(a, {}).get('p50_ms'), 2, False)} / {fmt(conc[c].get(a, {}).get('p99_ms'), 2, False)}"
                for c in cs
            ],
        ]
        for a in arms
    ]
    out += [_table(["arm", *[f"c={c}" for c in cs]], rows), ""]
    out.append("Added latency at concurrency 1 vs direct, 1 KB (ms)")
    rows = [
        [
            label[a],
            fmt(per[a].get("added_p50_ms"), 3),
            fmt(per[a].get("added_p99_ms"), 3),
            fmt(per[a].get("added_p50_ratio_vs_nginx")),
        ]
        for a in arms
        if a != "direct"
    ]
    out += [_table(["arm", "added p50", "added p99", "added p50 / nginx's"], rows), ""]
    out.append("Body-size sweep at concurrency 1: p50 (ms), added p50 vs direct, route check")
    sizes = [b for b in ("1KB", "100KB", "1MB") if b in body]
    rows = [
        [
            label[a],
            *[fmt(body[b].get(a, {}).get("p50_ms"), 2, False) for b in sizes],
            *[fmt(per[a].get(f"body_{b.lower()}_added_p50_ms"), 2) for b in sizes if b != "1KB"],
            " ".join(f"{b}:{v}" for b, v in res["route_checks"].get(a, {}).items()),
        ]
        for a in arms
    ]
    out += [
        _table(["arm", *[f"p50 {b}" for b in sizes], *[f"added {b}" for b in sizes if b != "1KB"], "route"], rows),
        "",
    ]
    out.append(f"Streaming: role chunk + {cfg['stream']['deltas']} deltas every {cfg['stream']['interval_ms']} ms")
    rows = []
    for a in arms:
        s = stream.get(a, {})
        rows.append(
            [
                label[a],
                fmt(s.get("first_event_ms"), 2),
                fmt(per[a].get("stream_first_event_added_ms"), 2),
                fmt(s.get("gap_median_ms"), 2),
                fmt(per[a].get("stream_gap_ratio"), 3),
                str(s.get("bursts", "-")),
                "yes" if s.get("frames_ok") else "NO " + _counts(s.get("frames") or []),
                "yes" if s.get("content_ok") else "NO",
            ]
        )
    out += [
        _table(
            ["arm", "first event", "added", "gap median", "gap ratio", "bursts", "frames = sent", "text = direct"], rows
        ),
        "",
    ]
    top = cs[-1] if cs else "-"
    out.append(f"Resources at c={top}: proxy CPU per request, proxy RSS; backend CPU use (cores)")
    rows = [
        [
            label[a],
            fmt(per[a].get("cpu_ms_per_req"), 3),
            fmt((per[a].get("rss_mib") or {}).get("max"), 1),
            fmt(conc.get(top, {}).get(a, {}).get("backend_cpu_util"), 2),
        ]
        for a in arms
    ]
    out += [_table(["arm", "CPU ms/req", "RSS MiB (max)", "backend cores busy"], rows), ""]
    if res.get("costs"):
        out.append(f"What a feature costs at c={top}: the gateway minus the same gateway without it, paired per round")
        rows = [
            [f"{c['what']} (vs {other})", fmt(c["cpu_us_per_req"], 1), fmt(c["throughput_ratio"], 3)]
            for other, c in res["costs"].items()
        ]
        out += [_table(["feature", "CPU us/req", "throughput ratio"], rows), ""]
    out.append("Targets (gateway)")
    rows = []
    for t in res["targets"].values():
        v = t["value"]
        vs = "-" if v is None else (str(v) if isinstance(v, bool) else f"{v:.3f}")
        rows.append([t["target"], vs, {True: "met", False: "NOT MET", None: "n/a"}[t["met"]]])
    out += [_table(["target", "value", ""], rows), ""]
    skipped = {a: s for a, s in res["arm_status"].items() if s != "ok"}
    for a, s in skipped.items():
        out.append(f"- {a}: {s[:300]}")
    la0, la1 = res["machine"].get("loadavg_start"), res["machine"].get("loadavg_end")
    out.append(
        f"Machine: {res['machine'].get('cpu')}, {res['machine'].get('cores')} cores, "
        f"load average {la0[0]:.1f} at start, {la1[0]:.1f} at end."
        if la0 and la1
        else ""
    )
    return "\n".join(out)


def _counts(items: list[str]) -> str:
    """'67/68 x15' for a list of received/sent pairs, each distinct one with its count."""
    seen: dict[str, int] = {}
    for x in items:
        seen[x] = seen.get(x, 0) + 1
    return ", ".join(f"{k} x{n}" for k, n in seen.items())


def plot(res: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    conc = res["results"]["concurrency"]
    cs = sorted(conc, key=int)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for arm in [a for a in ORDER if a in res["arms"]]:
        xs = [int(c) for c in cs if med(conc[c].get(arm, {}).get("p50_ms")) is not None]
        if not xs:
            continue
        p50 = [med(conc[str(c)][arm]["p50_ms"]) for c in xs]
        p99 = [med(conc[str(c)][arm]["p99_ms"]) for c in xs]
        rps = [med(conc[str(c)][arm]["rps"]) for c in xs]
        (line,) = ax1.plot(xs, p50, marker="o", label=f"{arm} p50")
        ax1.plot(xs, p99, marker=".", linestyle="--", color=line.get_color(), alpha=0.6, label=f"{arm} p99")
        ax2.plot(xs, rps, marker="o", color=line.get_color(), label=arm)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent connections")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_yscale("log")
    ax1.set_ylabel("latency (ms), 1 KB body")
    ax1.legend(fontsize=7, ncol=2)
    ax2.set_ylabel("requests/s")
    ax2.set_yscale("log")
    ax2.legend(fontsize=8)
    fig.suptitle(f"Gateway benchmark {res['started']} (medians over {res['config']['rounds']} rounds)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


BEGIN, END = "<!-- bench:begin (written by `nox -s bench -- --update-docs`) -->", "<!-- bench:end -->"


def update_docs(path: Path, text: str, res: dict) -> None:
    """Replace the measured section of docs/performance.md (between the markers) with this run."""
    v = res["versions"]
    block = "\n".join(
        [
            BEGIN,
            f"Measured {res['started']} ({'quick' if res['config']['quick'] else 'full'} run, {res['wall_s']} s), "
            f"{res['machine'].get('cpu')}, {res['machine'].get('cores')} cores, {res['machine'].get('os')}, "
            f"nginx {v.get('nginx')}, lua module {v.get('libnginx-mod-http-lua')}, wrk {v.get('wrk')}.",
            "",
            "```text",
            text,
            "```",
            END,
        ]
    )
    doc = path.read_text() if path.exists() else f"# Gateway performance\n\n{BEGIN}\n{END}\n"
    if BEGIN not in doc:
        doc += f"\n{BEGIN}\n{END}\n"
    doc = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, doc, flags=re.S)
    path.write_text(doc)
