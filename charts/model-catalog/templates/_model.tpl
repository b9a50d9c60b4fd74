{{/*
The per-model objects and pod pieces that charts/vllm-models and
charts/ramalama-models render the same way, from a resolved entry: the entry
with the chart's `defaults` filled in (model-catalog.resolveEntry) and the
chart's derived keys set. Keys read here: modelName, engine (label value),
replicas, port, healthPath, probes, service, podDisruptionBudget,
serviceMonitor, podLabels, podAnnotations, runtimeClassName, priorityClassName,
nodeSelector, tolerations, affinity, topologySpreadConstraints,
initContainers, sidecars, extraVolumes, extraVolumeMounts, chatTemplate.
Per-model helpers take dict "context" $ "model" $m.
*/}}

{{/*
The settings groups whose maps merge key by key (at every depth) between an
entry and `defaults`, in both model charts; every other key an entry sets
replaces the default whole. As a YAML list.
*/}}
{{- define "model-catalog.mergeGroups" -}}
{{- toYaml (list "autoscaling" "drain" "hfToken" "image" "inferencePool" "podDisruptionBudget" "probes" "resources" "service" "serviceMonitor") }}
{{- end }}

{{/* An entry with `defaults` filled in by the rule above. Argument: dict "model" ENTRY "defaults" MAP. */}}
{{- define "model-catalog.resolveEntry" -}}
{{- include "model-catalog.withDefaults" (dict "model" .model "defaults" .defaults "merge" (include "model-catalog.mergeGroups" . | fromYamlArray)) }}
{{- end }}

{{/* Selector labels of one model's pods: name, instance and llm-stack/model. */}}
{{- define "model-catalog.modelSelectorLabels" -}}
{{ include "model-catalog.selectorLabels" .context }}
llm-stack/model: {{ .model.modelName }}
{{- end }}

{{/* Labels of one model's objects. */}}
{{- define "model-catalog.modelLabels" -}}
{{ include "model-catalog.labels" .context }}
app.kubernetes.io/component: model-server
llm-stack/model: {{ .model.modelName }}
llm-stack/engine: {{ .model.engine }}
{{- end }}

{{/*
Labels of one model's pods, as YAML: the entry's podLabels under the chart's
(selector labels, component, engine, part-of: the api-gateway's NetworkPolicy
selects model pods by part-of), which always win. No chart version: a chart
upgrade that changes nothing in the pod does not restart a loaded model.
*/}}
{{- define "model-catalog.modelPodLabels" -}}
{{- $own := include "model-catalog.modelSelectorLabels" . | fromYaml }}
{{- $_ := set $own "app.kubernetes.io/component" "model-server" }}
{{- $_ := set $own "llm-stack/engine" .model.engine }}
{{- $_ := set $own "app.kubernetes.io/part-of" "llm-stack" }}
{{- include "model-catalog.mergeLabels" (dict "own" $own "extra" .model.podLabels) }}
{{- end }}

{{/*
Both Services of one model: <kind>-<modelName> (service.type, default ClusterIP)
on port 8080, where the api-gateway and clients send requests, and the headless
<kind>-<modelName>-pods on the container port, whose DNS SRV records list every
ready pod. "selector" (optional) narrows both to the pods that serve HTTP (the
leader of a multi-node group). Argument: dict "context" $ "model" $m "namespace" NS
"selector" MAP.
*/}}
{{- define "model-catalog.modelServices" -}}
{{- $m := .model }}
{{- $ctx := dict "context" .context "model" $m }}
{{- $svc := $m.service | default dict }}
{{- $selector := include "model-catalog.modelSelectorLabels" $ctx }}
{{- with .selector }}
{{- $merged := $selector | fromYaml }}
{{- range $k, $v := . }}
{{- $_ := set $merged $k $v }}
{{- end }}
{{- $selector = toYaml $merged }}
{{- end }}
# The api-gateway routes "{{ $m.modelName }}" here: the name and port come from model-catalog.
apiVersion: v1
kind: Service
metadata:
  name: {{ include "model-catalog.serviceName" $m }}
  namespace: {{ .namespace }}
  labels:
    {{- include "model-catalog.modelLabels" $ctx | nindent 4 }}
  {{- with $svc.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $svc.type | default "ClusterIP" }}
  selector:
    {{- $selector | nindent 4 }}
  ports:
    - name: http
      port: {{ include "model-catalog.servicePort" $m }}
      targetPort: http
      protocol: TCP
