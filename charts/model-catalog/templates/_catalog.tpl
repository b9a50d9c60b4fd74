{{/*
The shared model catalog. Every chart reads `models:` through these helpers so
that the model charts, the gateway and Open WebUI agree on names and filters.
*/}}

{{/* Port every model Service listens on. */}}
{{- define "model-catalog.servicePort" -}}8080{{- end }}

{{/* "ramalama" for a GGUF entry, "vllm" for any other. Argument: the entry. */}}
{{- define "model-catalog.kind" -}}
{{- if hasKey . "gguf" }}ramalama{{ else }}vllm{{ end -}}
{{- end }}

{{/*
Enabled entries, optionally of one kind, as YAML `models: [...]`.
Usage: (include "model-catalog.enabled" (dict "models" .Values.models "kind" "vllm") | fromYaml).models
*/}}
{{- define "model-catalog.enabled" -}}
{{- $out := list }}
{{- range $m := (.models | default list) }}
{{- if and (ne (toString $m.enabled) "false") (or (not $.kind) (eq $.kind (include "model-catalog.kind" $m))) }}
{{- $out = append $out $m }}
{{- end }}
{{- end }}
{{- toYaml (dict "models" $out) }}
{{- end }}

{{/* A model's Service name: <kind>-<modelName>. Argument: the entry. */}}
{{- define "model-catalog.serviceName" -}}
{{- printf "%s-%s" (include "model-catalog.kind" .) .modelName | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A model's headless Service (one DNS SRV record per ready pod, with the pod's own
port): <serviceName>-pods, cut to 63 characters. Argument: the entry.
*/}}
{{- define "model-catalog.podsServiceName" -}}
{{- printf "%s-pods" (include "model-catalog.serviceName" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Routing table of every enabled model, as YAML `routes: [...]`, each with
name, aliases, kind, service, podsService (the headless Service), namespace,
port, adapters (the entry's LoRA adapters as {name, source}: the api-gateway
routes an adapter's name to its model's pods and lists it in /v1/models with
`parent` the model and `root` the source; [] for none), and healthPath and
balancing and hold (for the api-gateway) when the entry sets them.
Argument: dict "models" LIST "namespace" DEFAULT_NAMESPACE.
*/}}
{{- define "model-catalog.routes" -}}
{{- $routes := list }}
{{- range $m := (include "model-catalog.enabled" (dict "models" .models) | fromYaml).models }}
{{- $route := dict
    "name" $m.modelName
    "aliases" ($m.aliases | default list)
    "kind" (include "model-catalog.kind" $m)
    "service" (include "model-catalog.serviceName" $m)
    "podsService" (include "model-catalog.podsServiceName" $m)
    "namespace" $.namespace
    "port" (include "model-catalog.servicePort" $m | int) }}
{{- with $m.healthPath }}
{{- $_ := set $route "healthPath" . }}
{{- end }}
{{- with $m.balancing }}
{{- $_ := set $route "balancing" . }}
{{- end }}
{{- with $m.hold }}
{{- $_ := set $route "hold" . }}
{{- end }}
{{- $adapters := list }}
{{- range (include "model-catalog.adapters" $m | fromYaml).adapters }}
{{- $adapters = append $adapters (dict "name" .name "source" .source) }}
{{- end }}
{{- $_ := set $route "adapters" $adapters }}
{{- $routes = append $routes $route }}
{{- end }}
{{- toYaml (dict "routes" $routes) }}
{{- end }}

{{/*
Problems of the catalog as a whole, one line each (empty when fine): every
name, alias and adapter name of the enabled models must be unique, since the
gateway routes on them (an adapter name in `aliases` would make vLLM answer it
with the base model: --served-model-name), and each adapter's source must be one
its engine loads (model-catalog.validateAdapter). Argument: the models list.
*/}}
{{- define "model-catalog.validate" -}}
{{- $adapters := dict }}
{{- range $i, $m := (. | default list) }}
{{- if ne (toString $m.enabled) "false" }}
{{- range $k, $a := ($m.adapters | default list) }}
{{- $where := printf "models[%d].adapters[%d] (%s, an adapter of %s)" $i $k (toString $a.name) $m.modelName }}
{{- if hasKey $adapters (toString $a.name) }}
{{ $where }}: the adapter name "{{ $a.name }}" is already used by {{ get $adapters (toString $a.name) }}; every adapter name must be unique.
{{- else }}
{{- $_ := set $adapters (toString $a.name) $where }}
{{- end }}
{{- include "model-catalog.validateAdapter" (dict "model" $m "adapter" $a "where" $where) }}
{{- end }}
{{- end }}
{{- end }}
{{- $seen := dict }}
{{- range $i, $m := (. | default list) }}
{{- if ne (toString $m.enabled) "false" }}
{{- range $n := prepend ($m.aliases | default list) $m.modelName }}
{{- if hasKey $adapters $n }}
models[{{ $i }}] ({{ $m.modelName }}): "{{ $n }}" is the name of the LoRA adapter {{ get $adapters $n }}; an adapter is served and routed under its own name, listed in its model's `adapters`: remove "{{ $n }}" from aliases (or rename the adapter, or the model).
{{- else if hasKey $seen $n }}
models[{{ $i }}] ({{ $m.modelName }}): name or alias "{{ $n }}" is already used by {{ get $seen $n }}; every modelName and alias must be unique.
{{- else }}
{{- $_ := set $seen $n (printf "models[%d] (%s)" $i $m.modelName) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Env entries that carry a secret as a plain value, one line each (empty when
fine). A name that looks like a credential must come from a Secret
(valueFrom.secretKeyRef), never from values: values end up in the release
Secret, in `helm get values`, in Argo CD's UI and in Git.
Argument: dict "where" "models[0] (name)" "env" LIST.
*/}}
{{- define "model-catalog.plainSecretEnv" -}}
{{- range $i, $e := (.env | default list) }}
{{- if and (hasKey $e "value") (regexMatch "(?i)(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEYS?$|CREDENTIAL|DATABASE_URL|REDIS_URL)" (toString $e.name)) }}
{{ $.where }}: env {{ $e.name }} has a plain value; a secret must not live in values. Create a Secret (kubectl create secret generic NAME --from-literal=KEY=...) and use valueFrom.secretKeyRef instead.
{{- end }}
{{- end }}
{{- end }}

{{/*
An entry with the chart-wide defaults filled in, as YAML. A key the entry sets
(not null) replaces the default whole, so 0, false, [] and {} count as set; the
settings groups named in "merge" are maps merged key by key at every depth
instead (entry wins; see model-catalog.deepMerge).
Argument: dict "model" ENTRY "defaults" MAP "merge" (list of keys, optional).
*/}}
{{- define "model-catalog.withDefaults" -}}
{{- $m := dict }}
{{- range $k, $x := .model }}
{{- if not (kindIs "invalid" $x) }}
{{- $_ := set $m $k $x }}
{{- end }}
{{- end }}
{{- range $k, $d := (.defaults | default dict) }}
{{- $x := get $m $k }}
{{- if not (hasKey $m $k) }}
{{- $_ := set $m $k $d }}
{{- else if and (has $k ($.merge | default list)) (kindIs "map" $x) (kindIs "map" $d) }}
{{- $_ := set $m $k (include "model-catalog.deepMerge" (dict "base" $d "over" $x) | fromYaml) }}
{{- end }}
{{- end }}
{{- toYaml $m }}
{{- end }}

{{/*
An entry's LoRA adapters as its engine loads them, as YAML `adapters: [...]`:
name, source (the Hugging Face id, or the adapter's path in the model pod: what
vLLM lists as the adapter's `root` in /v1/models), and for an adapter on the
node hostPath, mountPath (= source) and volume. A `path` is relative to the
model's storage, which the model charts mount at model-catalog.adapterBase
(vllm: the cache PVC at /data; ramalama: the model directory at /mnt/models).
A hostPath is mounted read-only at /mnt/adapters/<index> (vllm: the directory;
ramalama: /mnt/adapters/<index>/<file name>). Argument: the entry.
*/}}
{{- define "model-catalog.adapters" -}}
{{- $kind := include "model-catalog.kind" . }}
{{- $out := list }}
{{- range $i, $a := (.adapters | default list) }}
{{- $entry := dict "name" (toString $a.name) }}
{{- if $a.huggingfaceId }}
{{- $_ := set $entry "source" (toString $a.huggingfaceId) }}
{{- else if $a.path }}
{{- $_ := set $entry "source" (clean (printf "%s/%s" (include "model-catalog.adapterBase" $) (toString $a.path))) }}
{{- else if $a.hostPath }}
{{- $mount := printf "/mnt/adapters/%d" $i }}
{{- if eq $kind "ramalama" }}
{{- $mount = printf "%s/%s" $mount (base (toString $a.hostPath)) }}
{{- end }}
{{- $_ := set $entry "source" $mount }}
{{- $_ := set $entry "mountPath" $mount }}
{{- $_ := set $entry "hostPath" (clean (toString $a.hostPath)) }}
{{- $_ := set $entry "volume" (printf "adapter-%d" $i) }}
{{- end }}
{{- $out = append $out $entry }}
{{- end }}
{{- toYaml (dict "adapters" $out) }}
{{- end }}

{{/* Where a model pod holds the storage an adapter's `path` is relative to: /data (vllm, the cache PVC) or /mnt/models (ramalama, the model directory). Argument: the entry. */}}
{{- define "model-catalog.adapterBase" -}}
{{- if eq (include "model-catalog.kind" .) "ramalama" }}/mnt/models{{ else }}/data{{ end }}
{{- end }}

{{/*
Problems of one adapter's source, one line each: exactly what its engine can
load. vLLM: a Hugging Face id, a directory in the cache PVC, or one on the node;
llama-server: a GGUF file in the model directory or on the node (it has no
Hugging Face download for adapters). Argument: dict "model" ENTRY "adapter" A
"where" TEXT.
*/}}
{{- define "model-catalog.validateAdapter" -}}
{{- $a := .adapter }}
{{- $w := .where }}
{{- $ramalama := eq (include "model-catalog.kind" .model) "ramalama" }}
{{- $store := ternary "the model directory (hostPath.path, mounted at /mnt/models)" "the cache PVC (mounted at /data)" $ramalama }}
{{- $sources := 0 }}
{{- range $k := list "huggingfaceId" "path" "hostPath" }}
{{- if get $a $k }}{{ $sources = add1 $sources }}{{ end }}
{{- end }}
{{- if ne (int $sources) 1 }}
{{ $w }}: set exactly one source: huggingfaceId (a Hugging Face repository), path (relative to {{ $store }}) or hostPath (an absolute path on the node).
{{- end }}
{{- with $a.path }}
{{- if hasPrefix "/" (toString .) }}
{{ $w }}: path {{ . | quote }} must be relative to {{ $store }}; drop the leading "/", or use hostPath for a path on the node.
{{- else if has ".." (splitList "/" (toString .)) }}
{{ $w }}: path {{ . | quote }} must stay inside {{ $store }}; remove the ".." segments.
{{- end }}
{{- end }}
{{- with $a.hostPath }}
{{- if or (not (hasPrefix "/" (toString .))) (has ".." (splitList "/" (toString .))) (eq (clean (toString .)) "/") }}
{{ $w }}: hostPath {{ . | quote }} must be an absolute path on the node below / without ".." segments (the adapter's own directory or file).
{{- end }}
{{- end }}
{{- if $ramalama }}
{{- if $a.huggingfaceId }}
{{ $w }}: llama-server loads LoRA adapters from GGUF files only and downloads none: convert the adapter (llama.cpp's convert_lora_to_gguf.py) and set path (relative to hostPath.path) or hostPath instead of huggingfaceId.
{{- end }}
{{- range $k := list "path" "hostPath" }}
{{- $p := toString (get $a $k) }}
{{- if and $p (not (hasSuffix ".gguf" (lower $p))) }}
{{ $w }}: {{ $k }} {{ $p | quote }} must name a .gguf file (llama-server's --lora reads GGUF adapters only).
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Messages for a model chart's `defaults` keys that belong on the entries: the
chart's own per-entry keys (names, sources), and the keys only the api-gateway
reads (`balancing`, `hold`), which it takes from each entry of its own
`models` and never from a model chart's `defaults`.
Argument: dict "defaults" MAP "perEntry" LIST.
*/}}
{{- define "model-catalog.validateDefaults" -}}
{{- $defaults := .defaults | default dict }}
{{- range $k := .perEntry }}
{{- if hasKey $defaults $k }}
defaults.{{ $k }}: {{ $k }} is per model; set it on the entries of models, not in defaults.
{{- end }}
{{- end }}
{{- range $k := list "balancing" "hold" }}
{{- if hasKey $defaults $k }}
defaults.{{ $k }}: the api-gateway reads {{ $k }} from each entry of models (the same models list), never from this chart's defaults; set it on the entries, or as the api-gateway chart's own {{ $k }}.
{{- end }}
{{- end }}
{{- end }}
