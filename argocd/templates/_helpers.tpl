{{/* Names and labels of the chart and the validation come from model-catalog. */}}

{{/* The enabled Applications, as YAML `applications: {name: entry}`. */}}
{{- define "llm-stack.enabled" -}}
{{- $out := dict }}
{{- range $name, $app := .Values.applications }}
{{- if $app.enabled }}
{{- $_ := set $out $name $app }}
{{- end }}
{{- end }}
{{- toYaml (dict "applications" $out) }}
{{- end }}

{{/*
spec.syncPolicy of an Application: the stack's policy plus the Application's own syncOptions.
Argument: dict "context" $ "app" ENTRY.
*/}}
{{- define "llm-stack.syncPolicy" -}}
{{- $policy := deepCopy .context.Values.syncPolicy }}
{{- /* A model chart with no model of its kind renders nothing; without allowEmpty Argo CD's
automated sync refuses to prune its last model ("auto-sync will wipe out all resources"). */}}
{{- if and .app.allowEmpty $policy.automated }}
{{- $_ := set $policy "automated" (merge (dict "allowEmpty" true) $policy.automated) }}
{{- end }}
{{- $options := concat ($policy.syncOptions | default list) (.app.syncOptions | default list) | uniq }}
{{- if $options }}
{{- $_ := set $policy "syncOptions" $options }}
{{- end }}
{{- toYaml $policy }}
{{- end }}

{{/*
The chart source of an Application, rendered as Argo CD's `helm` block. Value files of the shared list
come from the `ref: values` source ($values/...), so the model list is written once, in git.
Argument: dict "context" $ "name" NAME "app" ENTRY.
*/}}
{{- define "llm-stack.helm" -}}
{{- $files := list }}
{{- if ne (toString .app.sharedValues) "false" }}
{{- $files = concat $files (.context.Values.sharedValueFiles | default list) }}
{{- end }}
{{- $files = concat $files (.app.valueFiles | default list) }}
releaseName: {{ .app.releaseName | default .name }}
{{- with $files }}
valueFiles:
{{- range . }}
  - $values/{{ . }}
{{- end }}
{{- end }}
{{- with .app.valuesObject }}
valuesObject:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .app.parameters }}
parameters:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Every rule the schema cannot express; fails once with all messages. */}}
{{- define "llm-stack.validateValues" -}}
{{- $messages := list }}
{{- range $name, $app := .Values.applications }}
{{- if and $app.directory (or $app.valuesObject $app.parameters $app.valueFiles $app.releaseName) }}
{{- $messages = append $messages (printf "applications.%s: directory=true deploys plain manifests; remove valuesObject, parameters, valueFiles and releaseName (they are Helm settings)." $name) }}
{{- end }}
{{- end }}
{{- if and .Values.selfManage.enabled (hasKey .Values.applications .Values.selfManage.name) }}
{{- $messages = append $messages (printf "selfManage.name: %q is also a key of applications; give the app of apps another name." .Values.selfManage.name) }}
{{- end }}
{{- include "model-catalog.fail" (dict "context" $ "messages" $messages) }}
{{- end }}
