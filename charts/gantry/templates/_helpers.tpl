{{- define "gantry.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gantry.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "gantry.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gantry.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "gantry.runnerSecretName" -}}
{{- .Values.runnerSecret.existingSecret | default (printf "%s-runner-secret" (include "gantry.fullname" .)) -}}
{{- end -}}

{{- define "gantry.buildNamespace" -}}
{{- .Values.runner.buildNamespace | default .Release.Namespace -}}
{{- end -}}

{{- define "gantry.runnerAccount" -}}
{{- printf "%s-runner" (include "gantry.fullname" .) -}}
{{- end -}}

{{- define "gantry.serverUrl" -}}
{{- .Values.serverUrl | default (printf "http://%s-server.%s.svc:%v" (include "gantry.fullname" .) .Release.Namespace .Values.server.service.port) -}}
{{- end -}}

{{- define "gantry.runnerLabels" -}}
{{- $pairs := list -}}
{{- range $key, $value := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{- define "gantry.postgresqlName" -}}
{{- printf "%s-postgresql" (include "gantry.fullname" .) -}}
{{- end -}}
