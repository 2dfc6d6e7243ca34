{{/* The chart's name, or nameOverride. */}}
{{- define "conveyor.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name, at most 63 characters. */}}
{{- define "conveyor.fullname" -}}
{{- $name := include "conveyor.name" . -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object, commonLabels included; pass (dict "ctx" $ "component" "api"). */}}
{{- define "conveyor.labels" -}}
{{- $ours := dict
  "helm.sh/chart" (printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_")
  "app.kubernetes.io/managed-by" .ctx.Release.Service
  "app.kubernetes.io/version" .ctx.Chart.AppVersion
  "app.kubernetes.io/part-of" "conveyor" -}}
{{- $ours = merge $ours (fromYaml (include "conveyor.selectorLabels" .)) -}}
{{- toYaml (merge $ours (.ctx.Values.commonLabels | default dict)) -}}
{{- end -}}

{{- define "conveyor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "conveyor.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Pod template metadata of a component: the labels and podLabels, and the annotations
(podAnnotations, plus any passed as "annotations"); pass ctx, component, annotations. */}}
{{- define "conveyor.podMetadata" -}}
{{- $v := .ctx.Values -}}
{{- $c := .settings | default (index $v (.values | default .component)) | default dict -}}
{{- $user := merge (dict) ($c.podLabels | default dict) ($v.podLabels | default dict) -}}
labels:
  {{- toYaml (merge (fromYaml (include "conveyor.labels" .)) $user) | nindent 2 }}
{{- $annotations := merge (dict) (.annotations | default dict) ($c.podAnnotations | default dict) ($v.podAnnotations | default dict) }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* An image reference: image.<component> is a repository, or a map of registry,
repository, tag and digest. A registry (the image's own, image.registry or
global.imageRegistry) replaces the registry host of the repository, or goes before it. */}}
{{- define "conveyor.image" -}}
{{- $v := .ctx.Values -}}
{{- $image := index $v.image .component -}}
{{- if kindIs "string" $image }}{{ $image = dict "repository" $image }}{{ end -}}
{{- $registry := $image.registry | default $v.image.registry | default (dig "imageRegistry" "" ($v.global | default dict)) -}}
{{- $repository := $image.repository -}}
{{- if $registry -}}
{{- $parts := splitList "/" $repository -}}
{{- if and (gt (len $parts) 1) (regexMatch "[.:]|^localhost$" (first $parts)) }}{{ $repository = join "/" (rest $parts) }}{{ end -}}
{{- $repository = printf "%s/%s" (trimSuffix "/" $registry) $repository -}}
{{- end -}}
{{- $digest := $image.digest | default "" -}}
{{- if $digest -}}
{{- printf "%s@%s" $repository $digest -}}
{{- else -}}
{{- printf "%s:%s" $repository ($image.tag | default $v.image.tag | default .ctx.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "conveyor.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-secret" (include "conveyor.fullname" .)) -}}
{{- end -}}

{{/* Rolls the pods whenever the settings change. */}}
{{- define "conveyor.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end -}}

{{/* Rolls the API when the seeded keys change (not on the helm test key, made at random once). */}}
{{- define "conveyor.authChecksum" -}}
checksum/auth: {{ list .Values.auth.seedKeys .Values.auth.existingSecret .Values.auth.helmTestKey | toJson | sha256sum }}
{{- end -}}

{{/* The Secret holding keys.json (the keys to seed) and helm-test-key. */}}
{{- define "conveyor.authSecretName" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "conveyor.fullname" .)) -}}
{{- end -}}

{{/* Does the API seed keys from a file? */}}
{{- define "conveyor.seeds" -}}
{{- if and .Values.auth.enabled (or .Values.auth.existingSecret .Values.auth.seedKeys .Values.auth.helmTestKey) }}true{{ end -}}
{{- end -}}

{{/* Settings for every container of a component (pass ctx, component): the ConfigMap and
extraEnvFrom (envFrom items) ... */}}
{{- define "conveyor.envFrom" -}}
- configMapRef:
    name: {{ include "conveyor.fullname" .ctx }}-config
{{- with concat (.ctx.Values.extraEnvFrom | default list) ((.settings | default (index .ctx.Values (.values | default .component)) | default dict).extraEnvFrom | default list) }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ... and the URLs from the Secret, tracing, extraEnv (env items). */}}
{{- define "conveyor.env" -}}
{{- $keys := .ctx.Values.secretKeys -}}
- name: CONVEYOR_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "conveyor.secretName" .ctx }}
      key: {{ $keys.databaseUrl }}
