"""Every pod of every chart passes Pod Security Standards "restricted" (and so "baseline").

The rules are implemented here from the PSS spec (kubernetes.io/docs/concepts/security/
pod-security-standards, policy version v1.34), checked on the manifests `render_chart` returns
for each chart at its default values (with the root models.yaml) and at every ci/*-values.yaml.
The few stated exceptions are listed in EXCEPTIONS with their reason; an exception that no
longer matches anything fails too, so the list only shrinks with the charts.

The NetworkPolicy tests below evaluate the rendered policies against the labels of the pods
the other charts render: only the gateway reaches the model pods, only Open WebUI (and the
ingress peers one adds) reaches the gateway's API port.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.paths import REPO, workload_charts
from harness.render import find, render_chart

MODELS = REPO / "models.yaml"

# --- the rules -------------------------------------------------------------------------------

# Baseline: capabilities a container may add (anything else fails baseline).
BASELINE_CAPS = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}
# Baseline: the "safe" sysctls.
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
# Restricted: the only volume types.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
POD_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "ReplicationController"}


@dataclass(frozen=True)
class Violation:
    level: str  # baseline | restricted
    rule: str
    where: str  # container/volume/field it is about

    def __str__(self) -> str:
        return f"{self.level}/{self.rule}: {self.where}"


def pod_spec(manifest: dict) -> tuple[dict, dict] | None:
    """(pod metadata, pod spec) of a workload, or None."""
    kind, spec = manifest.get("kind"), manifest.get("spec") or {}
    if kind not in POD_KINDS:
        return None
    if kind == "Pod":
        return manifest.get("metadata") or {}, spec
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    tpl = spec.get("template") or {}
    return tpl.get("metadata") or {}, tpl.get("spec") or {}


def containers(spec: dict):
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(field) or []:
            yield f"{field}[{c.get('name')}]", c


def check_pod(meta: dict, spec: dict) -> list[Violation]:
    """Every baseline and restricted rule of the PSS spec that this pod breaks."""
    out: list[Violation] = []

    def v(level, rule, where):
        out.append(Violation(level, rule, where))

    psc = spec.get("securityContext") or {}
    cs = list(containers(spec))
    # -- baseline --
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        v("baseline", "hostProcess", "pod")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            v("baseline", "hostNamespaces", field)
    for vol in spec.get("volumes") or []:
        if "hostPath" in vol:
            v("baseline", "hostPathVolumes", f"volume {vol['name']} -> {vol['hostPath'].get('path')}")
    annotations = meta.get("annotations") or {}
    for key, value in annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            v("baseline", "appArmor", f"annotation {key}={value}")
    for where, sc in [("pod", psc)] + [(w, c.get("securityContext") or {}) for w, c in cs]:
        apparmor = (sc.get("appArmorProfile") or {}).get("type")
        if apparmor not in (None, "RuntimeDefault", "Localhost"):
            v("baseline", "appArmor", f"{where} appArmorProfile {apparmor}")
        se = sc.get("seLinuxOptions") or {}
        if se.get("type") not in SELINUX_TYPES or se.get("user") or se.get("role"):
            v("baseline", "seLinux", f"{where} seLinuxOptions {se}")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp == "Unconfined":
            v("baseline", "seccomp", f"{where} seccompProfile Unconfined")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            v("baseline", "hostProcess", where)
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            v("baseline", "sysctls", f"pod sysctl {sysctl.get('name')}")
    for where, c in cs:
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            v("baseline", "privileged", where)
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPS:
            v("baseline", "capabilities", f"{where} adds {sorted(added - BASELINE_CAPS)}")
        if sc.get("procMount") not in (None, "Default"):
            v("baseline", "procMount", f"{where} procMount {sc.get('procMount')}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                v("baseline", "hostPorts", f"{where} hostPort {port['hostPort']}")
    # -- restricted --
    for vol in spec.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            v("restricted", "volumeTypes", f"volume {vol['name']} is {sorted(kinds - RESTRICTED_VOLUMES)}")
    pod_nonroot = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
    if psc.get("runAsUser") == 0:
        v("restricted", "runAsUser", "pod runAsUser 0")
    for where, c in cs:
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            v(
                "restricted",
                "allowPrivilegeEscalation",
                f"{where} allowPrivilegeEscalation {sc.get('allowPrivilegeEscalation')!r} (must be false)",
            )
        nonroot = sc.get("runAsNonRoot")
        if nonroot is False or (nonroot is None and not pod_nonroot):
            v("restricted", "runAsNonRoot", f"{where} runAsNonRoot {nonroot!r}, pod {psc.get('runAsNonRoot')!r}")
        if sc.get("runAsUser") == 0:
            v("restricted", "runAsUser", f"{where} runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp is None and not pod_seccomp:
            v("restricted", "seccomp", f"{where} has no RuntimeDefault/Localhost seccompProfile (nor the pod)")
        elif seccomp not in (None, "RuntimeDefault", "Localhost"):
            v("restricted", "seccomp", f"{where} seccompProfile {seccomp}")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            v("restricted", "capabilities", f"{where} does not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            v("restricted", "capabilities", f"{where} adds {sorted(set(caps['add']) - {'NET_BIND_SERVICE'})}")
    return out


# --- the stated exceptions --------------------------------------------------------------------


@dataclass(frozen=True)
class Exception_:
    chart: str
    rule: str  # level/rule
    where: str  # regex on Violation.where
    reason: str


EXCEPTIONS = [
    Exception_(
        "vllm-models",
        "baseline/hostPathVolumes",
        r"^volume adapter-\d+ -> /",
        "LoRA adapter on the node: an entry's adapters[].hostPath, mounted read-only (values.yaml, first "
        "comment; ci/lora-values.yaml); off unless an adapter names a hostPath",
    ),
    Exception_(
        "vllm-models",
        "restricted/volumeTypes",
        r"^volume adapter-\d+ is \['hostPath'\]",
        "LoRA adapter on the node (same volume as above)",
    ),
    Exception_(
        "ramalama-models",
        "baseline/hostPathVolumes",
        r"^volume adapter-\d+ -> /",
        "LoRA adapter file on the node: an entry's adapters[].hostPath, mounted read-only (ci/lora-values.yaml)",
    ),
    Exception_(
        "ramalama-models",
        "restricted/volumeTypes",
        r"^volume adapter-\d+ is \['hostPath'\]",
        "LoRA adapter file on the node (same volume as above)",
    ),
    Exception_(
        "ramalama-models",
        "baseline/hostPathVolumes",
        r"^volume models -> ",
        "hostPath reader: llama-server reads GGUF files from the node's model directory, read-only "
        "(values.yaml, first comment); the namespace needs the privileged PSS level",
    ),
    Exception_(
        "ramalama-models",
        "restricted/volumeTypes",
        r"^volume models is \['hostPath'\]",
        "hostPath reader (same volume as above)",
    ),
    Exception_(
        "ramalama-models",
        "baseline/hostPathVolumes",
        r"^volume device-\d+ -> /dev/(kfd|dri)$",
        "GPU runtime: rocm and vulkan open the host's /dev/kfd and /dev/dri device nodes",
    ),
    Exception_(
        "ramalama-models",
        "restricted/volumeTypes",
        r"^volume device-\d+ is \['hostPath'\]",
        "GPU runtime (same device volumes as above)",
    ),
    Exception_(
        "ramalama-models",
        "baseline/privileged",
        r"^containers\[llama-server\]$",
        "GPU runtime: Vulkan without a device plugin needs a privileged container to open /dev/dri "
        "(accelerators.vulkan.privileged, off by default, on in ci/vulkan-values.yaml)",
    ),
    Exception_(
        "ramalama-models",
        "restricted/allowPrivilegeEscalation",
        r"^containers\[llama-server\] "
        r"allowPrivilegeEscalation True",
        "GPU runtime: a privileged container cannot set allowPrivilegeEscalation false (API validation)",
    ),
]


def excepted(chart: str, violation: Violation) -> Exception_ | None:
    for exc in EXCEPTIONS:
        if (
            exc.chart == chart
            and exc.rule == f"{violation.level}/{violation.rule}"
            and re.search(exc.where, violation.where)
        ):
            return exc
    return None


# --- renders ------------------------------------------------------------------------------------


def _cases() -> list[tuple[str, str]]:
    """(chart, values file or "default") for every chart."""
    out = []
    for chart in workload_charts():
        out.append((chart.name, "default"))
        out += [(chart.name, str(p.relative_to(REPO))) for p in sorted((chart / "ci").glob("*-values.yaml"))]
    return out


CASES = _cases()


@functools.cache
def rendered(chart: str, values: str) -> list[dict]:
    # Defaults with the repository's model catalog (model charts render no pod without models);
    # ci files as the generic tests render them.
    files = [MODELS] if values == "default" else [REPO / values]
    return render_chart(chart, values_files=files)


def pods(manifests: list[dict]):
    for m in manifests:
        if m.get("kind") == "LeaderWorkerSet":
            # A multi-node model (charts/vllm-models): its leader and its workers are pods too.
            lwt = m["spec"]["leaderWorkerTemplate"]
            for role in ("leaderTemplate", "workerTemplate"):
                tpl = lwt.get(role) or {}
                if tpl:
                    yield f"LeaderWorkerSet/{m['metadata']['name']}/{role}", (tpl.get("metadata") or {}, tpl["spec"])
            continue
        found = pod_spec(m)
        if found:
            yield f"{m['kind']}/{m['metadata']['name']}", found


@pytest.mark.parametrize("chart,values", CASES, ids=[f"{c}:{Path(v).name}" for c, v in CASES])
def test_every_pod_passes_restricted_except_stated_exceptions(chart, values):
    manifests = rendered(chart, values)
    problems = []
    for name, (meta, spec) in pods(manifests):
        for violation in check_pod(meta, spec):
            if not excepted(chart, violation):
                problems.append(f"{name}: {violation}")
    assert not problems, "Pod Security Standards (restricted) violations:\n" + "\n".join(problems)


def test_charts_at_defaults_render_pods():
    # Guards the test above from passing on nothing.
    for chart in workload_charts():
        assert list(pods(rendered(chart.name, "default"))), f"{chart.name} renders no pod at defaults"


def test_every_exception_is_still_needed():
    used = set()
    for chart, values in CASES:
        for _, (meta, spec) in pods(rendered(chart, values)):
            for violation in check_pod(meta, spec):
                exc = excepted(chart, violation)
                if exc:
                    used.add(exc)
    stale = [f"{e.chart} {e.rule} {e.where}" for e in EXCEPTIONS if e not in used]
    assert not stale, f"exceptions that match nothing any more (remove them): {stale}"


def test_exceptions_are_off_by_default_except_the_hostpath_reader():
    # At default values only the model directory hostPath of ramalama-models is excepted.
    for chart in workload_charts():
        for _, (meta, spec) in pods(rendered(chart.name, "default")):
            for violation in check_pod(meta, spec):
                exc = excepted(chart.name, violation)
                assert exc is not None and "hostPath reader" in exc.reason, (chart.name, str(violation))


# --- the checker knows the rules (each one fails a pod that breaks it) --------------------------


def good_pod() -> dict:
    return {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {"name": "app", "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}
        ],
        "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "x"}}],
    }


def _set(path: str, value):
    def apply(pod: dict, meta: dict):
        target = meta if path.startswith("meta.") else pod
        keys = path.removeprefix("meta.").split(".")
        for k in keys[:-1]:
            target = target[int(k)] if k.isdigit() else target.setdefault(k, {})
        target[keys[-1]] = value

    return apply


BREAKS = {
    "baseline/hostNamespaces": [_set("hostNetwork", True), _set("hostPID", True), _set("hostIPC", True)],
    "baseline/privileged": [_set("containers.0.securityContext.privileged", True)],
    "baseline/capabilities": [_set("containers.0.securityContext.capabilities.add", ["SYS_ADMIN"])],
    "restricted/capabilities": [
        _set("containers.0.securityContext.capabilities.add", ["CHOWN"]),
        _set("containers.0.securityContext.capabilities.drop", ["NET_RAW"]),
    ],
    "baseline/hostPathVolumes": [_set("volumes", [{"name": "h", "hostPath": {"path": "/"}}])],
    "restricted/volumeTypes": [_set("volumes", [{"name": "n", "nfs": {"server": "s", "path": "/"}}])],
    "baseline/hostPorts": [_set("containers.0.ports", [{"containerPort": 80, "hostPort": 80}])],
    "baseline/appArmor": [
        _set("securityContext.appArmorProfile", {"type": "Unconfined"}),
        _set("meta.annotations", {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}),
    ],
    "baseline/seLinux": [
        _set("securityContext.seLinuxOptions", {"type": "spc_t"}),
        _set("containers.0.securityContext.seLinuxOptions", {"user": "system_u"}),
    ],
    "baseline/procMount": [_set("containers.0.securityContext.procMount", "Unmasked")],
    "baseline/seccomp": [_set("securityContext.seccompProfile", {"type": "Unconfined"})],
    "restricted/seccomp": [_set("securityContext.seccompProfile", None)],
    "baseline/sysctls": [_set("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}])],
    "restricted/runAsNonRoot": [
        _set("securityContext.runAsNonRoot", False),
        _set("containers.0.securityContext.runAsNonRoot", False),
    ],
    "restricted/runAsUser": [_set("securityContext.runAsUser", 0), _set("containers.0.securityContext.runAsUser", 0)],
    "restricted/allowPrivilegeEscalation": [
        _set("containers.0.securityContext.allowPrivilegeEscalation", True),
        _set("containers.0.securityContext.allowPrivilegeEscalation", None),
    ],
    "baseline/hostProcess": [_set("securityContext.windowsOptions", {"hostProcess": True})],
}


def test_a_good_pod_passes():
    assert check_pod({}, good_pod()) == []
    pod = good_pod()
    pod["containers"][0]["securityContext"]["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    pod["securityContext"]["seccompProfile"] = {"type": "Localhost", "localhostProfile": "p.json"}
    pod["securityContext"]["sysctls"] = [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]
    assert (
        check_pod({"annotations": {"container.apparmor.security.beta.kubernetes.io/app": "runtime/default"}}, pod) == []
    )


@pytest.mark.parametrize("rule,breaks", BREAKS.items(), ids=list(BREAKS))
def test_the_checker_catches(rule, breaks):
    for brk in breaks:
        pod, meta = good_pod(), {}
        brk(pod, meta)
        found = {f"{v.level}/{v.rule}" for v in check_pod(meta, pod)}
        assert rule in found, (rule, found, pod, meta)


def test_init_containers_are_checked_too():
    pod = good_pod()
    pod["initContainers"] = [{"name": "init", "securityContext": {"capabilities": {"drop": ["ALL"]}}}]
    assert [str(v) for v in check_pod({}, pod)] == [
        "restricted/allowPrivilegeEscalation: initContainers[init] allowPrivilegeEscalation None (must be false)"
    ]


# --- NetworkPolicies (render level) -------------------------------------------------------------


def selects(selector: dict | None, labels: dict) -> bool:
    """A Kubernetes LabelSelector against labels ({} selects everything)."""
    selector = selector or {}
    for k, val in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != val:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@dataclass(frozen=True)
class PodRef:
    name: str
    namespace: str
    labels: tuple  # sorted items

    @property
    def label_dict(self) -> dict:
        return dict(self.labels)


def pod_ref(name: str, namespace: str, labels: dict) -> PodRef:
    return PodRef(name, namespace, tuple(sorted(labels.items())))


def ingress_allowed(
    policies: list[dict], dst: PodRef, src: PodRef, port: str, ns_labels: dict[str, dict] | None = None
) -> bool:
    """Whether src may open a connection to dst's named port under these policies (ingress side)."""
    ns_labels = ns_labels or {}

    def labels_of_ns(ns):
        return {"kubernetes.io/metadata.name": ns, **ns_labels.get(ns, {})}

    isolating = [
        p
        for p in policies
        if p["metadata"].get("namespace") == dst.namespace
        and "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])
        and selects(p["spec"].get("podSelector"), dst.label_dict)
    ]
    if not isolating:
        return True
    for policy in isolating:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(p.get("port") == port for p in ports):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                assert "ipBlock" not in peer, f"ipBlock peers are not evaluated here: {peer}"
                ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
                ns_ok = (
                    selects(ns_sel, labels_of_ns(src.namespace))
                    if ns_sel is not None
                    else src.namespace == policy["metadata"]["namespace"]
                )
                if ns_ok and (pod_sel is None or selects(pod_sel, src.label_dict)):
                    return True
    return False


