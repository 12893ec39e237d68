{{/* Names ------------------------------------------------------------------ */}}

{{- define "codigo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "codigo.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<suffix>", kept within the 63-character DNS label limit. */}}
{{- define "codigo.componentName" -}}
{{- printf "%s-%s" (include "codigo.fullname" .ctx | trunc (int (sub 62 (len .suffix)))) .suffix | trimSuffix "-" -}}
{{- end -}}

{{/* Durable consumer name for a job type: codigo-ledger-post. */}}
{{- define "codigo.durable" -}}
{{- printf "%s-%s" .ns (.jobType | replace "." "-") -}}
{{- end -}}

{{/* Labels ----------------------------------------------------------------- */}}

{{- define "codigo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "codigo.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "codigo.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "codigo.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: codigo
codigo.io/environment: {{ .ctx.Values.environment | quote }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Images ----------------------------------------------------------------- */}}

{{/* registry/repository@digest, or :tag (default appVersion) when no digest is pinned. */}}
{{- define "codigo.image" -}}
{{- $img := index .ctx.Values.images .component -}}
{{- $repo := $img.repository -}}
{{- if $img.registry }}{{ $repo = printf "%s/%s" $img.registry $img.repository }}{{ end -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .ctx.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* Security --------------------------------------------------------------- */}}

{{/* Restricted Pod Security Standard, pod level. */}}
{{- define "codigo.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Restricted Pod Security Standard, container level. */}}
{{- define "codigo.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "codigo.serviceAccountName" -}}
{{- $sa := index .ctx.Values.serviceAccounts .component -}}
{{- if $sa.create -}}
{{- default (include "codigo.componentName" (dict "ctx" .ctx "suffix" .component)) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/* Environment ------------------------------------------------------------ */}}

{{/* Settings every binary reads. */}}
{{- define "codigo.commonEnv" -}}
{{- $c := .ctx.Values.config -}}
- name: CODIGO_NAMESPACE
  value: {{ $c.namespace | quote }}
- name: NATS_URL
  value: {{ $c.natsUrl | quote }}
- name: LOG_FORMAT
  value: json
- name: RUST_LOG
  value: {{ $c.rustLog | quote }}
{{- if $c.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $c.otlpEndpoint | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "codigo-%s" .component | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "deployment.environment.name=%s,service.namespace=codigo" .ctx.Values.environment | quote }}
{{- end }}
- name: CODIGO_STREAM_REPLICAS
  value: {{ $c.stream.replicas | quote }}
- name: CODIGO_DUPLICATE_WINDOW_SECS
  value: {{ $c.stream.duplicateWindowSecs | quote }}
- name: CODIGO_MAX_DELIVER
  value: {{ $c.stream.maxDeliver | quote }}
- name: CODIGO_ACK_WAIT_SECS
  value: {{ $c.stream.ackWaitSecs | quote }}
{{- if not (kindIs "invalid" $c.stream.maxMessages) }}
- name: CODIGO_STREAM_MAX_MESSAGES
  value: {{ $c.stream.maxMessages | int64 | quote }}
{{- end }}
{{- if not (kindIs "invalid" $c.stream.maxBytes) }}
- name: CODIGO_STREAM_MAX_BYTES
  value: {{ $c.stream.maxBytes | int64 | quote }}
{{- end }}
{{- if ne .component "ctl" }}
{{- /* The setup hook owns streams and consumers; the services' NATS users may only use them. */}}
- name: CODIGO_ENSURE_TOPOLOGY
  value: "false"
{{- end }}
{{- include "codigo.natsEnv" . }}
{{- end -}}

{{/* NATS credentials of one component (producer|consumer|ctl). */}}
{{- define "codigo.natsEnv" -}}
{{- $auth := .ctx.Values.natsAuth -}}
{{- $a := index $auth .component -}}
{{- if eq $auth.type "creds" }}
- name: NATS_CREDS
  value: /var/run/secrets/codigo/nats/nats.creds
{{- else }}
- name: NATS_USER
  value: {{ $a.user | quote }}
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $a.existingSecret }}
      key: {{ $a.passwordKey }}
{{- end }}
{{- if $auth.tls.enabled }}
- name: NATS_TLS_CA
  value: /var/run/secrets/codigo/nats-tls/ca.crt
{{- end }}
{{- end -}}

{{- define "codigo.databaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .key }}
{{- end -}}

{{/* A map of extra variables: string values, or objects with valueFrom. */}}
{{- define "codigo.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
{{- if kindIs "map" $value }}
  {{- toYaml $value | nindent 2 }}
{{- else }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Volumes: a writable /tmp on a read-only root, NATS creds and CA when used. */}}
{{- define "codigo.volumes" -}}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- $auth := .ctx.Values.natsAuth }}
{{- if eq $auth.type "creds" }}
{{- $a := index $auth .component }}
- name: nats-creds
  secret:
    secretName: {{ $a.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $a.credsKey }}
        path: nats.creds
{{- end }}
{{- if $auth.tls.enabled }}
- name: nats-tls
  secret:
    secretName: {{ $auth.tls.existingSecret }}
    defaultMode: 0444
    items:
      - key: {{ $auth.tls.caKey }}
        path: ca.crt
{{- end }}
{{- end -}}

{{- define "codigo.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if eq .ctx.Values.natsAuth.type "creds" }}
- name: nats-creds
  mountPath: /var/run/secrets/codigo/nats
  readOnly: true
{{- end }}
{{- if .ctx.Values.natsAuth.tls.enabled }}
- name: nats-tls
  mountPath: /var/run/secrets/codigo/nats-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* Scheduling ------------------------------------------------------------- */}}

{{- define "codigo.topologySpread" -}}
{{- $t := .ctx.Values.topologySpread -}}
{{- if $t.enabled -}}
topologySpreadConstraints:
  - maxSkew: {{ $t.zoneSkew }}
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: {{ $t.zoneWhenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- .selector | nindent 8 }}
    matchLabelKeys:
      - pod-template-hash
  - maxSkew: {{ $t.nodeSkew }}
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: {{ $t.nodeWhenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- .selector | nindent 8 }}
    matchLabelKeys:
      - pod-template-hash
{{- end }}
{{- end -}}

{{/* Does a consumer group serve webhook.deliver? */}}
{{- define "codigo.servesWebhooks" -}}
{{- if has "webhook.deliver" .jobTypes }}true{{ end -}}
{{- end -}}

{{/* Consumer groups --------------------------------------------------------- */}}

{{- define "codigo.consumerSelector" -}}
{{ include "codigo.selectorLabels" (dict "ctx" .ctx "component" "consumer") }}
codigo.io/consumer-group: {{ .group }}
{{- end -}}

{{- define "codigo.consumerLabels" -}}
{{ include "codigo.labels" (dict "ctx" .ctx "component" "consumer") }}
codigo.io/consumer-group: {{ .group }}
{{- end -}}

{{/* A group's settings over consumers.defaults, as YAML (use with fromYaml). */}}
{{- define "codigo.consumerGroup" -}}
{{- toYaml (mergeOverwrite (deepCopy .ctx.Values.consumers.defaults) (deepCopy .spec)) -}}
{{- end -}}
