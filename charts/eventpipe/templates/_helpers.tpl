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

{{/* The engine of pipelines that name none: operator.scalingEngine, else hpa while this
chart serves the external metrics and keda when another adapter does. */}}
{{- define "eventpipe.scalingEngine" -}}
{{- .Values.operator.scalingEngine | default (ternary "hpa" "keda" .Values.externalMetrics.apiService.enabled) -}}
{{- end -}}

{{/* Refuses to take over the cluster's external metrics APIService from another
service (KEDA, prometheus-adapter). lookup finds nothing under helm template. */}}
{{- define "eventpipe.apiServiceFree" -}}
{{- $name := "v1beta1.external.metrics.k8s.io" -}}
{{- $existing := lookup "apiregistration.k8s.io/v1" "APIService" "" $name -}}
{{- if $existing -}}
{{- $svc := $existing.spec.service | default dict -}}
{{- $owner := printf "%s/%s" ($svc.namespace | default "") ($svc.name | default "") -}}
{{- $ours := printf "%s/%s" .Release.Namespace (include "eventpipe.fullname" .) -}}
{{- if ne $owner $ours -}}
{{- fail (printf "APIService %s is already served by Service %s (KEDA, prometheus-adapter or another metrics adapter); a cluster has only one. Keep it with --set externalMetrics.apiService.enabled=false (pipelines then scale with KEDA), or remove it first." $name (ternary "(none: served locally)" $owner (eq $owner "/"))) -}}
{{- end -}}
{{- end -}}
{{- end -}}
