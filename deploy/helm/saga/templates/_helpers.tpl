{{/* Labels of one service's objects. */}}
{{- define "saga.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/part-of: saga
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "saga.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* The Secret that holds a service's DATABASE_URL. */}}
{{- define "saga.secretName" -}}
{{- if .service.existingSecret -}}
{{ .service.existingSecret }}
{{- else -}}
{{ .root.Release.Name }}-{{ .name }}-database
{{- end -}}
{{- end -}}

{{/* The Secret that holds the token-checking key, shared by every service. */}}
{{- define "saga.authSecretName" -}}
{{- if .Values.auth.existingSecret -}}
{{ .Values.auth.existingSecret }}
{{- else -}}
{{ .Release.Name }}-auth
{{- end -}}
{{- end -}}
