{{/*
Names and labels: model-catalog's, the same rule in every chart of the stack (these names stay
as short aliases for this chart's templates).
*/}}
{{- define "api-gateway.name" -}}
{{- include "model-catalog.name" . }}
{{- end }}

{{/* Full name of the chart's objects (the Service is global.gateway.serviceName). */}}
{{- define "api-gateway.fullname" -}}
{{- include "model-catalog.fullname" . }}
{{- end }}

{{- define "api-gateway.labels" -}}
{{ include "model-catalog.labels" . }}
{{- end }}

{{/* Selector labels: never the version or user labels (a selector change breaks upgrades). */}}
{{- define "api-gateway.selectorLabels" -}}
{{ include "model-catalog.selectorLabels" . }}
{{- end }}

{{- define "api-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "api-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Namespace of the model Services. */}}
{{- define "api-gateway.modelNamespace" -}}
{{- .Values.global.modelNamespace | default .Release.Namespace }}
{{- end }}

{{/*
The routing table, as YAML `routes: [...]`: model-catalog.routes (name, aliases,
adapters, kind, service, podsService, namespace, port, healthPath) plus what the gateway
needs: how to discover the model's pods (`discovery.srv`: the SRV name of its
headless Service, one record per ready pod with its own port; or
`discovery.servers` from routing.endpoints), the Host header, the health path,
and the balancing settings (the entry's `balancing` over the chart's, key by key).
*/}}
{{- define "api-gateway.routes" -}}
{{- $routes := list }}
{{- $domain := include "model-catalog.clusterDomain" . }}
{{- $catalog := include "model-catalog.routes" (dict "models" .Values.models "namespace" (include "api-gateway.modelNamespace" .)) | fromYaml }}
{{- range $r := $catalog.routes }}
{{- $balancing := deepCopy $.Values.balancing }}
{{- range $k, $v := ($r.balancing | default dict) }}
{{- if not (kindIs "invalid" $v) }}
{{- $_ := set $balancing $k $v }}
{{- end }}
{{- end }}
{{- /* llama-server closes its connection after a stream while promising keep-alive: its streams
ask for Connection: close, so nginx never reuses a connection the server is closing. */}}
{{- $hold := deepCopy $.Values.hold }}
{{- range $k, $v := ($r.hold | default dict) }}
{{- if not (kindIs "invalid" $v) }}
{{- $_ := set $hold $k $v }}
{{- end }}
{{- end }}
{{- $route := dict "name" $r.name "aliases" $r.aliases "adapters" $r.adapters "kind" $r.kind "balancing" $balancing "hold" $hold
    "healthPath" ($r.healthPath | default $.Values.healthCheck.path) "closeAfterStream" (eq $r.kind "ramalama") }}
{{- $static := get $.Values.routing.endpoints $r.name }}
{{- if $static }}
{{- $servers := list }}
{{- range (kindIs "string" $static | ternary (list $static) $static) }}
{{- $servers = append $servers (dict "host" (regexReplaceAll ":[0-9]+$" . "") "port" (regexReplaceAll "^.*:" . "" | int)) }}
{{- end }}
{{- $_ := set $route "discovery" (dict "servers" $servers) }}
{{- $_ := set $route "host" (first $servers).host }}
{{- else }}
{{- $_ := set $route "discovery" (dict "srv" (printf "_http._tcp.%s.%s.svc.%s" $r.podsService $r.namespace $domain)) }}
{{- $_ := set $route "host" (printf "%s.%s.svc.%s" $r.service $r.namespace $domain) }}
{{- end }}
{{- $routes = append $routes $route }}
{{- end }}
{{- toYaml (dict "routes" $routes) }}
{{- end }}

