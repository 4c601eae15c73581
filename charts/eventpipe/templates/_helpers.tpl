{{- define "eventpipe.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "eventpipe.labels" -}}
app.kubernetes.io/name: eventpipe
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "eventpipe.selector" -}}
app.kubernetes.io/name: eventpipe
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "eventpipe.image" -}}
{{ .image.repository }}:{{ default .appVersion .image.tag }}
{{- end -}}

{{/* The AWS endpoint: the chart's moto when localAws is on, else aws.endpoint. */}}
{{- define "eventpipe.awsEndpoint" -}}
{{- if .Values.localAws.enabled -}}http://{{ include "eventpipe.fullname" . }}-moto.{{ .Release.Namespace }}.svc:5000{{- else -}}{{ .Values.aws.endpoint }}{{- end -}}
{{- end -}}

{{/* The OTLP endpoint: the chart's Jaeger when enabled, else otlp.endpoint. */}}
{{- define "eventpipe.otlpEndpoint" -}}
{{- if .Values.jaeger.enabled -}}http://{{ include "eventpipe.fullname" . }}-jaeger.{{ .Release.Namespace }}.svc:4318{{- else -}}{{ .Values.otlp.endpoint }}{{- end -}}
{{- end -}}
