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

{{/* The Secret the chart makes from passwd.files, or passwd.existingSecret. */}}
{{- define "popgate.passwdSecret" -}}
{{- default (printf "%s-passwd" (include "popgate.fullname" .)) .Values.passwd.existingSecret }}
{{- end }}

{{/* passwd.files without the files that passwd.tenantSecrets provide, as JSON. */}}
{{- define "popgate.passwdFiles" -}}
{{- $files := dict }}
{{- range $name, $text := .Values.passwd.files }}
{{- if not (hasKey $.Values.passwd.tenantSecrets (trimSuffix ".passwd" $name)) }}
{{- $_ := set $files $name $text }}
{{- end }}
{{- end }}
{{- toJson $files }}
{{- end }}

{{/* "true" when the chart makes the passwd Secret from passwd.files. */}}
{{- define "popgate.passwdSecretCreated" -}}
{{- if and .Values.passwd.enabled (not .Values.passwd.existingSecret) (include "popgate.passwdFiles" . | fromJson) }}true{{ end }}
{{- end }}

{{/*
terminationGracePeriodSeconds, from what popgate does after SIGTERM. The
kubelet counts the period from the start of the preStop hook:
  preStopSleepSeconds     lifecycle.preStop.sleep, before SIGTERM is sent
  shutdownGraceSeconds    Server::run (crates/popgate-server/src/listener.rs):
                          sessions get server.shutdown_grace to end on their own
  10                      then the remaining sessions are told to close, and
                          Server::run waits up to 10 s more for them (the
                          Duration::from_secs(10) after "grace period over");
                          each one's goodbye is bounded by Conn::close
                          (crates/popgate-server/src/conn.rs): 2 s to flush,
                          1 s to shut the socket, well inside those 10 s
  5                       margin: the process exits after "all sessions closed"
*/}}
{{- define "popgate.terminationGracePeriodSeconds" -}}
{{- add .Values.preStopSleepSeconds .Values.shutdownGraceSeconds 10 5 }}
{{- end }}

{{/*
"true" when the chart is rendered for a live cluster: helm install, upgrade,
--dry-run=server, or a tool that passes the cluster's API versions (Argo CD).
Every API server serves apiregistration.k8s.io/v1 (its aggregation layer);
helm lint and a plain helm template do not list it. The checks below refuse
placeholders there only, so the chart still lints and renders offline.
*/}}
{{- define "popgate.onCluster" -}}
{{- if .Capabilities.APIVersions.Has "apiregistration.k8s.io/v1" }}true{{ end }}
{{- end }}

{{/*
Whether a prometheus-operator object is made: (list VALUE CONTEXT KIND).
auto: when the cluster serves monitoring.coreos.com/v1 KIND; true: always
(the install fails where the CRD is missing); false: never.
*/}}
{{- define "popgate.monitoringObject" -}}
{{- $value := index . 0 }}
{{- $ctx := index . 1 }}
{{- $kind := index . 2 }}
{{- if eq (toString $value) "auto" }}
{{- if $ctx.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" $kind) }}true{{ end }}
{{- else if eq (toString $value) "true" }}true
{{- else if ne (toString $value) "false" }}
{{- fail (printf "%s enabled: %v: want auto, true or false" $kind $value) }}
{{- end }}
{{- end }}

{{- define "popgate.serviceMonitorEnabled" -}}
{{- include "popgate.monitoringObject" (list .Values.serviceMonitor.enabled . "ServiceMonitor") }}
{{- end }}

{{- define "popgate.prometheusRuleEnabled" -}}
{{- include "popgate.monitoringObject" (list .Values.prometheusRule.enabled . "PrometheusRule") }}
{{- end }}

{{/*
What a live install cannot run with: the placeholders of values.yaml, and
prerequisites the chart can check without reading the cluster.
*/}}
{{- define "popgate.validate" -}}
{{- if lt (int .Values.replicaCount) 2 }}
{{- fail "replicaCount must be at least 2: popgate runs as a fleet (and needs Redis locks for it)" }}
{{- end }}
{{- if and .Values.passwd.enabled (not .Values.passwd.existingSecret) (not .Values.passwd.tenantSecrets) (not .Values.passwd.files) }}
{{- fail "passwd.enabled needs passwd.files, passwd.existingSecret or passwd.tenantSecrets (or set passwd.enabled=false)" }}
{{- end }}
{{- if .Values.credentials.env }}
{{- fail "credentials.env is gone: popgate no longer takes secrets from environment variables (they leak into /proc/PID/environ, crash reports and child processes). Put each in credentials.files (key: content; or keys of credentials.existingSecret), mounted at /etc/popgate/credentials, and name the file in the config: POPGATE_LOCKS__URL becomes redis-url (locks.url_file), PGPASSWORD a password in a URL file (url_file), the AWS keys access_key_id_file/secret_access_key_file, POPGATE_METRICS__BEARER_TOKEN metrics.bearer_token_file (docs/kubernetes.md, section Secrets)" }}
{{- end }}
{{- if include "popgate.onCluster" . }}
{{- if eq .Values.image.repository "registry.example.net/popgate/popgate" }}
{{- fail "image.repository is still the placeholder registry.example.net/popgate/popgate: build and push the image from the repository's Dockerfile (docs/kubernetes.md, section Kubernetes: the Helm chart), then set image.repository (and image.tag or image.digest)" }}
{{- end }}
{{- if and .Values.credentials.create (not .Values.credentials.existingSecret) }}
{{- range $k, $v := .Values.credentials.files }}
{{- if and (eq $k "redis-url") (contains "REPLACE_ME" $v) }}
{{- fail "credentials.files.redis-url still holds the placeholder REPLACE_ME: the replicas share their mailbox locks through Redis, so point it at a real Redis (redis:// or rediss://), or put redis-url in a Secret of your own and set credentials.existingSecret (docs/kubernetes.md, section Kubernetes: the Helm chart)" }}
{{- else if contains "REPLACE_ME" $v }}
{{- fail (printf "credentials.files.%s still holds the placeholder REPLACE_ME: set it, or put it in a Secret of your own and set credentials.existingSecret" $k) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The credentials Secret's mount, for popgate and its migrations. */}}
{{- define "popgate.credentialsMount" -}}
{{- if or .Values.credentials.existingSecret .Values.credentials.create }}
- name: credentials
  mountPath: /etc/popgate/credentials
  readOnly: true
{{- end }}
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
