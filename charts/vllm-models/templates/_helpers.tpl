{{/* Chart name, cut to 63 characters. */}}
{{- define "vllm-models.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "vllm-models.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "vllm-models.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llm-stack
{{- end }}

{{/* Selector labels: never the version or user labels (a selector change breaks upgrades). */}}
{{- define "vllm-models.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vllm-models.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Every rule the schema cannot express; fails once with all messages. */}}
{{- define "vllm-models.validateValues" -}}
{{- $messages := list (include "model-catalog.validate" .Values.models) }}
{{- $messages = without $messages "" }}
{{- if $messages }}
{{- fail (printf "\nvllm-models: invalid values:\n%s" (join "\n" $messages)) }}
{{- end }}
{{- end }}
