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

{{/* The work stream of a namespace, as common/src/names.rs builds it: upper case, dashes to
     underscores (codigo -> CODIGO_JOBS). */}}
{{- define "codigo.jobsStream" -}}
{{- printf "%s_JOBS" (upper (replace "-" "_" .)) -}}
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
{{- include "codigo.imageRef" (dict "ctx" .ctx "image" (index .ctx.Values.images .component)) -}}
{{- end -}}

{{/* The same for any image given as {registry, repository, tag, digest}. */}}
{{- define "codigo.imageRef" -}}
{{- $img := .image -}}
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

{{/* Does a consumer group sign what it sends (webhook.deliver deliveries, function
     invocations)? Both derive their secrets from CODIGO_WEBHOOK_SIGNING_KEY. */}}
{{- define "codigo.signsRequests" -}}
{{- if or (has "webhook.deliver" .jobTypes) (has "functions" .jobTypes) }}true{{ end -}}
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

{{/* The groups to render, each over consumers.defaults, with triggerJobTypes (its job
     types, `functions` replaced by the types of the chart's functions: one KEDA trigger
     each) and servesFunctions. A group that serves only `functions` is left out while the
     chart declares none: it would have nothing to scale on. As YAML (use with fromYaml). */}}
{{- define "codigo.consumerGroups" -}}
{{- $functions := (include "codigo.functions" . | fromYaml).list -}}
{{- $declared := list -}}
{{- range $functions }}{{ $declared = append $declared .type }}{{ end -}}
{{- $groups := dict -}}
{{- range $name, $spec := .Values.consumers.groups -}}
{{- $g := include "codigo.consumerGroup" (dict "ctx" $ "spec" $spec) | fromYaml -}}
{{- $triggers := list -}}
{{- range $g.jobTypes }}{{ $triggers = ternary (concat $triggers $declared) (append $triggers .) (eq . "functions") }}{{ end -}}
{{- if $triggers -}}
{{- $serves := has "functions" $g.jobTypes -}}
{{- if and $serves $.Values.keda.enabled -}}
{{- range $functions -}}
{{- if ge (int .jobsInFlight) (int $g.lagThreshold) -}}
{{- fail (printf "consumers.groups.%s: lagThreshold %d must exceed the concurrency %d of function %s (KEDA counts jobs in flight as lag, so one busy replica would ask for another forever): raise the group's lagThreshold" $name (int $g.lagThreshold) (int .jobsInFlight) .type) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $_ := set $g "triggerJobTypes" $triggers -}}
{{- $_ := set $g "servesFunctions" $serves -}}
{{- $_ := set $groups $name $g -}}
{{- end -}}
{{- end -}}
{{- if and $functions $.Values.consumers.enabled -}}
{{- $serving := list -}}
{{- range $name, $g := $groups }}{{ if $g.servesFunctions }}{{ $serving = append $serving $name }}{{ end }}{{ end -}}
{{- if not $serving -}}
{{- fail "functions are declared but no consumer group serves them: give a group jobTypes [functions] (values.yaml has consumers.groups.functions)" -}}
{{- end -}}
{{- end -}}
{{- toYaml $groups -}}
{{- end -}}

{{/* Names of the groups that serve functions, as a YAML list (use with fromYamlArray). */}}
{{- define "codigo.functionConsumerGroups" -}}
{{- $serving := list -}}
{{- range $name, $g := (include "codigo.consumerGroups" . | fromYaml) }}{{ if $g.servesFunctions }}{{ $serving = append $serving $name }}{{ end }}{{ end -}}
{{- toYaml $serving -}}
{{- end -}}

{{/* The pods of the consumer groups that serve functions, as a label selector: the only
     pods a function admits, and the only consumers that may reach functions. */}}
{{- define "codigo.functionConsumersSelector" -}}
matchLabels:
  {{- include "codigo.selectorLabels" (dict "ctx" .ctx "component" "consumer") | nindent 2 }}
matchExpressions:
  - key: codigo.io/consumer-group
    operator: In
    values:
      {{- toYaml .groups | nindent 6 }}
{{- end -}}