- name: CONVEYOR_AMQP_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "conveyor.secretName" .ctx }}
      key: {{ $keys.amqpUrl }}
{{ include "conveyor.tracingEnv" . }}
{{- with concat (.ctx.Values.extraEnv | default list) ((.settings | default (index .ctx.Values (.values | default .component)) | default dict).extraEnv | default list) }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* OpenTelemetry: where spans go, how many, and which pod, namespace and node sent them. */}}
{{- define "conveyor.tracingEnv" -}}
{{- $t := .ctx.Values.tracing -}}
{{- if $t.enabled -}}
- name: K8S_POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: K8S_POD_UID
  valueFrom: {fieldRef: {fieldPath: metadata.uid}}
- name: K8S_NAMESPACE_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
- name: K8S_NODE_NAME
  valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ required "tracing.endpoint is required when tracing.enabled" $t.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: http/protobuf
- name: OTEL_TRACES_SAMPLER
  value: {{ $t.sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $t.samplerArg | quote }}
{{- $attributes := list
  "k8s.pod.name=$(K8S_POD_NAME)" "k8s.pod.uid=$(K8S_POD_UID)"
  "k8s.namespace.name=$(K8S_NAMESPACE_NAME)" "k8s.node.name=$(K8S_NODE_NAME)"
  (printf "k8s.container.name=%s" .component) "service.instance.id=$(K8S_POD_UID)"
  (printf "service.namespace=%s" (include "conveyor.fullname" .ctx))
  (printf "service.version=%s" .ctx.Chart.AppVersion) }}
{{- range $key, $value := $t.resourceAttributes }}
{{- $attributes = append $attributes (printf "%s=%s" $key $value) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attributes | quote }}
{{- end -}}
{{- end -}}

{{- define "conveyor.podSecurityContext" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{- define "conveyor.containerSecurityContext" -}}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end -}}