---
# Headless: cluster DNS answers _http._tcp.<name> with one SRV record per ready pod and its own
# port, so the api-gateway can balance over the pods itself.
apiVersion: v1
kind: Service
metadata:
  name: {{ include "model-catalog.podsServiceName" $m }}
  namespace: {{ .namespace }}
  labels:
    {{- include "model-catalog.modelLabels" $ctx | nindent 4 }}
    llm-stack/service: pods
spec:
  clusterIP: None
  publishNotReadyAddresses: false
  selector:
    {{- $selector | nindent 4 }}
  ports:
    - name: http
      port: {{ int $m.port }}
      targetPort: http
      protocol: TCP
{{- end }}

{{/*
One model's PodDisruptionBudget when podDisruptionBudget.enabled (minAvailable
when set, else maxUnavailable, default 1); empty otherwise.
Argument: dict "context" $ "model" $m "namespace" NS.
*/}}
{{- define "model-catalog.modelPodDisruptionBudget" -}}
{{- $m := .model }}
{{- $pdb := $m.podDisruptionBudget | default dict }}
{{- if $pdb.enabled }}
{{- $ctx := dict "context" .context "model" $m }}
{{- $api := include "model-catalog.pdbApiVersion" .context }}
apiVersion: {{ $api }}
kind: PodDisruptionBudget
metadata:
  name: {{ include "model-catalog.serviceName" $m }}
  namespace: {{ .namespace }}
  labels:
    {{- include "model-catalog.modelLabels" $ctx | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" $pdb.minAvailable) }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ kindIs "invalid" $pdb.maxUnavailable | ternary 1 $pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "model-catalog.modelSelectorLabels" $ctx | nindent 6 }}
  {{- /* The field exists in policy/v1 of Kubernetes 1.26 and later only. */}}
  {{- if and $pdb.unhealthyPodEvictionPolicy (eq $api "policy/v1") (semverCompare ">=1.26-0" .context.Capabilities.KubeVersion.Version) }}
  unhealthyPodEvictionPolicy: {{ $pdb.unhealthyPodEvictionPolicy }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
One model's Prometheus operator ServiceMonitor when serviceMonitor.enabled;
empty otherwise. The chart's labels win over serviceMonitor.labels.
Argument: dict "context" $ "model" $m "namespace" NS.
*/}}
{{- define "model-catalog.modelServiceMonitor" -}}
{{- $m := .model }}
{{- $sm := $m.serviceMonitor | default dict }}
{{- if $sm.enabled }}
{{- $ctx := dict "context" .context "model" $m }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "model-catalog.serviceName" $m }}
  namespace: {{ .namespace }}
  labels:
    {{- include "model-catalog.mergeLabels" (dict "own" (include "model-catalog.modelLabels" $ctx | fromYaml) "extra" $sm.labels) | nindent 4 }}
spec:
  selector:
    matchLabels:
      {{- include "model-catalog.modelSelectorLabels" $ctx | nindent 6 }}
    # Not the headless <name>-pods Service: it lists the same pods, each would be scraped twice.
    matchExpressions:
      - key: llm-stack/service
        operator: NotIn
        values: [pods]
  namespaceSelector:
    matchNames:
      - {{ .namespace }}
  endpoints:
    - port: http
      path: {{ $sm.path | default "/metrics" }}
      interval: {{ $sm.interval | default "30s" }}
      {{- with $sm.scrapeTimeout }}
      scrapeTimeout: {{ . }}
      {{- end }}
{{- end }}
{{- end }}

