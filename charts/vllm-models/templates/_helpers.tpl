{{/* Namespace of every object: the model Services live in global.modelNamespace, where the gateway looks. */}}
{{- define "vllm-models.namespace" -}}
{{- default .Release.Namespace .Values.global.modelNamespace }}
{{- end }}

{{/*
One entry with the chart's settings filled in, as YAML: model-catalog.resolveEntry
(every key of `defaults` the entry lacks or sets to null is copied in whole; the
settings groups of model-catalog.mergeGroups merge key by key). No sprig merge:
it would take an entry's 0 or false for "unset".
Then the derived keys every template reads: engine, replicas, accelerator (the
preset's name) and what its preset of `accelerators` adds (gpuResourceName when
the entry sets none, nodeSelector under the entry's, tolerations, runtimeClassName
when the entry sets none, supplementalGroups into podSecurityContext,
acceleratorEnv, acceleratorArgs, exclusiveTopology), gpuRequestCount (unset: 1, or
a TPU topology's chips per host; gpusExplicit says whether the entry or defaults
set it), nodes and multiNode, tpuChips/tpuChipsPerHost (a TPU slice's chips in
all and per host), tensorParallelSize and pipelineParallelSize (unset: the GPUs
of a node and the nodes; on a TPU slice every chip and 1), image (the engine's,
or the preset's for vllm, then the entry's key by key), extraArgs (only the
entry's own when `args` replaces the generated ones), objectName, claimName,
sharedCache, cacheTemplate (a multi-node group whose pods get a cache PVC each),
mountShm, strategy, probes (the deprecated startupTimeoutMinutes still sets the
startup budget), progressDeadlineSeconds.
Argument: dict "context" $ "model" $m.
*/}}
{{- define "vllm-models.resolve" -}}
{{- $v := .context.Values }}
{{- $m := include "model-catalog.resolveEntry" (dict "model" .model "defaults" $v.defaults) | fromYaml }}
{{- $engine := $m.engine | default "vllm" }}
{{- $_ := set $m "engine" $engine }}
{{- $_ := set $m "replicas" (ternary (int $m.replicas) 1 (hasKey $m "replicas")) }}
{{- $_ := set $m "port" (int ($m.port | default 8000)) }}
{{- $accName := $m.accelerator | default "cuda" }}
{{- $_ := set $m "accelerator" $accName }}
{{- $acc := get ($v.accelerators | default dict) $accName | default dict }}
{{- $_ := set $m "gpuResourceName" ($m.gpuResourceName | default $acc.resourceName | default "nvidia.com/gpu") }}
{{- $nodeSelector := deepCopy ($acc.nodeSelector | default dict) }}
{{- if and $acc.topologyLabel $m.tpuTopology }}
{{- $_ := set $nodeSelector $acc.topologyLabel $m.tpuTopology }}
{{- end }}
{{- range $k, $x := ($m.nodeSelector | default dict) }}
{{- $_ := set $nodeSelector $k $x }}
{{- end }}
{{- $_ := set $m "nodeSelector" $nodeSelector }}
{{- $_ := set $m "tolerations" (concat ($acc.tolerations | default list) ($m.tolerations | default list) | uniq) }}
{{- $_ := set $m "runtimeClassName" ($m.runtimeClassName | default $acc.runtimeClassName) }}
{{- with $acc.supplementalGroups }}
{{- $psc := deepCopy ($m.podSecurityContext | default dict) }}
{{- $_ := set $psc "supplementalGroups" (concat ($psc.supplementalGroups | default list) . | uniq) }}
{{- $_ := set $m "podSecurityContext" $psc }}
{{- end }}
{{- $_ := set $m "acceleratorEnv" ($acc.env | default list) }}
{{- $_ := set $m "acceleratorArgs" ($acc.extraArgs | default list) }}
{{- $_ := set $m "exclusiveTopology" ($acc.exclusiveTopology | default "") }}
{{- /* A TPU slice: the topology's chips in all and per host (GKE gives a pod a whole host). */}}
{{- $slice := not (empty $acc.chipsPerHost) }}
{{- $chips := 0 }}
{{- $perHost := 0 }}
{{- if and $slice (regexMatch "^[0-9]+(x[0-9]+)+$" (toString $m.tpuTopology)) }}
{{- $chips = 1 }}
{{- range (splitList "x" $m.tpuTopology) }}{{ $chips = mul $chips (int .) }}{{ end }}
{{- $perHost = int (get $acc.chipsPerHost $m.tpuTopology | default 0) }}
{{- end }}
{{- $_ := set $m "tpuSlice" $slice }}
{{- $_ := set $m "tpuTopologies" (keys ($acc.chipsPerHost | default dict) | sortAlpha) }}
{{- $_ := set $m "tpuChips" (int $chips) }}
{{- $_ := set $m "tpuChipsPerHost" (int $perHost) }}
{{- $_ := set $m "gpusExplicit" (not (kindIs "invalid" $m.gpuRequestCount)) }}
{{- $gpus := 1 }}
{{- if $m.gpusExplicit }}
{{- $gpus = int $m.gpuRequestCount }}
{{- else if gt (int $perHost) 0 }}
{{- $gpus = int $perHost }}
{{- end }}
{{- $_ := set $m "gpuRequestCount" $gpus }}
{{- $nodes := int ($m.nodes | default 1) }}
{{- $_ := set $m "nodes" $nodes }}
{{- $_ := set $m "multiNode" (gt $nodes 1) }}
{{- if kindIs "invalid" $m.tensorParallelSize }}
{{- $_ := set $m "tensorParallelSize" (max (ternary (ternary $chips (mul $gpus $nodes) (gt (int $chips) 0)) $gpus $slice) 1) }}
{{- else }}
{{- $_ := set $m "tensorParallelSize" (int $m.tensorParallelSize) }}
{{- end }}
{{- if kindIs "invalid" $m.pipelineParallelSize }}
{{- $_ := set $m "pipelineParallelSize" (ternary 1 $nodes $slice) }}
{{- else }}
{{- $_ := set $m "pipelineParallelSize" (int $m.pipelineParallelSize) }}
{{- end }}
{{- /* `args` is a whole command line: chart-wide extraArgs were written for the generated one. */}}
{{- if $m.args }}
{{- $_ := set $m "extraArgs" (.model.extraArgs | default list) }}
{{- $_ := set $m "acceleratorArgs" list }}
{{- end }}
{{- $engineImage := dict }}
{{- if eq $engine "vllm" }}
{{- $engineImage = $v.image }}
{{- /* A preset's own image replaces the CUDA one whole (its digest would not match). */}}
{{- if ($acc.image | default dict).repository }}
{{- $engineImage = merge (deepCopy $acc.image) (dict "pullPolicy" $v.image.pullPolicy) }}
{{- end }}
{{- else if eq $engine "sglang" }}
{{- $engineImage = $v.sglang.image }}
{{- end }}
{{- $img := dict }}
{{- range $src := list ($engineImage | default dict) ($m.image | default dict) }}
{{- range $k, $x := $src }}
{{- if and (not (kindIs "invalid" $x)) (ne (toString $x) "") }}
{{- $_ := set $img $k $x }}
{{- end }}
{{- end }}
{{- end }}
{{- $_ := set $m "ownImage" (not (empty (($m.image | default dict).repository))) }}
{{- $_ := set $m "image" $img }}
{{- $name := include "model-catalog.serviceName" $m }}
{{- $_ := set $m "objectName" $name }}
{{- $_ := set $m "claimName" (default (printf "%s-cache" $name | trunc 63 | trimSuffix "-") $m.existingClaim) }}
{{- $modes := $m.accessModes | default (list "ReadWriteOnce") }}
{{- $_ := set $m "accessModes" $modes }}
{{- $_ := set $m "sharedCache" (has "ReadWriteMany" $modes) }}
{{- /* Pods of a multi-node group on separate nodes cannot share a ReadWriteOnce PVC: each gets its own. */}}
{{- $_ := set $m "cacheTemplate" (and $m.multiNode (not $m.existingClaim) (not $m.sharedCache)) }}
{{- $_ := set $m "multiNodeConfigMap" (include "vllm-models.multiNodeConfigMap" .context) }}
{{- $_ := set $m "mountShm" (or (gt (int $m.tensorParallelSize) 1) (gt (int $m.pipelineParallelSize) 1) $m.multiNode (eq $engine "sglang")) }}
{{- /* A LeaderWorkerSet has its own rollout (templates/leaderworkerset.yaml). */}}
{{- if and (not $m.strategy) (not $m.multiNode) }}
{{- if or (gt $gpus 0) (not $m.sharedCache) }}
{{- if gt (int $m.replicas) 1 }}
{{- $_ := set $m "strategy" (dict "type" "RollingUpdate" "rollingUpdate" (dict "maxSurge" 0 "maxUnavailable" 1)) }}
{{- else }}
{{- $_ := set $m "strategy" (dict "type" "Recreate") }}
{{- end }}
{{- else }}
{{- $_ := set $m "strategy" (dict "type" "RollingUpdate") }}
{{- end }}
{{- end }}
{{- $probes := $m.probes | default dict }}
{{- if not (kindIs "invalid" $m.startupTimeoutMinutes) }}
{{- $startup := deepCopy ($probes.startup | default dict) }}
{{- $period := int ($startup.periodSeconds | default 10) }}
{{- $_ := set $startup "failureThreshold" (div (add (mul (int $m.startupTimeoutMinutes) 60) (sub $period 1)) $period) }}
{{- $_ := set $probes "startup" $startup }}
{{- end }}
{{- $_ := set $m "probes" $probes }}
{{- $_ := set $m "progressDeadlineSeconds" (add (include "model-catalog.startupSeconds" $m | int) 600) }}
{{- toYaml $m }}
{{- end }}

