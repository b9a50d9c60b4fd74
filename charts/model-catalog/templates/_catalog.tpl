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
port, and healthPath and balancing (for the api-gateway) when the entry sets them.
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
{{- $routes = append $routes $route }}
{{- end }}
{{- toYaml (dict "routes" $routes) }}
{{- end }}

{{/*
Problems of the catalog as a whole, one line each (empty when fine): every
name and alias of the enabled models must be unique, since the gateway routes
on them. Argument: the models list.
*/}}
{{- define "model-catalog.validate" -}}
{{- $seen := dict }}
{{- range $i, $m := (. | default list) }}
{{- if ne (toString $m.enabled) "false" }}
{{- range $n := prepend ($m.aliases | default list) $m.modelName }}
{{- if hasKey $seen $n }}
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
