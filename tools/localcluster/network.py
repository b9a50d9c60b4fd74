"""Host networking of the cluster, all undone by `teardown`: the node's dummy interface (its own
address range), the kubelet's kernel settings, FORWARD rules for the pod range, and the chains
and ipsets kube-proxy, kube-router and the bridge CNI leave behind."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

from progress import say

from .settings import BRIDGE, K8S_BIN, NODE_CIDR, NODE_IP, NODE_LINK, POD_CIDR, STATE

# What the kubelet sets on every node (it fails to start when it cannot); restored by teardown().
KERNEL_TUNABLES = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
    "net/ipv4/ip_forward": "1",
    "net/bridge/bridge-nf-call-iptables": "1",
}
SAVED_SYSCTLS = STATE / "sysctl-before.json"


def _forward_rules() -> list[list[str]]:
    return [["-s", str(POD_CIDR), "-j", "ACCEPT"], ["-d", str(POD_CIDR), "-j", "ACCEPT"]]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def node_link_up() -> None:
    """The node's address on an interface of its own: the cluster's node address does not depend
    on the host's network (DHCP, VPN), and never collides with it. A dummy interface where the
    kernel has the module, else an empty bridge (the bridge CNI needs that module anyway)."""
    if _ip("link", "show", NODE_LINK, check=False).returncode != 0:
        if _ip("link", "add", NODE_LINK, "type", "dummy", check=False).returncode != 0:
            _ip("link", "add", NODE_LINK, "type", "bridge")
    addr = f"{NODE_IP}/{NODE_CIDR.prefixlen}"
    if addr not in _ip("-4", "-o", "addr", "show", "dev", NODE_LINK).stdout:
        _ip("addr", "flush", "dev", NODE_LINK)
        _ip("addr", "add", addr, "dev", NODE_LINK)
    _ip("link", "set", NODE_LINK, "up")


def setup() -> None:
    before = {}
    for key, value in KERNEL_TUNABLES.items():
        p = Path("/proc/sys") / key
        if not p.exists():
            continue
        before[key] = p.read_text().strip()
        if before[key] != value:
            try:
                p.write_text(value)
            except OSError as exc:
                say(f"  warning: cannot set {key}={value}: {exc}")
    if not SAVED_SYSCTLS.exists():
        SAVED_SYSCTLS.write_text(json.dumps(before))
    node_link_up()
    # Pod traffic must pass FORWARD even where docker or a firewall set its policy to DROP.
    for rule in _forward_rules():
        if subprocess.run(["iptables", "-C", "FORWARD", *rule], capture_output=True).returncode != 0:
            subprocess.run(["iptables", "-I", "FORWARD", "1", *rule], check=True)


def _kube_router_cleanup() -> None:
    """Remove kube-router's firewall: the jumps from INPUT/FORWARD/OUTPUT, its chains, its ipsets.
    (`kube-router --cleanup-config` of v2.1.0 leaves them: its policy controller is not set up
    there, and the service proxy's cleanup panics.)"""
    prefixes = ("KUBE-ROUTER-", "KUBE-NWPLCY-", "KUBE-POD-FW-")
    dump = subprocess.run(["iptables-save", "-t", "filter"], capture_output=True, text=True).stdout.splitlines()
    chains = [line[1:].split()[0] for line in dump if line.startswith(":KUBE-") and line[1:].startswith(prefixes)]
    for line in dump:
        rule = shlex.split(line)
        if (
            rule[:1] == ["-A"]
            and not rule[1].startswith(prefixes)
            and "-j" in rule
            and rule[rule.index("-j") + 1].startswith(prefixes)
        ):
            subprocess.run(["iptables", "-D", *rule[1:]], capture_output=True)
    for op in ("-F", "-X"):
        for chain in chains:
            subprocess.run(["iptables", op, chain], capture_output=True)
    if shutil.which("ipset"):
        for name in subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True).stdout.split():
            if name.startswith(("KUBE-SRC-", "KUBE-DST-")):
                subprocess.run(["ipset", "destroy", name], capture_output=True)


def teardown(pod_cidrs: list[str]) -> None:
    """Undo setup() and what the components added. `pod_cidrs`: the pod ranges the state used
    (the current settings, and the stamped ones when they differ)."""
    if (K8S_BIN / "kube-proxy").exists():
        subprocess.run([str(K8S_BIN / "kube-proxy"), "--cleanup"], capture_output=True)
    _kube_router_cleanup()
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
    subprocess.run(["ip", "link", "delete", NODE_LINK], capture_output=True)
    for cidr in pod_cidrs:
        for rule in (["-s", cidr, "-j", "ACCEPT"], ["-d", cidr, "-j", "ACCEPT"]):
            subprocess.run(["iptables", "-D", "FORWARD", *rule], capture_output=True)
    if SAVED_SYSCTLS.exists():
        for key, value in json.loads(SAVED_SYSCTLS.read_text()).items():
            try:
                (Path("/proc/sys") / key).write_text(value)
            except OSError:
                pass
        SAVED_SYSCTLS.unlink()