{{/*
The models this release deploys (enabled, kind vllm), resolved, as YAML
`models: [...]`. Every template ranges over this one list.
*/}}
{{- define "vllm-models.models" -}}
{{- $out := list }}
{{- range $m := (include "model-catalog.enabled" (dict "models" .Values.models "kind" "vllm") | fromYaml).models }}
{{- $out = append $out (include "vllm-models.resolve" (dict "context" $ "model" $m) | fromYaml) }}
{{- end }}
{{- toYaml (dict "models" $out) }}
{{- end }}

{{/* The ConfigMap of the Ray launcher (files/multinode.sh) that multi-node groups run. Argument: $. */}}
{{- define "vllm-models.multiNodeConfigMap" -}}
{{- printf "%s-multinode" (include "model-catalog.fullname" . | trunc 53 | trimSuffix "-") }}
{{- end }}

{{/* Where a multi-node pod mounts the launcher. */}}
{{- define "vllm-models.multiNodeDir" -}}/etc/llm-stack/multinode{{- end }}

{{/* Label that tells a multi-node group's leader (which serves HTTP) from its workers. */}}
{{- define "vllm-models.roleLabel" -}}llm-stack/role{{- end }}

{{/* Labels that narrow a model's Services and InferencePool to the pods serving HTTP: a multi-node group's leader; none otherwise. As YAML. Argument: the resolved entry. */}}
{{- define "vllm-models.servingSelector" -}}
{{- if .multiNode }}
{{- toYaml (dict (include "vllm-models.roleLabel" .) "leader") }}
{{- else }}
{{- toYaml dict }}
{{- end }}
{{- end }}