{{/* Seconds the startup probe allows (periodSeconds x failureThreshold). Argument: the resolved entry. */}}
{{- define "model-catalog.startupSeconds" -}}
{{- $s := (.probes | default dict).startup | default dict }}
{{- mul (int ($s.periodSeconds | default 10)) (int ($s.failureThreshold | default 60)) }}
{{- end }}

{{/*
startupProbe, readinessProbe and livenessProbe of the server container, as YAML,
all on healthPath at the port named http, with the timings of `probes`. No
initial delay: liveness and readiness start only once the startup probe passed,
however long the load took. Argument: the resolved entry.
*/}}
{{- define "model-catalog.probes" -}}
{{- $p := .probes | default dict }}
{{- $path := .healthPath | default "/health" }}
{{- range $probe, $key := dict "startupProbe" "startup" "readinessProbe" "readiness" "livenessProbe" "liveness" }}
{{- $t := get $p $key | default dict }}
{{ $probe }}:
  httpGet:
    path: {{ $path }}
    port: http
  periodSeconds: {{ int ($t.periodSeconds | default 10) }}
  timeoutSeconds: {{ int ($t.timeoutSeconds | default 5) }}
  failureThreshold: {{ int ($t.failureThreshold | default 3) }}
{{- end }}
{{- end }}

{{/*
Chat templates. `chatTemplate` holding `{`, `}` or a line break is a template
(the rule vLLM applies to its own --chat-template): it goes into a ConfigMap,
mounted read-only at model-catalog.chatTemplateDir, so the root filesystem stays
read-only and the template never passes through a command line. Any other value
is a path in the image or a name the engine knows, passed as it is.
*/}}
{{- define "model-catalog.chatTemplateInline" -}}
{{- if and .chatTemplate (regexMatch "[{}\n]" (toString .chatTemplate)) }}true{{ end }}
{{- end }}

{{- define "model-catalog.chatTemplateDir" -}}/etc/llm-stack/chat-template{{- end }}

{{/* ConfigMap name of a model's inline chat template. Argument: the resolved entry. */}}
{{- define "model-catalog.chatTemplateConfigMapName" -}}
{{- printf "%s-chat-template" (include "model-catalog.serviceName" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The file the engine reads: the mounted template, or chatTemplate itself. Argument: the resolved entry. */}}
{{- define "model-catalog.chatTemplateFile" -}}
{{- if include "model-catalog.chatTemplateInline" . }}
{{- printf "%s/chat-template.jinja" (include "model-catalog.chatTemplateDir" .) }}
{{- else }}
{{- .chatTemplate }}
{{- end }}
{{- end }}

{{/* The ConfigMap of an inline chat template; empty otherwise. Argument: dict "context" $ "model" $m "namespace" NS. */}}
{{- define "model-catalog.chatTemplateConfigMap" -}}
{{- if include "model-catalog.chatTemplateInline" .model }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "model-catalog.chatTemplateConfigMapName" .model }}
  namespace: {{ .namespace }}
  labels:
    {{- include "model-catalog.modelLabels" (dict "context" .context "model" .model) | nindent 4 }}
{{- /* base64 in binaryData: a Jinja template is full of {{ and }}, which in the rendered
manifests would read as unrendered Helm (the render checks refuse it); the mounted file is the
template itself. */}}
binaryData:
  chat-template.jinja: {{ .model.chatTemplate | b64enc }}
{{- end }}
{{- end }}

