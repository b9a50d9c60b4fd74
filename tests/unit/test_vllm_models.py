"""Render tests of charts/vllm-models, grouped by behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.render import HelmError, find, get, render_chart

CHART = "vllm-models"
CI = Path(__file__).resolve().parents[2] / "charts" / CHART / "ci"
ORIGINAL_DESIGN = {
    "models": [
        {
            "huggingfaceId": "microsoft/DialoGPT-medium",
            "modelName": "dialogpt-medium",
            "gpuRequestCount": 1,
            "replicas": 1,
            "pvcSize": "10Gi",
        }
    ],
    "image": {"repository": "vllm/vllm-openai", "tag": "v0.11.0", "pullPolicy": "IfNotPresent"},
}


def model(name="m", **keys):
    return {"modelName": name, "huggingfaceId": keys.pop("huggingfaceId", "org/model"), **keys}


def render(*models, **values):
    return render_chart(CHART, {"models": list(models), **values})


def deployment(manifests, name="m"):
    return get(manifests, "Deployment", f"vllm-{name}")


def container(manifests, name="m"):
    return deployment(manifests, name)["spec"]["template"]["spec"]["containers"][0]


def pod(manifests, name="m"):
    return deployment(manifests, name)["spec"]["template"]["spec"]


def args(manifests, name="m"):
    return container(manifests, name)["args"]


def flag(argv, name):
    """Value after a flag (the single value of a one-value flag)."""
    return argv[argv.index(name) + 1]


def env(manifests, name="m"):
    return {e["name"]: e for e in container(manifests, name)["env"]}


def volumes(manifests, name="m"):
    return {v["name"]: v for v in pod(manifests, name)["volumes"]}


def mounts(manifests, name="m"):
    return {m["mountPath"]: m["name"] for m in container(manifests, name)["volumeMounts"]}


def fails(values, helm="helm3"):
    with pytest.raises(HelmError) as err:
        render_chart(CHART, values, helm=helm)
    return err.value.stderr


# --- the original design ---------------------------------------------------------------------


@pytest.mark.parametrize("helm", ["helm3", "helm4"])
def test_original_design_values_render_deployment_service_and_pvc(helm):
    # The release's objects; the `helm test` hook Pod is tested in test_helm_test_hooks.py.
    ms = render_chart(CHART, ORIGINAL_DESIGN, helm=helm, extra_args=["--skip-tests"])
    assert sorted((m["kind"], m["metadata"]["name"]) for m in ms) == [
        ("Deployment", "vllm-dialogpt-medium"),
        ("PersistentVolumeClaim", "vllm-dialogpt-medium-cache"),
        ("Service", "vllm-dialogpt-medium"),
        ("Service", "vllm-dialogpt-medium-pods"),
    ]
    c = container(ms, "dialogpt-medium")
    assert c["image"] == "vllm/vllm-openai:v0.11.0"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert flag(c["args"], "--model") == "microsoft/DialoGPT-medium"
    assert deployment(ms, "dialogpt-medium")["spec"]["replicas"] == 1
    pvc = get(ms, "PersistentVolumeClaim", "vllm-dialogpt-medium-cache")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert volumes(ms, "dialogpt-medium")["cache"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_service_is_vllm_modelname_on_8080_targeting_the_http_port():
    ms = render(model("qwen", port=8001))
    svc = get(ms, "Service", "vllm-qwen")
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert container(ms, "qwen")["ports"] == [{"name": "http", "containerPort": 8001, "protocol": "TCP"}]
    assert flag(args(ms, "qwen"), "--port") == "8001"
    pod_labels = deployment(ms, "qwen")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_gguf_and_disabled_entries_leave_nothing_behind():
    ms = render(
        model("on"), model("off", enabled=False), {"modelName": "tiny", "gguf": "tiny.gguf"}, tests={"enabled": False}
    )
    assert {m["metadata"]["name"] for m in ms} == {"vllm-on", "vllm-on-cache", "vllm-on-pods"}


def test_no_models_renders_nothing():
    assert render() == []


# --- chart-wide defaults -------------------------------------------------------------------------


@pytest.mark.parametrize("helm", ["helm3", "helm4"])
def test_defaults_apply_and_entry_keys_win_as_a_whole(helm):
    ms = render_chart(
        CHART,
        {
            "models": [
                model("a"),
                model("b", replicas=0, pvcKeep=False, nodeSelector={"pool": "b"}, extraArgs=["--dtype=half"]),
                model("c", gpuMemoryUtilization=None),
            ],
            "defaults": {
                "replicas": 1,
                "gpuMemoryUtilization": 0.8,
                "pvcKeep": True,
                "nodeSelector": {"pool": "gpu", "x": "z"},
                "extraArgs": ["--enable-prefix-caching"],
            },
        },
        helm=helm,
    )
    assert deployment(ms, "a")["spec"]["replicas"] == 1
    assert pod(ms, "a")["nodeSelector"] == {"pool": "gpu", "x": "z"}
    assert flag(args(ms, "a"), "--gpu-memory-utilization") == "0.8"
    assert args(ms, "a")[-1] == "--enable-prefix-caching"
    # 0, false, a map and a list in the entry replace the default; null means "use the default"
    assert deployment(ms, "b")["spec"]["replicas"] == 0
    assert "annotations" not in get(ms, "PersistentVolumeClaim", "vllm-b-cache")["metadata"]
    assert pod(ms, "b")["nodeSelector"] == {"pool": "b"}
    assert args(ms, "b")[-1] == "--dtype=half" and "--enable-prefix-caching" not in args(ms, "b")
    assert flag(args(ms, "c"), "--gpu-memory-utilization") == "0.8"


def test_settings_groups_merge_key_by_key():
    ms = render(
        model("a", serviceMonitor={"enabled": True}, hfToken={"secretName": "other"}, image={"tag": "v0.11.1"}),
        defaults={
            "serviceMonitor": {"enabled": False, "interval": "15s"},
            "hfToken": {"secretName": "hf", "key": "tok"},
        },
    )
    assert get(ms, "ServiceMonitor", "vllm-a")["spec"]["endpoints"][0]["interval"] == "15s"
    assert env(ms, "a")["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "other"
    assert env(ms, "a")["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "tok"
    assert container(ms, "a")["image"] == "vllm/vllm-openai:v0.11.1"


def test_per_model_keys_are_refused_in_defaults():
    err = fails({"defaults": {"aliases": ["x"], "enabled": False}, "models": [model()]})
    assert "defaults.aliases: aliases is per model" in err
    assert "defaults.enabled: enabled is per model" in err


# --- probes and rollout deadline -------------------------------------------------------------


def test_startup_probe_on_health_covers_the_download_budget():
    ms = render(model("a"), model("b", startupTimeoutMinutes=90))
    for name, minutes in (("a", 30), ("b", 90)):
        c = container(ms, name)
        startup = c["startupProbe"]
        assert startup["httpGet"] == {"path": "/health", "port": "http"}
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        assert budget == minutes * 60
        assert deployment(ms, name)["spec"]["progressDeadlineSeconds"] >= budget + 300


def test_liveness_and_readiness_never_kill_a_loading_model():
    c = container(render(model()))
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"]["path"] == "/health"
        # No initial delay guess: they start only after the startupProbe succeeded.
        assert "initialDelaySeconds" not in probe
        assert probe["failureThreshold"] >= 3
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 120


# --- tensor parallelism and /dev/shm ---------------------------------------------------------


@pytest.mark.parametrize("helm", ["helm3", "helm4"])
def test_tensor_parallel_size_defaults_to_the_gpu_count(helm):
    ms = render_chart(
        CHART,
        {
            "models": [
                model("two", gpuRequestCount=2),
                model("one"),
                model("pp", gpuRequestCount=4, tensorParallelSize=2),
            ]
        },
        helm=helm,
    )
    assert flag(args(ms, "two"), "--tensor-parallel-size") == "2"
    assert container(ms, "two")["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert flag(args(ms, "one"), "--tensor-parallel-size") == "1"
    assert flag(args(ms, "pp"), "--tensor-parallel-size") == "2"


def test_dev_shm_is_a_memory_emptydir_when_tensor_parallel_above_one():
    ms = render(model("tp", gpuRequestCount=2, shmSize="16Gi"), model("single"))
    assert mounts(ms, "tp")["/dev/shm"] == "dshm"
    assert volumes(ms, "tp")["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert "/dev/shm" not in mounts(ms, "single")
    assert "dshm" not in volumes(ms, "single")


def test_tensor_parallel_above_gpu_count_is_refused():
    err = fails({"models": [model("big", gpuRequestCount=2, tensorParallelSize=4)]})
    assert "models[0] (big): tensorParallelSize 4 needs 4 GPUs, but gpuRequestCount is 2" in err


# --- vLLM arguments --------------------------------------------------------------------------------


def test_served_model_name_is_the_routed_name_then_the_aliases():
    argv = args(render(model("qwen", aliases=["Qwen/Qwen2.5-7B-Instruct", "gpt-4o"])), "qwen")
    i = argv.index("--served-model-name")
    assert argv[i + 1 : i + 4] == ["qwen", "Qwen/Qwen2.5-7B-Instruct", "gpt-4o"]
    assert argv[i + 4].startswith("--")


def test_vllm_command_and_optional_flags():
    ms = render(
        model(
            "a",
            revision="abc123",
            maxModelLen=131072,
            gpuMemoryUtilization=0.85,
            trustRemoteCode=True,
            extraArgs=["--dtype=bfloat16"],
        ),
        model("b"),
    )
    c = container(ms, "a")
    assert c["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    argv = c["args"]
    assert flag(argv, "--revision") == "abc123"
    assert flag(argv, "--max-model-len") == "131072"
    assert flag(argv, "--gpu-memory-utilization") == "0.85"
    assert "--trust-remote-code" in argv and argv[-1] == "--dtype=bfloat16"
    plain = args(ms, "b")
    for opt in ("--revision", "--max-model-len", "--gpu-memory-utilization", "--trust-remote-code"):
        assert opt not in plain


def test_args_replace_the_generated_ones_and_extra_args_follow():
    argv = args(render(model(args=["serve", "org/model"], extraArgs=["--x"])))
    assert argv == ["serve", "org/model", "--x"]


# --- engines ---------------------------------------------------------------------------------


def test_sglang_engine():
    ms = render(
        model(
            "sg",
            engine="sglang",
            huggingfaceId="Qwen/Qwen2.5-7B-Instruct",
            aliases=["qwen"],
            maxModelLen=8192,
            gpuMemoryUtilization=0.8,
            gpuRequestCount=2,
        )
    )
    c = container(ms, "sg")
    assert c["image"] == "lmsysorg/sglang:v0.5.5"
    assert c["command"] == ["python3", "-m", "sglang.launch_server"]
    argv = c["args"]
    assert flag(argv, "--model-path") == "Qwen/Qwen2.5-7B-Instruct"
    assert flag(argv, "--host") == "0.0.0.0"
    assert flag(argv, "--port") == "8000"
    assert flag(argv, "--served-model-name") == "sg"
    assert flag(argv, "--tp") == "2"
    assert flag(argv, "--context-length") == "8192"
    assert flag(argv, "--mem-fraction-static") == "0.8"
    assert "--enable-metrics" not in argv
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert "/dev/shm" in mounts(ms, "sg")
    assert deployment(ms, "sg")["spec"]["template"]["metadata"]["labels"]["llm-stack/engine"] == "sglang"


def test_openai_engine_runs_any_image_with_its_command_args_port_and_health_path():
    ms = render(
        model(
            "tgi",
            engine="openai",
            image={"repository": "ghcr.io/huggingface/text-generation-inference", "tag": "3.3.4"},
            command=["text-generation-launcher"],
            args=["--model-id", "org/model", "--port", "9000"],
            port=9000,
            healthPath="/healthz",
        )
    )
    c = container(ms, "tgi")
    assert c["image"] == "ghcr.io/huggingface/text-generation-inference:3.3.4"
    assert c["command"] == ["text-generation-launcher"]
    assert c["args"] == ["--model-id", "org/model", "--port", "9000"]
    assert c["ports"][0]["containerPort"] == 9000
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert get(ms, "Service", "vllm-tgi")["spec"]["ports"][0]["port"] == 8080


def test_openai_engine_without_args_keeps_the_image_entrypoint():
    c = container(render(model(engine="openai", image={"repository": "example/server", "tag": "1.0"})))
    assert "command" not in c and "args" not in c


def test_openai_engine_without_image_is_refused():
    err = fails({"models": [model("srv", engine="openai")]})
    assert "models[0] (srv): engine openai needs image.repository and image.tag" in err


def test_unknown_engine_is_refused_by_the_schema():
    assert "value must be one of 'vllm', 'sglang', 'openai'" in fails({"models": [model(engine="tgi")]})


def test_image_digest_pins_and_entry_image_overrides_key_by_key():
    ms = render(
        model("a"),
        model("b", image={"tag": "v0.11.1", "pullPolicy": "Always"}),
        image={"repository": "registry.local/vllm", "tag": "v0.11.0", "digest": "sha256:" + "a" * 64},
    )
    assert container(ms, "a")["image"] == "registry.local/vllm@sha256:" + "a" * 64
    ms = render(model("b", image={"tag": "v0.11.1", "pullPolicy": "Always"}))
    assert container(ms, "b")["image"] == "vllm/vllm-openai:v0.11.1"
    assert container(ms, "b")["imagePullPolicy"] == "Always"


def test_latest_tag_is_refused():
    assert 'image tag "latest" floats' in fails({"models": [model(image={"tag": "latest"})]})


# --- Hugging Face token and cache ----------------------------------------------------------------


def test_hf_token_comes_from_an_existing_secret_and_a_missing_one_is_an_error_by_default():
    ms = render(
        model("gated", hfToken={"secretName": "hf-token"}),
        model("lenient", hfToken={"secretName": "hf-token", "key": "HF_TOKEN", "optional": True}),
        model("public"),
    )
    ref = env(ms, "gated")["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "hf-token", "key": "token", "optional": False}
    assert "value" not in env(ms, "gated")["HF_TOKEN"]
    assert env(ms, "lenient")["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "hf-token",
        "key": "HF_TOKEN",
        "optional": True,
    }
    assert "HF_TOKEN" not in env(ms, "public")


def test_plain_token_values_are_refused():
    assert "at '/models/0/hfToken': got string, want object" in fails({"models": [model(hfToken="hf_x")]})
    err = fails({"models": [model("m", env=[{"name": "HF_TOKEN", "value": "hf_x"}])]})
    assert "models[0] (m): env HF_TOKEN has a plain value" in err


def test_hf_home_is_on_the_cache_pvc():
    ms = render(model())
    hf_home = env(ms)["HF_HOME"]["value"]
    cache_mount = next(p for p, n in mounts(ms).items() if n == "cache")
    assert hf_home.startswith(cache_mount + "/")
    assert volumes(ms)["cache"]["persistentVolumeClaim"]["claimName"] == "vllm-m-cache"


def test_user_env_replaces_the_chart_variable_of_the_same_name():
    e = container(render(model(env=[{"name": "HF_HOME", "value": "/data/hf"}, {"name": "X", "value": "1"}])))["env"]
    names = [v["name"] for v in e]
    assert names.count("HF_HOME") == 1 and {"name": "HF_HOME", "value": "/data/hf"} in e
    assert "X" in names


def test_pvc_is_kept_on_uninstall_by_default_and_follows_storage_settings():
    ms = render(
        model("a"),
        model("b", pvcKeep=False, storageClass="-", accessModes=["ReadWriteMany"], pvcSize="1Ti"),
        model("c", storageClass="fast"),
    )
    a = get(ms, "PersistentVolumeClaim", "vllm-a-cache")
    assert a["metadata"]["annotations"] == {
        "helm.sh/resource-policy": "keep",
        "argocd.argoproj.io/sync-options": "Prune=false,Delete=false",
    }
    assert a["spec"]["accessModes"] == ["ReadWriteOnce"] and "storageClassName" not in a["spec"]
    b = get(ms, "PersistentVolumeClaim", "vllm-b-cache")
    assert "annotations" not in b["metadata"]
    assert b["spec"]["storageClassName"] == "" and b["spec"]["accessModes"] == ["ReadWriteMany"]
    assert b["spec"]["resources"]["requests"]["storage"] == "1Ti"
    assert get(ms, "PersistentVolumeClaim", "vllm-c-cache")["spec"]["storageClassName"] == "fast"


def test_existing_claim_replaces_the_pvc():
    ms = render(model("a", existingClaim="shared-cache", replicas=3))
    assert find(ms, "PersistentVolumeClaim") == []
    assert volumes(ms, "a")["cache"]["persistentVolumeClaim"]["claimName"] == "shared-cache"


def test_rwo_cache_with_several_replicas_is_refused_with_the_fixes():
    err = fails({"models": [model("q", replicas=2)]})
    assert "models[0] (q): replicas 2 with a ReadWriteOnce cache PVC" in err
    for fix in ("accessModes: [ReadWriteMany]", "existingClaim", "replicas: 1"):
        assert fix in err
    render(model("q", replicas=2, accessModes=["ReadWriteMany"]))  # the fix renders


def test_every_problem_is_reported_in_one_failure():
    err = fails(
        {
            "models": [
                model("a", replicas=2),
                model("b", gpuRequestCount=1, tensorParallelSize=2),
                model("c", engine="openai"),
            ]
        }
    )
    assert err.count("vllm-models: invalid values:") == 1
    assert "models[0] (a)" in err and "models[1] (b)" in err and "models[2] (c)" in err


# --- rollout ---------------------------------------------------------------------------------------


def test_gpu_models_never_surge():
    ms = render(
        model("one"),
        model("many", replicas=3, accessModes=["ReadWriteMany"]),
        model("cpu", gpuRequestCount=0, accessModes=["ReadWriteMany"]),
        model("cpu-rwo", gpuRequestCount=0),
        model("own", strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
    )
    assert deployment(ms, "one")["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment(ms, "many")["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    assert deployment(ms, "cpu")["spec"]["strategy"] == {"type": "RollingUpdate"}
    # A ReadWriteOnce volume cannot follow a surge pod to another node either.
    assert deployment(ms, "cpu-rwo")["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment(ms, "own")["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 1


def test_gpu_limit_joins_user_resources_and_resource_name_is_configurable():
    ms = render(
        model("a", resources={"limits": {"memory": "32Gi"}, "requests": {"cpu": "4"}}),
        model("amd", gpuResourceName="amd.com/gpu"),
        model("cpu", gpuRequestCount=0),
    )
    # The entry's resources merge over the defaults' requests key by key.
    assert container(ms, "a")["resources"] == {
        "limits": {"memory": "32Gi", "nvidia.com/gpu": 1},
        "requests": {"cpu": "4", "memory": "8Gi"},
    }
    assert container(ms, "amd")["resources"]["limits"] == {"amd.com/gpu": 1}
    assert container(ms, "cpu")["resources"] == {"requests": {"cpu": "2", "memory": "8Gi"}}


def test_pods_have_requests_by_default_so_they_are_not_best_effort():
    # GPU limits do not count for QoS: without CPU and memory requests a GPU pod is BestEffort,
    # the first one the kubelet evicts under memory pressure.
    res = container(render(model()))["resources"]
    assert res["requests"] == {"cpu": "2", "memory": "8Gi"}
    assert set(res["limits"]) == {"nvidia.com/gpu"}


def test_a_request_above_its_limit_is_refused_with_the_fix():
    err = fails({"models": [model("m", resources={"limits": {"memory": "4Gi"}})]})
    assert (
        "models[0] (m): resources.requests.memory 8Gi is above resources.limits.memory 4Gi "
        "(the API server refuses the pod)"
    ) in err
    render(model("m", resources={"limits": {"memory": "4Gi"}, "requests": {"memory": "4096Mi", "cpu": "500m"}}))


# --- pod hardening ---------------------------------------------------------------------------------


def test_pods_are_hardened_non_root_with_a_read_only_root_filesystem():
    ms = render(model())
    spec = pod(ms)
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert (psc["runAsUser"], psc["runAsGroup"], psc["fsGroup"]) == (1000, 1000, 1000)
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = container(ms)["securityContext"]
    assert csc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def test_every_path_the_engines_write_is_a_volume():
    ms = render(model())
    m, v, e = mounts(ms), volumes(ms), env(ms)
    assert v[m["/tmp"]]["emptyDir"] == {}
    home = e["HOME"]["value"]
    assert v[m[home]]["emptyDir"] == {}  # ~/.cache, ~/.triton, ~/.config
    assert e["USER"]["value"]  # torch's getpass.getuser() fails for a UID without a passwd entry
    assert "persistentVolumeClaim" in v[m["/data"]]


def test_entry_can_relax_the_container_security_context():
    ms = render(
        model(
            engine="openai",
            image={"repository": "x/y", "tag": "1"},
            securityContext={"readOnlyRootFilesystem": False, "allowPrivilegeEscalation": False},
        )
    )
    assert container(ms)["securityContext"]["readOnlyRootFilesystem"] is False


def test_selectors_hold_only_name_instance_and_model():
    ms = render(model("a", podLabels={"team": "ml", "llm-stack/model": "hijack"}))
    d = deployment(ms, "a")
    assert d["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "vllm-models",
        "app.kubernetes.io/instance": "test",
        "llm-stack/model": "a",
    }
    labels = d["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "ml" and labels["llm-stack/model"] == "a"
    # What the api-gateway's model NetworkPolicy selects on.
    assert labels["app.kubernetes.io/part-of"] == "llm-stack" and labels["app.kubernetes.io/name"] == "vllm-models"
    assert get(ms, "Service", "vllm-a")["spec"]["selector"] == d["spec"]["selector"]["matchLabels"]


def test_longest_model_name_fits_every_object_name():
    name = "m" * 50
    ms = render(
        model(name, podDisruptionBudget={"enabled": True}, serviceMonitor={"enabled": True}), tests={"enabled": False}
    )
    assert len(ms) == 6
    for m in ms:
        assert len(m["metadata"]["name"]) <= 63


def test_objects_go_to_the_model_namespace():
    ms = render(model(), **{"global": {"modelNamespace": "models"}})
    assert {m["metadata"]["namespace"] for m in ms} == {"models"}
    assert {m["metadata"]["namespace"] for m in render(model())} == {"llm"}


# --- PodDisruptionBudget ---------------------------------------------------------------------------


def test_pdb_is_off_by_default():
    assert find(render(model()), "PodDisruptionBudget") == []


@pytest.mark.parametrize(
    "kube_version, api_versions, expected",
    [
        ("v1.20.0", ["policy/v1beta1/PodDisruptionBudget"], "policy/v1beta1"),
        ("v1.21.0", ["policy/v1/PodDisruptionBudget", "policy/v1beta1/PodDisruptionBudget"], "policy/v1"),
        ("v1.25.0", ["policy/v1/PodDisruptionBudget"], "policy/v1"),
        ("v1.34.0", [], "policy/v1"),
    ],
)
def test_pdb_uses_the_api_version_the_cluster_serves(kube_version, api_versions, expected):
    ms = render_chart(
        CHART,
        {"models": [model(podDisruptionBudget={"enabled": True, "unhealthyPodEvictionPolicy": "AlwaysAllow"})]},
        kube_version=kube_version,
        api_versions=api_versions,
    )
    pdb = get(ms, "PodDisruptionBudget", "vllm-m")
    assert pdb["apiVersion"] == expected
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"]["llm-stack/model"] == "m"
    # The field exists only in policy/v1 of Kubernetes 1.26 and later.
    assert ("unhealthyPodEvictionPolicy" in pdb["spec"]) == (kube_version == "v1.34.0")


def test_pdb_min_available_replaces_max_unavailable():
    ms = render(
        model(replicas=3, accessModes=["ReadWriteMany"], podDisruptionBudget={"enabled": True, "minAvailable": "50%"})
    )
    spec = get(ms, "PodDisruptionBudget", "vllm-m")["spec"]
    assert spec["minAvailable"] == "50%" and "maxUnavailable" not in spec


@pytest.mark.parametrize("helm", ["helm3", "helm4"])
def test_whole_chart_renders_for_kubernetes_1_20(helm):
    ms = render_chart(
        CHART,
        None,
        values_files=[CI / "full-values.yaml"],
        helm=helm,
        kube_version="v1.20.0",
        api_versions=["policy/v1beta1/PodDisruptionBudget"],
    )
    assert {m["apiVersion"] for m in find(ms, "PodDisruptionBudget")} == {"policy/v1beta1"}
    assert len(find(ms, "Deployment")) == 5


# --- ServiceMonitor --------------------------------------------------------------------------------


def test_service_monitor_is_off_by_default():
    assert find(render(model()), "ServiceMonitor") == []


def test_service_monitor_scrapes_the_model_service():
    ms = render(
        model(
            "a",
            serviceMonitor={
                "enabled": True,
                "interval": "15s",
                "scrapeTimeout": "10s",
                "labels": {"release": "prometheus"},
            },
        ),
        model("sg", engine="sglang", serviceMonitor={"enabled": True}),
    )
    sm = get(ms, "ServiceMonitor", "vllm-a")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}]
    svc = get(ms, "Service", "vllm-a")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    # SGLang serves /metrics only when asked.
    assert "--enable-metrics" in args(ms, "sg")


# --- LoRA adapters ---------------------------------------------------------------------------------


def test_adapters_become_lora_modules_in_vllms_json_form_with_the_base_model_as_parent():
    import json

    ms = render(
        model(
            maxLoras=2,
            maxLoraRank=64,
            adapters=[
                {"name": "sql", "huggingfaceId": "org/sql-lora"},
                {"name": "org/has=equals", "path": "adapters/x=1"},
                {"name": "local", "hostPath": "/srv/lora/local"},
            ],
        )
    )
    argv = args(ms)
    assert argv[argv.index("--enable-lora") :][:5] == ["--enable-lora", "--max-loras", "2", "--max-lora-rank", "64"]
    modules = argv[argv.index("--lora-modules") + 1 :]
    assert [json.loads(m) for m in modules] == [
        {"name": "sql", "path": "org/sql-lora", "base_model_name": "m"},
        {"name": "org/has=equals", "path": "/data/adapters/x=1", "base_model_name": "m"},
        {"name": "local", "path": "/mnt/adapters/2", "base_model_name": "m"},
    ]
    # vLLM reads an item as name=path only without a comma: each JSON item has one.
    assert all("," in m for m in modules)
    # The adapter names are not served model names: those stay the model's own.
    assert flag(argv, "--served-model-name") == "m"
    assert volumes(ms)["adapter-2"] == {
        "name": "adapter-2",
        "hostPath": {"path": "/srv/lora/local", "type": "Directory"},
    }
    assert mounts(ms)["/mnt/adapters/2"] == "adapter-2"
    assert {"name": "adapter-2", "mountPath": "/mnt/adapters/2", "readOnly": True} in container(ms)["volumeMounts"]


def test_no_adapters_no_lora_flags_even_with_lora_defaults():
    ms = render(model(), defaults={"maxLoras": 4, "maxLoraRank": 32})
    assert not {"--enable-lora", "--max-loras", "--max-lora-rank", "--lora-modules"} & set(args(ms))


def test_adapters_keep_vllms_own_defaults_when_unset():
    argv = args(render(model(adapters=[{"name": "a", "huggingfaceId": "org/a"}])))
    assert "--enable-lora" in argv and "--max-loras" not in argv and "--max-lora-rank" not in argv


def test_adapters_with_a_whole_command_line_are_refused():
    err = fails({"models": [model(args=["--model", "x"], adapters=[{"name": "a", "huggingfaceId": "org/a"}])]})
    assert (
        "models[0] (m): adapters: `args` replaces the generated arguments, --enable-lora and --lora-modules included"
        in err
    )


def test_an_adapters_volume_name_is_the_charts_own():
    err = fails(
        {
            "models": [
                model(
                    adapters=[{"name": "a", "hostPath": "/srv/a"}],
                    extraVolumes=[{"name": "adapter-0", "emptyDir": {}}],
                )
            ]
        }
    )
    assert 'extraVolumes: the volume name "adapter-0" is the chart\'s own' in err


# --- accelerator presets ---------------------------------------------------------------------------


def test_cuda_is_the_default_preset_and_renders_as_before():
    c = container(render(model()))
    assert c["image"] == "vllm/vllm-openai:v0.11.0"
    assert c["resources"]["limits"] == {"nvidia.com/gpu": 1}


def test_rocm_preset_sets_image_resource_and_groups_and_keeps_the_pod_hardened():
    ms = render(
        model(accelerator="rocm", gpuRequestCount=2),
        accelerators={"rocm": {"supplementalGroups": [44, 109]}},
    )
    c, p = container(ms), pod(ms)
    assert c["image"] == "rocm/vllm:rocm7.0.0_vllm_0.11.1_20251103"
    assert c["resources"]["limits"] == {"amd.com/gpu": 2}
    assert p["securityContext"]["supplementalGroups"] == [44, 109]
    assert p["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "/dev/shm" in mounts(ms)  # tensor parallel 2


def test_a_presets_image_replaces_the_cuda_image_whole_digest_included():
    ms = render(
        model(accelerator="rocm"),
        image={"repository": "vllm/vllm-openai", "tag": "v0.11.0", "digest": "sha256:" + "0" * 64},
    )
    assert container(ms)["image"] == "rocm/vllm:rocm7.0.0_vllm_0.11.1_20251103"


def test_tpu_preset_takes_every_chip_of_the_host_and_the_slices_node_labels():
    ms = render(model(accelerator="tpu", tpuTopology="2x4"))
    c, p = container(ms), pod(ms)
    assert c["image"] == "vllm/vllm-tpu:v0.11.1"
    assert c["resources"]["limits"] == {"google.com/tpu": 8}
    assert flag(args(ms), "--tensor-parallel-size") == "8"
    assert p["nodeSelector"] == {
        "cloud.google.com/gke-tpu-accelerator": "tpu-v6e-slice",
        "cloud.google.com/gke-tpu-topology": "2x4",
    }
    assert {"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"} in p["tolerations"]
    assert env(ms)["VLLM_XLA_CACHE_PATH"]["value"] == "/data/xla-cache"  # compiled graphs survive restarts
    assert env(ms)["PJRT_DEVICE"]["value"] == "TPU"


def test_the_entry_wins_over_the_preset_key_by_key():
    ms = render(
        model(
            accelerator="tpu",
            tpuTopology="2x2",
            nodeSelector={"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice", "pool": "a"},
            env=[{"name": "PJRT_DEVICE", "value": "CPU"}],
            extraArgs=["--max-num-seqs", "64"],
        ),
        accelerators={"tpu": {"extraArgs": ["--enable-prefix-caching"]}},
    )
    assert pod(ms)["nodeSelector"] == {
        "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
        "cloud.google.com/gke-tpu-topology": "2x2",
        "pool": "a",
    }
    assert [e["value"] for e in container(ms)["env"] if e["name"] == "PJRT_DEVICE"] == ["CPU"]
    assert args(ms)[-3:] == ["--enable-prefix-caching", "--max-num-seqs", "64"]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"accelerator": "tpu"}, "accelerator tpu needs tpuTopology"),
        ({"accelerator": "tpu", "tpuTopology": "3x3"}, "tpuTopology 3x3 is not a slice of accelerators.tpu"),
        (
            {"accelerator": "tpu", "tpuTopology": "2x4", "tensorParallelSize": 3},
            "tensorParallelSize 3 x pipelineParallelSize 1 = 3 chips does not fit tpuTopology 2x4 (8 chips)",
        ),
        (
            {"accelerator": "tpu", "tpuTopology": "2x4", "tensorParallelSize": 16},
            "= 16 chips does not fit tpuTopology 2x4 (8 chips)",
        ),
        (
            {"accelerator": "tpu", "tpuTopology": "2x4", "gpuRequestCount": 4},
            "GKE gives a TPU pod all 8 chips of its host; set gpuRequestCount: 8",
        ),
        (
            {"accelerator": "tpu", "tpuTopology": "4x4"},
            "tpuTopology 4x4 is 16 chips on 4 host(s) of 4, and nodes is 1; set nodes: 4",
        ),
        ({"tpuTopology": "2x2"}, "tpuTopology 2x2 is set, but accelerator cuda is not a TPU"),
        ({"engine": "sglang", "accelerator": "rocm"}, "accelerator rocm has a preset image for engine vllm only"),
    ],
)
def test_combinations_that_cannot_schedule_are_refused(entry, message):
    assert message in fails({"models": [model(**entry)]})


def test_a_slice_of_two_4_chip_hosts_is_a_settings_change():
    # A 2x4 pool of two ct6e-standard-4t hosts: 4 chips a pod, two pods.
    ms = render(
        model(accelerator="tpu", tpuTopology="2x4", nodes=2), accelerators={"tpu": {"chipsPerHost": {"2x4": 4}}}
    )
    lws = get(ms, "LeaderWorkerSet", "vllm-m")
    leader = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    assert leader["resources"]["limits"] == {"google.com/tpu": 4}
    assert flag(leader["args"], "--tensor-parallel-size") == "8"
    assert "--pipeline-parallel-size" not in leader["args"]


# --- models across nodes (LeaderWorkerSet) ------------------------------------------------------------


def lws_pods(ms, name="m"):
    t = get(ms, "LeaderWorkerSet", f"vllm-{name}")["spec"]["leaderWorkerTemplate"]
    return t["leaderTemplate"], t["workerTemplate"]


def test_nodes_above_one_is_a_leaderworkerset_with_ray_and_derived_parallel_sizes():
    ms = render(model(nodes=2, gpuRequestCount=8, replicas=2))
    assert not find(ms, "Deployment")
    lws = get(ms, "LeaderWorkerSet", "vllm-m")
    assert lws["spec"]["replicas"] == 2
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert lws["spec"]["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"
    assert lws["spec"]["networkConfig"] == {"subdomainPolicy": "UniquePerReplica"}
    leader, worker = lws_pods(ms)
    lc, wc = leader["spec"]["containers"][0], worker["spec"]["containers"][0]
    assert lc["command"] == ["/bin/sh", "/etc/llm-stack/multinode/multinode.sh", "leader"]
    assert lc["args"][:3] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert flag(lc["args"], "--tensor-parallel-size") == "8"
    assert flag(lc["args"], "--pipeline-parallel-size") == "2"
    assert flag(lc["args"], "--distributed-executor-backend") == "ray"
    assert wc["command"] == ["/bin/sh", "/etc/llm-stack/multinode/multinode.sh", "worker"]
    assert "args" not in wc and "ports" not in wc and "readinessProbe" not in wc
    assert lc["startupProbe"]["httpGet"]["path"] == "/health"
    for c in (lc, wc):
        assert c["resources"]["limits"] == {"nvidia.com/gpu": 8}
        assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    assert leader["metadata"]["labels"]["llm-stack/role"] == "leader"
    assert worker["metadata"]["labels"]["llm-stack/role"] == "worker"
    cm = get(ms, "ConfigMap", "test-vllm-models-multinode")
    assert (
        cm["data"]["multinode.sh"]
        == (Path(__file__).resolve().parents[2] / "charts/vllm-models/files/multinode.sh").read_text()
    )
    assert (
        leader["metadata"]["annotations"]["checksum/multinode"]
        == worker["metadata"]["annotations"]["checksum/multinode"]
    )


def test_only_the_leader_serves_both_services_and_the_pool():
    ms = render(model(nodes=2, gpuRequestCount=4, inferencePool={"enabled": True, "route": {"enabled": False}}))
    for name in ("vllm-m", "vllm-m-pods"):
        assert get(ms, "Service", name)["spec"]["selector"]["llm-stack/role"] == "leader"
    assert get(ms, "InferencePool", "vllm-m")["spec"]["selector"]["matchLabels"]["llm-stack/role"] == "leader"
    # One Deployment model beside it keeps its selector without a role.
    assert "llm-stack/role" not in get(render(model()), "Service", "vllm-m")["spec"]["selector"]


def test_each_pod_of_a_group_gets_its_own_cache_unless_it_is_shared():
    ms = render(model(nodes=2, gpuRequestCount=8, pvcSize="800Gi", pvcKeep=False))
    assert not find(ms, "PersistentVolumeClaim")
    t = get(ms, "LeaderWorkerSet", "vllm-m")["spec"]["leaderWorkerTemplate"]
    (vct,) = t["volumeClaimTemplates"]
    assert vct["metadata"]["name"] == "cache" and vct["spec"]["resources"]["requests"]["storage"] == "800Gi"
    assert t["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Delete", "whenScaled": "Delete"}
    leader, _ = lws_pods(ms)
    assert "cache" not in {v["name"] for v in leader["spec"]["volumes"]}
    shared = render(model(nodes=2, gpuRequestCount=8, accessModes=["ReadWriteMany"]))
    assert "volumeClaimTemplates" not in get(shared, "LeaderWorkerSet", "vllm-m")["spec"]["leaderWorkerTemplate"]
    assert get(shared, "PersistentVolumeClaim", "vllm-m-cache")
    leader, _ = lws_pods(shared)
    assert {"name": "cache", "persistentVolumeClaim": {"claimName": "vllm-m-cache"}} in leader["spec"]["volumes"]


def test_a_tpu_slice_over_hosts_is_one_group_on_one_node_pool():
    ms = render(model(accelerator="tpu", tpuTopology="4x4", nodes=4))
    lws = get(ms, "LeaderWorkerSet", "vllm-m")
    assert lws["metadata"]["annotations"] == {
        "leaderworkerset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool"
    }
    leader, _ = lws_pods(ms)
    lc = leader["spec"]["containers"][0]
    assert lc["resources"]["limits"] == {"google.com/tpu": 4}
    assert flag(lc["args"], "--tensor-parallel-size") == "16" and "--pipeline-parallel-size" not in lc["args"]


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            {"nodes": 2, "gpuRequestCount": 8, "tensorParallelSize": 8, "pipelineParallelSize": 1},
            "tensorParallelSize 8 x pipelineParallelSize 1 = 8 ranks, but nodes 2 x gpuRequestCount 8 = 16 GPUs",
        ),
        ({"nodes": 2, "gpuRequestCount": 0}, "nodes 2 with gpuRequestCount 0"),
        ({"nodes": 2, "gpuRequestCount": 8, "engine": "sglang"}, "engine sglang runs on one node"),
        (
            {"nodes": 2, "gpuRequestCount": 8, "args": ["--model", "x"]},
            "the leader wraps the generated one in the Ray launcher",
        ),
        ({"nodes": 2, "gpuRequestCount": 8, "strategy": {"type": "Recreate"}}, "strategy is a Deployment's"),
        (
            {"pipelineParallelSize": 2},
            "tensorParallelSize 1 x pipelineParallelSize 2 needs 2 GPUs, but gpuRequestCount is 1",
        ),
    ],
)
def test_multi_node_sizes_that_cannot_work_are_refused(entry, message):
    assert message in fails({"models": [model(**entry)]})


def test_a_groups_headless_service_must_not_be_another_models_object():
    err = fails({"models": [model("a", nodes=2, gpuRequestCount=8), model("a-0")]})
    assert (
        "its LeaderWorkerSet names the headless Service of group 0 vllm-a-0, which is an object of the model a-0" in err
    )


# --- InferencePool and HTTPRoute -------------------------------------------------------------------


def test_inference_pool_selects_the_models_pods_on_the_serving_port():
    ms = render(model(port=8001, inferencePool={"enabled": True, "route": {"enabled": False}}))
    pool = get(ms, "InferencePool", "vllm-m")
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert pool["spec"] == {
        "selector": {
            "matchLabels": {
                "app.kubernetes.io/name": "vllm-models",
                "app.kubernetes.io/instance": "test",
                "llm-stack/model": "m",
            }
        },
        "targetPorts": [{"number": 8001}],
    }
    labels = deployment(ms)["spec"]["template"]["metadata"]["labels"]
    assert pool["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert not find(ms, "HTTPRoute")


def test_inference_pool_is_off_by_default():
    assert not find(render(model()), "InferencePool") and not find(render(model()), "HTTPRoute")


def test_endpoint_picker_and_failure_mode_are_optional():
    ms = render(
        model(
            inferencePool={
                "enabled": True,
                "endpointPickerRef": {"name": "epp", "port": 9002, "failureMode": "FailOpen"},
                "route": {"enabled": False},
            }
        )
    )
    assert get(ms, "InferencePool", "vllm-m")["spec"]["endpointPickerRef"] == {
        "name": "epp",
        "port": {"number": 9002},
        "failureMode": "FailOpen",
    }


def test_route_sends_every_name_of_the_model_on_the_gateways_paths_to_its_pool():
    ms = render(
        model(
            aliases=["org/model"],
            adapters=[{"name": "m-sql", "huggingfaceId": "org/sql"}],
            inferencePool={"enabled": True, "route": {"parentRefs": [{"name": "gw", "namespace": "edge"}]}},
        )
    )
    route = get(ms, "HTTPRoute", "vllm-m")
    assert route["spec"]["parentRefs"] == [{"name": "gw", "namespace": "edge"}]
    (rule,) = route["spec"]["rules"]
    assert rule["backendRefs"] == [{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "vllm-m"}]
    assert rule["timeouts"] == {"request": "3600s", "backendRequest": "3600s"}
    pairs = {(m["path"]["value"], m["headers"][0]["value"]) for m in rule["matches"]}
    paths = {"/v1", "/v2/rerank", "/tokenize", "/detokenize", "/pooling", "/classify", "/score", "/rerank"}
    assert pairs == {(p, n) for p in paths for n in ("m", "org/model", "m-sql")}
    assert {m["headers"][0]["name"] for m in rule["matches"]} == {"X-Gateway-Model-Name"}
    assert all(m["path"]["type"] == "PathPrefix" and m["headers"][0]["type"] == "Exact" for m in rule["matches"])


def test_route_splits_into_rules_of_at_most_64_matches():
    aliases = [f"alias-{i}" for i in range(9)]  # 10 names x 8 paths = 80 matches
    ms = render(model(aliases=aliases, inferencePool={"enabled": True, "route": {"parentRefs": [{"name": "gw"}]}}))
    rules = get(ms, "HTTPRoute", "vllm-m")["spec"]["rules"]
    assert [len(r["matches"]) for r in rules] == [64, 16]


@pytest.mark.parametrize(
    "pool, message",
    [
        ({"enabled": True}, "inferencePool.route.parentRefs is empty: name the Gateway the HTTPRoute attaches to"),
        (
            {"enabled": True, "route": {"enabled": False}, "endpointPickerRef": {"name": "epp"}},
            'inferencePool.endpointPickerRef.port is required for the Service "epp"',
        ),
        (
            {"enabled": True, "route": {"enabled": False}, "endpointPickerRef": {"failureMode": "FailOpen"}},
            "failureMode FailOpen applies to an endpoint picker, and endpointPickerRef.name is empty",
        ),
    ],
)
def test_inference_pools_the_api_server_would_refuse_are_refused_with_the_fix(pool, message):
    assert message in fails({"models": [model(inferencePool=pool)]})


def test_too_many_names_for_one_route_are_refused():
    err = fails(
        {
            "models": [
                model(
                    aliases=[f"a{i}" for i in range(16)],
                    inferencePool={"enabled": True, "route": {"parentRefs": [{"name": "gw"}]}},
                )
            ]
        }
    )
    assert (
        "17 routed names (modelName, aliases, adapters) x 8 paths is 136 matches, and an HTTPRoute holds at most 128"
        in err
    )


def test_an_entry_turns_its_pool_off_and_keeps_the_defaults_route_settings():
    ms = render(
        model("a"),
        model("b", inferencePool={"enabled": False}),
        model("c", inferencePool={"route": {"header": "X-Gateway-Model"}}),
        defaults={"inferencePool": {"enabled": True, "route": {"parentRefs": [{"name": "gw"}]}}},
    )
    assert {p["metadata"]["name"] for p in find(ms, "InferencePool")} == {"vllm-a", "vllm-c"}
    route_c = get(ms, "HTTPRoute", "vllm-c")
    assert route_c["spec"]["parentRefs"] == [{"name": "gw"}]
    assert route_c["spec"]["rules"][0]["matches"][0]["headers"][0]["name"] == "X-Gateway-Model"
