{{/* Name of every object: model-catalog.fullname (<release>-<chart>, or the release name when it already holds the chart name). */}}
{{- define "openwebui.fullname" -}}
{{- include "model-catalog.fullname" . }}
{{- end }}

{{/* Common labels: model-catalog's, plus the component. */}}
{{- define "openwebui.labels" -}}
{{ include "model-catalog.labels" . }}
app.kubernetes.io/component: webui
{{- end }}

{{/* Selector labels: model-catalog's (name, instance), plus the component; never the version or user labels. */}}
{{- define "openwebui.selectorLabels" -}}
{{ include "model-catalog.selectorLabels" . }}
app.kubernetes.io/component: webui
{{- end }}

{{/* Pinned image reference; the tag defaults to v<appVersion>. */}}
{{- define "openwebui.image" -}}
{{- printf "%s:%s" .Values.image.repository (default (printf "v%s" .Chart.AppVersion) .Values.image.tag) }}
{{- end }}

{{/* OpenAI-compatible base URL of the api-gateway Service (OPENAI_API_BASE_URLS). */}}
{{- define "openwebui.gatewayUrl" -}}
{{- if .Values.gateway.url }}
{{- .Values.gateway.url }}
{{- else }}
{{- include "model-catalog.gatewayUrl" . }}
{{- end }}
{{- end }}

{{/* DEFAULT_MODELS: the override, else the first enabled model of the catalog, else empty. */}}
{{- define "openwebui.defaultModels" -}}
{{- if .Values.defaultModels }}
{{- .Values.defaultModels }}
{{- else }}
{{- $enabled := (include "model-catalog.enabled" (dict "models" .Values.models) | fromYaml).models }}
{{- if $enabled }}
{{- (first $enabled).modelName }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of the data PVC. */}}
{{- define "openwebui.claimName" -}}
{{- default (printf "%s-data" (include "openwebui.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* "true" when the workload has more than one pod. */}}
{{- define "openwebui.scaled" -}}
{{- if gt (int .Values.replicas) 1 }}true{{ end }}
{{- end }}

{{/*
An env entry read from an existing Secret. Argument: dict "name" ENV "ref" {existingSecret, key}.
*/}}
{{- define "openwebui.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .ref.existingSecret | quote }}
      key: {{ .ref.key | quote }}
{{- end }}

{{/*
Problems of one {existingSecret, key} pair, one line each. Argument: dict "path" VALUE_PATH "ref" {existingSecret, key}.
*/}}
{{- define "openwebui.secretRefProblems" -}}
{{- if and .ref.existingSecret (not .ref.key) }}
{{ .path }}.key: empty while {{ .path }}.existingSecret is "{{ .ref.existingSecret }}"; set the key inside that Secret that holds the value.
{{- end }}
{{- if and .ref.key (not .ref.existingSecret) }}
{{ .path }}.existingSecret: empty while {{ .path }}.key is "{{ .ref.key }}"; set the name of the Secret, or clear the key.
{{- end }}
{{- end }}

{{/* Every rule the schema cannot express; fails once with all messages. */}}
{{- define "openwebui.validateValues" -}}
{{- $v := .Values }}
{{- $messages := list (include "model-catalog.validate" $v.models | trim) }}
{{- if eq $v.image.tag "latest" }}
{{- $messages = append $messages (printf "image.tag: \"latest\" floats (every pull may bring another version); pin a release such as v%s, or leave it empty for that default." .Chart.AppVersion) }}
{{- end }}
{{- range $path, $ref := dict "gateway.apiKey" $v.gateway.apiKey "secretKey" $v.secretKey "redis" $v.redis "externalDatabase" $v.externalDatabase }}
{{- $messages = concat $messages (splitList "\n" (include "openwebui.secretRefProblems" (dict "path" $path "ref" $ref))) }}
{{- end }}
{{- $messages = concat $messages (splitList "\n" (include "model-catalog.plainSecretEnv" (dict "where" "extraEnv" "env" $v.extraEnv) | trim)) }}
{{- if and (eq $v.rag.embeddingEngine "openai") (not $v.rag.embeddingModel) }}
{{- $messages = append $messages "rag.embeddingModel: empty while rag.embeddingEngine is openai; set a modelName the api-gateway serves for /v1/embeddings." }}
{{- end }}
{{- if include "openwebui.scaled" . }}
{{- $n := int $v.replicas }}
{{- if not $v.redis.existingSecret }}
{{- $messages = append $messages (printf "replicas: %d needs Redis: set redis.existingSecret and redis.key (a Secret holding REDIS_URL); without it websocket events and logins break across pods. Or set replicas: 1." $n) }}
{{- end }}
{{- if not $v.secretKey.existingSecret }}
{{- $messages = append $messages (printf "replicas: %d needs one shared WEBUI_SECRET_KEY: set secretKey.existingSecret and secretKey.key; a key generated per pod logs users out whenever they reach another pod." $n) }}
{{- end }}
{{- if not $v.externalDatabase.existingSecret }}
{{- $messages = append $messages (printf "replicas: %d needs an external database: set externalDatabase.existingSecret and externalDatabase.key (a Secret holding DATABASE_URL, e.g. PostgreSQL); SQLite cannot be shared by several pods." $n) }}
{{- end }}
{{- if and $v.persistence.enabled (not $v.persistence.existingClaim) (not (has "ReadWriteMany" $v.persistence.accessModes)) }}
{{- $messages = append $messages (printf "persistence.accessModes: %s cannot be mounted by %d pods on different nodes (Multi-Attach); use [ReadWriteMany], an RWX persistence.existingClaim, or persistence.enabled: false with an external database." (toJson $v.persistence.accessModes) $n) }}
{{- end }}
{{- end }}
{{- include "model-catalog.fail" (dict "context" $ "messages" $messages) }}
{{- end }}
