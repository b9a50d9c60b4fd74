"""Certificates (openssl), kubeconfigs and the components' configuration files under STATE."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

from .settings import (
    API_PORT,
    API_SERVICE_IP,
    BRIDGE,
    CNI_BIN,
    CONTAINERD_SOCK,
    DNS_SERVICE_IP,
    KUBECONFIG,
    NODE_IP,
    NODE_NAME,
    PAUSE_IMAGE,
    POD_CIDR,
    RUN,
    RUNC_WRAPPER,
    STATE,
)

PKI = STATE / "pki"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _cert(name: str, subject: str, *, sans: tuple[str, ...] | list[str] = (), client: bool = False) -> str:
    """A certificate signed by the cluster CA; its file name carries a hash of subject and SANs,
    so other addresses (new settings) get a new certificate. Returns the base name."""
    name = f"{name}-{hashlib.sha256(' '.join([subject, *sans]).encode()).hexdigest()[:10]}"
    if (PKI / f"{name}.crt").exists():
        return name
    key, csr, crt, ext = (PKI / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
    _openssl("ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", str(key))
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    lines = [
        "basicConstraints=CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={'clientAuth' if client else 'serverAuth,clientAuth'}",
    ]
    if sans:
        lines.append("subjectAltName=" + ",".join(sans))
    ext.write_text("\n".join(lines) + "\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(PKI / "ca.crt"),
        "-CAkey",
        str(PKI / "ca.key"),
        "-CAcreateserial",
        "-days",
        "3650",
        "-sha256",
        "-extfile",
        str(ext),
        "-out",
        str(crt),
    )
    csr.unlink()
    ext.unlink()
    return name


def _kubeconfig(path: Path, user: str, cert: str) -> None:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "llm-charts",
                "clusters": [
                    {
                        "name": "llm-charts",
                        "cluster": {
                            "server": f"https://127.0.0.1:{API_PORT}",
                            "certificate-authority-data": b64(PKI / "ca.crt"),
                        },
                    }
                ],
                "users": [
                    {
                        "name": user,
                        "user": {
                            "client-certificate-data": b64(PKI / f"{cert}.crt"),
                            "client-key-data": b64(PKI / f"{cert}.key"),
                        },
                    }
                ],
                "contexts": [{"name": "llm-charts", "context": {"cluster": "llm-charts", "user": user}}],
            },
            indent=1,
        )
    )
    path.chmod(0o600)


def write() -> dict[str, str]:
    """Write certificates, kubeconfigs and configs; returns the certificate base names by role."""
    PKI.mkdir(parents=True, exist_ok=True)
    if not (PKI / "ca.crt").exists():
        _openssl("ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", str(PKI / "ca.key"))
        _openssl(
            "req",
            "-x509",
            "-new",
            "-key",
            str(PKI / "ca.key"),
            "-subj",
            "/CN=llm-charts-ca",
            "-days",
            "3650",
            "-sha256",
            "-out",
            str(PKI / "ca.crt"),
        )
        _openssl("genrsa", "-out", str(PKI / "sa.key"), "2048")
        _openssl("rsa", "-in", str(PKI / "sa.key"), "-pubout", "-out", str(PKI / "sa.pub"))
    certs = {
        "apiserver": _cert(
            "apiserver",
            "/CN=kube-apiserver",
            sans=[
                "DNS:kubernetes",
                "DNS:kubernetes.default",
                "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.cluster.local",
                "DNS:localhost",
                "IP:127.0.0.1",
                f"IP:{API_SERVICE_IP}",
                f"IP:{NODE_IP}",
            ],
        ),
        "admin": _cert("admin", "/O=system:masters/CN=kubernetes-admin", client=True),
        "kubelet-client": _cert(
            "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", client=True
        ),
        "kubelet": _cert(
            "kubelet", f"/CN={NODE_NAME}", sans=[f"DNS:{NODE_NAME}", "DNS:localhost", "IP:127.0.0.1", f"IP:{NODE_IP}"]
        ),
        "node": _cert("node", f"/O=system:nodes/CN=system:node:{NODE_NAME}", client=True),
    }
    # Stable names for the admin client certificate (health checks and users' tools read them).
    for suffix in ("crt", "key"):
        (PKI / f"admin.{suffix}").write_bytes((PKI / f"{certs['admin']}.{suffix}").read_bytes())
    _kubeconfig(KUBECONFIG, "admin", certs["admin"])
    _kubeconfig(STATE / "kubelet.kubeconfig", f"system:node:{NODE_NAME}", certs["node"])

    (STATE / "kubelet.yaml").write_text(
        json.dumps(
            {
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "authentication": {
                    "anonymous": {"enabled": False},
                    "webhook": {"enabled": True},
                    "x509": {"clientCAFile": str(PKI / "ca.crt")},
                },
                "authorization": {"mode": "Webhook"},
                "cgroupDriver": "cgroupfs",
                # cgroup v1 hosts (Firecracker VMs among them) still work; 1.35+ refuses them by default.
                "failCgroupV1": False,
                "clusterDNS": [DNS_SERVICE_IP],
                "clusterDomain": "cluster.local",
                "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCK}",
                "failSwapOn": False,
                "oomScoreAdj": 0,
                "readOnlyPort": 0,
                "tlsCertFile": str(PKI / f"{certs['kubelet']}.crt"),
                "tlsPrivateKeyFile": str(PKI / f"{certs['kubelet']}.key"),
                "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
                "imageGCHighThresholdPercent": 99,
                "imageGCLowThresholdPercent": 98,
                "serializeImagePulls": False,
                "resolvConf": "/etc/resolv.conf",
                "healthzBindAddress": "127.0.0.1",
                "healthzPort": 10248,
            },
            indent=1,
        )
    )
    (STATE / "kube-proxy.yaml").write_text(
        json.dumps(
            {
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                "kind": "KubeProxyConfiguration",
                "clientConnection": {"kubeconfig": str(KUBECONFIG)},
                "mode": "iptables",
                "clusterCIDR": str(POD_CIDR),
                "hostnameOverride": NODE_NAME,
                "healthzBindAddress": "127.0.0.1:10256",
                "metricsBindAddress": "127.0.0.1:10249",
                # conntrack sysctls are read-only in some VMs: leave them alone.
                "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            },
            indent=1,
        )
    )
    cni = STATE / "cni" / "net.d"
    cni.mkdir(parents=True, exist_ok=True)
    (cni / "10-llm-charts.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "llm-charts",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": BRIDGE,
                        "isGateway": True,
                        "ipMasq": True,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "dataDir": str(STATE / "cni" / "ipam"),
                            "ranges": [[{"subnet": str(POD_CIDR)}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                ],
            },
            indent=1,
        )
    )
    (STATE / "containerd.toml").write_text(f"""version = 2
root = "{STATE / "containerd"}"
state = "{RUN / "containerd" / "state"}"
[grpc]
  address = "{CONTAINERD_SOCK}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{RUNC_WRAPPER}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni}"
""")
    (STATE / "Corefile").write_text(f""".:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:18080
    ready 127.0.0.1:18181
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {KUBECONFIG} llm-charts
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    forward . /etc/resolv.conf
    cache 5
}}
""")
    return certs