{{/* The volume and mount of an inline chat template, as YAML {volumes: [...], volumeMounts: [...]}. Argument: the resolved entry. */}}
{{- define "model-catalog.chatTemplateVolume" -}}
{{- $out := dict "volumes" list "volumeMounts" list }}
{{- if include "model-catalog.chatTemplateInline" . }}
{{- $_ := set $out "volumes" (list (dict "name" "chat-template" "configMap" (dict "name" (include "model-catalog.chatTemplateConfigMapName" .) "defaultMode" 0444))) }}
{{- $_ := set $out "volumeMounts" (list (dict "name" "chat-template" "mountPath" (include "model-catalog.chatTemplateDir" .) "readOnly" true)) }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
A model's Deployment: the pod skeleton both model charts share. The chart gives
its server container (probes included, its own mounts first), its own init
containers and volumes, pod annotations (checksums: they win over the entry's
podAnnotations), the pod securityContext, the strategy and the rollout deadline;
the entry adds initContainers (after the chart's), sidecars (after the server),
extraVolumes (after the chart's), scheduling and priority.
Argument: dict "context" $ "model" $m "namespace" NS "container" MAP
"initContainers" LIST "volumes" LIST "podAnnotations" MAP "podSecurityContext" MAP
"strategy" MAP "serviceAccountName" STRING "progressDeadlineSeconds" INT.
*/}}
{{- define "model-catalog.modelDeployment" -}}
{{- $m := .model }}
{{- $ctx := dict "context" .context "model" $m }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "model-catalog.serviceName" $m }}
  namespace: {{ .namespace }}
  labels:
    {{- include "model-catalog.modelLabels" $ctx | nindent 4 }}
spec:
  {{- if not ($m.autoscaling | default dict).enabled }}
  replicas: {{ int $m.replicas }}
  {{- end }}
  {{- /* Autoscaled: no replicas here, or every upgrade would reset the autoscaler's count. */}}
  revisionHistoryLimit: 3
  # At least the startup probe's budget plus the image pull, so a long first load is not "failed".
  progressDeadlineSeconds: {{ int .progressDeadlineSeconds }}
  {{- with .strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "model-catalog.modelSelectorLabels" $ctx | nindent 6 }}
  template:
    {{- include "model-catalog.modelPodTemplate" . | trim | nindent 4 }}
{{- end }}

{{/*
A model's pod template (metadata and spec), as YAML: the pod skeleton both model
charts share, in a Deployment (model-catalog.modelDeployment) or in a
LeaderWorkerSet's leader and worker templates (charts/vllm-models). Takes the
arguments of model-catalog.modelDeployment, plus "podLabels" MAP: labels the
chart adds to these pods (e.g. a leader/worker role; they win, like the chart's
own, over the entry's podLabels).
*/}}
{{- define "model-catalog.modelPodTemplate" -}}
{{- $m := .model }}
{{- $ctx := dict "context" .context "model" $m }}
{{- $labels := include "model-catalog.modelPodLabels" $ctx | fromYaml }}
{{- range $k, $v := (.podLabels | default dict) }}
{{- $_ := set $labels $k $v }}
{{- end }}
metadata:
  labels:
    {{- toYaml $labels | nindent 4 }}
  {{- with (include "model-catalog.mergeLabels" (dict "own" .podAnnotations "extra" $m.podAnnotations) | fromYaml) }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with .serviceAccountName }}
  serviceAccountName: {{ . }}
  {{- end }}
  # The servers never call the Kubernetes API.
  automountServiceAccountToken: false
  # Sized for the longest generation: the preStop hook drains within it (drain).
  terminationGracePeriodSeconds: {{ include "model-catalog.terminationGracePeriod" $m }}
  # Service links would inject <SERVICE>_PORT=tcp://... variables (VLLM_PORT crashes vLLM).
  enableServiceLinks: false
  {{- with (include "model-catalog.imagePullSecrets" .context.Values.imagePullSecrets | trim) }}
  imagePullSecrets:
    {{- . | nindent 4 }}
  {{- end }}
  {{- with $m.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  {{- with $m.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $m.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $m.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $m.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $m.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with (concat (.initContainers | default list) ($m.initContainers | default list)) }}
  initContainers:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $server := deepCopy .container }}
  {{- if and $server.ports (not $server.lifecycle) }}
  {{- /* The container that serves HTTP drains before its engine gets SIGTERM. */}}
  {{- $_ := set $server "lifecycle" (include "model-catalog.preStop" $m | fromYaml).lifecycle }}
  {{- end }}
  containers:
    {{- toYaml (prepend ($m.sidecars | default list) $server) | nindent 4 }}
  {{- with (concat (.volumes | default list) ($m.extraVolumes | default list)) }}
  volumes:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
