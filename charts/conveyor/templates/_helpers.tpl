{{/* The release's base name, at most 63 characters. */}}
{{- define "conveyor.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object; pass (dict "ctx" $ "component" "api"). */}}
{{- define "conveyor.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{ include "conveyor.selectorLabels" . }}
{{- end -}}

{{- define "conveyor.selectorLabels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* One tag for every image. */}}
{{- define "conveyor.image" -}}
{{- printf "%s:%s" (index .ctx.Values.image .component) (.ctx.Values.image.tag | default .ctx.Chart.AppVersion) -}}
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

{{/* Settings for every container: the ConfigMap (envFrom items) ... */}}
{{- define "conveyor.envFrom" -}}
- configMapRef:
    name: {{ include "conveyor.fullname" . }}-config
{{- end -}}

{{/* ... and the two URLs from the Secret (env items). */}}
{{- define "conveyor.env" -}}
- name: CONVEYOR_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "conveyor.secretName" . }}
      key: database-url
- name: CONVEYOR_AMQP_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "conveyor.secretName" . }}
      key: amqp-url
{{- end -}}

{{- define "conveyor.podSecurityContext" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{- define "conveyor.containerSecurityContext" -}}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end -}}

{{/* A writable /tmp on a read-only root filesystem: the volumes item ... */}}
{{- define "conveyor.tmpVolume" -}}
- name: tmp
  emptyDir: {}
{{- end -}}

{{/* ... and the volumeMounts item. */}}
{{- define "conveyor.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* The Secret's keys: the two URLs, and the libpq form of the database URL for KEDA. */}}
{{- define "conveyor.secretData" -}}
database-url: {{ .Values.database.url | quote }}
database-dsn: {{ .Values.database.dsn | default (regexReplaceAll "^postgresql\\+[a-z0-9]+://" .Values.database.url "postgresql://") | quote }}
amqp-url: {{ .Values.broker.url | quote }}
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

{{/* Scheduling and pull settings every pod shares. */}}
{{- define "conveyor.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