def stack_pods(namespace: str = "llm", model_namespace: str = "llm", gateway_values: dict | None = None):
    """Rendered pods of the four charts (one release each, the root models.yaml) and the gateway's policies."""

    def render(chart, values=None):
        return render_chart(chart, values, values_files=[MODELS], namespace=namespace, release=chart.split("-")[0])

    net = {"networkPolicy": {"enabled": True}, "global": {"modelNamespace": model_namespace}}
    gateway = render("api-gateway", {**net, **(gateway_values or {})})
    out: dict[str, list[PodRef]] = {}
    for chart, manifests in [
        ("api-gateway", gateway),
        ("openwebui", render("openwebui")),
        ("vllm-models", render("vllm-models", {"global": {"modelNamespace": model_namespace}})),
        ("ramalama-models", render("ramalama-models", {"global": {"modelNamespace": model_namespace}})),
    ]:
        for m in manifests:
            found = pod_spec(m)
            if found:
                ns = m["metadata"].get("namespace", namespace)
                out.setdefault(chart, []).append(pod_ref(m["metadata"]["name"], ns, found[0].get("labels") or {}))
    return out, find(gateway, "NetworkPolicy")


OUTSIDER = pod_ref("curl", "other", {"app": "curl"})
SAME_NS_OUTSIDER = pod_ref("curl", "llm", {"app": "curl"})


