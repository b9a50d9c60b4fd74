{{/* Namespace of every object: the model Services live in global.modelNamespace, where the gateway looks. */}}
{{- define "ramalama-models.namespace" -}}
{{- default .Release.Namespace .Values.global.modelNamespace }}
{{- end }}

{{/* Name of the fetch script ConfigMap. */}}
{{- define "ramalama-models.fetchConfigMap" -}}
{{- printf "%s-fetch" (include "model-catalog.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/* ServiceAccount of the model pods. */}}
{{- define "ramalama-models.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "model-catalog.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The chart-wide keys of ramalama-models 0.x, deprecated in 1.0.0 (they are keys of
`defaults` and of each entry now), and where each one goes. A key the user still
sets applies over `defaults`: the maps of model-catalog.mergeGroups merge key by
key, the others replace. As YAML {old: new}.
*/}}
{{- define "ramalama-models.legacyKeys" -}}
probes: probes
strategy: strategy
podSecurityContext: podSecurityContext
securityContext: securityContext
podAnnotations: podAnnotations
podLabels: podLabels
service: service
podDisruptionBudget: podDisruptionBudget
metrics: serviceMonitor
{{- end }}

{{/* `defaults` with the deprecated chart-wide keys that are set applied over it, as YAML. Argument: $. */}}
{{- define "ramalama-models.defaults" -}}
{{- $v := .Values }}
{{- $d := deepCopy ($v.defaults | default dict) }}
{{- $groups := include "model-catalog.mergeGroups" . | fromYamlArray }}
{{- range $old, $new := (include "ramalama-models.legacyKeys" . | fromYaml) }}
{{- $x := index $v $old }}
{{- if eq $old "metrics" }}
{{- $x = (($x | default dict).serviceMonitor) }}
{{- end }}
{{- if not (kindIs "invalid" $x) }}
{{- if and (has $new $groups) (kindIs "map" $x) }}
{{- $_ := set $d $new (include "model-catalog.deepMerge" (dict "base" (get $d $new) "over" $x) | fromYaml) }}
{{- else }}
{{- $_ := set $d $new $x }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $d }}
{{- end }}

{{/* Deprecated keys in use, one message each (NOTES.txt prints them). Argument: $. */}}
{{- define "ramalama-models.deprecations" -}}
{{- range $old, $new := (include "ramalama-models.legacyKeys" . | fromYaml) }}
{{- if not (kindIs "invalid" (index $.Values $old)) }}
{{- if eq $old "metrics" }}
DEPRECATED: metrics is applied (metrics.enabled adds --metrics to every model, metrics.serviceMonitor goes over defaults.serviceMonitor); set serviceMonitor (per entry or in defaults), which adds --metrics itself. metrics goes in ramalama-models 2.0.0.
{{- else }}
DEPRECATED: {{ $old }} is applied over defaults.{{ $new }} for every model; move it to defaults.{{ $new }} (or to an entry). It goes in ramalama-models 2.0.0.
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
One GGUF entry with the chart's settings filled in, as YAML: model-catalog.resolveEntry
over ramalama-models.defaults (the same rule as charts/vllm-models). Then the
derived keys: engine (llama-server), port, applyAdapters (unset: true), gpuLayers (unset: 0 on cpu, 999 on a
GPU flavour), threads (unset: the whole cores of the CPU limit, when there is
one), runtimeClassName (the flavour's when empty), metrics (--metrics),
progressDeadlineSeconds. Argument: dict "context" $ "model" $m.
*/}}
{{- define "ramalama-models.resolve" -}}
{{- $v := .context.Values }}
{{- $m := include "model-catalog.resolveEntry" (dict "model" .model "defaults" (include "ramalama-models.defaults" .context | fromYaml)) | fromYaml }}
{{- $_ := set $m "engine" "llama-server" }}
{{- $_ := set $m "accelerator" ($m.accelerator | default "cpu") }}
{{- $_ := set $m "replicas" (ternary (int $m.replicas) 1 (hasKey $m "replicas")) }}
{{- $_ := set $m "port" (int ($m.port | default 8080)) }}
{{- $_ := set $m "applyAdapters" (ne (toString $m.applyAdapters) "false") }}
{{- $_ := set $m "gpuRequestCount" (ternary 1 (int $m.gpuRequestCount) (kindIs "invalid" $m.gpuRequestCount)) }}
{{- if kindIs "invalid" $m.gpuLayers }}
{{- $_ := set $m "gpuLayers" (ternary 0 999 (eq $m.accelerator "cpu")) }}
{{- end }}
{{- /* Unset threads follow a CPU limit: llama-server would count the node's cores instead. */}}
{{- $cpu := dig "limits" "cpu" "" ($m.resources | default dict) | toString }}
{{- if and (kindIs "invalid" $m.threads) $cpu }}
{{- if hasSuffix "m" $cpu }}
{{- $_ := set $m "threads" (max 1 (div (trimSuffix "m" $cpu | int) 1000)) }}
{{- else }}
{{- $_ := set $m "threads" (max 1 (float64 $cpu | floor | int)) }}
{{- end }}
{{- end }}
{{- $accel := get $v.accelerators $m.accelerator | default dict }}
{{- $_ := set $m "runtimeClassName" ($m.runtimeClassName | default $accel.runtimeClassName) }}
{{- /* The entry's image over its flavour's (accelerators.<flavour>.repository, the chart's image)
key by key, as charts/vllm-models lays an entry's image over its engine's. */}}
{{- $img := dict }}
{{- $flavour := dict "repository" $accel.repository "tag" $v.image.tag "digest" $v.image.digest "pullPolicy" $v.image.pullPolicy }}
{{- range $src := list $flavour ($m.image | default dict) }}
{{- range $k, $x := $src }}
{{- if and (not (kindIs "invalid" $x)) (ne (toString $x) "") }}
{{- $_ := set $img $k $x }}
{{- end }}
{{- end }}
{{- end }}
{{- $_ := set $m "image" $img }}
{{- $_ := set $m "metrics" (or ($m.serviceMonitor | default dict).enabled ($v.metrics | default dict).enabled) }}
{{- $deadline := add (include "model-catalog.startupSeconds" $m | int) 600 }}
{{- if and $v.fetch.enabled $m.url }}
{{- $deadline = add $deadline $v.fetch.timeoutSeconds }}
{{- end }}
{{- $_ := set $m "progressDeadlineSeconds" $deadline }}
{{- toYaml $m }}
{{- end }}

{{/*
The GGUF models this release deploys (enabled, kind ramalama), resolved, as
YAML `models: [...]`. Every template ranges over this one list.
*/}}
{{- define "ramalama-models.models" -}}
{{- $out := list }}
{{- range $m := (include "model-catalog.enabled" (dict "models" .Values.models "kind" "ramalama") | fromYaml).models }}
{{- $out = append $out (include "ramalama-models.resolve" (dict "context" $ "model" $m) | fromYaml) }}
{{- end }}
{{- toYaml (dict "models" $out) }}
{{- end }}

{{/* "true" when the model runs the fetch init container. Argument: dict "context" $ "model" $m. */}}
{{- define "ramalama-models.fetches" -}}
{{- if and .context.Values.fetch.enabled .model.url }}true{{ end }}
{{- end }}

{{/* "true" when the pod limits a GPU resource. Argument: dict "context" $ "model" $m (resolved). */}}
{{- define "ramalama-models.usesGpu" -}}
{{- $accel := get .context.Values.accelerators .model.accelerator }}
{{- if and $accel.resourceName (gt (int .model.gpuRequestCount) 0) }}true{{ end }}
{{- end }}

{{/* Image reference of one model: repository@digest or repository:tag. Argument: dict "context" $ "model" $m (resolved). */}}
{{- define "ramalama-models.image" -}}
{{- $img := .model.image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (toString $img.tag) }}
{{- end }}
{{- end }}

{{/*
llama-server arguments, in the shape Ramalama runs it:
--host 0.0.0.0 --port P --model /mnt/models/FILE --alias NAME --ctx-size N -ngl N [--threads N] [--metrics]
[--lora FILE,FILE... | --lora-scaled FILE:0,FILE:0...] [--jinja --chat-template-file FILE | --chat-template NAME] EXTRA...
llama-server applies every adapter to every request at its scale: 1 with --lora, 0 with
--lora-scaled FILE:0 (applyAdapters: false); a request sets its own with `"lora": [{"id": N,
"scale": S}]` (N: the adapter's position in `adapters`), whatever its `model` says.
Argument: dict "context" $ "model" $m (resolved). Output: YAML list.
*/}}
{{- define "ramalama-models.args" -}}
{{- $m := .model }}
{{- $args := list "--host" "0.0.0.0" "--port" (toString (int $m.port)) "--model" (include "ramalama-models.modelPath" $m) "--alias" $m.modelName "--ctx-size" (toString (int $m.contextSize)) "-ngl" (toString (int $m.gpuLayers)) }}
{{- if not (kindIs "invalid" $m.threads) }}
{{- $args = concat $args (list "--threads" (toString (int $m.threads))) }}
{{- end }}
{{- if $m.metrics }}
{{- $args = append $args "--metrics" }}
{{- end }}
{{- with (include "model-catalog.adapters" $m | fromYaml).adapters }}
{{- /* One flag with the files comma-separated: build 11669 deprecates a repeated --lora. Off:
every adapter at scale 0 (--lora-init-without-apply left them applied to requests there). */}}
{{- $files := list }}
{{- range . }}
{{- $files = append $files (ternary .source (printf "%s:0" .source) $m.applyAdapters) }}
{{- end }}
{{- $args = concat $args (list (ternary "--lora" "--lora-scaled" $m.applyAdapters) (join "," $files)) }}
{{- end }}
{{- with $m.chatTemplate }}
{{- if or (include "model-catalog.chatTemplateInline" $m) (hasPrefix "/" (toString .)) }}
{{- /* A template file is Jinja: llama-server renders it only with --jinja. */}}
{{- $args = concat $args (list "--jinja" "--chat-template-file" (include "model-catalog.chatTemplateFile" $m)) }}
{{- else }}
{{- $args = concat $args (list "--chat-template" .) }}
{{- end }}
{{- end }}
{{- toYaml (concat $args ($m.extraArgs | default list)) }}
{{- end }}

{{/* Path of the model file inside the pod. Argument: the entry. */}}
{{- define "ramalama-models.modelPath" -}}
{{- clean (printf "/mnt/models/%s" .gguf) }}
{{- end }}

{{/*
The chart's own volumes and the server's mounts of them, as YAML {volumes, volumeMounts}:
the model directory (read-only for the server), /tmp, the flavour's devices, LoRA adapter
files on the node (read-only), the fetch script, the inline chat template. Argument: dict "context" $ "model" $m (resolved).
*/}}
{{- define "ramalama-models.volumes" -}}
{{- $v := .context.Values }}
{{- $m := .model }}
{{- $accel := get $v.accelerators $m.accelerator | default dict }}
{{- $hostPath := dict "path" $v.hostPath.path }}
{{- with $v.hostPath.type }}{{ $_ := set $hostPath "type" . }}{{ end }}
{{- $volumes := list (dict "name" "models" "hostPath" $hostPath) (dict "name" "tmp" "emptyDir" (dict "sizeLimit" $v.tmpSizeLimit)) }}
{{- $mounts := list (dict "name" "models" "mountPath" "/mnt/models" "readOnly" true) (dict "name" "tmp" "mountPath" "/tmp") }}
{{- range $i, $d := ($accel.devices | default list) }}
{{- $dev := dict "path" $d.path }}
{{- with $d.type }}{{ $_ := set $dev "type" . }}{{ end }}
{{- $volumes = append $volumes (dict "name" (printf "device-%d" $i) "hostPath" $dev) }}
{{- $mounts = append $mounts (dict "name" (printf "device-%d" $i) "mountPath" $d.path) }}
{{- end }}
{{- range (include "model-catalog.adapters" $m | fromYaml).adapters }}
{{- if .hostPath }}
{{- /* A LoRA adapter file on the node (a stated hostPath exception), read-only. */}}
{{- $volumes = append $volumes (dict "name" .volume "hostPath" (dict "path" .hostPath "type" "File")) }}
{{- $mounts = append $mounts (dict "name" .volume "mountPath" .mountPath "readOnly" true) }}
{{- end }}
{{- end }}
{{- if include "ramalama-models.fetches" . }}
{{- $volumes = append $volumes (dict "name" "fetch-script" "configMap" (dict "name" (include "ramalama-models.fetchConfigMap" .context) "defaultMode" 0444)) }}
{{- end }}
{{- $chat := include "model-catalog.chatTemplateVolume" $m | fromYaml }}
{{- toYaml (dict "volumes" (concat $volumes $chat.volumes) "volumeMounts" (concat $mounts $chat.volumeMounts)) }}
{{- end }}

{{/* The server's securityContext: the entry's, made privileged when the flavour asks for it. Argument: dict "context" $ "model" $m. */}}
{{- define "ramalama-models.securityContext" -}}
{{- $security := deepCopy (.model.securityContext | default dict) }}
{{- if (get .context.Values.accelerators .model.accelerator).privileged }}
{{- /* The API server rejects privileged together with allowPrivilegeEscalation: false. */}}
{{- $_ := set $security "privileged" true }}
{{- $_ := set $security "allowPrivilegeEscalation" true }}
{{- end }}
{{- toYaml $security }}
{{- end }}

{{/* The pod's securityContext: the entry's, plus the flavour's supplementalGroups. Argument: dict "context" $ "model" $m. */}}
{{- define "ramalama-models.podSecurityContext" -}}
{{- $psc := deepCopy (.model.podSecurityContext | default dict) }}
{{- with (get .context.Values.accelerators .model.accelerator).supplementalGroups }}
{{- $_ := set $psc "supplementalGroups" (concat ($psc.supplementalGroups | default list) . | uniq) }}
{{- end }}
{{- toYaml $psc }}
{{- end }}

{{/*
The llama-server container, as YAML: explicit command (Ramalama images have no
entrypoint), args, HOME on /tmp unless env sets it, the port `http`, the shared
probes, resources with the GPU limit, the chart's mounts then extraVolumeMounts.
Argument: dict "context" $ "model" $m.
*/}}
{{- define "ramalama-models.container" -}}
{{- $v := .context.Values }}
{{- $m := .model }}
{{- $accel := get $v.accelerators $m.accelerator }}
{{- $envNames := list }}
{{- range ($m.env | default list) }}{{ $envNames = append $envNames .name }}{{ end }}
{{- $env := list }}
{{- if not (has "HOME" $envNames) }}
{{- /* CUDA, ROCm and Mesa write caches under HOME; the root filesystem is read-only. */}}
{{- $env = append $env (dict "name" "HOME" "value" "/tmp") }}
{{- end }}
{{- $resources := deepCopy ($m.resources | default dict) }}
{{- if include "ramalama-models.usesGpu" . }}
{{- $limits := deepCopy ($resources.limits | default dict) }}
{{- if not (hasKey $limits $accel.resourceName) }}
{{- $_ := set $limits $accel.resourceName (int $m.gpuRequestCount) }}
{{- end }}
{{- $_ := set $resources "limits" $limits }}
{{- end }}
name: llama-server
image: {{ include "ramalama-models.image" . }}
imagePullPolicy: {{ $m.image.pullPolicy | default "IfNotPresent" }}
command: [llama-server]
args:
  {{- include "ramalama-models.args" . | nindent 2 }}
env:
  {{- toYaml (concat $env ($m.env | default list)) | nindent 2 }}
ports:
  - name: http
    containerPort: {{ int $m.port }}
    protocol: TCP
{{- include "model-catalog.probes" $m }}
{{- with $resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "ramalama-models.securityContext" . | nindent 2 }}
volumeMounts:
  {{- toYaml (concat (include "ramalama-models.volumes" . | fromYaml).volumeMounts ($m.extraVolumeMounts | default list)) | nindent 2 }}
{{- end }}

{{/* The fetch-model init container, as YAML. Argument: dict "context" $ "model" $m. */}}
{{- define "ramalama-models.fetchContainer" -}}
{{- $v := .context.Values }}
{{- $m := .model }}
{{- /* Downloads the file into the host model directory when it is missing: the one writable
mount of the model directory (a stated exception); the server's is read-only. */}}
name: fetch-model
image: {{ include "ramalama-models.image" . }}
imagePullPolicy: {{ $m.image.pullPolicy | default "IfNotPresent" }}
command: ["/bin/sh", "/opt/ramalama-fetch/fetch.sh"]
env:
  - name: MODEL_PATH
    value: {{ include "ramalama-models.modelPath" $m | quote }}
  - name: MODEL_URL
    value: {{ $m.url | quote }}
  - name: MODEL_SHA256
    value: {{ $m.sha256 | default "" | lower | quote }}
  - name: FETCH_TIMEOUT
    value: {{ $v.fetch.timeoutSeconds | int | quote }}
  - name: POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  - name: HOME
    value: /tmp
  {{- with $v.fetch.tokenSecret }}
  {{- if .name }}
  - name: FETCH_TOKEN
    valueFrom:
      secretKeyRef:
        name: {{ .name }}
        key: {{ .key }}
  {{- end }}
  {{- end }}
{{- with $v.fetch.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml ($m.securityContext | default dict) | nindent 2 }}
volumeMounts:
  - name: models
    mountPath: /mnt/models
  - name: fetch-script
    mountPath: /opt/ramalama-fetch
    readOnly: true
  - name: tmp
    mountPath: /tmp
{{- end }}

{{/*
Problems of one GGUF entry's `gguf`, `url` and `sha256`, one line each.
Argument: dict "context" $ "model" $m (resolved) "where" "models[i] (name)".
*/}}
{{- define "ramalama-models.validateModel" -}}
{{- $m := .model }}
{{- $w := .where }}
{{- $g := toString ($m.gguf | default "") }}
{{- $hp := .context.Values.hostPath.path }}
{{- if not (trim $g) }}
{{ $w }}: gguf is empty; set the GGUF file name, relative to hostPath.path ({{ $hp }}), e.g. gguf: tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf
{{- else if hasPrefix "/" $g }}
{{ $w }}: gguf {{ $g | quote }} must be relative to hostPath.path ({{ $hp }}); drop the leading "/" and the directory part that hostPath.path already holds.
{{- else if has ".." (splitList "/" $g) }}
{{ $w }}: gguf {{ $g | quote }} must stay inside hostPath.path ({{ $hp }}); remove the ".." path segments.
{{- else if hasSuffix "/" $g }}
{{ $w }}: gguf {{ $g | quote }} names a directory, not a file; add the GGUF file name.
{{- else if not (hasSuffix ".gguf" (lower $g)) }}
{{ $w }}: gguf {{ $g | quote }} must name a .gguf file (llama-server reads GGUF only; convert other formats with llama.cpp's convert_hf_to_gguf.py).
{{- end }}
{{- if and $m.url (regexMatch "^[A-Za-z][-+.A-Za-z0-9]*://[^/?#]*@" $m.url) }}
{{ $w }}: url carries credentials (user:password@), which would land in pod specs and logs; put the token in an existing Secret and set fetch.tokenSecret (sent as a bearer token).
{{- else if and $m.url (not (regexMatch "^https?://[^\\s]+$" $m.url)) }}
{{ $w }}: url {{ $m.url | quote }} must start with https:// or http:// (the fetch step downloads it with curl).
{{- end }}
{{- if and $m.sha256 (not (regexMatch "^[a-fA-F0-9]{64}$" $m.sha256)) }}
{{ $w }}: sha256 must be the 64 hex characters of the file's SHA-256 (sha256sum FILE), not {{ $m.sha256 | quote }}.
{{- end }}
{{- range $k, $a := (include "model-catalog.adapters" $m | fromYaml).adapters }}
{{- if regexMatch "[,:]" $a.source }}
{{ $w }}: adapters[{{ $k }}] ({{ $a.name }}): {{ $a.source | quote }} holds a comma or a colon, which llama-server's --lora and --lora-scaled read as separators (FILE:SCALE,FILE:SCALE); rename the file.
{{- end }}
{{- end }}
{{- if and (eq $m.accelerator "cpu") (gt (int $m.gpuLayers) 0) }}
{{ $w }}: gpuLayers {{ int $m.gpuLayers }} offloads layers to a GPU, but accelerator is "cpu"; set gpuLayers: 0, or accelerator: cuda, rocm or vulkan.
{{- end }}
{{- if (include "model-catalog.enabled" (dict "models" (list .model) "kind" "ramalama") | fromYaml).models }}
{{- $own := include "ramalama-models.volumes" . | fromYaml }}
{{- $volumeNames := list }}
{{- range $own.volumes }}{{ $volumeNames = append $volumeNames .name }}{{ end }}
{{- $mountPaths := list }}
{{- range $own.volumeMounts }}{{ $mountPaths = append $mountPaths .mountPath }}{{ end }}
{{- $containers := list "llama-server" }}
{{- if include "ramalama-models.fetches" . }}{{ $containers = append $containers "fetch-model" }}{{ end }}
{{- include "model-catalog.validatePod" (dict "model" $m "where" $w "volumes" $volumeNames "mounts" $mountPaths "containers" $containers) }}
{{- include "model-catalog.validateInferencePool" (dict "model" $m "where" $w) }}
{{- else }}
{{- include "model-catalog.plainSecretEnv" (dict "where" $w "env" $m.env) }}
{{- end }}
{{- end }}

{{/* Every rule the schema cannot express; fails once with all messages. */}}
{{- define "ramalama-models.validateValues" -}}
{{- $messages := list (include "model-catalog.validate" .Values.models) }}
{{- range $i, $m := (.Values.models | default list) }}
{{- if eq (include "model-catalog.kind" $m) "ramalama" }}
{{- $r := include "ramalama-models.resolve" (dict "context" $ "model" $m) | fromYaml }}
{{- $where := printf "models[%d] (%s)" $i (toString $m.modelName) }}
{{- $messages = append $messages (include "ramalama-models.validateModel" (dict "context" $ "model" $r "where" $where)) }}
{{- if (include "model-catalog.enabled" (dict "models" (list $m) "kind" "ramalama") | fromYaml).models }}
{{- $needs := ternary "" "which llama-server exports only with --metrics: set serviceMonitor.enabled: true (on the entry or in defaults; the chart then adds --metrics and Prometheus scrapes the model Service)." (eq (toString $r.metrics) "true") }}
{{- $messages = append $messages (include "model-catalog.validateAutoscaling" (dict "model" $r "where" $where "ownReplicas" (not (kindIs "invalid" $m.replicas)) "sharedStorage" true "queueNeeds" $needs)) }}
{{- end }}
{{- end }}
{{- end }}
{{- $messages = append $messages (include "model-catalog.validateDefaults" (dict "defaults" .Values.defaults "perEntry" (list "modelName" "aliases" "adapters" "enabled" "gguf" "url" "sha256"))) }}
{{- include "model-catalog.fail" (dict "context" $ "messages" $messages) }}
{{- end }}
