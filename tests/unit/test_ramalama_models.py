"""charts/ramalama-models: GGUF files from a host path, served by llama-server (one Deployment and Service per model)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.render import HelmError, find, get, render_chart

CHART = "ramalama-models"
REPO = Path(__file__).resolve().parents[2]
TINY = {"modelName": "tiny", "gguf": "tiny.gguf"}


def render(values=None, **kw):
    return render_chart(CHART, values or {}, **kw)


def deployment(manifests, name="tiny"):
    return get(manifests, "Deployment", f"ramalama-{name}")


def pod(manifests, name="tiny"):
    return deployment(manifests, name)["spec"]["template"]["spec"]


def server(manifests, name="tiny"):
    containers = pod(manifests, name)["containers"]
    assert [c["name"] for c in containers] == ["llama-server"]
    return containers[0]


def flag(args, name):
    """Value after a flag, or None when the flag is absent."""
    return args[args.index(name) + 1] if name in args else None


def volume(manifests, volume_name, name="tiny"):
    (vol,) = [v for v in pod(manifests, name)["volumes"] if v["name"] == volume_name]
    return vol


class TestCommand:
    def test_llama_server_runs_with_an_explicit_command_in_ramalamas_shape(self):
        c = server(render({"models": [{**TINY, "contextSize": 2048, "threads": 4}]}))
        assert c["command"] == ["llama-server"]
        assert c["args"] == [
            "--host",
            "0.0.0.0",
            "--port",
            "8080",
            "--model",
            "/mnt/models/tiny.gguf",
            "--alias",
            "tiny",
            "--ctx-size",
            "2048",
            "-ngl",
            "0",
            "--threads",
            "4",
        ]

    def test_alias_is_the_routed_model_name(self):
        args = server(render({"models": [{**TINY, "aliases": ["tiny-chat"]}]}))["args"]
        assert flag(args, "--alias") == "tiny"

    def test_threads_is_left_to_llama_server_when_unset(self):
        assert "--threads" not in server(render({"models": [TINY]}))["args"]

    @pytest.mark.parametrize("cpu, threads", [("4", "4"), (2, "2"), ("2500m", "2"), ("500m", "1"), ("1.5", "1")])
    def test_unset_threads_follow_the_cpu_limit(self, cpu, threads):
        c = server(render({"models": [{**TINY, "resources": {"limits": {"cpu": cpu}, "requests": {"cpu": "100m"}}}]}))
        assert flag(c["args"], "--threads") == threads

    def test_explicit_threads_win_over_the_cpu_limit(self):
        c = server(render({"models": [{**TINY, "threads": 3, "resources": {"limits": {"cpu": "8"}}}]}))
        assert flag(c["args"], "--threads") == "3"

    def test_extra_args_come_after_the_charts_own_and_metrics_adds_its_flag(self):
        args = server(
            render(
                {
                    "models": [{**TINY, "extraArgs": ["--jinja", "--flash-attn", "on"]}],
                    "defaults": {"serviceMonitor": {"enabled": True}},
                }
            )
        )["args"]
        assert args[-4:] == ["--metrics", "--jinja", "--flash-attn", "on"]

    def test_nested_model_path_is_under_the_mount(self):
        m = render({"models": [{"modelName": "q", "gguf": "./qwen/q4.gguf"}]})
        assert flag(server(m, "q")["args"], "--model") == "/mnt/models/qwen/q4.gguf"


class TestCatalog:
    def test_shared_models_yaml_deploys_only_its_gguf_entries(self):
        m = render(values_files=[REPO / "models.yaml"])
        assert sorted(d["metadata"]["name"] for d in find(m, "Deployment")) == ["ramalama-tinyllama-gguf"]
        assert sorted(s["metadata"]["name"] for s in find(m, "Service")) == [
            "ramalama-tinyllama-gguf",
            "ramalama-tinyllama-gguf-pods",
        ]
        assert flag(server(m, "tinyllama-gguf")["args"], "--ctx-size") == "2048"

    def test_disabled_entry_leaves_no_object_behind(self):
        m = render(
            {
                "models": [TINY, {"modelName": "off", "gguf": "off.gguf", "enabled": False}],
                "fetch": {"enabled": True},
                "defaults": {
                    "podDisruptionBudget": {"enabled": True},
                    "serviceMonitor": {"enabled": True},
                    "chatTemplate": "{{ messages }}",
                },
            }
        )
        assert not [o for o in m if "off" in o["metadata"]["name"]]
        assert deployment(m)

    def test_no_models_renders_nothing(self):
        assert render({"models": []}) == []


class TestDefaults:
    def test_defaults_fill_keys_the_entry_lacks(self):
        m = render(
            {
                "defaults": {
                    "replicas": 3,
                    "contextSize": 8192,
                    "threads": 6,
                    "extraArgs": ["--jinja"],
                    "nodeSelector": {"disk": "models"},
                },
                "models": [TINY],
            }
        )
        args = server(m)["args"]
        assert deployment(m)["spec"]["replicas"] == 3
        assert (flag(args, "--ctx-size"), flag(args, "--threads"), args[-1]) == ("8192", "6", "--jinja")
        assert pod(m)["nodeSelector"] == {"disk": "models"}

    def test_entry_keys_win_whole_even_when_zero(self):
        m = render(
            {
                "defaults": {
                    "accelerator": "cuda",
                    "replicas": 2,
                    "extraArgs": ["--jinja"],
                    "nodeSelector": {"a": "1"},
                    "resources": {"requests": {"cpu": "1"}},
                },
                "models": [
                    {
                        **TINY,
                        "replicas": 0,
                        "gpuLayers": 0,
                        "extraArgs": ["--no-warmup"],
                        "nodeSelector": {"b": "2"},
                        "resources": {"limits": {"memory": "1Gi"}},
                    }
                ],
            }
        )
        args = server(m)["args"]
        assert deployment(m)["spec"]["replicas"] == 0
        assert flag(args, "-ngl") == "0"
        assert args[-1] == "--no-warmup" and "--jinja" not in args
        assert pod(m)["nodeSelector"] == {"b": "2"}
        # resources is a settings group: merged key by key, so the defaults' request stays.
        assert server(m)["resources"] == {
            "limits": {"memory": "1Gi", "nvidia.com/gpu": 1},
            "requests": {"cpu": "1", "memory": "1Gi"},
        }

    def test_null_in_an_entry_means_use_the_default(self):
        m = render({"defaults": {"threads": 8}, "models": [{**TINY, "threads": None}]})
        assert flag(server(m)["args"], "--threads") == "8"


class TestService:
    def test_service_is_ramalama_name_on_8080_and_selects_only_this_models_pods(self):
        m = render({"models": [TINY, {"modelName": "other", "gguf": "o.gguf"}]})
        svc = get(m, "Service", "ramalama-tiny")
        assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
        selector = svc["spec"]["selector"]
        assert selector == deployment(m)["spec"]["selector"]["matchLabels"]
        assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance", "llm-stack/model"}
        assert selector.items() <= deployment(m)["spec"]["template"]["metadata"]["labels"].items()
        assert selector["llm-stack/model"] == "tiny"
        assert server(m)["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]

    def test_every_object_goes_to_the_model_namespace(self):
        m = render(
            {
                "models": [TINY],
                "global": {"modelNamespace": "models"},
                "fetch": {"enabled": True},
                "serviceAccount": {"create": True},
            },
            namespace="tools",
        )
        assert m and {o["metadata"]["namespace"] for o in m} == {"models"}
        assert {o["metadata"]["namespace"] for o in render({"models": [TINY]}, namespace="tools")} == {"tools"}

    def test_names_fit_with_the_longest_model_name(self):
        long = "m" * 50
        m = render(
            {
                "models": [{"modelName": long, "gguf": "x.gguf", "url": "https://e.x/x.gguf"}],
                "fetch": {"enabled": True},
                "defaults": {"podDisruptionBudget": {"enabled": True}, "chatTemplate": "{{ messages }}"},
            },
            release="r" * 53,
        )
        assert get(m, "Service", f"ramalama-{long}")
        assert all(len(o["metadata"]["name"]) <= 63 for o in m)


class TestProbes:
    def test_startup_readiness_and_liveness_use_health_on_the_http_port(self):
        c = server(render({"models": [TINY]}))
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe

    def test_rollout_deadline_covers_the_load_budget(self):
        m = render(
            {"models": [TINY], "defaults": {"probes": {"startup": {"periodSeconds": 20, "failureThreshold": 90}}}}
        )
        startup = server(m)["startupProbe"]
        assert (startup["periodSeconds"], startup["failureThreshold"]) == (20, 90)
        assert deployment(m)["spec"]["progressDeadlineSeconds"] >= 20 * 90

    def test_rollout_deadline_adds_the_download_time_when_fetching(self):
        values = {"models": [{**TINY, "url": "https://e.x/tiny.gguf"}], "fetch": {"timeoutSeconds": 7200}}
        off = deployment(render(values))["spec"]["progressDeadlineSeconds"]
        on = deployment(render({**values, "fetch": {"enabled": True, "timeoutSeconds": 7200}}))
        assert on["spec"]["progressDeadlineSeconds"] >= off + 7200


class TestHostPath:
    def test_model_directory_is_a_hostpath_mounted_read_only(self):
        m = render({"models": [TINY], "hostPath": {"path": "/data/gguf", "type": "Directory"}})
        assert volume(m, "models")["hostPath"] == {"path": "/data/gguf", "type": "Directory"}
        (mount,) = [v for v in server(m)["volumeMounts"] if v["name"] == "models"]
        assert mount == {"name": "models", "mountPath": "/mnt/models", "readOnly": True}


class TestAccelerators:
    def test_cpu_has_no_gpu_resources_devices_or_offload(self):
        m = render({"models": [{**TINY, "resources": {"limits": {"cpu": "2"}}}]})
        c = server(m)
        assert c["image"] == "quay.io/ramalama/ramalama:0.12.4"
        assert c["resources"] == {"limits": {"cpu": "2"}, "requests": {"cpu": "1", "memory": "1Gi"}}
        assert flag(c["args"], "-ngl") == "0"
        assert {v["name"] for v in pod(m)["volumes"]} == {"models", "tmp"}
        assert "runtimeClassName" not in pod(m) and "strategy" not in deployment(m)["spec"]

    def test_cuda_limits_nvidia_gpus_offloads_all_layers_and_never_surges(self):
        m = render(
            {
                "defaults": {"accelerator": "cuda", "gpuRequestCount": 2},
                "accelerators": {"cuda": {"runtimeClassName": "nvidia"}},
                "models": [TINY],
            }
        )
        c = server(m)
        assert c["image"] == "quay.io/ramalama/cuda:0.12.4"
        assert c["resources"]["limits"] == {"nvidia.com/gpu": 2}
        assert flag(c["args"], "-ngl") == "999"
        assert pod(m)["runtimeClassName"] == "nvidia"
        assert deployment(m)["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}

    def test_rocm_limits_amd_gpus_and_mounts_kfd_and_dri(self):
        m = render(
            {
                "defaults": {"accelerator": "rocm"},
                "accelerators": {"rocm": {"supplementalGroups": [44]}},
                "models": [TINY],
            }
        )
        c = server(m)
        assert c["image"] == "quay.io/ramalama/rocm:0.12.4"
        assert c["resources"]["limits"] == {"amd.com/gpu": 1}
        devices = {
            v["hostPath"]["path"]: v["hostPath"]["type"] for v in pod(m)["volumes"] if v["name"].startswith("device-")
        }
        assert devices == {"/dev/kfd": "CharDevice", "/dev/dri": "Directory"}
        assert {v["mountPath"] for v in c["volumeMounts"] if v["name"].startswith("device-")} == set(devices)
        assert pod(m)["securityContext"]["supplementalGroups"] == [44]

    def test_vulkan_mounts_dri_without_a_gpu_resource(self):
        m = render({"defaults": {"accelerator": "vulkan"}, "models": [TINY]})
        c = server(m)
        assert "limits" not in c["resources"]
        assert [v["hostPath"] for v in pod(m)["volumes"] if v["name"].startswith("device-")] == [
            {"path": "/dev/dri", "type": "Directory"}
        ]
        assert flag(c["args"], "-ngl") == "999"
        assert c["securityContext"]["allowPrivilegeEscalation"] is False and "privileged" not in c["securityContext"]

    def test_privileged_device_access_is_an_explicit_opt_in(self):
        m = render(
            {"defaults": {"accelerator": "vulkan"}, "accelerators": {"vulkan": {"privileged": True}}, "models": [TINY]}
        )
        sc = server(m)["securityContext"]
        # The API server refuses privileged with allowPrivilegeEscalation false.
        assert sc["privileged"] is True and sc["allowPrivilegeEscalation"] is True

    def test_mixed_cluster_picks_the_flavour_per_model(self):
        m = render(
            {
                "models": [
                    TINY,
                    {"modelName": "big", "gguf": "big.gguf", "accelerator": "cuda", "nodeSelector": {"gpu": "yes"}},
                ]
            }
        )
        assert server(m)["image"].startswith("quay.io/ramalama/ramalama:")
        assert server(m, "big")["image"].startswith("quay.io/ramalama/cuda:")
        assert "nodeSelector" not in pod(m) and pod(m, "big")["nodeSelector"] == {"gpu": "yes"}

    def test_gpu_request_zero_or_an_explicit_limit_is_respected(self):
        none = server(render({"defaults": {"accelerator": "cuda", "gpuRequestCount": 0}, "models": [TINY]}))
        assert "limits" not in none["resources"]
        own = server(
            render(
                {
                    "defaults": {"accelerator": "cuda"},
                    "models": [{**TINY, "resources": {"limits": {"nvidia.com/gpu": 4}}}],
                }
            )
        )
        assert own["resources"]["limits"] == {"nvidia.com/gpu": 4}

    def test_digest_pins_the_image(self):
        digest = "sha256:" + "a" * 64
        assert (
            server(render({"models": [TINY], "image": {"digest": digest}}))["image"]
            == f"quay.io/ramalama/ramalama@{digest}"
        )

    def test_an_entrys_image_goes_over_its_flavours_key_by_key_and_rolls_that_model_only(self):
        values = {
            "models": [
                TINY,
                {"modelName": "new", "gguf": "new.gguf", "image": {"tag": "0.13.0", "pullPolicy": "Always"}},
                {"modelName": "own", "gguf": "own.gguf", "accelerator": "cuda", "image": {"repository": "reg.local/l"}},
            ],
            "image": {"tag": "0.12.9"},
        }
        m = render(values)
        assert server(m)["image"] == "quay.io/ramalama/ramalama:0.12.9"
        assert server(m)["imagePullPolicy"] == "IfNotPresent"
        assert server(m, "new")["image"] == "quay.io/ramalama/ramalama:0.13.0"
        assert server(m, "new")["imagePullPolicy"] == "Always"
        assert server(m, "own")["image"] == "reg.local/l:0.12.9"
        # A new tag in one entry changes that entry's pod template only.
        values["models"][1]["image"]["tag"] = "0.13.1"
        after = render(values)
        for name, changed in (("tiny", False), ("new", True), ("own", False)):
            same = pod(after, name) == pod(m, name)
            assert same is not changed, name

    def test_an_entrys_digest_pins_and_defaults_image_applies_to_every_entry(self):
        digest = "sha256:" + "b" * 64
        m = render(
            {
                "defaults": {"image": {"tag": "0.13.0"}},
                "models": [TINY, {"modelName": "pinned", "gguf": "p.gguf", "image": {"digest": digest}}],
            }
        )
        assert server(m)["image"] == "quay.io/ramalama/ramalama:0.13.0"
        assert server(m, "pinned")["image"] == f"quay.io/ramalama/ramalama@{digest}"

    def test_the_fetch_container_takes_the_entrys_image(self):
        m = render(
            {
                "fetch": {"enabled": True},
                "models": [{**TINY, "url": "https://example.com/tiny.gguf", "image": {"tag": "0.13.0"}}],
            }
        )
        init = {c["name"]: c for c in pod(m)["initContainers"]}
        assert init["fetch-model"]["image"] == "quay.io/ramalama/ramalama:0.13.0"

    @pytest.mark.parametrize(
        "image",
        [{"tag": "latest"}, {"tag": ""}, {"digest": "md5:x"}, {"registry": "quay.io"}, {"pullPolicy": "Sometimes"}],
    )
    def test_a_bad_entry_image_is_refused_by_the_schema(self, image):
        with pytest.raises(HelmError) as err:
            render({"models": [{**TINY, "image": image}]})
        assert "/models/0" in err.value.stderr


class TestSecurity:
    def test_hardened_defaults(self):
        m = render({"models": [TINY]})
        spec = pod(m)
        assert spec["automountServiceAccountToken"] is False
        assert spec["enableServiceLinks"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        sc = server(m)["securityContext"]
        assert sc == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert volume(m, "tmp")["emptyDir"]["sizeLimit"] == "1Gi"
        assert {"name": "HOME", "value": "/tmp"} in server(m)["env"]

    def test_entry_env_can_replace_home_without_a_duplicate_name(self):
        env = server(
            render({"models": [{**TINY, "env": [{"name": "HOME", "value": "/cache"}, {"name": "X", "value": "1"}]}]})
        )["env"]
        assert env == [{"name": "HOME", "value": "/cache"}, {"name": "X", "value": "1"}]

    def test_created_service_account_never_mounts_a_token(self):
        m = render({"models": [TINY], "serviceAccount": {"create": True}})
        (sa,) = find(m, "ServiceAccount")
        assert sa["automountServiceAccountToken"] is False
        assert pod(m)["serviceAccountName"] == sa["metadata"]["name"]


class TestFetch:
    FETCHING = {
        "fetch": {"enabled": True},
        "models": [
            {**TINY, "url": "https://mirror.example/tiny.gguf", "sha256": "AB" * 32},
            {"modelName": "local", "gguf": "local.gguf"},
        ],
    }

    def test_off_by_default(self):
        m = render({"models": [{**TINY, "url": "https://mirror.example/tiny.gguf"}]})
        assert "initContainers" not in pod(m)
        assert not find(m, "ConfigMap")

    def test_init_container_downloads_into_a_writable_mount_while_the_server_stays_read_only(self):
        m = render(self.FETCHING)
        (init,) = pod(m)["initContainers"]
        assert init["name"] == "fetch-model"
        env = {e["name"]: e.get("value") for e in init["env"]}
        assert env["MODEL_PATH"] == "/mnt/models/tiny.gguf"
        assert env["MODEL_URL"] == "https://mirror.example/tiny.gguf"
        assert env["MODEL_SHA256"] == "ab" * 32
        mounts = {v["name"]: v for v in init["volumeMounts"]}
        assert mounts["models"]["mountPath"] == "/mnt/models" and not mounts["models"].get("readOnly")
        assert [v.get("readOnly") for v in server(m)["volumeMounts"] if v["name"] == "models"] == [True]
        assert init["securityContext"]["allowPrivilegeEscalation"] is False

    def test_entry_without_url_gets_no_init_container(self):
        assert "initContainers" not in pod(render(self.FETCHING), "local")

    def test_script_comes_from_a_configmap_and_its_checksum_rolls_the_pods(self):
        m = render(self.FETCHING)
        (cm,) = find(m, "ConfigMap")
        assert cm["data"]["fetch.sh"].startswith("#!/bin/sh")
        assert volume(m, "fetch-script")["configMap"]["name"] == cm["metadata"]["name"]
        annotations = deployment(m)["spec"]["template"]["metadata"]["annotations"]
        assert len(annotations["checksum/config"]) == 64
        assert "annotations" not in deployment(m, "local")["spec"]["template"]["metadata"]

    def test_token_comes_from_an_existing_secret(self):
        m = render({**self.FETCHING, "fetch": {"enabled": True, "tokenSecret": {"name": "hf", "key": "tok"}}})
        (init,) = pod(m)["initContainers"]
        (token,) = [e for e in init["env"] if e["name"] == "FETCH_TOKEN"]
        assert token["valueFrom"] == {"secretKeyRef": {"name": "hf", "key": "tok"}}


@pytest.mark.usefixtures("shell_tools")
class TestFetchScript:
    """Runs the rendered fetch.sh against file:// URLs (curl reads them like https)."""

    @pytest.fixture
    def run(self, tmp_path):
        (cm,) = find(render(TestFetch.FETCHING), "ConfigMap")
        script = tmp_path / "fetch.sh"
        script.write_text(cm["data"]["fetch.sh"])
        source = tmp_path / "source.gguf"
        source.write_bytes(b"GGUF" + os.urandom(64))

        def go(target, sha="", query=""):
            env = {
                "PATH": os.environ["PATH"],
                "MODEL_PATH": str(target),
                "MODEL_URL": source.as_uri() + query,
                "MODEL_SHA256": sha,
                "FETCH_TIMEOUT": "30",
                "POD_NAME": "p-1",
            }
            return subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)

        return go, source

    def test_missing_file_is_downloaded_and_checked(self, run, tmp_path):
        go, source = run
        target = tmp_path / "models" / "sub" / "tiny.gguf"
        proc = go(target, hashlib.sha256(source.read_bytes()).hexdigest())
        assert proc.returncode == 0, proc.stderr
        assert target.read_bytes() == source.read_bytes()
        assert [p.name for p in target.parent.iterdir()] == ["tiny.gguf"]

    def test_present_file_is_left_alone(self, run, tmp_path):
        go, _ = run
        target = tmp_path / "tiny.gguf"
        target.write_bytes(b"already here")
        assert go(target).returncode == 0
        assert target.read_bytes() == b"already here"

    def test_log_shows_the_url_without_its_query(self, run, tmp_path):
        go, source = run
        proc = go(tmp_path / "tiny.gguf", query="?X-Amz-Signature=s3cr3t")
        assert proc.returncode == 0, proc.stderr
        assert source.as_uri() in proc.stdout and "s3cr3t" not in proc.stdout + proc.stderr

    def test_checksum_mismatch_fails_and_leaves_nothing(self, run, tmp_path):
        go, _ = run
        target = tmp_path / "tiny.gguf"
        assert go(target, "0" * 64).returncode != 0
        assert list(tmp_path.glob("tiny.gguf*")) == []


