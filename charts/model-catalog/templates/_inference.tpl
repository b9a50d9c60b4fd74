{{/*
Gateway API Inference Extension objects of one model, rendered by both model charts
from a resolved entry's `inferencePool` (a settings group: the entry's keys over
`defaults`' key by key):

- an InferencePool (inference.networking.k8s.io/v1) <serviceName> selecting the pods
  that serve the model's HTTP API on its container port, with the optional endpoint
  picker (endpointPickerRef, failureMode);
- with route.enabled, an HTTPRoute <serviceName> attached to route.parentRefs that
  sends a request to that pool when route.header (X-Gateway-Model-Name, which the
  Inference Extension's body-based router sets from the body's `model`) names the
  model, an alias or one of its LoRA adapters, on the gateway's routed paths
  (model-catalog.gatewayPaths). The header match makes these rules win over a
  route with the same paths and no header (Gateway API precedence), such as the
  gateway-api chart's route to the api-gateway.
*/}}

{{/* Every name a request may carry for this model: modelName, aliases, adapter names. Argument: the entry. As a YAML list. */}}
{{- define "model-catalog.routedNames" -}}
{{- $names := prepend (.aliases | default list) .modelName }}
{{- range (include "model-catalog.adapters" . | fromYaml).adapters }}
{{- $names = append $names .name }}
{{- end }}
{{- toYaml ($names | uniq) }}
{{- end }}

{{/* The HTTPRoute's path prefixes: route.paths, else the api-gateway's routed paths. Argument: the resolved entry. As a YAML list. */}}
{{- define "model-catalog.inferenceRoutePaths" -}}
{{- $route := (.inferencePool | default dict).route | default dict }}
{{- toYaml ($route.paths | default (include "model-catalog.gatewayPaths" . | fromYamlArray)) }}
{{- end }}

{{/*
The InferencePool and, with route.enabled, the HTTPRoute of one model; empty when
inferencePool.enabled is off. Argument: dict "context" $ "model" $m "namespace" NS
"selector" MAP (optional: narrows the pool to the pods that serve HTTP, e.g. the
leader of a multi-node group).
*/}}
{{- define "model-catalog.inferencePool" -}}
{{- $m := .model }}
{{- $ip := $m.inferencePool | default dict }}
{{- if $ip.enabled }}
{{- $ctx := dict "context" .context "model" $m }}
{{- $name := include "model-catalog.serviceName" $m }}
{{- $selector := include "model-catalog.modelSelectorLabels" $ctx | fromYaml }}
{{- range $k, $v := (.selector | default dict) }}
{{- $_ := set $selector $k $v }}
{{- end }}
{{- $epp := $ip.endpointPickerRef | default dict }}
# Gateway API Inference Extension: the pods of "{{ $m.modelName }}" as one pool for an
# inference-aware Gateway (the Inference Extension lists Istio, agentgateway and NGINX Gateway Fabric; GKE has its own).
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata:
  name: {{ $name }}
  namespace: {{ .namespace }}
  labels:
    {{- include "model-catalog.modelLabels" $ctx | nindent 4 }}
spec:
  selector:
    matchLabels:
      {{- toYaml $selector | nindent 6 }}
  targetPorts:
    - number: {{ int $m.port }}
  {{- if $epp.name }}
  endpointPickerRef:
    {{- with $epp.group }}
    group: {{ . }}
    {{- end }}
    {{- with $epp.kind }}
    kind: {{ . }}
    {{- end }}
    name: {{ $epp.name }}
    {{- if not (kindIs "invalid" $epp.port) }}
    port:
      number: {{ int $epp.port }}
    {{- end }}
    {{- with $epp.failureMode }}
    failureMode: {{ . }}
    {{- end }}
  {{- end }}
{{- $route := $ip.route | default dict }}
{{- if $route.enabled }}
{{- $matches := list }}
{{- range $path := (include "model-catalog.inferenceRoutePaths" $m | fromYamlArray) }}
{{- range $n := (include "model-catalog.routedNames" $m | fromYamlArray) }}
{{- $matches = append $matches (dict "path" (dict "type" "PathPrefix" "value" $path) "headers" (list (dict "type" "Exact" "name" ($route.header | default "X-Gateway-Model-Name") "value" $n))) }}
{{- end }}
{{- end }}
---
# Requests whose {{ $route.header | default "X-Gateway-Model-Name" }} header names "{{ $m.modelName }}" (or an alias or
# adapter of it) go to its InferencePool.
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {{ $name }}
  namespace: {{ .namespace }}
  labels:
    {{- include "model-catalog.modelLabels" $ctx | nindent 4 }}
spec:
  parentRefs:
    {{- toYaml $route.parentRefs | nindent 4 }}
  {{- with $route.hostnames }}
  hostnames:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  rules:
    {{- /* An HTTPRoute rule holds at most 64 matches (128 per route: model-catalog.validateInferencePool). */}}
    {{- range $i := until (div (add (len $matches) 63) 64 | int) }}
    - matches:
        {{- toYaml (slice $matches (mul $i 64) (min (len $matches) (mul (add1 $i) 64))) | nindent 8 }}
      backendRefs:
        - group: inference.networking.k8s.io
          kind: InferencePool
          name: {{ $name }}
      {{- with $route.timeouts }}
      timeouts:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Problems of a resolved entry's `inferencePool`, one line each (empty when fine):
what the API server's own rules would refuse later, said with the fix.
Argument: dict "model" $m "where" TEXT.
*/}}
{{- define "model-catalog.validateInferencePool" -}}
{{- $m := .model }}
{{- $w := .where }}
{{- $ip := $m.inferencePool | default dict }}
{{- if $ip.enabled }}
{{- $epp := $ip.endpointPickerRef | default dict }}
{{- if and $epp.name (has ($epp.kind | default "Service") (list "Service")) (kindIs "invalid" $epp.port) }}
{{ $w }}: inferencePool.endpointPickerRef.port is required for the Service {{ $epp.name | quote }} (the endpoint picker's gRPC port, e.g. 9002); set it, in the entry or in defaults.inferencePool.
{{- end }}
{{- if and $epp.failureMode (not $epp.name) }}
{{ $w }}: inferencePool.endpointPickerRef.failureMode {{ $epp.failureMode }} applies to an endpoint picker, and endpointPickerRef.name is empty; name the picker's Service, or drop failureMode.
{{- end }}
{{- $route := $ip.route | default dict }}
{{- if $route.enabled }}
{{- if not $route.parentRefs }}
{{ $w }}: inferencePool.route.parentRefs is empty: name the Gateway the HTTPRoute attaches to (e.g. [{name: llm-gateway-api, namespace: llm}], the gateway-api chart's Gateway), in the entry or in defaults.inferencePool.route, or set inferencePool.route.enabled: false.
{{- end }}
{{- $paths := include "model-catalog.inferenceRoutePaths" $m | fromYamlArray }}
{{- $names := include "model-catalog.routedNames" $m | fromYamlArray }}
{{- $n := mul (len $paths) (len $names) }}
{{- if gt (int $n) 128 }}
{{ $w }}: inferencePool.route: {{ len $names }} routed names (modelName, aliases, adapters) x {{ len $paths }} paths is {{ $n }} matches, and an HTTPRoute holds at most 128; list fewer paths in inferencePool.route.paths, or fewer aliases.
{{- end }}
{{- end }}
{{- end }}
{{- end }}