{{/* Budget settings for gateway.json: Redis host, port, database and the password file, when set. */}}
{{- define "api-gateway.budgets" -}}
{{- $b := .Values.budgets }}
{{- $out := dict "failMode" $b.failMode "keyPrefix" $b.redis.keyPrefix }}
{{- with $b.redis.address }}
{{- $redis := dict "host" (regexReplaceAll ":[0-9]+$" . "") "port" (regexReplaceAll "^.*:" . "" | int) "database" (int $b.redis.database) "timeoutMs" (int $b.redis.timeoutMs) }}
{{- if $b.redis.passwordSecret.name }}
{{- $_ := set $redis "passwordFile" (printf "%s/%s" $.Values.paths.redisSecretDir $b.redis.passwordSecret.key) }}
{{- end }}
{{- $_ := set $out "redis" $redis }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* nginx location regex of the routed endpoints (model-catalog.gatewayEndpoints).
\z, not $: PCRE's $ also matches before a final newline (/v1/chat/completions%0A). */}}
{{- define "api-gateway.locationRegex" -}}
{{- $alternatives := list }}
{{- range (include "model-catalog.gatewayEndpoints" . | fromYamlArray) }}
{{- $alternatives = append $alternatives (regexQuoteMeta .) }}
{{- end }}
{{- printf "^(?:%s)\\z" (join "|" $alternatives) }}
{{- end }}

{{/* routing.defaultModel resolved to a model name; empty when there is none. */}}
{{- define "api-gateway.defaultModel" -}}
{{- $want := .Values.routing.defaultModel }}
{{- $routes := (include "api-gateway.routes" . | fromYaml).routes }}
{{- if eq $want "" }}
{{- with first $routes }}{{ .name }}{{ end }}
{{- else if ne $want "none" }}
{{- range $routes }}{{ if or (eq .name $want) (has $want .aliases) }}{{ .name }}{{ end }}{{ end }}
{{- end }}
{{- end }}

{{/* The files of the ConfigMap, as YAML: nginx.conf (through tpl), routes.json, gateway.json, Lua modules. */}}
{{- define "api-gateway.configFiles" -}}
{{- $files := dict "nginx.conf" (tpl (.Files.Get "files/nginx.conf") .) }}
{{- $default := include "api-gateway.defaultModel" . }}
{{- $routes := (include "api-gateway.routes" . | fromYaml).routes }}
{{- $_ := set $files "routes.json" (printf "%s\n" (toPrettyJson (dict "defaultModel" $default "routes" $routes))) }}
{{- $settings := dict
    "auth" (dict "enabled" .Values.auth.enabled "keysFile" (printf "%s/%s" .Values.paths.secretsDir .Values.auth.secretKey))
    "body" (dict "maxSize" .Values.body.maxSize)
    "endpoints" (include "model-catalog.gatewayEndpoints" . | fromYamlArray)
    "cors" .Values.cors
    "usage" (dict "enabled" .Values.usage.enabled)
    "budgets" (include "api-gateway.budgets" . | fromYaml)
    "discovery" (dict "intervalSeconds" .Values.routing.discovery.intervalSeconds
                      "timeoutMs" (mul .Values.routing.discovery.timeoutSeconds 1000)
                      "servers" .Values.routing.discovery.servers)
    "reload" (dict "intervalSeconds" .Values.routing.reload.intervalSeconds)
    "healthCheck" (dict "enabled" .Values.healthCheck.enabled "intervalSeconds" .Values.healthCheck.intervalSeconds
                        "timeoutSeconds" .Values.healthCheck.timeoutSeconds
                        "failTimeoutSeconds" .Values.healthCheck.failTimeoutSeconds
                        "retryAfterSeconds" .Values.healthCheck.retryAfterSeconds) }}
{{- $_ = set $files "gateway.json" (printf "%s\n" (toPrettyJson $settings)) }}
{{- range $path, $_ := .Files.Glob "files/lua/*.lua" }}
{{- $_ := set $files (base $path) ($.Files.Get $path) }}
{{- end }}
{{- toYaml $files }}
{{- end }}

{{/* Every rule the schema cannot express; fails once with all messages. */}}
{{- define "api-gateway.validateValues" -}}
{{- $messages := list (include "model-catalog.validate" .Values.models) }}
{{- $routes := (include "api-gateway.routes" . | fromYaml).routes }}
{{- $names := list }}
{{- range $routes }}{{ $names = append $names .name }}{{ end }}
{{- $want := .Values.routing.defaultModel }}
{{- $adapterOf := dict }}
{{- range $routes }}{{ $r := . }}{{ range .adapters }}{{ $_ := set $adapterOf .name $r.name }}{{ end }}{{ end }}
{{- if hasKey $adapterOf $want }}
{{- $messages = append $messages (printf "routing.defaultModel (%q) is a LoRA adapter of %s: a request without \"model\" would get %s itself, not the adapter; name a model, \"\" (the first model) or \"none\"." $want (get $adapterOf $want) (get $adapterOf $want)) }}
{{- else if and (ne $want "") (ne $want "none") (not (include "api-gateway.defaultModel" .)) }}
{{- $messages = append $messages (printf "routing.defaultModel (%q): no enabled model has this name or alias; use one of %s, \"\" (the first model) or \"none\"." $want (join ", " $names)) }}
{{- end }}
{{- range $name, $addrs := .Values.routing.endpoints }}
{{- if not (has $name $names) }}
{{- $messages = append $messages (printf "routing.endpoints.%s: no enabled model has this modelName (routes: %s); remove it or fix the name." $name (join ", " $names)) }}
{{- end }}
{{- range $addr := (kindIs "string" $addrs | ternary (list $addrs) $addrs) }}
{{- $port := regexReplaceAll "^.*:" $addr "" | int }}
{{- if or (lt $port 1) (gt $port 65535) }}
{{- $messages = append $messages (printf "routing.endpoints.%s: port %d of %q is not a TCP port (1-65535)." $name $port $addr) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.auth.enabled (not .Values.auth.existingSecret) }}
{{- $messages = append $messages "auth.existingSecret: auth.enabled needs the name of an existing Secret holding the API keys file (key auth.secretKey)." }}
{{- end }}
{{- if eq (toString .Values.image.tag) "latest" }}
{{- $messages = append $messages "image.tag (\"latest\"): pin a version such as 1.27.1.2-0-bookworm; a floating tag changes under a running release." }}
{{- end }}
{{- if eq (int .Values.metrics.port) (int .Values.containerPort) }}
{{- $messages = append $messages (printf "metrics.port (%d): must differ from containerPort." (int .Values.metrics.port)) }}
{{- end }}
{{- $rule := .Values.metrics.prometheusRule }}
{{- if and $rule.enabled (not (or $rule.modelDown.enabled $rule.errorRatio.enabled $rule.timeToFirstToken.enabled $rule.queueGrowing.enabled)) }}
{{- $messages = append $messages "metrics.prometheusRule: enabled with every alert off (modelDown, errorRatio, timeToFirstToken, queueGrowing); turn one on or set metrics.prometheusRule.enabled to false." }}
{{- end }}
{{- include "model-catalog.fail" (dict "context" $ "messages" $messages) }}
{{- end }}

{{/* PodDisruptionBudget API: policy/v1 unless the cluster only serves v1beta1 (Kubernetes 1.20). */}}
{{- define "api-gateway.pdb.apiVersion" -}}
{{- include "model-catalog.pdbApiVersion" . }}
{{- end }}

{{/* HPA API: autoscaling/v2 unless the cluster only serves v2beta2 (Kubernetes 1.20 to 1.22). */}}
{{- define "api-gateway.hpa.apiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "autoscaling/v2beta2/HorizontalPodAutoscaler") (not (.Capabilities.APIVersions.Has "autoscaling/v2/HorizontalPodAutoscaler")) }}autoscaling/v2beta2{{ else }}autoscaling/v2{{ end }}
{{- end }}
