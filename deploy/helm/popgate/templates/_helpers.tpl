{{/* The chart's name. */}}
{{- define "popgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's resource name. */}}
{{- define "popgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "popgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "popgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "popgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "popgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: popgate
{{- end }}

{{- define "popgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "popgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "popgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "popgate.credentialsSecret" -}}
{{- default (printf "%s-credentials" (include "popgate.fullname" .)) .Values.credentials.existingSecret }}
{{- end }}

{{- define "popgate.passwdSecret" -}}
{{- default (printf "%s-passwd" (include "popgate.fullname" .)) .Values.passwd.existingSecret }}
{{- end }}

{{- define "popgate.terminationGracePeriodSeconds" -}}
{{- add .Values.preStopSleepSeconds .Values.shutdownGraceSeconds 5 }}
{{- end }}

{{/* The environment both popgate and its migrations get. */}}
{{- define "popgate.env" -}}
- name: POPGATE_SERVER__SHUTDOWN_GRACE
  value: {{ printf "%ds" (int .Values.shutdownGraceSeconds) | quote }}
- name: POPGATE_METRICS__ADDRESS
  value: {{ printf "0.0.0.0:%d" (int .Values.ports.metrics) | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