def _model_pods(pods_by_chart, chart):
    assert pods_by_chart.get(chart), f"{chart} rendered no pod with the root models.yaml"
    return pods_by_chart[chart]


@pytest.mark.parametrize("model_ns", ["llm", "models"])
# Found by this test: vllm-models pods lacked `app.kubernetes.io/part-of: llm-stack`, so the model
# policy did not select them (fixed in the chart).
@pytest.mark.parametrize("chart", ["ramalama-models", "vllm-models"])
def test_only_the_gateway_reaches_model_pods(chart, model_ns):
    pods_by_chart, policies = stack_pods(model_namespace=model_ns)
    gateway = pods_by_chart["api-gateway"][0]
    for model in _model_pods(pods_by_chart, chart):
        assert model.namespace == model_ns, model
        assert ingress_allowed(policies, model, gateway, "http"), f"the gateway cannot reach {model.name}"
        for src in [
            pods_by_chart["openwebui"][0],
            OUTSIDER,
            SAME_NS_OUTSIDER,
            pod_ref("x", model_ns, {"app.kubernetes.io/name": "api-gateway"}),
        ]:
            assert not ingress_allowed(policies, model, src, "http"), f"{src.name} ({src.namespace}) reaches {model}"


def test_model_policy_selects_nothing_else():
    pods_by_chart, policies = stack_pods()
    for chart in ("api-gateway", "openwebui"):
        for pod in pods_by_chart[chart]:
            models_policy = [p for p in policies if p["metadata"]["name"].endswith("-models")]
            assert models_policy and not selects(models_policy[0]["spec"]["podSelector"], pod.label_dict), pod