{{/* KEDA --------------------------------------------------------------------- */}}

{{/* A nats-jetstream trigger on one job type's durable consumer of the work stream. KEDA's
     lag is num_pending + num_ack_pending. */}}
{{- define "codigo.natsTrigger" -}}
{{- $k := .ctx.Values.keda -}}
{{- $ns := .ctx.Values.config.namespace -}}
- type: nats-jetstream
  metadata:
    natsServerMonitoringEndpoint: {{ $k.natsServerMonitoringEndpoint | quote }}
    account: {{ $k.account | quote }}
    stream: {{ include "codigo.jobsStream" $ns | quote }}
    consumer: {{ include "codigo.durable" (dict "ns" $ns "jobType" .jobType) | quote }}
    lagThreshold: {{ .lagThreshold | quote }}
    activationLagThreshold: {{ .activationLagThreshold | quote }}
    useHttps: {{ $k.useHttps | quote }}
{{- end -}}

{{/* Network ------------------------------------------------------------------ */}}

{{/* Egress to the cluster DNS, one NetworkPolicy egress rule. */}}
{{- define "codigo.dnsEgressRule" -}}
{{- $np := .Values.networkPolicy -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ $np.dns.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml $np.dns.podLabels | nindent 10 }}
    {{- range $np.dns.extraCidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end -}}

{{/* Functions ---------------------------------------------------------------- */}}