{{/* A writable /tmp on a read-only root filesystem, and extraVolumes: volumes items
(pass ctx, component) ... */}}
{{- define "conveyor.volumes" -}}
- name: tmp
  emptyDir: {}
{{- with concat (.ctx.Values.extraVolumes | default list) ((.settings | default (index .ctx.Values (.values | default .component)) | default dict).extraVolumes | default list) }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ... and their volumeMounts items. */}}
{{- define "conveyor.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- with concat (.ctx.Values.extraVolumeMounts | default list) ((.settings | default (index .ctx.Values (.values | default .component)) | default dict).extraVolumeMounts | default list) }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A component's sidecars (extraContainers), as containers items. */}}
{{- define "conveyor.extraContainers" -}}
{{- with (.settings | default (index .ctx.Values (.values | default .component)) | default dict).extraContainers }}
{{- toYaml . }}
{{- end }}
{{- end -}}

{{/* The Secret's keys: the two URLs, and the libpq form of the database URL for KEDA. */}}
{{- define "conveyor.secretData" -}}
{{- /* A plain postgres:// or postgresql:// URL gets the asyncpg driver the app uses. */ -}}
{{- $url := regexReplaceAll "^postgres(ql)?://" .Values.database.url "postgresql+asyncpg://" -}}
{{ .Values.secretKeys.databaseUrl }}: {{ $url | quote }}
{{ .Values.secretKeys.databaseDsn }}: {{ .Values.database.dsn | default (regexReplaceAll "^postgresql\\+asyncpg://" $url "postgresql://") | quote }}
{{ .Values.secretKeys.amqpUrl }}: {{ .Values.broker.url | quote }}
{{- end -}}

{{- define "conveyor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "conveyor.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* The service account of long-running pods; none of them talks to the Kubernetes API. */}}
{{- define "conveyor.serviceAccount" -}}
serviceAccountName: {{ include "conveyor.serviceAccountName" . }}
automountServiceAccountToken: false
{{- end -}}

{{/* Scheduling and pull settings of a component's pods (pass ctx, component): its own
nodeSelector, tolerations, affinity, topologySpreadConstraints and priorityClassName, else
the chart-wide ones. */}}
{{- define "conveyor.podCommon" -}}
{{- $v := .ctx.Values -}}
{{- $c := .settings | default (index $v (.values | default .component)) | default dict -}}
{{- $secrets := list -}}
{{- range concat (dig "imagePullSecrets" list ($v.global | default dict)) ($v.imagePullSecrets | default list) -}}
{{- $secrets = append $secrets (kindIs "string" . | ternary (dict "name" .) .) -}}
{{- end -}}
{{- with $secrets | uniq }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.priorityClassName | default $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- range $key := list "nodeSelector" "tolerations" "affinity" "topologySpreadConstraints" }}
{{- with (get $c $key) | default (get $v $key) }}
{{ $key }}:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Optional objects of other operators' APIs render only where the cluster serves that
API (or `helm template --api-versions` names it); NOTES.txt says what was left out. */}}
{{- define "conveyor.keda" -}}
{{- range (include "conveyor.workerPools" . | fromYamlArray) }}
{{- if and .settings.keda.enabled ($.Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject") }}true{{ end -}}
{{- end -}}
{{- end -}}

{{/* The worker pools as a YAML list: each pool's name, queues, component label (the
default pool keeps "worker", the others "worker-<name>") and settings (worker's values,
overridden by the pool's own). Read it back with fromYamlArray. */}}
{{- define "conveyor.workerPools" -}}
{{- $pools := list -}}
{{- $defined := list -}}
{{- range .Values.queues }}{{ $defined = append $defined .name }}{{ end -}}
{{- range .Values.workerPools -}}
{{- $pool := .name -}}
{{- range .queues -}}
{{- if not (has . $defined) -}}
{{- fail (printf "workerPools: pool %q takes queue %q, which queues does not define (defined: %s)" $pool . (join ", " $defined)) -}}
{{- end -}}
{{- end -}}
{{- $settings := mergeOverwrite (deepCopy $.Values.worker) (omit . "name" "queues") -}}
{{- $component := eq .name "default" | ternary "worker" (printf "worker-%s" .name) -}}
{{- $_ := set $settings "podLabels" (merge (dict "conveyor.dev/pool" .name) ($settings.podLabels | default dict)) -}}
{{- $pools = append $pools (dict "name" .name "queues" .queues "component" $component "settings" $settings) -}}
{{- end -}}
{{- toYaml $pools -}}
{{- end -}}

{{/* The component labels of every worker pool, as a YAML flow list. */}}
{{- define "conveyor.workerComponents" -}}
{{- $components := list -}}
{{- range (include "conveyor.workerPools" . | fromYamlArray) -}}
{{- $components = append $components .component -}}
{{- end -}}
[{{ join ", " $components }}]
{{- end -}}

{{- define "conveyor.serviceMonitor" -}}
{{- if and .Values.metrics.serviceMonitor.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") }}true{{ end -}}
{{- end -}}

{{- define "conveyor.prometheusRule" -}}
{{- if and .Values.metrics.prometheusRule.enabled (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PrometheusRule") }}true{{ end -}}
{{- end -}}
