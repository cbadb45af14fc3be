{{/* The objects keep manifests/' fixed names: one reconciler per cluster (its ClusterRole is cluster-wide). */}}
{{- define "agr.name" -}}acme-gateway-reconciler{{- end }}

{{- define "agr.namespace" -}}{{ .Values.namespace.name }}{{- end }}

{{- define "agr.labels" -}}
app.kubernetes.io/name: {{ include "agr.name" . }}
{{- end }}

{{/* The port of settings.metricsBindAddress (the reconciler's default when unset). */}}
{{- define "agr.metricsPort" -}}
{{- $address := .Values.settings.metricsBindAddress | default "0.0.0.0:8080" -}}
{{- last (splitList ":" (toString $address)) -}}
{{- end }}

{{/* A settings value as an environment variable value: lists joined with commas, the rest as text. */}}
{{- define "agr.envValue" -}}
{{- if kindIs "slice" . -}}{{ join "," . }}
{{- else if kindIs "float64" . -}}{{ if eq . (floor .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else -}}{{ toString . }}
{{- end -}}
{{- end }}
