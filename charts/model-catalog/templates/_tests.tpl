{{/*
`helm test` hooks of the stack's charts: one hardened Pod per chart that runs
model-catalog.testScript with curl.
*/}}

{{/*
The check, a POSIX sh script (busybox, dash, bash). Arguments: triples
URL HEALTH_PATH NAME. For each new URL: GET URL+HEALTH_PATH must answer 200 (curl
retries a loading server's 503); then, when NAME is not empty, GET URL/v1/models
must list the id NAME, and POST URL/v1/chat/completions for NAME (one token) must answer
200 with choices: a model that is up but cannot chat (e.g. vLLM with a model whose tokenizer
has no chat template answers 400) fails. $API_KEY (optional) is sent as a bearer token through
curl's config on stdin, never on the command line. $SKIP_MODELS (optional) skips the
/v1/models and chat checks and says why.
*/}}
{{- define "model-catalog.testScript" -}}
set -eu
fail() { echo "FAIL: $*" >&2; exit 1; }
get() { curl -sS --max-time 10 --retry 5 --retry-delay 2 --retry-connrefused "$@"; }
auth() { if [ -n "${API_KEY:-}" ]; then printf 'header = "Authorization: Bearer %s"\n' "$API_KEY"; fi; }
last=""
models=""
fetched=""
while [ "$#" -ge 3 ]; do
  url=$1; health=$2; name=$3; shift 3
  if [ "$url" != "$last" ]; then
    last=$url
    # The status on a last line of its own (-o /dev/null breaks curl's --retry: it truncates the output).
    code=$(get -w '\n%{http_code}' "$url$health") || fail "GET $url$health: no answer${name:+ (model $name)}"
    code=$(printf '%s\n' "$code" | tail -n 1)
    [ "$code" = 200 ] || fail "GET $url$health answered $code, not 200${name:+ (model $name)}"
    echo "ok: GET $url$health answered 200"
    fetched=""
  fi
  [ -n "$name" ] || continue
  if [ -n "${SKIP_MODELS:-}" ]; then
    echo "skip: not checking that GET $url/v1/models lists $name: $SKIP_MODELS"
    continue
  fi
  if [ -z "$fetched" ]; then
    models=$(auth | get -f -K - "$url/v1/models") || fail "GET $url/v1/models failed (model $name)"
    models=$(printf '%s' "$models" | tr -d ' \t\r\n')
    fetched=1
  fi
  case "$models" in
    *"\"id\":\"$name\""*) echo "ok: GET $url/v1/models lists $name" ;;
    *) fail "GET $url/v1/models does not list model $name; it answered: $(printf '%s' "$models" | cut -c1-500)" ;;
  esac
  body=$(printf '{"model":"%s","messages":[{"role":"user","content":"Say hi"}],"max_tokens":1}' "$name")
  answer=$(auth | curl -sS --max-time 120 -K - -H 'Content-Type: application/json' -d "$body" -w '\n%{http_code}' "$url/v1/chat/completions") || fail "POST $url/v1/chat/completions: no answer (model $name)"
  code=$(printf '%s\n' "$answer" | tail -n 1)
  answer=$(printf '%s\n' "$answer" | sed '$d' | tr -d '\r\n')
  [ "$code" = 200 ] || fail "POST $url/v1/chat/completions for model $name answered $code: $(printf '%s' "$answer" | cut -c1-500)"
  case "$answer" in
    *'"choices"'*) echo "ok: POST $url/v1/chat/completions answered a chat for $name" ;;
    *) fail "POST $url/v1/chat/completions for model $name answered 200 without choices: $(printf '%s' "$answer" | cut -c1-500)" ;;
  esac
done
echo "all checks passed"
{{- end }}

{{/*
A `helm test` Pod, hardened like the charts' own pods (restricted Pod Security:
non-root, seccomp RuntimeDefault, no privilege escalation, no capabilities,
read-only root filesystem, no ServiceAccount token). It reads the chart's
`tests` values (image, resources) and `imagePullSecrets` (names or {name}).
Argument: dict "context" $ "name" POD_NAME "namespace" NS "labels" YAML_STRING
"checks" (list URL HEALTH_PATH NAME ...) "env" (EnvVar list, optional).
*/}}
{{- define "model-catalog.testPod" -}}
{{- $v := .context.Values }}
{{- $t := $v.tests }}
apiVersion: v1
kind: Pod
metadata:
  name: {{ .name | trunc 63 | trimSuffix "-" }}
  namespace: {{ .namespace }}
  labels:
    {{- .labels | nindent 4 }}
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with (include "model-catalog.imagePullSecrets" $v.imagePullSecrets | trim) }}
  imagePullSecrets:
    {{- . | nindent 4 }}
  {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65534
    runAsGroup: 65534
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: check
      image: {{ printf "%s:%s" $t.image.repository (toString $t.image.tag) | quote }}
      imagePullPolicy: {{ $t.image.pullPolicy }}
      command:
        - /bin/sh
        - -c
        - {{ include "model-catalog.testScript" . | quote }}
        - helm-test
        {{- range .checks }}
        - {{ . | quote }}
        {{- end }}
      {{- with .env }}
      env:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        runAsNonRoot: true
        capabilities:
          drop: [ALL]
      {{- with $t.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