Problems of a resolved entry's pod pieces, one line each (empty when fine): an
extra volume, mount path or container name that the chart uses already, and
env entries of any container that carry a secret as a plain value.
Argument: dict "model" $m "where" "models[i] (name)" "volumes" CHART_VOLUME_NAMES
"mounts" CHART_MOUNT_PATHS "containers" CHART_CONTAINER_NAMES.
*/}}
{{- define "model-catalog.validatePod" -}}
{{- $m := .model }}
{{- $w := .where }}
{{- $volumes := .volumes | default list }}
{{- range $v := ($m.extraVolumes | default list) }}
{{- if has $v.name $volumes }}
{{ $w }}: extraVolumes: the volume name {{ $v.name | quote }} is the chart's own ({{ join ", " $volumes }}); pick another name.
{{- end }}
{{- $volumes = append $volumes $v.name }}
{{- end }}
{{- $mounts := .mounts | default list }}
{{- range $v := ($m.extraVolumeMounts | default list) }}
{{- if has $v.mountPath $mounts }}
{{ $w }}: extraVolumeMounts: {{ $v.mountPath | quote }} is mounted by the chart already ({{ join ", " $mounts }}); mount at another path.
{{- end }}
{{- if not (has $v.name $volumes) }}
{{ $w }}: extraVolumeMounts: no volume named {{ $v.name | quote }}; add it to extraVolumes or use one of {{ join ", " $volumes }}.
{{- end }}
{{- $mounts = append $mounts $v.mountPath }}
{{- end }}
{{- $names := .containers | default list }}
{{- range $key := list "initContainers" "sidecars" }}
{{- range $c := (get $m $key | default list) }}
{{- if has $c.name $names }}
{{ $w }}: {{ $key }}: the container name {{ $c.name | quote }} is taken ({{ join ", " $names }}); pick another name.
{{- end }}
{{- $names = append $names $c.name }}
{{- include "model-catalog.plainSecretEnv" (dict "where" (printf "%s %s[%s]" $w $key $c.name) "env" $c.env) }}
{{- end }}
{{- end }}
{{- include "model-catalog.plainSecretEnv" (dict "where" $w "env" $m.env) }}
{{- $res := $m.resources | default dict }}
{{- range $r := list "cpu" "memory" }}
{{- $req := include "model-catalog.quantity" (dig "requests" $r "" $res) }}
{{- $lim := include "model-catalog.quantity" (dig "limits" $r "" $res) }}
{{- if and $req $lim (gt (float64 $req) (float64 $lim)) }}
{{ $w }}: resources.requests.{{ $r }} {{ dig "requests" $r "" $res }} is above resources.limits.{{ $r }} {{ dig "limits" $r "" $res }} (the API server refuses the pod); lower the request (the entry's or defaults.resources.requests.{{ $r }}) or raise the limit.
{{- end }}
{{- end }}
{{- end }}

{{/*
A Kubernetes quantity as a plain number (1Gi -> 1073741824, 500m -> 0.5, 2 -> 2), or
empty for an empty value or a form this does not read (exponents). Argument: the quantity.
*/}}
{{- define "model-catalog.quantity" -}}
{{- $q := toString . }}
{{- if regexMatch "^[0-9]+(\\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$" $q }}
{{- $factor := get (dict "" "1" "m" "0.001" "k" "1000" "M" "1000000" "G" "1000000000" "T" "1000000000000" "P" "1000000000000000" "E" "1000000000000000000" "Ki" "1024" "Mi" "1048576" "Gi" "1073741824" "Ti" "1099511627776" "Pi" "1125899906842624" "Ei" "1152921504606846976") (regexReplaceAll "^[0-9.]+" $q "") }}
{{- mulf (float64 (regexReplaceAll "[a-zA-Z]+$" $q "")) (float64 $factor) }}
{{- end }}
{{- end }}
