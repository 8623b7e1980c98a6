{{/* The release's full name: the chart's name unless the release says otherwise. */}}
{{- define "iothub-dynreg.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "iothub-dynreg.serviceAccountName" -}}
{{- default (include "iothub-dynreg.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* Labels of every object but those of one controller (they name it themselves). */}}
{{- define "iothub-dynreg.labels" -}}
app.kubernetes.io/name: {{ include "iothub-dynreg.fullname" . }}
{{ include "iothub-dynreg.commonLabels" . }}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "iothub-dynreg.commonLabels" -}}
app.kubernetes.io/part-of: iothub-dynreg
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- if .Values.helmLabels }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}
{{- end -}}

{{/* The namespace the controller reconciles, if one. */}}
{{- define "iothub-dynreg.watchNamespace" -}}
{{- if .Values.watchNamespace -}}
{{- .Values.watchNamespace -}}
{{- else if eq .Values.installScope "Namespace" -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* The image reference: the digest when pinned, else the tag (default appVersion). */}}
{{- define "iothub-dynreg.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The controllers to run: the main one, and one per shard. Each is a dict of name (the Deployment's),
component (its selector label) and selector (--watch-label-selector, empty: every resource).
*/}}
{{- define "iothub-dynreg.controllers" -}}
{{- $fullname := include "iothub-dynreg.fullname" . -}}
{{- $controllers := list -}}
{{- if .Values.sharding.enabled -}}
{{- $controllers = append $controllers (dict "name" $fullname "component" "controller" "selector" (printf "!%s" .Values.sharding.key)) -}}
{{- range .Values.sharding.shards -}}
{{- $controllers = append $controllers (dict "name" (printf "%s-%s" $fullname .) "component" (printf "controller-%s" .) "selector" (printf "%s=%s" $.Values.sharding.key .)) -}}
{{- end -}}
{{- else -}}
{{- $controllers = append $controllers (dict "name" $fullname "component" "controller" "selector" "") -}}
{{- end -}}
{{- toJson $controllers -}}
{{- end -}}