class TestOptionalObjects:
    def test_servicemonitor_scrapes_metrics_of_each_model(self):
        m = render({"models": [{**TINY, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}]})
        sm = get(m, "ServiceMonitor", "ramalama-tiny")
        assert sm["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
        assert sm["spec"]["selector"]["matchLabels"] == get(m, "Service", "ramalama-tiny")["spec"]["selector"]
        assert sm["metadata"]["labels"]["release"] == "prom"
        assert "--metrics" in server(m)["args"]  # llama-server serves /metrics only with it

    def test_pdb_never_blocks_a_drain(self):
        m = render({"models": [TINY], "defaults": {"podDisruptionBudget": {"enabled": True}}})
        pdb = get(m, "PodDisruptionBudget", "ramalama-tiny")
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["maxUnavailable"] == 1

    def test_explicit_strategy_wins(self):
        m = render({"defaults": {"accelerator": "cuda", "strategy": {"type": "Recreate"}}, "models": [TINY]})
        assert deployment(m)["spec"]["strategy"] == {"type": "Recreate"}


class TestValidation:
    @pytest.mark.parametrize(
        "gguf, message",
        [
            ("/etc/x", 'models[0] (tiny): gguf "/etc/x" must be relative'),
            ("a/../../b.gguf", 'models[0] (tiny): gguf "a/../../b.gguf" must stay inside hostPath.path'),
            ("", "models[0] (tiny): gguf is empty"),
            ("dir/", 'models[0] (tiny): gguf "dir/" names a directory'),
            ("model.bin", 'models[0] (tiny): gguf "model.bin" must name a .gguf file'),
        ],
    )
    def test_bad_gguf_paths_fail_naming_the_model_and_key(self, gguf, message):
        with pytest.raises(HelmError) as err:
            render({"models": [{"modelName": "tiny", "gguf": gguf}]})
        assert message in err.value.stderr

    def test_every_problem_is_reported_at_once(self):
        with pytest.raises(HelmError) as err:
            render({"models": [{"modelName": "a", "gguf": "/a"}, {"modelName": "b", "gguf": "b.txt"}]})
        assert "models[0] (a)" in err.value.stderr and "models[1] (b)" in err.value.stderr

    def test_vllm_entries_are_not_checked_as_gguf_paths(self):
        m = render({"models": [TINY, {"modelName": "v", "huggingfaceId": "org/v"}]})
        assert deployment(m)

    def test_disabled_entries_are_checked_too(self):
        # The schema checks every entry of the shared catalog; the paths are checked the same way.
        with pytest.raises(HelmError) as err:
            render({"models": [{"modelName": "off", "gguf": "/etc/passwd", "enabled": False}]})
        assert 'models[0] (off): gguf "/etc/passwd" must be relative' in err.value.stderr

    def test_credentials_in_a_url_are_refused_without_repeating_them(self):
        with pytest.raises(HelmError) as err:
            render(
                {"fetch": {"enabled": True}, "models": [{**TINY, "url": "ftp://user:s3cr3t@mirror.example/tiny.gguf"}]}
            )
        assert "models[0] (tiny): url carries credentials" in err.value.stderr
        assert "s3cr3t" not in err.value.stderr

    @pytest.mark.parametrize("name", ["HF_TOKEN", "LLAMA_API_KEY", "FETCH_TOKEN"])
    def test_secret_env_names_take_secret_refs_only(self, name):
        with pytest.raises(HelmError) as err:
            render({"defaults": {"env": [{"name": name, "value": "s3cr3t"}]}, "models": [TINY]})
        assert f"models[0] (tiny): env {name}" in err.value.stderr and "s3cr3t" not in err.value.stderr
        ref = {"name": name, "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
        assert ref in server(render({"defaults": {"env": [ref]}, "models": [TINY]}))["env"]

    def test_uppercase_extension_is_accepted(self):
        assert deployment(render({"models": [{"modelName": "tiny", "gguf": "Tiny.Q4_K_M.GGUF"}]}))


def test_chart_yaml_pins_the_image_tag_it_defaults_to():
    chart = yaml.safe_load((REPO / "charts" / CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "charts" / CHART / "values.yaml").read_text())
    assert chart["appVersion"] == values["image"]["tag"] != "latest"


class TestLoraAdapters:
    def test_each_adapter_is_one_lora_flag_applied_to_every_request_by_default(self):
        ms = render(
            {
                "models": [
                    {
                        **TINY,
                        "adapters": [
                            {"name": "sql", "path": "loras/sql.gguf"},
                            {"name": "chat", "hostPath": "/srv/lora/chat.gguf"},
                        ],
                    }
                ]
            }
        )
        args = server(ms)["args"]
        # One flag: llama.cpp build 11669 deprecates a repeated --lora.
        assert args.count("--lora") == 1 and "--lora-scaled" not in args
        assert flag(args, "--lora") == "/mnt/models/loras/sql.gguf,/mnt/adapters/1/chat.gguf"
        assert volume(ms, "adapter-1") == {
            "name": "adapter-1",
            "hostPath": {"path": "/srv/lora/chat.gguf", "type": "File"},
        }
        assert {"name": "adapter-1", "mountPath": "/mnt/adapters/1/chat.gguf", "readOnly": True} in server(ms)[
            "volumeMounts"
        ]

    def test_apply_adapters_false_loads_them_at_scale_zero(self):
        adapters = [{"name": "a", "path": "a.gguf"}, {"name": "b", "hostPath": "/srv/b.gguf"}]
        args = server(render({"models": [{**TINY, "applyAdapters": False, "adapters": adapters}]}))["args"]
        assert args[-2:] == ["--lora-scaled", "/mnt/models/a.gguf:0,/mnt/adapters/1/b.gguf:0"]
        assert "--lora" not in args

    def test_apply_adapters_alone_adds_nothing(self):
        args = server(render({"models": [{**TINY, "applyAdapters": False}]}))["args"]
        assert "--lora" not in args and "--lora-scaled" not in args

    @pytest.mark.parametrize("path", ["a,b.gguf", "a:b.gguf"])
    def test_a_separator_in_an_adapter_file_is_refused(self, path):
        with pytest.raises(HelmError) as err:
            render({"models": [{**TINY, "adapters": [{"name": "a", "path": path}]}]})
        assert (
            "holds a comma or a colon, which llama-server's --lora and --lora-scaled read as separators"
            in err.value.stderr
        )


class TestInferencePool:
    def test_pool_and_route_for_a_llama_server_model(self):
        ms = render(
            {
                "models": [{**TINY, "aliases": ["t"]}],
                "defaults": {
                    "inferencePool": {
                        "enabled": True,
                        "route": {"parentRefs": [{"name": "gw"}], "header": "X-Gateway-Model"},
                    }
                },
            }
        )
        pool = get(ms, "InferencePool", "ramalama-tiny")
        assert pool["spec"]["targetPorts"] == [{"number": 8080}]
        labels = deployment(ms)["spec"]["template"]["metadata"]["labels"]
        assert pool["spec"]["selector"]["matchLabels"].items() <= labels.items()
        rule = get(ms, "HTTPRoute", "ramalama-tiny")["spec"]["rules"][0]
        assert {(m["headers"][0]["name"], m["headers"][0]["value"]) for m in rule["matches"]} == {
            ("X-Gateway-Model", "tiny"),
            ("X-Gateway-Model", "t"),
        }

    def test_a_route_without_a_gateway_is_refused(self):
        with pytest.raises(HelmError) as err:
            render({"models": [{**TINY, "inferencePool": {"enabled": True}}]})
        assert "models[0] (tiny): inferencePool.route.parentRefs is empty" in err.value.stderr
