{{/* Chart name, overridable. */}}
{{- define "buildcache.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object name; 52 characters leave room for the longest suffix
("-webhook-tls"). */}}
{{- define "buildcache.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "buildcache.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object the chart creates: `kubectl get ... -l
app.kubernetes.io/instance=RELEASE,app.kubernetes.io/managed-by=Helm` lists them all. */}}
{{- define "buildcache.labels" -}}
helm.sh/chart: {{ include "buildcache.chart" . }}
{{ include "buildcache.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: buildcache
{{- end -}}

{{- define "buildcache.selectorLabels" -}}
app.kubernetes.io/name: {{ include "buildcache.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "buildcache.operatorSelectorLabels" -}}
{{ include "buildcache.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "buildcache.serviceAccountName" -}}
{{- default (include "buildcache.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* Names the operator is told through flags, so two releases (in different namespaces) never
fight over one object. */}}
{{- define "buildcache.leaseName" -}}
{{- printf "%s-operator" (include "buildcache.fullname" .) -}}
{{- end -}}
{{- define "buildcache.webhookService" -}}
{{- printf "%s-webhook" (include "buildcache.fullname" .) -}}
{{- end -}}
{{- define "buildcache.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "buildcache.fullname" .) -}}
{{- end -}}
{{- define "buildcache.webhookConfiguration" -}}
{{- include "buildcache.fullname" . -}}
{{- end -}}

{{- define "buildcache.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}
{{- define "buildcache.agentImage" -}}
{{- printf "%s:%s" .Values.agent.image.repository (default .Chart.AppVersion .Values.agent.image.tag) -}}
{{- end -}}

{{/* The operator's rules on the agents' objects (DaemonSet, Services, ConfigMap): server-side
apply (patch; an apply that creates is also authorized as create), informers, cleanup. */}}
{{- define "buildcache.ownedObjectRules" -}}
- apiGroups: [apps]
  resources: [daemonsets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [get, list, watch, create, patch, delete]
# operator/controllers/peer_tls: each BuildCache's peer CA and agent certificate Secrets (read,
# server-side apply, finalizer cleanup). Reading and creating Secrets grants no more than the
# DaemonSets above already do: an agent pod template could mount any Secret of its namespace.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, patch, delete]
# spec.access.networkPolicy: the agents' NetworkPolicy (apply; delete when turned off).
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, create, patch, delete]
# Caller identity and wheel builds: the agents' own ServiceAccount (apply; finalizer cleanup).
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [create, patch, delete]
# Wheel builds (operator/controllers/wheel_build_*): the builder pods (created from WheelBuilds,
# watched by label, deleted when their image cannot be pulled) and the agent pods the operator
# lists to check a WheelBuild's agentURL; the RoleBinding that lets a BuildCache's agents create
# WheelBuilds in its namespace (bind is granted on that ClusterRole only).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [rolebindings]
  verbs: [create, patch, delete]
{{- end }}
