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

{{/* The namespaces whose grants the operator reconciles, comma-separated: watchNamespaces, or the
release namespace when that is empty. Not used with clusterWide (every namespace). */}}
{{- define "slack-oauth-operator.watchNamespaces" -}}
{{- join "," (default (list .Release.Namespace) .Values.watchNamespaces) -}}
{{- end -}}

{{/* The grant rules' ClusterRole and ClusterRoleBinding with clusterWide. Cluster-scoped, so the
name carries the release namespace: two releases of the same name in different namespaces must
not share (or take over) each other's binding. ":" cannot occur in a namespace or release name,
so no other pair of them gives the same name. */}}
{{- define "slack-oauth-operator.clusterRoleName" -}}
{{- printf "%s:%s" .Release.Namespace (include "slack-oauth-operator.fullname" .) -}}
{{- end -}}

{{/* The Secret holding the key that authenticates every authorization link's `state`, in the
release namespace (created by the first replica to start, see docs/security.md). */}}
{{- define "slack-oauth-operator.stateKeySecret" -}}
{{- printf "%s-state-key" (include "slack-oauth-operator.fullname" .) -}}
{{- end -}}

{{/* The rules the operator needs in each namespace whose grants it reconciles (docs/security.md).
Nothing here is needed anywhere else. */}}
{{- define "slack-oauth-operator.grantRules" -}}
# Watch grants (controller), and read the one a callback names. patch: add and remove the
# finalizer that revokes (or releases) a grant's token before the grant goes.
- apiGroups: ["slack-oauth-operator.io"]
  resources: ["slackoauthgrants"]
  verbs: ["get", "list", "watch", "patch"]
# Publish the authorization link and conditions (controller: update); claim a link with a
# JSON-patch test and record a failed attempt (callback: patch, update).
- apiGroups: ["slack-oauth-operator.io"]
  resources: ["slackoauthgrants/status"]
  verbs: ["get", "update", "patch"]
# get/list/watch: the Secrets the operator watches, selected by label (token Secrets it wrote,
# and client Secrets that opted in with slack-oauth-operator.io/shared-with-grants); RBAC cannot
# select by label, so the code enforces that. create/update: write a grant's own token Secret
# (create if absent; update only one carrying our label and owned by the grant). No delete
# (owner references garbage-collect token Secrets), no patch.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "update"]
# Events about grants (kube-rs's recorder creates, then patches to aggregate repeats).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.rolloutRestart.enabled }}
# rolloutRestart.enabled: restart the workloads a grant lists in spec.secret.rolloutRestart. get:
# read one by name (its opt-in annotation, which the code checks, and its rollout status); patch:
# set one pod-template annotation. No list or watch, no create or delete.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "patch"]
{{- end }}
{{- end -}}
