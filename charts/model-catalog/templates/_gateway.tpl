{{/*
The api-gateway's routed API, the one list: nginx.conf's routed location, the
gateway's 404 message and the paths istio/ and gateway-api/ send to the gateway
all come from here (tests/unit/test_endpoints.py checks that they agree).
*/}}

{{/* POST endpoints routed by the body's "model", as a YAML list. */}}
{{- define "model-catalog.gatewayEndpoints" -}}
- /v1/chat/completions
- /v1/completions
- /v1/embeddings
- /v1/responses
- /v1/rerank
- /v1/score
- /v2/rerank
- /tokenize
- /detokenize
- /pooling
- /classify
- /score
- /rerank
{{- end }}

{{/*
Path prefixes an exposure (Istio VirtualService, Gateway API HTTPRoute) sends to
the gateway, as a YAML list: /v1 (the routed /v1 endpoints, GET /v1/models, and
the gateway's JSON 404 for unknown /v1 paths), then every routed endpoint
outside /v1. Each prefix matches the path itself and everything below it.
*/}}
{{- define "model-catalog.gatewayPaths" -}}
{{- $paths := list "/v1" }}
{{- range (include "model-catalog.gatewayEndpoints" . | fromYamlArray) }}
{{- if not (hasPrefix "/v1/" .) }}
{{- $paths = append $paths . }}
{{- end }}
{{- end }}
{{- toYaml $paths }}
{{- end }}
