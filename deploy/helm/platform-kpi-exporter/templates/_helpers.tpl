{{/* The chart's name, and the full name of its objects (release-name-chart, capped at 63). */}}
{{- define "pke.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pke.fullname" -}}
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

{{- define "pke.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pke.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pke.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "pke.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "pke.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pke.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap holding config.yaml: the chart's own, or an existing one. */}}
{{- define "pke.configMapName" -}}
{{- default (include "pke.fullname" .) .Values.existingConfigMap.name -}}
{{- end -}}

{{/* True (non-empty) when the state lives in a shared database rather than on the volume. */}}
{{- define "pke.sharedState" -}}
{{- if .Values.state.urlSecret.name -}}true{{- end -}}
{{- end -}}

{{- define "pke.claimName" -}}
{{- default (printf "%s-state" (include "pke.fullname" .)) .Values.persistence.existingClaim -}}
{{- end -}}
