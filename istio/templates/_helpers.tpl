{{/*
Name of the objects: the release name (e.g. llm-istio), cut to 63 characters. The exposure
objects are named after the release alone, unlike model-catalog.fullname: one release of this
chart is one exposure, and the Argo CD Application names it. Labels, names of the chart and
the validation come from model-catalog.
*/}}
{{- define "llm-istio.fullname" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
apiVersion of an Istio kind. Argument: dict "context" $ "group" "networking.istio.io" "kind" KIND.
v1 unless the cluster serves only v1beta1 (Istio < 1.22), or what .Values.apiVersion forces.
*/}}
{{- define "llm-istio.apiVersion" -}}
{{- $caps := .context.Capabilities.APIVersions }}
{{- $version := .context.Values.apiVersion }}
{{- if not $version }}
{{- $v1 := printf "%s/v1/%s" .group .kind }}
{{- $v1beta1 := printf "%s/v1beta1/%s" .group .kind }}
{{- $version = ternary "v1beta1" "v1" (and ($caps.Has $v1beta1) (not ($caps.Has $v1))) }}
{{- end }}
{{- printf "%s/%s" .group $version }}
{{- end }}

{{/* Paths routed to the api-gateway, as a YAML list: the gateway's own (model-catalog.gatewayPaths,
the list its nginx.conf is made from), then routes.extraApiPaths and the deprecated routes.apiPaths. */}}
{{- define "llm-istio.apiPaths" -}}
{{- concat (include "model-catalog.gatewayPaths" . | fromYamlArray) .Values.routes.extraApiPaths .Values.routes.apiPaths | uniq | toYaml }}
{{- end }}

{{/* Cluster DNS name of the api-gateway Service (global.clusterDomain). */}}
{{- define "llm-istio.apiGatewayHost" -}}
{{- include "model-catalog.gatewayFqdn" . }}
{{- end }}

{{/* Cluster DNS name of the Open WebUI Service (global.clusterDomain). */}}
{{- define "llm-istio.openwebuiHost" -}}
{{- include "model-catalog.serviceFqdn" (dict "context" . "name" .Values.openwebui.serviceName "namespace" (.Values.openwebui.namespace | default .Release.Namespace)) }}
{{- end }}

{{/* The Gateway the routes bind to: "<namespace>/<name>". */}}
{{- define "llm-istio.gatewayRef" -}}
{{- if .Values.gateway.create }}
{{- printf "%s/%s" .Release.Namespace (include "llm-istio.fullname" .) }}
{{- else }}
{{- .Values.gateway.existing }}
{{- end }}
{{- end }}

{{/* timeout and retries of every route (the same for ingress and mesh routes). */}}
{{- define "llm-istio.routePolicy" -}}
timeout: {{ .Values.routes.timeout }}
retries:
  attempts: {{ .Values.routes.retries.attempts }}
  {{- if gt (int .Values.routes.retries.attempts) 0 }}
  retryOn: {{ .Values.routes.retries.retryOn }}
  {{- end }}
{{- end }}

{{/* Every rule the schema cannot express; fails once with all messages. */}}
{{- define "llm-istio.validateValues" -}}
{{- $messages := list (include "model-catalog.validate" .Values.models) }}
{{- if and (not .Values.gateway.create) (not .Values.gateway.existing) }}
{{- $messages = append $messages "gateway.existing: empty while gateway.create=false; name the Gateway to bind to as <namespace>/<name>, or set gateway.create=true." }}
{{- end }}
{{- if and .Values.gateway.create .Values.gateway.tls.enabled (not .Values.gateway.tls.credentialName) }}
{{- $messages = append $messages "gateway.tls.credentialName: empty while gateway.tls.enabled=true; name the TLS Secret (in the ingress gateway's namespace)." }}
{{- end }}
{{- if and .Values.gateway.create (not .Values.hosts) }}
{{- $messages = append $messages "hosts: empty; list at least one host name (\"*\" accepts any)." }}
{{- end }}
{{- include "model-catalog.fail" (dict "context" $ "messages" $messages) }}
{{- end }}
