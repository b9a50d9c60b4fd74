{{/*
Name of the objects: the release name, cut to 63 characters (one release is one exposure,
named by its Argo CD Application). Labels, names of the chart and the validation come from
model-catalog.
*/}}
{{- define "llm-gateway-api.fullname" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Paths routed to the api-gateway, as a YAML list: the gateway's own (model-catalog.gatewayPaths,
the list its nginx.conf is made from), then routes.extraApiPaths and the deprecated routes.apiPaths. */}}
{{- define "llm-gateway-api.apiPaths" -}}
{{- concat (include "model-catalog.gatewayPaths" . | fromYamlArray) .Values.routes.extraApiPaths .Values.routes.apiPaths | uniq | toYaml }}
{{- end }}

{{/*
Backends of the routes, as YAML `backends: [...]` with name, namespace, port and the paths they serve.
*/}}
{{- define "llm-gateway-api.backends" -}}
{{- $out := list (dict "role" "api" "name" .Values.global.gateway.serviceName "namespace" (.Values.global.gateway.namespace | default .Release.Namespace) "port" .Values.global.gateway.port "paths" (include "llm-gateway-api.apiPaths" . | fromYamlArray)) }}
{{- if .Values.openwebui.enabled }}
{{- $out = append $out (dict "role" "ui" "name" .Values.openwebui.serviceName "namespace" (.Values.openwebui.namespace | default .Release.Namespace) "port" .Values.openwebui.port "paths" (list "/")) }}
{{- end }}
{{- toYaml (dict "backends" $out) }}
{{- end }}

{{/* parentRefs of a route. Argument: dict "context" $ "section" LISTENER ("" = any). */}}
{{- define "llm-gateway-api.parentRefs" -}}
{{- $v := .context.Values.gateway }}
{{- if $v.create }}
- name: {{ include "llm-gateway-api.fullname" .context }}
  {{- with .section }}
  sectionName: {{ . }}
  {{- end }}
{{- else }}
- name: {{ $v.existing.name }}
  {{- with $v.existing.namespace }}
  namespace: {{ . }}
  {{- end }}
  {{- with $v.existing.sectionName }}
  sectionName: {{ . }}
  {{- end }}
{{- end }}
{{- end }}

{{/* apiVersion of ReferenceGrant: v1 where served (Gateway API >= 1.5), else v1beta1. */}}
{{- define "llm-gateway-api.referenceGrantApiVersion" -}}
{{- if .Capabilities.APIVersions.Has "gateway.networking.k8s.io/v1/ReferenceGrant" }}gateway.networking.k8s.io/v1{{ else }}gateway.networking.k8s.io/v1beta1{{ end }}
{{- end }}

{{/* Every rule the schema cannot express; fails once with all messages. */}}
{{- define "llm-gateway-api.validateValues" -}}
{{- $messages := list }}
{{- $g := .Values.gateway }}
{{- if and $g.create (not $g.className) }}
{{- $messages = append $messages "gateway.className: empty while gateway.create=true; set the GatewayClass of your implementation (kubectl get gatewayclass), or set gateway.create=false and gateway.existing.name." }}
{{- end }}
{{- if and (not $g.create) (not $g.existing.name) }}
{{- $messages = append $messages "gateway.existing.name: empty while gateway.create=false; name the Gateway to attach the routes to." }}
{{- end }}
{{- if and $g.create $g.tls.enabled (not $g.tls.secretName) }}
{{- $messages = append $messages "gateway.tls.secretName: empty while gateway.tls.enabled=true; name the TLS Secret in the release namespace." }}
{{- end }}
{{- include "model-catalog.fail" (dict "context" $ "messages" $messages) }}
{{- end }}
