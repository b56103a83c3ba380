{{/* The release's name for its objects. */}}
{{- define "slack-oauth-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "slack-oauth-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "slack-oauth-operator.labels" -}}
{{ include "slack-oauth-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "slack-oauth-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "slack-oauth-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* publicURL, or https://<ingress.host> (http:// without TLS), or else the in-cluster Service
URL, which only a browser inside the cluster network can reach (NOTES.txt warns about it). */}}
{{- define "slack-oauth-operator.publicURL" -}}
{{- if .Values.publicURL -}}
{{- .Values.publicURL | trimSuffix "/" -}}
{{- else if and .Values.ingress.enabled .Values.ingress.host -}}
{{- if .Values.ingress.tls -}}https{{- else -}}http{{- end -}}://{{ .Values.ingress.host }}
{{- else -}}
http://{{ include "slack-oauth-operator.fullname" . }}.{{ .Release.Namespace }}.svc:{{ .Values.service.callbackPort }}
{{- end -}}
{{- end -}}

{{/* The rules the operator needs wherever it reconciles grants. */}}
{{- define "slack-oauth-operator.grantRules" -}}
# Watch grants (controller), and read the one a callback names.
- apiGroups: ["slack-oauth-operator.io"]
  resources: ["slackoauthgrants"]
  verbs: ["get", "list", "watch"]
# Publish the authorization link and conditions (controller: update); claim a link with a
# JSON-patch test and record a failed attempt (callback: patch, update).
- apiGroups: ["slack-oauth-operator.io"]
  resources: ["slackoauthgrants/status"]
  verbs: ["get", "update", "patch"]
# get: the client secret and the token Secret; list/watch: the token Secrets by the managed-by
# label, and one Secret by name while a grant waits for it; create/update: write the token
# Secret (only ever one carrying our label and owned by its grant).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "update"]
# Events about grants (kube-rs's recorder creates, then patches to aggregate repeats).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
