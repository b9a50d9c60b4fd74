{{/* Chart name, cut to 63 characters. */}}
{{- define "ramalama-models.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name prefix of chart-wide objects (fetch ConfigMap, ServiceAccount), cut to 63 characters. */}}
{{- define "ramalama-models.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Namespace of every object: the model Services live in global.modelNamespace, where the gateway looks. */}}
{{- define "ramalama-models.namespace" -}}
{{- default .Release.Namespace .Values.global.modelNamespace }}
{{- end }}

{{/* Common labels. */}}
{{- define "ramalama-models.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ramalama-models.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llm-stack
{{- end }}

{{/* Selector labels: never the version or user labels (a selector change breaks upgrades). */}}
{{- define "ramalama-models.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ramalama-models.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one model's pods. Argument: dict "context" $ "model" $m. */}}
{{- define "ramalama-models.modelSelectorLabels" -}}
{{ include "ramalama-models.selectorLabels" .context }}
llm-stack/model: {{ .model.modelName }}
{{- end }}

{{/* Labels of one model's objects. Argument: dict "context" $ "model" $m. */}}
{{- define "ramalama-models.modelLabels" -}}
{{ include "ramalama-models.labels" .context }}
app.kubernetes.io/component: model-server
llm-stack/model: {{ .model.modelName }}
llm-stack/engine: llama-server
{{- end }}

{{/* Name of the fetch script ConfigMap. */}}
{{- define "ramalama-models.fetchConfigMap" -}}
{{- printf "%s-fetch" (include "ramalama-models.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/* ServiceAccount of the model pods. */}}
{{- define "ramalama-models.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ramalama-models.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
One GGUF entry with `defaults` filled in, as YAML. Every key of `defaults` the
entry lacks (or sets to null) is copied in whole: no deep merge, and no sprig
merge, which would take an entry's 0 or false for "unset". Then gpuLayers:
unset means 0 on cpu and 999 (every layer) on a GPU flavour; threads: unset
means the whole cores of the CPU limit, when there is one.
Argument: dict "context" $ "model" $m.
*/}}
{{- define "ramalama-models.resolve" -}}
{{- $m := include "model-catalog.withDefaults" (dict "model" .model "defaults" .context.Values.defaults) | fromYaml }}
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

{{/* Image of one model. Argument: dict "context" $ "model" $m (resolved). */}}
{{- define "ramalama-models.image" -}}
{{- $img := .context.Values.image }}
{{- $repo := (get .context.Values.accelerators .model.accelerator).repository }}
{{- if $img.digest }}
{{- printf "%s@%s" $repo $img.digest }}
{{- else }}
{{- printf "%s:%s" $repo $img.tag }}
{{- end }}
{{- end }}

{{/*
llama-server arguments, in the shape Ramalama runs it:
--host 0.0.0.0 --port 8080 --model /mnt/models/FILE --alias NAME --ctx-size N -ngl N [--threads N] [--metrics] EXTRA...
Argument: dict "context" $ "model" $m (resolved). Output: YAML list.
*/}}
{{- define "ramalama-models.args" -}}
{{- $m := .model }}
{{- $args := list "--host" "0.0.0.0" "--port" (include "model-catalog.servicePort" $m) "--model" (include "ramalama-models.modelPath" $m) "--alias" $m.modelName "--ctx-size" (toString (int $m.contextSize)) "-ngl" (toString (int $m.gpuLayers)) }}
{{- if not (kindIs "invalid" $m.threads) }}
{{- $args = concat $args (list "--threads" (toString (int $m.threads))) }}
{{- end }}
{{- if .context.Values.metrics.enabled }}
{{- $args = append $args "--metrics" }}
{{- end }}
{{- toYaml (concat $args ($m.extraArgs | default list)) }}
{{- end }}

{{/* Path of the model file inside the pod. Argument: the entry. */}}
{{- define "ramalama-models.modelPath" -}}
{{- clean (printf "/mnt/models/%s" .gguf) }}
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
{{- include "model-catalog.plainSecretEnv" (dict "where" $w "env" $m.env) }}
{{- if and $m.sha256 (not (regexMatch "^[a-fA-F0-9]{64}$" $m.sha256)) }}
{{ $w }}: sha256 must be the 64 hex characters of the file's SHA-256 (sha256sum FILE), not {{ $m.sha256 | quote }}.
{{- end }}
{{- if and (eq $m.accelerator "cpu") (gt (int $m.gpuLayers) 0) }}
{{ $w }}: gpuLayers {{ int $m.gpuLayers }} offloads layers to a GPU, but accelerator is "cpu"; set gpuLayers: 0, or accelerator: cuda, rocm or vulkan.
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
{{- end }}
{{- end }}
{{- range $k := list "modelName" "aliases" "enabled" "gguf" "url" "sha256" }}
{{- if hasKey $.Values.defaults $k }}
{{- $messages = append $messages (printf "\ndefaults.%s is a per-model key; set it on the entries under models, not in defaults." $k) }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- $messages = append $messages "\nmetrics.serviceMonitor.enabled needs metrics.enabled: true (llama-server serves /metrics only with --metrics)." }}
{{- end }}
{{- $messages = without $messages "" }}
{{- if $messages }}
{{- fail (printf "\nramalama-models: invalid values:%s" (join "" $messages)) }}
{{- end }}
{{- end }}
