"""The git server of the GitOps e2e: `git daemon` in a pod on the node, serving one bare repository
that Argo CD's repo server clones (git://<service>.<namespace>.svc:9418/llm-charts.git).

What it serves is the commit under test: the working tree as it is (tracked files with their
edits, untracked files git does not ignore), committed with a temporary index on top of HEAD,
plus the e2e's own files (`overlay`: the CPU model list, the image values). Nothing of the dev
tree changes: no ref, no index, no file; only loose objects are added to its object store.
Commits reach the server by `git push` through `kubectl exec` (git's ext:: transport), so no
port is opened on the host and it works on any provider. The daemon itself is read-only.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from .providers import Cluster

REPO = Path(__file__).resolve().parents[2]
NAME = "gitserver"
PORT = 9418
REPO_PATH = "/srv/git/llm-charts.git"
_IDENTITY = {
    "GIT_AUTHOR_NAME": "llm-charts e2e",
    "GIT_AUTHOR_EMAIL": "e2e@llm-charts.invalid",
    "GIT_COMMITTER_NAME": "llm-charts e2e",
    "GIT_COMMITTER_EMAIL": "e2e@llm-charts.invalid",
}


def _git(*args: str, env: dict | None = None, input: bytes | None = None, cwd: Path = REPO) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **_IDENTITY, **(env or {})}, input=input, capture_output=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args[:3])} failed: {proc.stderr.decode()[-2000:]}")
    return proc.stdout.decode().strip()


def commit_tree(overlay: dict[str, bytes], parent: str | None = None, message: str = "e2e") -> str:
    """A commit of the working tree plus `overlay` (path -> content; None-free), on `parent` (HEAD
    by default, or an earlier commit of this function), made with a temporary index."""
    parent = parent or _git("rev-parse", "HEAD")
    with tempfile.TemporaryDirectory(prefix="llm-charts-git-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git("read-tree", "HEAD", env=env)
        _git("add", "-A", ".", env=env)  # the temporary index only: the dev tree's index is untouched
        for path, data in sorted(overlay.items()):
            blob = _git("hash-object", "-w", "--stdin", input=data)
            _git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
        tree = _git("write-tree", env=env)
    return _git("commit-tree", tree, "-p", parent, "-m", message)


def show(commit: str, path: str) -> bytes:
    proc = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=REPO, capture_output=True, check=True)
    return proc.stdout


def export(commit: str, dest: Path) -> Path:
    """The files of `commit` in `dest` (what a clone of it checks out)."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


class GitServer:
    def __init__(self, cluster: Cluster, namespace: str, image: str):
        self.cluster = cluster
        self.namespace = namespace
        self.image = image

    @property
    def url(self) -> str:
        """The repository URL as Argo CD's repo server sees it."""
        return f"git://{NAME}.{self.namespace}.svc:{PORT}/{Path(REPO_PATH).name}"

    def manifest(self) -> list[dict]:
        labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "llm-charts-e2e"}
        init = f"git init --bare -q {REPO_PATH} && exec git daemon --reuseaddr --port={PORT} --base-path=/srv/git --export-all /srv/git"
        container = {
            "name": "git",
            "image": self.image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", init],
            "ports": [{"name": "git", "containerPort": PORT}],
            "readinessProbe": {"tcpSocket": {"port": PORT}, "periodSeconds": 2},
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "volumeMounts": [{"name": "git", "mountPath": "/srv/git"}, {"name": "tmp", "mountPath": "/tmp"}],
        }
        return [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": NAME, "namespace": self.namespace, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "strategy": {"type": "Recreate"},
                    "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "automountServiceAccountToken": False,
                            "securityContext": {"runAsUser": 999, "runAsGroup": 999, "runAsNonRoot": True},
                            "containers": [container],
                            "volumes": [{"name": "git", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
                        },
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": NAME, "namespace": self.namespace, "labels": labels},
                "spec": {
                    "selector": {"app.kubernetes.io/name": NAME},
                    "ports": [{"name": "git", "port": PORT, "targetPort": "git"}],
                },
            },
        ]

    def start(self) -> None:
        self.cluster.kubectl(
            "apply", "-f", "-", input=json.dumps({"kind": "List", "apiVersion": "v1", "items": self.manifest()})
        )
        self.cluster.kubectl(
            "-n", self.namespace, "rollout", "status", f"deployment/{NAME}", "--timeout=180s", timeout=200
        )

    def push(self, commit: str, branch: str) -> None:
        """Make `branch` on the server point at `commit` (forced: each run starts its own history)."""
        with tempfile.TemporaryDirectory(prefix="llm-charts-git-") as tmp:
            helper = Path(tmp) / "kexec"
            kubectl = [
                "kubectl",
                *self.cluster.kubectl_args(),
                "-n",
                self.namespace,
                "exec",
                "-i",
                f"deployment/{NAME}",
                "-c",
                "git",
                "--",
            ]
            helper.write_text(f'#!/bin/sh\nexec {shlex.join(kubectl)} "$@"\n')
            helper.chmod(0o755)
            _git(
                "-c",
                "protocol.ext.allow=always",
                "push",
                "--force",
                "--quiet",
                f"ext::{helper} %S {REPO_PATH}",
                f"{commit}:refs/heads/{branch}",
            )
