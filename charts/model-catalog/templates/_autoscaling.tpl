{{/*
Autoscaling and drain of one model's Deployment, shared by both model charts
(issue 17). Keys of a resolved entry: autoscaling, drain, hold, replicas (as the
entry set it: "ownReplicas"), engine, port, modelName.
*/}}

{{/* The engine's queue metric (requests waiting in the engine). Argument: the resolved entry. */}}
{{- define "model-catalog.queueMetric" -}}
{{- $q := (.autoscaling | default dict).queue | default dict }}
{{- if $q.metric }}{{ $q.metric }}
{{- else if eq (toString .engine) "llama-server" }}llamacpp:requests_deferred
{{- else }}vllm:num_requests_waiting
{{- end }}
{{- end }}

{{/*
The autoscaler of one model when autoscaling.enabled, empty otherwise: a KEDA
ScaledObject (kind keda) or an autoscaling/v2 HorizontalPodAutoscaler (kind hpa)
on the model's Deployment <serviceName>.
- Demand (wakes from 0): the api-gateway's held + in-flight requests for the
  model, summed over the gateway's pods: KEDA's metrics-api asks the metrics port
  of every ready endpoint of the gateway Service (aggregateFromKubeServiceEndpoints;
  GET /demand lists every model, valueLocation models.<modelName>.demand), or
  Prometheus' sum(gateway_model_demand). Active as soon as it is above 0.
- Queue (1 -> N, only when maxReplicas > 1): the engine's waiting requests summed
  over the model's pods, from the Prometheus series of the model Service (the
  ServiceMonitor's job labels namespace and service).
Argument: dict "context" $ "model" $m "namespace" NS.
*/}}
{{- define "model-catalog.modelAutoscaler" -}}
{{- $m := .model }}
{{- $a := $m.autoscaling | default dict }}
{{- if $a.enabled }}
{{- $ctx := dict "context" .context "model" $m }}
{{- $name := include "model-catalog.serviceName" $m }}
{{- $min := int (kindIs "invalid" $a.minReplicas | ternary 1 $a.minReplicas) }}
{{- $max := int ($a.maxReplicas | default 1) }}
{{- $demand := $a.demand | default dict }}
{{- $queue := $a.queue | default dict }}
{{- $prom := ($a.prometheus | default dict).serverAddress }}
{{- $queueSelector := printf "{namespace=%q,service=%q}" .namespace $name }}
{{- if eq ($a.kind | default "keda") "keda" }}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ $name }}
  namespace: {{ .namespace }}
  labels:
    {{- include "model-catalog.modelLabels" $ctx | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicaCount: {{ $min }}
  maxReplicaCount: {{ $max }}
  pollingInterval: {{ int ($a.pollingInterval | default 15) }}
  cooldownPeriod: {{ int (kindIs "invalid" $a.cooldownPeriod | ternary 300 $a.cooldownPeriod) }}
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        scaleDown:
          stabilizationWindowSeconds: {{ int (kindIs "invalid" $a.scaleDownStabilizationSeconds | ternary 300 $a.scaleDownStabilizationSeconds) }}
  triggers:
    # The api-gateway's held + in-flight requests for "{{ $m.modelName }}": above 0 wakes the model.
    {{- if eq ($demand.source | default "metrics-api") "metrics-api" }}
    # Every ready pod of the gateway's Service is asked (each holds its own requests), summed.
    - type: metrics-api
      name: gateway-demand
      metricType: AverageValue
      metadata:
        url: {{ printf "%s/demand" (trimSuffix "/" (toString $demand.gatewayUrl)) | quote }}
        format: json
        valueLocation: {{ printf "models.%s.demand" $m.modelName | quote }}
        aggregateFromKubeServiceEndpoints: "true"
        aggregationType: sum
        targetValue: {{ int ($demand.targetValue | default 100) | quote }}
        activationTargetValue: "0"
    {{- else }}
    - type: prometheus
      name: gateway-demand
      metricType: AverageValue
      metadata:
        serverAddress: {{ $prom | quote }}
        query: {{ printf "sum(gateway_model_demand{model=%q})" $m.modelName | quote }}
        threshold: {{ int ($demand.targetValue | default 100) | quote }}
        activationThreshold: "0"
    {{- end }}
    {{- if gt $max 1 }}
    # Requests waiting in the engine, over the model's pods: adds pods from 1 to {{ $max }}.
    - type: prometheus
      name: engine-queue
      metricType: AverageValue
      metadata:
        serverAddress: {{ $prom | quote }}
        query: {{ printf "sum(%s%s)" (include "model-catalog.queueMetric" $m) $queueSelector | quote }}
        threshold: {{ int ($queue.targetValue | default 2) | quote }}
        activationThreshold: "0"
    {{- end }}
{{- else }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  namespace: {{ .namespace }}
  labels:
    {{- include "model-catalog.modelLabels" $ctx | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ $min }}
  maxReplicas: {{ $max }}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: {{ int (kindIs "invalid" $a.scaleDownStabilizationSeconds | ternary 300 $a.scaleDownStabilizationSeconds) }}
  metrics:
    # The api-gateway's demand for the model (an External metric of the metrics adapter).
    - type: External
      external:
        metric:
          name: gateway_model_demand
          selector:
            matchLabels:
              model: {{ $m.modelName | quote }}
        target:
          type: AverageValue
          averageValue: {{ int ($demand.targetValue | default 100) | quote }}
    # Requests waiting in each pod's engine (a Pods metric of the metrics adapter).
    - type: Pods
      pods:
        metric:
          name: {{ $queue.metric | default (include "model-catalog.queueMetric" $m | replace ":" "_") }}
        target:
          type: AverageValue
          averageValue: {{ int ($queue.targetValue | default 2) | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Problems of an entry's autoscaling, one line each (empty when fine).
Argument: dict "model" $m (resolved) "where" TEXT "ownReplicas" BOOL (the entry
itself sets replicas) "sharedStorage" BOOL (more pods than one can mount the
model's storage) "storage" TEXT (what it is, for the message) "queueNeeds" TEXT
(what the engine needs to export its queue metric; empty when nothing) "multiNode" BOOL.
*/}}
{{- define "model-catalog.validateAutoscaling" -}}
{{- $m := .model }}
{{- $w := .where }}
{{- $a := $m.autoscaling | default dict }}
{{- if $a.enabled }}
{{- $kind := $a.kind | default "keda" }}
{{- $min := int (kindIs "invalid" $a.minReplicas | ternary 1 $a.minReplicas) }}
{{- $max := int ($a.maxReplicas | default 1) }}
{{- $demand := $a.demand | default dict }}
{{- $prom := ($a.prometheus | default dict).serverAddress }}
{{- if .multiNode }}
{{ $w }}: autoscaling: a model over nodes (nodes > 1) is a LeaderWorkerSet, which this chart does not autoscale; set autoscaling.enabled: false (and replicas), or nodes: 1.
{{- end }}
{{- if .ownReplicas }}
{{ $w }}: replicas {{ int $m.replicas }} together with autoscaling.enabled: the autoscaler owns the pod count (minReplicas..maxReplicas); drop replicas from the entry.
{{- end }}
{{- if gt $min $max }}
{{ $w }}: autoscaling.minReplicas {{ $min }} is above autoscaling.maxReplicas {{ $max }}; raise maxReplicas or lower minReplicas.
{{- end }}
{{- if and (eq $kind "hpa") (eq $min 0) }}
{{ $w }}: autoscaling.minReplicas 0 with kind hpa: a HorizontalPodAutoscaler cannot scale to zero (its HPAScaleToZero feature gate is alpha); set minReplicas: 1, or kind: keda.
{{- end }}
{{- if and (eq $min 0) (not (gt (int (($m.hold | default dict).timeoutSeconds | default 0)) 0)) }}
{{ $w }}: autoscaling.minReplicas 0 while the entry's hold.timeoutSeconds is not above 0: at zero pods the api-gateway would answer 503 at once instead of holding the request that wakes the model. Set hold.timeoutSeconds on this entry (the api-gateway reads it from the same models entry) to more than the model's cold start, or set autoscaling.minReplicas: 1.
{{- end }}
{{- if and (gt $max 1) (not .sharedStorage) }}
{{ $w }}: autoscaling.maxReplicas {{ $max }} with {{ .storage }}: a second pod on another node cannot mount it (Multi-Attach). Set accessModes: [ReadWriteMany] (a StorageClass that supports it), or existingClaim: <a ReadWriteMany PVC>, or autoscaling.maxReplicas: 1.
{{- end }}
{{- if eq $kind "keda" }}
{{- if and (eq ($demand.source | default "metrics-api") "metrics-api") (not $demand.gatewayUrl) }}
{{ $w }}: autoscaling.demand.gatewayUrl is empty: KEDA reads the api-gateway's demand for the model there. Set it to the api-gateway metrics port, e.g. http://api-gateway.<namespace>.svc:9145, or set autoscaling.demand.source: prometheus and autoscaling.prometheus.serverAddress.
{{- end }}
{{- if and (or (eq (toString $demand.source) "prometheus") (gt $max 1)) (not $prom) }}
{{ $w }}: autoscaling.prometheus.serverAddress is empty: {{ if gt $max 1 }}maxReplicas {{ $max }} scales on the engine's queue ({{ include "model-catalog.queueMetric" $m }}){{ else }}demand.source prometheus reads sum(gateway_model_demand){{ end }}, which KEDA reads from Prometheus. Set it (e.g. http://kube-prometheus-stack-prometheus.monitoring.svc:9090), or {{ if gt $max 1 }}set autoscaling.maxReplicas: 1{{ else }}use demand.source: metrics-api{{ end }}.
{{- end }}
{{- end }}
{{- if and (gt $max 1) .queueNeeds }}
{{ $w }}: autoscaling.maxReplicas {{ $max }} scales on {{ include "model-catalog.queueMetric" $m }}, {{ .queueNeeds }}
{{- end }}
{{- end }}
{{- $d := $m.drain | default dict }}
{{- $grace := int ($d.terminationGracePeriodSeconds | default 600) }}
{{- $delay := int (kindIs "invalid" $d.delaySeconds | ternary 15 $d.delaySeconds) }}
{{- if ge $delay $grace }}
{{ $w }}: drain.delaySeconds {{ $delay }} is not below drain.terminationGracePeriodSeconds {{ $grace }}: the pod would be killed before its requests finish. Raise terminationGracePeriodSeconds (the longest generation plus delaySeconds) or lower delaySeconds.
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds of a model pod (drain). Argument: the resolved entry. */}}
{{- define "model-catalog.terminationGracePeriod" -}}
{{- int ((.drain | default dict).terminationGracePeriodSeconds | default 600) }}
{{- end }}

{{/*
The server container's preStop hook, as YAML `lifecycle: {...}`: first sleep
drain.delaySeconds (default 15: more than the api-gateway's discovery interval
plus the DNS TTL, 5 + 5 s; a terminating pod leaves the headless Service's DNS
at once, the gateway's list at its next lookup), then, with drain.waitForIdle
(default true), wait until the engine has nothing in flight. Neither engine
drains on SIGTERM (measured with a stream in flight): llama-server (build 11669)
cancels it and exits in 0.02 s, the stream ends without [DONE]; vLLM (0.32.0
CPU) kills its engine core at once and keeps the connection open with no more
tokens until SIGKILL. So the hook asks llama-server's /slots (curl) or vLLM's
/metrics (python3), once a second. The kubelet ends the hook at
terminationGracePeriodSeconds at the latest. Other engines (sglang, openai):
the delay only. Argument: the resolved entry.
*/}}
{{- define "model-catalog.preStop" -}}
{{- $d := .drain | default dict }}
{{- $delay := int (kindIs "invalid" $d.delaySeconds | ternary 15 $d.delaySeconds) }}
{{- $wait := ne (toString $d.waitForIdle) "false" }}
{{- $port := int .port }}
{{- $script := printf "sleep %d" $delay }}
{{- if and $wait (eq (toString .engine) "llama-server") }}
{{- $script = printf "%s\n# A slot that is processing is a request in flight. A slow answer is a busy engine (ask\n# again); no server, or no /slots (--no-slots), is nothing to wait for.\nwhile :; do\n  out=$(curl -sS --max-time 5 http://127.0.0.1:%d/slots); rc=$?\n  [ $rc -eq 28 ] && continue\n  [ $rc -ne 0 ] && break\n  case $out in *'\"is_processing\":true'*) sleep 1 ;; *) break ;; esac\ndone" $script $port }}
{{- else if and $wait (eq (toString .engine) "vllm") }}
{{- $script = printf "%s\n# requests running or waiting in vLLM\nexec python3 -c '\nimport time, urllib.request\nwhile True:\n    try:\n        text = urllib.request.urlopen(\"http://127.0.0.1:%d/metrics\", timeout=5).read().decode()\n    except Exception as e:\n        if isinstance(getattr(e, \"reason\", e), TimeoutError):\n            continue\n        break\n    if sum(float(l.rsplit(\" \", 1)[1]) for l in text.splitlines() if l.startswith((\"vllm:num_requests_running\", \"vllm:num_requests_waiting\"))) == 0:\n        break\n    time.sleep(1)\n'" $script $port }}
{{- end }}
lifecycle:
  preStop:
    exec:
      command:
        - /bin/sh
        - -c
        - {{ $script | quote }}
{{- end }}