{{/* Pod annotations of a model: checksums of what the engine reads once, at start (an inline chat template, the Ray launcher). As YAML. Argument: dict "context" $ "model" $m. */}}
{{- define "vllm-models.podAnnotations" -}}
{{- $annotations := dict }}
{{- if include "model-catalog.chatTemplateInline" .model }}
{{- $_ := set $annotations "checksum/chat-template" (.model.chatTemplate | sha256sum) }}
{{- end }}
{{- if .model.multiNode }}
{{- $_ := set $annotations "checksum/multinode" (.context.Files.Get "files/multinode.sh" | sha256sum) }}
{{- end }}
{{- toYaml $annotations }}
{{- end }}

{{/* Image reference of a resolved model: repository@digest or repository:tag. */}}
{{- define "vllm-models.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository .image.tag }}
{{- end }}
{{- end }}

{{/* Served names: modelName first (what /v1/models and responses report), then the aliases. */}}
{{- define "vllm-models.servedNames" -}}
{{- toYaml (prepend (.aliases | default list) .modelName | uniq) }}
{{- end }}

{{/*
Container command of a resolved model, as a YAML list (empty: the image's entrypoint).
*/}}
{{- define "vllm-models.command" -}}
{{- if .command }}
{{- toYaml .command }}
{{- else if eq .engine "vllm" }}
{{- toYaml (list "python3" "-m" "vllm.entrypoints.openai.api_server") }}
{{- else if eq .engine "sglang" }}
{{- toYaml (list "python3" "-m" "sglang.launch_server") }}
{{- else }}
{{- toYaml list }}
{{- end }}
{{- end }}

{{/*
Container arguments of a resolved model, as a YAML list: `args` when set, else
the engine's own, then the accelerator preset's extraArgs, then the entry's.
vllm:   --model ID [--revision R] --port P --served-model-name NAME ALIAS... --tensor-parallel-size N
        [--pipeline-parallel-size P] [--distributed-executor-backend ray (nodes > 1)] [--max-model-len L] [--gpu-memory-utilization F] [--trust-remote-code]
        [--enable-lora [--max-loras N] [--max-lora-rank R] --lora-modules JSON...] [--chat-template FILE]
sglang: --model-path ID [--revision R] --host 0.0.0.0 --port P --served-model-name NAME --tp N
        [--context-length L] [--mem-fraction-static F] [--trust-remote-code] [--enable-metrics]
        [--chat-template FILE]
SGLang takes one served name (it does not check the request's model, so aliases still reach it).
*/}}
{{- define "vllm-models.args" -}}
{{- $m := .model }}
{{- $args := list }}
{{- if $m.args }}
{{- $args = $m.args }}
{{- else if eq $m.engine "vllm" }}
{{- $args = list "--model" $m.huggingfaceId }}
{{- if $m.revision }}
{{- $args = concat $args (list "--revision" $m.revision) }}
{{- end }}
{{- $args = concat $args (list "--port" (toString (int $m.port))) (list "--served-model-name") (include "vllm-models.servedNames" $m | fromYamlArray) }}
{{- $args = concat $args (list "--tensor-parallel-size" (toString (int $m.tensorParallelSize))) }}
{{- if gt (int $m.pipelineParallelSize) 1 }}
{{- $args = concat $args (list "--pipeline-parallel-size" (toString (int $m.pipelineParallelSize))) }}
{{- end }}
{{- if $m.multiNode }}
{{- /* vLLM 0.11.0 spreads one model over several nodes only through Ray (the leader's head). */}}
{{- $args = concat $args (list "--distributed-executor-backend" "ray") }}
{{- end }}
{{- if not (kindIs "invalid" $m.maxModelLen) }}
{{- $args = concat $args (list "--max-model-len" (toString (int $m.maxModelLen))) }}
{{- end }}
{{- if not (kindIs "invalid" $m.gpuMemoryUtilization) }}
{{- $args = concat $args (list "--gpu-memory-utilization" (toString $m.gpuMemoryUtilization)) }}
{{- end }}
{{- if $m.trustRemoteCode }}
{{- $args = append $args "--trust-remote-code" }}
{{- end }}
{{- with (include "model-catalog.adapters" $m | fromYaml).adapters }}
{{- /* The JSON form of --lora-modules: a path may hold "=", and base_model_name makes
/v1/models give the adapter `parent: <modelName>`. */}}
{{- $args = append $args "--enable-lora" }}
{{- if not (kindIs "invalid" $m.maxLoras) }}
{{- $args = concat $args (list "--max-loras" (toString (int $m.maxLoras))) }}
{{- end }}
{{- if not (kindIs "invalid" $m.maxLoraRank) }}
{{- $args = concat $args (list "--max-lora-rank" (toString (int $m.maxLoraRank))) }}
{{- end }}
{{- $args = append $args "--lora-modules" }}
{{- range . }}
{{- $args = append $args (dict "name" .name "path" .source "base_model_name" $m.modelName | toJson) }}
{{- end }}
{{- end }}
{{- else if eq $m.engine "sglang" }}
{{- $args = list "--model-path" $m.huggingfaceId }}
{{- if $m.revision }}
{{- $args = concat $args (list "--revision" $m.revision) }}
{{- end }}
{{- $args = concat $args (list "--host" "0.0.0.0" "--port" (toString (int $m.port)) "--served-model-name" $m.modelName "--tp" (toString (int $m.tensorParallelSize))) }}
{{- if not (kindIs "invalid" $m.maxModelLen) }}
{{- $args = concat $args (list "--context-length" (toString (int $m.maxModelLen))) }}
{{- end }}
{{- if not (kindIs "invalid" $m.gpuMemoryUtilization) }}
{{- $args = concat $args (list "--mem-fraction-static" (toString $m.gpuMemoryUtilization)) }}
{{- end }}
{{- if $m.trustRemoteCode }}
{{- $args = append $args "--trust-remote-code" }}
{{- end }}
{{- if ($m.serviceMonitor | default dict).enabled }}
{{- $args = append $args "--enable-metrics" }}
{{- end }}
{{- end }}
{{- if and $m.chatTemplate (not $m.args) (has $m.engine (list "vllm" "sglang")) }}
{{- $args = concat $args (list "--chat-template" (include "model-catalog.chatTemplateFile" $m)) }}
{{- end }}
{{- toYaml (concat $args ($m.acceleratorArgs | default list) ($m.extraArgs | default list)) }}
{{- end }}

{{/*
Environment of a resolved model, as a YAML list: HOME and USER (the UID has no
passwd entry: torch calls getpass.getuser()), HF_HOME on the cache PVC, HF_TOKEN
from the Secret, the accelerator preset's env, then `env`. A name in `env` replaces
the chart's and the preset's.
*/}}
{{- define "vllm-models.env" -}}
{{- $m := .model }}
{{- $user := dict }}
{{- range $e := ($m.env | default list) }}
{{- $_ := set $user $e.name true }}
{{- end }}
{{- $env := list
    (dict "name" "HOME" "value" "/home/llm")
    (dict "name" "USER" "value" "llm")
    (dict "name" "HF_HOME" "value" "/data/huggingface") }}
{{- $tok := $m.hfToken | default dict }}
{{- if $tok.secretName }}
{{- $env = append $env (dict "name" "HF_TOKEN" "valueFrom" (dict "secretKeyRef" (dict "name" $tok.secretName "key" ($tok.key | default "token") "optional" (eq (toString $tok.optional) "true")))) }}
{{- end }}
{{- $out := list }}
{{- range $e := (concat $env ($m.acceleratorEnv | default list)) }}
{{- if not (hasKey $user $e.name) }}
{{- $out = append $out $e }}
{{- end }}
{{- end }}
{{- toYaml (concat $out ($m.env | default list)) }}
{{- end }}

{{/*
The chart's own volumes and the server's mounts of them, as YAML {volumes, volumeMounts}:
the cache PVC at /data (a multi-node group's own per pod: its volumeClaimTemplates),
HOME and /tmp as emptyDirs (the root filesystem stays read-only), /dev/shm when
mountShm, the Ray launcher of a multi-node group, LoRA adapters on the node (read-only at
/mnt/adapters/<index>), the inline chat template. Argument: the resolved entry.
*/}}
{{- define "vllm-models.volumes" -}}
{{- $volumes := list
    (dict "name" "home" "emptyDir" dict)
    (dict "name" "tmp" "emptyDir" dict) }}
{{- if not .cacheTemplate }}
{{- /* With cacheTemplate the LeaderWorkerSet's volumeClaimTemplates give each pod its "cache". */}}
{{- $volumes = prepend $volumes (dict "name" "cache" "persistentVolumeClaim" (dict "claimName" .claimName)) }}
{{- end }}
{{- $mounts := list
    (dict "name" "cache" "mountPath" "/data")
    (dict "name" "home" "mountPath" "/home/llm")
    (dict "name" "tmp" "mountPath" "/tmp") }}
{{- if .mountShm }}
{{- /* NCCL, Ray's object store and the engine's worker processes exchange tensors through /dev/shm. */}}
{{- $volumes = append $volumes (dict "name" "dshm" "emptyDir" (dict "medium" "Memory" "sizeLimit" (.shmSize | default "8Gi"))) }}
{{- $mounts = append $mounts (dict "name" "dshm" "mountPath" "/dev/shm") }}
{{- end }}
{{- if .multiNode }}
{{- $volumes = append $volumes (dict "name" "multinode" "configMap" (dict "name" .multiNodeConfigMap "defaultMode" 0444)) }}
{{- $mounts = append $mounts (dict "name" "multinode" "mountPath" (include "vllm-models.multiNodeDir" .) "readOnly" true) }}
{{- end }}
{{- range (include "model-catalog.adapters" . | fromYaml).adapters }}
{{- if .hostPath }}
{{- /* A LoRA adapter directory on the node (a stated hostPath exception), read-only. */}}
{{- $volumes = append $volumes (dict "name" .volume "hostPath" (dict "path" .hostPath "type" "Directory")) }}
{{- $mounts = append $mounts (dict "name" .volume "mountPath" .mountPath "readOnly" true) }}
{{- end }}
{{- end }}
{{- $chat := include "model-catalog.chatTemplateVolume" . | fromYaml }}
{{- toYaml (dict "volumes" (concat $volumes $chat.volumes) "volumeMounts" (concat $mounts $chat.volumeMounts)) }}
{{- end }}

{{/*
The server container of a resolved model, as YAML: image, command, args, env, the
port `http`, the shared probes, resources (with the GPU limit), securityContext,
and the chart's mounts followed by extraVolumeMounts. "role" (a multi-node
group's pods): `leader` runs the server through the Ray launcher; `worker` runs
only the launcher, with no port and no probes.
Argument: dict "context" $ "model" $m "role" ROLE.
*/}}
{{- define "vllm-models.container" -}}
{{- $m := .model }}
{{- $launcher := printf "%s/multinode.sh" (include "vllm-models.multiNodeDir" $m) }}
name: server
image: {{ include "vllm-models.image" $m | quote }}
imagePullPolicy: {{ $m.image.pullPolicy | default "IfNotPresent" }}
{{- if eq (toString .role) "worker" }}
{{- /* A worker joins the leader's Ray cluster with its GPUs; it serves no HTTP. */}}
command: [/bin/sh, {{ $launcher }}, worker]
{{- else if eq (toString .role) "leader" }}
{{- /* The leader starts the Ray head, waits for its workers, then runs the server. */}}
command: [/bin/sh, {{ $launcher }}, leader]
args:
  {{- toYaml (concat (include "vllm-models.command" $m | fromYamlArray) (include "vllm-models.args" . | fromYamlArray)) | nindent 2 }}
{{- else }}
{{- with (include "vllm-models.command" $m | fromYamlArray) }}
command:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (include "vllm-models.args" . | fromYamlArray) }}
args:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
env:
  {{- include "vllm-models.env" . | nindent 2 }}
{{- if ne (toString .role) "worker" }}
ports:
  - name: http
    containerPort: {{ int $m.port }}
    protocol: TCP
{{- /* The port opens only once the weights are downloaded and loaded: the startup budget covers that. */}}
{{- include "model-catalog.probes" $m }}
{{- end }}
{{- $res := deepCopy ($m.resources | default dict) }}
{{- if gt (int $m.gpuRequestCount) 0 }}
{{- $_ := set $res "limits" (set (deepCopy ($res.limits | default dict)) $m.gpuResourceName (int $m.gpuRequestCount)) }}
{{- end }}
{{- with $res }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $m.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumeMounts:
  {{- toYaml (concat (include "vllm-models.volumes" $m | fromYaml).volumeMounts ($m.extraVolumeMounts | default list)) | nindent 2 }}
{{- end }}

{{/* Deprecated keys in use, one message each (NOTES.txt prints them). */}}
{{- define "vllm-models.deprecations" -}}
{{- $where := list }}
{{- if hasKey (.Values.defaults | default dict) "startupTimeoutMinutes" }}
{{- $where = append $where "defaults" }}
{{- end }}
{{- range $i, $m := (.Values.models | default list) }}
{{- if and (hasKey $m "startupTimeoutMinutes") (not (kindIs "invalid" $m.startupTimeoutMinutes)) }}
{{- $where = append $where (printf "models[%d] (%s)" $i $m.modelName) }}
{{- end }}
{{- end }}
{{- if $where }}
DEPRECATED: startupTimeoutMinutes ({{ join ", " $where }}) still sets the startup probe's budget; set probes.startup.failureThreshold (x probes.startup.periodSeconds, 10 s) instead. It goes in vllm-models 2.0.0.
{{- end }}
{{- end }}

{{/*
Problems of one resolved entry, one line each (empty when fine).
Argument: dict "model" $m (resolved) "where" "models[i] (name)".
*/}}
{{- define "vllm-models.validateModel" -}}
{{- $m := .model }}
{{- $w := .where }}
{{- $gpus := int $m.gpuRequestCount }}
{{- $tp := int $m.tensorParallelSize }}
{{- if and (has $m.engine (list "vllm" "sglang")) (not $m.huggingfaceId) (not $m.args) }}
{{ $w }}: engine {{ $m.engine }} needs huggingfaceId (the Hugging Face repository to serve, e.g. microsoft/DialoGPT-medium).
{{- end }}
{{- if and (eq $m.engine "openai") (not (and $m.image.repository (or $m.image.tag $m.image.digest))) }}
{{ $w }}: engine openai needs image.repository and image.tag (the OpenAI-compatible server's image), set on the entry or in defaults.image.
{{- end }}
{{- if eq (toString $m.image.tag) "latest" }}
{{ $w }}: image tag "latest" floats; pin a version or a digest (the entry's image, defaults.image, or the engine's image / sglang.image).
{{- end }}
{{- $pp := int $m.pipelineParallelSize }}
{{- $nodes := int $m.nodes }}
{{- $ranks := mul $tp $pp }}
{{- if gt (int $m.tpuChips) 0 }}
{{- /* A TPU slice: its topology fixes the chips of each host (pod) and the hosts (nodes). */}}
{{- $hosts := 0 }}
{{- if gt (int $m.tpuChipsPerHost) 0 }}{{ $hosts = div $m.tpuChips $m.tpuChipsPerHost }}{{ end }}
{{- if eq (int $m.tpuChipsPerHost) 0 }}
{{ $w }}: tpuTopology {{ $m.tpuTopology }} is not a slice of accelerators.{{ $m.accelerator }} (its chipsPerHost lists {{ join ", " $m.tpuTopologies }}); pick one of those, or add the topology to accelerators.{{ $m.accelerator }}.chipsPerHost.
{{- else }}
{{- if and $m.gpusExplicit (ne $gpus (int $m.tpuChipsPerHost)) }}
{{ $w }}: gpuRequestCount {{ $gpus }} on tpuTopology {{ $m.tpuTopology }}: GKE gives a TPU pod all {{ $m.tpuChipsPerHost }} chips of its host; set gpuRequestCount: {{ $m.tpuChipsPerHost }}, or leave it unset.
{{- end }}
{{- if ne $nodes (int $hosts) }}
{{ $w }}: tpuTopology {{ $m.tpuTopology }} is {{ $m.tpuChips }} chips on {{ $hosts }} host(s) of {{ $m.tpuChipsPerHost }}, and nodes is {{ $nodes }}; set nodes: {{ $hosts }} (one pod per host of the slice), or pick the topology of {{ $nodes }} host(s).
{{- end }}
{{- if or (gt (int $ranks) (int $m.tpuChips)) (ne (mod $m.tpuChips $ranks) 0) }}
{{ $w }}: tensorParallelSize {{ $tp }} x pipelineParallelSize {{ $pp }} = {{ $ranks }} chips does not fit tpuTopology {{ $m.tpuTopology }} ({{ $m.tpuChips }} chips): it must divide the slice's chips. Leave both unset (tensor parallel over all {{ $m.tpuChips }} chips), or set a divisor of {{ $m.tpuChips }}.
{{- end }}
{{- end }}
{{- else if $m.multiNode }}
{{- if and (eq $gpus 0) }}
{{ $w }}: nodes {{ $nodes }} with gpuRequestCount 0: a model spans nodes to hold more GPUs; set gpuRequestCount (GPUs per node), or nodes: 1.
{{- else if ne (int $ranks) (mul $gpus $nodes) }}
{{ $w }}: tensorParallelSize {{ $tp }} x pipelineParallelSize {{ $pp }} = {{ $ranks }} ranks, but nodes {{ $nodes }} x gpuRequestCount {{ $gpus }} = {{ mul $gpus $nodes }} GPUs; every GPU of the group is one vLLM rank: leave both unset (tensorParallelSize {{ $gpus }} within a node, pipelineParallelSize {{ $nodes }} across nodes), or make their product {{ mul $gpus $nodes }}.
{{- end }}
{{- else if and (gt $ranks $gpus) (not (and (eq $gpus 0) (eq $ranks 1))) }}
{{- if eq $pp 1 }}
{{ $w }}: tensorParallelSize {{ $tp }} needs {{ $tp }} GPUs, but gpuRequestCount is {{ $gpus }}; raise gpuRequestCount or lower tensorParallelSize.
{{- else }}
{{ $w }}: tensorParallelSize {{ $tp }} x pipelineParallelSize {{ $pp }} needs {{ $ranks }} GPUs, but gpuRequestCount is {{ $gpus }}; raise gpuRequestCount, lower the sizes, or spread the model over nodes (nodes).
{{- end }}
{{- end }}
{{- if and $m.tpuTopology (not $m.tpuSlice) }}
{{ $w }}: tpuTopology {{ $m.tpuTopology }} is set, but accelerator {{ $m.accelerator }} is not a TPU; set accelerator: tpu, or drop tpuTopology.
{{- end }}
{{- if and $m.tpuSlice (not $m.tpuTopology) }}
{{ $w }}: accelerator {{ $m.accelerator }} needs tpuTopology, the slice topology of the TPU node pool (the cloud.google.com/gke-tpu-topology label, e.g. 2x4); set it on the entry or in defaults.
{{- end }}
{{- if and (ne $m.accelerator "cuda") (ne $m.engine "vllm") (not $m.ownImage) }}
{{ $w }}: accelerator {{ $m.accelerator }} has a preset image for engine vllm only; engine {{ $m.engine }} needs its own build for {{ $m.accelerator }} in the entry's image (or defaults.image).
{{- end }}
{{- if $m.multiNode }}
{{- if ne $m.engine "vllm" }}
{{ $w }}: nodes {{ $nodes }}: a model spans nodes with vLLM over Ray (a LeaderWorkerSet); engine {{ $m.engine }} runs on one node: set nodes: 1, or engine: vllm.
{{- else if or $m.args $m.command }}
{{ $w }}: nodes {{ $nodes }}: `args`/`command` replace the generated command line, --distributed-executor-backend ray and the parallel sizes included; the leader wraps the generated one in the Ray launcher: drop args and command (use extraArgs).
{{- end }}
{{- if $m.strategy }}
{{ $w }}: strategy is a Deployment's; a model over nodes is a LeaderWorkerSet, which rolls one group at a time (maxUnavailable 1, maxSurge 0): drop strategy on this entry (or in defaults).
{{- end }}
{{- end }}
{{- if and (not $m.multiNode) (not $m.existingClaim) (not $m.sharedCache) (gt (int $m.replicas) 1) }}
{{ $w }}: replicas {{ int $m.replicas }} with a {{ join "/" $m.accessModes }} cache PVC: a second pod on another node cannot mount it (Multi-Attach). Set accessModes: [ReadWriteMany] (a StorageClass that supports it), or existingClaim: <a ReadWriteMany PVC>, or replicas: 1.
{{- end }}
{{- if and (not $m.existingClaim) (not (or (has "ReadWriteOnce" $m.accessModes) (has "ReadWriteMany" $m.accessModes) (has "ReadWriteOncePod" $m.accessModes))) }}
{{ $w }}: accessModes {{ join "/" $m.accessModes }} cannot be written: the engine downloads into the cache PVC. Add ReadWriteOnce or ReadWriteMany, or use existingClaim with a pre-filled cache.
{{- end }}
{{- if $m.adapters }}
{{- if ne $m.engine "vllm" }}
{{ $w }}: adapters: the chart passes LoRA adapters to vLLM only (--lora-modules); engine {{ $m.engine }} gets them through its own flags in `args`/`extraArgs` (SGLang: --enable-lora --lora-paths NAME=PATH), or set engine: vllm.
{{- else if $m.args }}
{{ $w }}: adapters: `args` replaces the generated arguments, --enable-lora and --lora-modules included; drop args, or drop adapters and pass the LoRA flags in args.
{{- end }}
{{- end }}
{{- if and $m.chatTemplate (eq $m.engine "openai") }}
{{ $w }}: chatTemplate: engine openai takes its arguments from `args`, where the chart adds nothing; pass the server's own chat template flag there.
{{- else if and $m.chatTemplate $m.args }}
{{ $w }}: chatTemplate: `args` replaces the generated arguments, --chat-template included; add --chat-template to args, or drop args.
{{- end }}
{{- $own := include "vllm-models.volumes" $m | fromYaml }}
{{- $volumeNames := list }}
{{- range $own.volumes }}{{ $volumeNames = append $volumeNames .name }}{{ end }}
{{- $mountPaths := list }}
{{- range $own.volumeMounts }}{{ $mountPaths = append $mountPaths .mountPath }}{{ end }}
{{- if $m.cacheTemplate }}{{ $volumeNames = append $volumeNames "cache" }}{{ end }}
{{- include "model-catalog.validatePod" (dict "model" $m "where" $w "volumes" $volumeNames "mounts" $mountPaths "containers" (list "server")) }}
{{- include "model-catalog.validateInferencePool" (dict "model" $m "where" $w) }}
{{- end }}

{{/* Every rule the schema cannot express; fails once with all messages. */}}
{{- define "vllm-models.validateValues" -}}
{{- $messages := list (include "model-catalog.validate" .Values.models) }}
{{- $messages = append $messages (include "model-catalog.validateDefaults" (dict "defaults" .Values.defaults "perEntry" (list "modelName" "aliases" "adapters" "enabled" "huggingfaceId" "revision"))) }}
{{- /* A multi-node group's headless Service is <objectName>-<group>: no other model's object may have that name. */}}
{{- $taken := dict }}
{{- range $r := (include "vllm-models.models" $ | fromYaml).models }}
{{- range $n := list $r.objectName (include "model-catalog.podsServiceName" $r) $r.claimName }}
{{- $_ := set $taken $n $r.modelName }}
{{- end }}
{{- end }}
{{- range $r := (include "vllm-models.models" $ | fromYaml).models }}
{{- if $r.multiNode }}
{{- range $g := until (int $r.replicas) }}
{{- $n := printf "%s-%d" $r.objectName $g }}
{{- if hasKey $taken $n }}
{{- $messages = append $messages (printf "models (%s): its LeaderWorkerSet names the headless Service of group %d %s, which is an object of the model %s; rename one of the two models." $r.modelName $g $n (get $taken $n)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range $i, $m := (.Values.models | default list) }}
{{- if (include "model-catalog.enabled" (dict "models" (list $m) "kind" "vllm") | fromYaml).models }}
{{- $r := include "vllm-models.resolve" (dict "context" $ "model" $m) | fromYaml }}
{{- $messages = append $messages (include "vllm-models.validateModel" (dict "model" $r "where" (printf "models[%d] (%s)" $i $m.modelName))) }}
{{- $messages = append $messages (include "model-catalog.validateAutoscaling" (dict "model" $r "where" (printf "models[%d] (%s)" $i $m.modelName) "ownReplicas" (not (kindIs "invalid" $m.replicas)) "sharedStorage" (or $r.existingClaim $r.sharedCache) "storage" (printf "a %s cache PVC" (join "/" $r.accessModes)) "multiNode" $r.multiNode)) }}
{{- end }}
{{- end }}
{{- include "model-catalog.fail" (dict "context" $ "messages" $messages) }}
{{- end }}