def test_only_open_webui_reaches_the_gateway_api_by_default():
    pods_by_chart, policies = stack_pods()
    gateway = pods_by_chart["api-gateway"][0]
    webui = pods_by_chart["openwebui"][0]
    assert ingress_allowed(policies, gateway, webui, "http")
    for src in [
        OUTSIDER,
        SAME_NS_OUTSIDER,
        *pods_by_chart["ramalama-models"],
        *pods_by_chart["vllm-models"],
        pod_ref("openwebui", "other", webui.label_dict),
    ]:
        assert not ingress_allowed(policies, gateway, src, "http"), f"{src} reaches the gateway API"


def test_an_added_ingress_controller_reaches_the_gateway_and_nothing_else_does():
    ingress = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
    }
    pods_by_chart, policies = stack_pods(
        gateway_values={
            "networkPolicy": {
                "enabled": True,
                "ingressFrom": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "openwebui"}}}, ingress],
            }
        }
    )
    gateway = pods_by_chart["api-gateway"][0]
    controller = pod_ref("ctrl", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
    assert ingress_allowed(policies, gateway, controller, "http")
    assert ingress_allowed(policies, gateway, pods_by_chart["openwebui"][0], "http")
    assert not ingress_allowed(policies, gateway, pod_ref("x", "ingress-nginx", {"app": "other"}), "http")
    assert not ingress_allowed(policies, gateway, OUTSIDER, "http")


def test_the_policy_evaluator_knows_the_rules():
    pol = {
        "metadata": {"namespace": "a"},
        "spec": {
            "podSelector": {"matchLabels": {"r": "db"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"r": "app"}}}], "ports": [{"port": "http"}]}],
        },
    }
    db = pod_ref("db", "a", {"r": "db"})
    assert ingress_allowed([pol], db, pod_ref("app", "a", {"r": "app"}), "http")
    assert not ingress_allowed([pol], db, pod_ref("app", "a", {"r": "app"}), "metrics")  # other port
    assert not ingress_allowed([pol], db, pod_ref("app", "b", {"r": "app"}), "http")  # other namespace
    assert ingress_allowed([pol], pod_ref("web", "a", {"r": "web"}), OUTSIDER, "http")  # not selected
    assert not selects({"matchExpressions": [{"key": "k", "operator": "In", "values": ["x"]}]}, {})
    assert selects({"matchExpressions": [{"key": "k", "operator": "DoesNotExist"}]}, {"j": "1"})
