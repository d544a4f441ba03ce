{{/* Chart name, truncated for label values. */}}
{{- define "mlflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, plus the chart name unless it already contains it. */}}
{{- define "mlflow.fullname" -}}
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

{{- define "mlflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mlflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fusionrec
{{- end }}

{{- define "mlflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mlflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The Secret holding the backend store URL: the user's, or the one this chart writes from backendStore.uri. */}}
{{- define "mlflow.backendSecretName" -}}
{{- if .Values.backendStore.existingSecret }}
{{- .Values.backendStore.existingSecret }}
{{- else if .Values.backendStore.uri }}
{{- include "mlflow.fullname" . }}-backend
{{- else }}
{{- fail "mlflow: set backendStore.uri (postgresql+psycopg2://USER:PASSWORD@HOST:5432/fusionrec_mlflow) or backendStore.existingSecret" }}
{{- end }}
{{- end }}

{{- define "mlflow.artifactsClaim" -}}
{{- .Values.artifacts.persistence.existingClaim | default (printf "%s-artifacts" (include "mlflow.fullname" .)) }}
{{- end }}

{{/* Host headers the server accepts: its Service names (short, namespaced, cluster DNS), localhost, extras. */}}
{{- define "mlflow.allowedHosts" -}}
{{- $svc := include "mlflow.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $hosts := list $svc (printf "%s:*" $svc) (printf "%s.%s" $svc $ns) (printf "%s.%s:*" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc:*" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) (printf "%s.%s.svc.cluster.local:*" $svc $ns) "localhost" "localhost:*" "127.0.0.1" "127.0.0.1:*" }}
{{- concat $hosts .Values.server.extraAllowedHosts | join "," }}
{{- end }}
