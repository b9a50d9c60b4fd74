{{/*
What every chart of the stack names, labels and checks the same way. Each chart
calls these with its own root context ($), so .Chart is the calling chart.
*/}}

{{/* Chart name: nameOverride or the chart's name, cut to 63 characters. Argument: $. */}}
{{- define "model-catalog.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name prefix of chart-wide objects: fullnameOverride, else the release name when it
already holds the chart name, else <release>-<chart>; cut to 63. Argument: $.
*/}}
{{- define "model-catalog.fullname" -}}
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

{{/* helm.sh/chart label value: <chart>-<version>. Argument: $. */}}
{{- define "model-catalog.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object: name, instance, chart, version, managed-by, part-of. Argument: $. */}}
{{- define "model-catalog.labels" -}}
helm.sh/chart: {{ include "model-catalog.chart" . }}
{{ include "model-catalog.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llm-stack
{{- end }}

{{/* Selector labels: name and instance only, never the version or user labels (a selector change breaks upgrades). Argument: $. */}}
{{- define "model-catalog.selectorLabels" -}}
app.kubernetes.io/name: {{ include "model-catalog.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels as YAML: the user's `extra` labels under the chart's `own`: a label the chart
sets (selector and identity labels) always wins, in every chart.
Argument: dict "own" MAP "extra" MAP.
*/}}
{{- define "model-catalog.mergeLabels" -}}
{{- $out := deepCopy (.extra | default dict) }}
{{- range $k, $v := (.own | default dict) }}
{{- $_ := set $out $k $v }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
imagePullSecrets as a YAML list of {name: ...}, from a list of names, of {name}
objects, or both mixed; empty for none. Argument: the list.
*/}}
{{- define "model-catalog.imagePullSecrets" -}}
{{- range (. | default list) }}
- name: {{ if kindIs "string" . }}{{ . }}{{ else }}{{ .name }}{{ end }}
{{- end }}
{{- end }}

{{/* PodDisruptionBudget apiVersion: policy/v1 unless the cluster serves only policy/v1beta1 (Kubernetes 1.20). Argument: $. */}}
{{- define "model-catalog.pdbApiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "policy/v1beta1/PodDisruptionBudget") (not (.Capabilities.APIVersions.Has "policy/v1/PodDisruptionBudget")) }}policy/v1beta1{{ else }}policy/v1{{ end }}
{{- end }}

{{/*
The cluster's DNS domain: global.clusterDomain (default cluster.local). The
api-gateway's older routing.clusterDomain, deprecated, still wins when set.
Argument: $.
*/}}
{{- define "model-catalog.clusterDomain" -}}
{{- $legacy := (.Values.routing | default dict).clusterDomain }}
{{- $legacy | default (.Values.global | default dict).clusterDomain | default "cluster.local" }}
{{- end }}

{{/* A Service's cluster DNS name, <name>.<namespace>.svc.<clusterDomain>. Argument: dict "context" $ "name" SERVICE "namespace" NAMESPACE. */}}
{{- define "model-catalog.serviceFqdn" -}}
{{- printf "%s.%s.svc.%s" .name .namespace (include "model-catalog.clusterDomain" .context) }}
{{- end }}

{{/* DNS name of the api-gateway Service (global.gateway; its namespace defaults to the release's). Argument: $. */}}
{{- define "model-catalog.gatewayFqdn" -}}
{{- $gw := .Values.global.gateway }}
{{- include "model-catalog.serviceFqdn" (dict "context" . "name" $gw.serviceName "namespace" (default .Release.Namespace $gw.namespace)) }}
{{- end }}

{{/* The api-gateway's OpenAI-compatible base URL: http://<gatewayFqdn>:<port>/v1. Argument: $. */}}
{{- define "model-catalog.gatewayUrl" -}}
{{- printf "http://%s:%d/v1" (include "model-catalog.gatewayFqdn" .) (int .Values.global.gateway.port) }}
{{- end }}

{{/*
Collect-then-fail: one `fail` naming the chart with every message, one a line
(a message may hold several lines; blank ones are dropped). Nothing when there
is no message. Argument: dict "context" $ "messages" LIST.
*/}}
{{- define "model-catalog.fail" -}}
{{- $lines := list }}
{{- range $m := (.messages | default list) }}
{{- range $l := splitList "\n" (toString $m) }}
{{- if trim $l }}
{{- $lines = append $lines (trim $l) }}
{{- end }}
{{- end }}
{{- end }}
{{- if $lines }}
{{- fail (printf "\n%s: invalid values:\n%s" .context.Chart.Name (join "\n" $lines)) }}
{{- end }}
{{- end }}

{{/*
`over` merged into `base`, as YAML: maps merge key by key at every depth, any
other value of `over` (a list, a scalar, 0, false, "") replaces base's, and a
null in `over` keeps base's. Argument: dict "base" MAP "over" MAP.
*/}}
{{- define "model-catalog.deepMerge" -}}
{{- $out := deepCopy (.base | default dict) }}
{{- range $k, $v := (.over | default dict) }}
{{- if kindIs "invalid" $v }}
{{- else if and (kindIs "map" $v) (kindIs "map" (get $out $k)) }}
{{- $_ := set $out $k (include "model-catalog.deepMerge" (dict "base" (get $out $k) "over" $v) | fromYaml) }}
{{- else }}
{{- $_ := set $out $k $v }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}
