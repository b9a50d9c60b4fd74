{{/* Chart name, cut to 63 characters. */}}
{{- define "api-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "api-gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "api-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llm-stack
{{- end }}

{{/* Selector labels: never the version or user labels (a selector change breaks upgrades). */}}
{{- define "api-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "api-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Every rule the schema cannot express; fails once with all messages. */}}
{{- define "api-gateway.validateValues" -}}
{{- $messages := list (include "model-catalog.validate" .Values.models) }}
{{- $messages = without $messages "" }}
{{- if $messages }}
{{- fail (printf "\napi-gateway: invalid values:\n%s" (join "\n" $messages)) }}
{{- end }}
{{- end }}