{{- define "codigo.functionSelector" -}}
app.kubernetes.io/name: {{ printf "%s-function" (include "codigo.name" .ctx | trunc 54) }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: function
codigo.io/function: {{ .name }}
{{- end -}}

{{/* A function's pods are not Codigo's: another app.kubernetes.io/name keeps them out of
     the release-wide NetworkPolicies (which open NATS and Postgres) and out of the NATS
     servers' client ingress, which admits app.kubernetes.io/name=codigo. */}}
{{- define "codigo.functionLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "codigo.functionSelector" . }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: codigo
codigo.io/environment: {{ .ctx.Values.environment | quote }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The chart's functions, each item over functionDefaults and checked, with what the
     templates derive from it: name (of its Kubernetes objects), resource, runs (the chart
     runs its pods), durable, url, secretName, remoteKey, jobsInFlight (its concurrency,
     or the contract's default of 32) and declaration (as `codigo-ctl types apply` reads it).
     As YAML {list: [...]} (use with fromYaml). */}}
{{- define "codigo.functions" -}}
{{- $builtin := list "ledger.post" "webhook.deliver" -}}
{{- $list := list -}}
{{- $types := dict -}}
{{- $names := dict -}}
{{- if and .Values.functions (not .Values.consumers.enabled) -}}
{{- fail "functions need consumers.enabled: a consumer group serving `functions` invokes them" -}}
{{- end -}}
{{- if and .Values.functions (not .Values.setup.enabled) -}}
{{- fail "functions need setup.enabled: the setup hook declares them (codigo-ctl types apply)" -}}
{{- end -}}
{{- range $i, $item := .Values.functions -}}
{{- $type := toString ($item.type | default "") -}}
{{- $where := printf "functions[%d] (%s)" $i (default "without a type" $type) -}}
{{- if or (gt (len $type) 128) (not (regexMatch `^[a-z0-9]+(\.[a-z0-9_-]+)+$` $type)) -}}
{{- fail (printf "%s: type %q is not a job type name: lower-case words joined by dots, such as images.resize ([a-z0-9]+(\\.[a-z0-9_-]+)+, at most 128 characters)" $where $type) -}}
{{- end -}}
{{- if has $type $builtin -}}
{{- fail (printf "%s: %s is built into Codigo and cannot be declared; choose another name" $where $type) -}}
{{- end -}}
{{- if hasKey $types $type -}}
{{- fail (printf "%s: %s is declared twice" $where $type) -}}
{{- end -}}
{{- $_ := set $types $type true -}}
{{- if not $item.version -}}
{{- fail (printf "%s: version is required (a whole number from 1 to 1000)" $where) -}}
{{- end -}}
{{- if not (kindIs "map" $item.schema) -}}
{{- fail (printf "%s: schema is required: the payload's JSON Schema, as an object" $where) -}}
{{- end -}}
{{- if and $item.image $item.service -}}
{{- fail (printf "%s: set image (the chart runs the function) or service.url (an existing Service), not both" $where) -}}
{{- end -}}
{{- if not (or $item.image $item.service) -}}
{{- fail (printf "%s: set image (the chart runs the function) or service.url (an existing Service)" $where) -}}
{{- end -}}
{{- $runs := not (empty $item.image) -}}
{{- $f := mergeOverwrite (deepCopy $.Values.functionDefaults) (deepCopy $item) -}}
{{- $name := $item.name | default (regexReplaceAll "[._]" $type "-") -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $name) -}}
{{- fail (printf "%s: %q cannot name Kubernetes objects: set name (lower-case letters, digits and inner dashes)" $where $name) -}}
{{- end -}}
{{- if gt (len $name) 40 -}}
{{- fail (printf "%s: %q is longer than 40 characters, too long for the names of its objects: set a shorter name" $where $name) -}}
{{- end -}}
{{- if hasKey $names $name -}}
{{- fail (printf "%s: another function's objects are named %q too: set name on one of them" $where $name) -}}
{{- end -}}
{{- $_ := set $names $name true -}}
{{- $resource := include "codigo.componentName" (dict "ctx" $ "suffix" (printf "function-%s" $name)) -}}
{{- $url := "" -}}
{{- if $runs -}}
{{- if not $f.image.repository -}}
{{- fail (printf "%s: image.repository is required" $where) -}}
{{- end -}}
{{- $url = printf "http://%s.%s.svc.cluster.local:%d/" $resource $.Release.Namespace (int $f.port) -}}
{{- else -}}
{{- $url = toString ($item.service.url | default "") -}}
{{- if not (regexMatch "^https?://[^/:]+" $url) -}}
{{- fail (printf "%s: service.url %q must be the http(s) URL of the function's Service" $where $url) -}}
{{- end -}}
{{- $egress := $item.service.egress | default dict -}}
{{- if and $.Values.networkPolicy.enabled (not (and $egress.to $egress.port)) -}}
{{- fail (printf "%s: service.egress (to: NetworkPolicy peers selecting the function's pods, port: their port) is required while networkPolicy.enabled: the consumers' egress is closed otherwise" $where) -}}
{{- end -}}
{{- end -}}
{{- $http := dict "url" $url -}}
{{- with $item.timeout }}{{ $_ := set $http "timeout" . }}{{ end -}}
{{- $declaration := dict "type" $type "version" $item.version "schema" $item.schema "target" (dict "http" $http) -}}
{{- with $item.retry }}{{ $_ := set $declaration "retry" . }}{{ end -}}
{{- if not (kindIs "invalid" $item.concurrency) }}{{ $_ := set $declaration "concurrency" $item.concurrency }}{{ end -}}
{{- if not (kindIs "invalid" $item.jobs_per_sec) }}{{ $_ := set $declaration "jobs_per_sec" $item.jobs_per_sec }}{{ end -}}
{{- $_ := set $f "type" $type -}}
{{- $_ := set $f "name" $name -}}
{{- $_ := set $f "resource" $resource -}}
{{- $_ := set $f "runs" $runs -}}
{{- $_ := set $f "durable" (include "codigo.durable" (dict "ns" $.Values.config.namespace "jobType" $type)) -}}
{{- $_ := set $f "url" $url -}}
{{- $_ := set $f "secretName" ($f.secret.existingSecret | default $resource) -}}
{{- $_ := set $f "remoteKey" ($f.secret.remoteKey | default (printf "%s%s" $.Values.externalSecrets.functionRemoteKeyPrefix $name)) -}}
{{- $_ := set $f "jobsInFlight" ($item.concurrency | default 32) -}}
{{- $_ := set $f "declaration" $declaration -}}
{{- $list = append $list $f -}}
{{- end -}}
{{- toYaml (dict "list" $list) -}}
{{- end -}}
