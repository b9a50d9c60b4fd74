"""Autoscaling and drain of both model charts (issue 17.1, 17.3): the KEDA ScaledObject or HPA
each entry renders, the Deployment it leaves without replicas, and the preStop hook, run here
against a stand-in for the engine's own endpoint."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import threading
import time

import pytest

from harness.render import HelmError, get, render_chart

GATEWAY = "http://api-gateway.llm.svc:9145"
PROMETHEUS = "http://prometheus.monitoring.svc:9090"


def vllm(name="m", **keys):
    return {"modelName": name, "huggingfaceId": "org/model", **keys}


def gguf(name="tiny", **keys):
    return {"modelName": name, "gguf": "tiny.gguf", **keys}


CHARTS = {"vllm-models": (vllm, "vllm"), "ramalama-models": (gguf, "ramalama")}


def render(chart, *models, **values):
    return render_chart(chart, {"models": list(models), **values})


def fails(chart, *models, **values):
    with pytest.raises(HelmError) as err:
        render(chart, *models, **values)
    return err.value.stderr


def to_zero(**autoscaling):
    return {
        "hold": {"timeoutSeconds": 120},
        "autoscaling": {"enabled": True, "minReplicas": 0, "demand": {"gatewayUrl": GATEWAY}, **autoscaling},
    }


@pytest.mark.parametrize("chart", CHARTS)
def test_scale_to_zero_renders_a_scaled_object_woken_by_the_gateway_demand(chart):
    entry, kind = CHARTS[chart]
    out = render(chart, entry("a", **to_zero(pollingInterval=5, cooldownPeriod=60)))
    so = get(out, "ScaledObject", f"{kind}-a")["spec"]
    assert so["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{kind}-a"}
    assert (so["minReplicaCount"], so["maxReplicaCount"], so["pollingInterval"], so["cooldownPeriod"]) == (0, 1, 5, 60)
    [demand] = so["triggers"]  # maxReplicas 1: no queue trigger
    assert demand["type"] == "metrics-api"
    # Every gateway pod holds its own requests: KEDA asks each ready endpoint and sums.
    assert demand["metadata"]["url"] == f"{GATEWAY}/demand"
    assert demand["metadata"]["aggregateFromKubeServiceEndpoints"] == "true"
    assert demand["metadata"]["aggregationType"] == "sum"
    assert demand["metadata"]["valueLocation"] == "models.a.demand"
    assert demand["metadata"]["activationTargetValue"] == "0"
    # The autoscaler owns the pod count: an upgrade must not reset it.
    assert "replicas" not in get(out, "Deployment", f"{kind}-a")["spec"]


def test_queue_trigger_reads_the_engine_queue_of_the_model_service_from_prometheus():
    out = render(
        "vllm-models",
        vllm("a", accessModes=["ReadWriteMany"], **to_zero(maxReplicas=4, prometheus={"serverAddress": PROMETHEUS})),
    )
    queue = get(out, "ScaledObject", "vllm-a")["spec"]["triggers"][1]
    assert queue["type"] == "prometheus"
    assert queue["metadata"]["serverAddress"] == PROMETHEUS
    assert queue["metadata"]["query"] == 'sum(vllm:num_requests_waiting{namespace="llm",service="vllm-a"})'
    assert queue["metadata"]["threshold"] == "2"
    out = render(
        "ramalama-models",
        gguf(
            "t",
            serviceMonitor={"enabled": True},
            **to_zero(maxReplicas=3, prometheus={"serverAddress": PROMETHEUS}, queue={"targetValue": 5}),
        ),
    )
    queue = get(out, "ScaledObject", "ramalama-t")["spec"]["triggers"][1]
    assert queue["metadata"]["query"] == 'sum(llamacpp:requests_deferred{namespace="llm",service="ramalama-t"})'
    assert queue["metadata"]["threshold"] == "5"


def test_demand_from_prometheus_sums_every_gateway_pod():
    out = render(
        "vllm-models",
        vllm("a", **to_zero(demand={"source": "prometheus"}, prometheus={"serverAddress": PROMETHEUS})),
    )
    [demand] = get(out, "ScaledObject", "vllm-a")["spec"]["triggers"]
    assert demand["type"] == "prometheus"
    assert demand["metadata"]["query"] == 'sum(gateway_model_demand{model="a"})'
    assert demand["metadata"]["activationThreshold"] == "0"


def test_defaults_autoscaling_merges_key_by_key_with_the_entry():
    out = render(
        "vllm-models",
        vllm("a", hold={"timeoutSeconds": 60}, autoscaling={"enabled": True, "minReplicas": 0}),
        vllm("b"),
        defaults={"autoscaling": {"demand": {"gatewayUrl": GATEWAY}, "cooldownPeriod": 42}},
    )
    so = get(out, "ScaledObject", "vllm-a")["spec"]
    assert so["cooldownPeriod"] == 42 and so["triggers"][0]["metadata"]["url"].startswith(GATEWAY)
    assert not [m for m in out if m["kind"] == "ScaledObject" and m["metadata"]["name"] == "vllm-b"]
    assert get(out, "Deployment", "vllm-b")["spec"]["replicas"] == 1


def test_hpa_alternative_uses_the_same_signals_with_at_least_one_pod():
    out = render(
        "vllm-models",
        vllm("a", existingClaim="cache", autoscaling={"enabled": True, "kind": "hpa", "maxReplicas": 3}),
    )
    hpa = get(out, "HorizontalPodAutoscaler", "vllm-a")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 3)
    external, pods = hpa["metrics"]
    assert external["external"]["metric"] == {
        "name": "gateway_model_demand",
        "selector": {"matchLabels": {"model": "a"}},
    }
    assert pods["pods"]["metric"]["name"] == "vllm_num_requests_waiting"
    assert not [m for m in out if m["kind"] == "ScaledObject"]


@pytest.mark.parametrize(
    ("chart", "keys", "message"),
    [
        (
            "vllm-models",
            {"autoscaling": {"enabled": True, "minReplicas": 0, "demand": {"gatewayUrl": GATEWAY}}},
            "hold.timeoutSeconds is not above 0",
        ),
        (
            "ramalama-models",
            {"hold": {"timeoutSeconds": 5}, "autoscaling": {"enabled": True, "kind": "hpa", "minReplicas": 0}},
            "cannot scale to zero",
        ),
        (
            "vllm-models",
            {
                "autoscaling": {
                    "enabled": True,
                    "maxReplicas": 2,
                    "demand": {"gatewayUrl": GATEWAY},
                    "prometheus": {"serverAddress": PROMETHEUS},
                }
            },
            "maxReplicas 2 with a ReadWriteOnce cache PVC",
        ),
        (
            "ramalama-models",
            {"replicas": 2, "autoscaling": {"enabled": True, "kind": "hpa"}},
            "replicas 2 together with autoscaling.enabled",
        ),
        ("vllm-models", {"autoscaling": {"enabled": True}}, "autoscaling.demand.gatewayUrl is empty"),
    ],
)
def test_combinations_that_cannot_work_fail_naming_the_fix(chart, keys, message):
    entry, _ = CHARTS[chart]
    assert message in fails(chart, entry("a", **keys))


def test_defaults_replicas_do_not_clash_with_autoscaling():
    # Both charts' values.yaml set defaults.replicas: 1; only an entry's own replicas clash.
    out = render("ramalama-models", gguf("t", autoscaling={"enabled": True, "kind": "hpa"}), defaults={"replicas": 1})
    assert "replicas" not in get(out, "Deployment", "ramalama-t")["spec"]


@pytest.mark.parametrize("chart", CHARTS)
def test_every_model_pod_gets_the_grace_period_and_a_prestop_hook(chart):
    entry, kind = CHARTS[chart]
    out = render(chart, entry("a"), entry("b", drain={"terminationGracePeriodSeconds": 3600, "delaySeconds": 20}))
    for name, grace, delay in (("a", 600, 15), ("b", 3600, 20)):
        spec = get(out, "Deployment", f"{kind}-{name}")["spec"]["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] == grace
        command = spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        assert command[:2] == ["/bin/sh", "-c"] and command[2].startswith(f"sleep {delay}\n")


def test_other_engines_only_wait_the_delay_and_sidecars_get_no_hook():
    out = render(
        "vllm-models",
        vllm(
            "s", engine="sglang", sidecars=[{"name": "side", "image": "busybox:1.37", "ports": [{"containerPort": 9}]}]
        ),
    )
    server, side = get(out, "Deployment", "vllm-s")["spec"]["template"]["spec"]["containers"]
    assert server["lifecycle"]["preStop"]["exec"]["command"][2] == "sleep 15"
    assert "lifecycle" not in side


class _Engine(http.server.BaseHTTPRequestHandler):
    """Answers /slots (llama-server) and /metrics (vLLM) busy for the first `busy` requests."""

    busy = 0
    seen = 0

    def do_GET(self):
        cls = type(self)
        cls.seen += 1
        processing = cls.seen <= cls.busy
        if self.path == "/slots":
            body = json.dumps([{"id": 0, "is_processing": processing}], separators=(",", ":"))
        else:
            body = f'# HELP x\nvllm:num_requests_running{{engine="0",model_name="m"}} {float(processing)}\nvllm:num_requests_waiting{{engine="0",model_name="m"}} 0.0\n'
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("chart", "tool"), [("ramalama-models", "curl"), ("vllm-models", "python3")])
def test_the_prestop_hook_waits_while_the_engine_has_requests_in_flight(chart, tool):
    if not shutil.which(tool):
        pytest.fail(f"{tool} is needed to run the {chart} preStop hook (the engine image has it)")
    entry, kind = CHARTS[chart]
    port = _free_port()
    out = render(chart, entry("a", port=port, drain={"delaySeconds": 0}))
    command = get(out, "Deployment", f"{kind}-a")["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"][
        "exec"
    ]["command"]
    handler = type("Engine", (_Engine,), {"busy": 3, "seen": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        subprocess.run(command, check=True, timeout=30)
        # Three busy answers one second apart, then idle: the hook returned on the fourth.
        assert handler.seen == 4
        assert time.monotonic() - started >= 2.5
    finally:
        server.shutdown()
        server.server_close()
