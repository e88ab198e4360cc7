{{- define "modelapi.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelapi.operatorName" -}}
{{- printf "%s-operator" (include "modelapi.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The labels of every object the chart renders (the Kubernetes recommended labels and helm.sh/chart), for one
component: operator, activator or monitoring. Called with (list $ "operator"). app.kubernetes.io/name is
modelapi-<component>, never modelapi alone: that value marks the model pods the operator makes (the PodMonitor
selects it).
*/}}
{{- define "modelapi.componentLabels" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: modelapi-{{ $component }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ $component }}
app.kubernetes.io/part-of: modelapi
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- end -}}

{{- define "modelapi.labels" -}}
{{- include "modelapi.componentLabels" (list . "operator") -}}
{{- end -}}

{{- define "modelapi.activatorLabels" -}}
{{- include "modelapi.componentLabels" (list . "activator") -}}
{{- end -}}

{{- define "modelapi.monitoringLabels" -}}
{{- include "modelapi.componentLabels" (list . "monitoring") -}}
{{- end -}}

{{/* The operator's pods (a subset of modelapi.labels): never app.kubernetes.io/name=modelapi (model pods). */}}
{{- define "modelapi.selectorLabels" -}}
app.kubernetes.io/name: modelapi-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modelapi.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modelapi.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "modelapi.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "modelapi.clusterwide" -}}
{{- if empty .Values.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{/*
What the operator does in a namespace it watches. The same rules go into the ClusterRole (cluster-wide) or into one
Role per watched namespace. Explicit groups, resources and verbs only: no wildcards, no Secrets (the operator
references a credentials Secret by name in the pod spec and never reads it).
*/}}
{{- define "modelapi.namespacedRules" -}}
# ModelAPIs: kopf lists and watches them and patches its bookkeeping annotations
# (serving.modelapi.io/last-handled-configuration, progress) onto them.
- apiGroups: ["serving.modelapi.io"]
  resources: ["modelapis"]
  verbs: ["get", "list", "watch", "patch"]
# The operator writes status (conditions, revisions, canary) through the status subresource.
- apiGroups: ["serving.modelapi.io"]
  resources: ["modelapis/status"]
  verbs: ["patch"]
# Children carry ownerReferences with blockOwnerDeletion: clusters that enable the
# OwnerReferencesPermissionEnforcement admission plugin require update on the owner's finalizers for that.
- apiGroups: ["serving.modelapi.io"]
  resources: ["modelapis/finalizers"]
  verbs: ["update"]
# Children: kopf indexes them from watch streams; the operator creates (a new revision's Deployment), applies
# (server-side apply = patch), and deletes those no longer desired.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Replica counts go through the scale subresource so that apply never owns spec.replicas (the HPA can).
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# spec.monitoring.predictionLog: the <name>-arms ConfigMap (each revision's role, read by its pods for the records'
# arm). kopf watches ConfigMaps by the operator's label only.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Scale to zero: while a model is at zero its Services have no selector and the operator writes their endpoints, an
# EndpointSlice of activator pods each (deleted when a replica is ready again).
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# ... and deletes the Endpoints object the endpoints controller left with the pods' addresses (the mirroring controller
# would copy them into a slice beside the activator's).
- apiGroups: [""]
  resources: ["endpoints"]
  verbs: ["delete"]
# Pods are only read: diagnosis (CrashLooping, ImagePullFailed, InsufficientGPU, ...) reads their status.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Events on ModelAPIs: the operator's (Serving, RollingOut, failures) and kopf's own (handler errors); both only
# create.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Read: the cluster autoscaler's TriggeredScaleUp Events on the model's pods (WaitingForCapacity), one filtered
# list and only while a pod is unschedulable past the grace.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list"]
# Ready means routable: the <name> Service's EndpointSlices are listed (by label) when Ready is about to turn True.
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list"]
# spec.storage.serviceAccountName is checked to exist (ServiceAccountNotFound); no token is ever requested.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get"]
# spec.expose: the Gateway it names is read (GatewayNotFound; its listener's protocol and port make status.url).
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["gateways"]
  verbs: ["get"]
{{- end -}}

{{- define "modelapi.activatorName" -}}
{{- printf "%s-activator" (include "modelapi.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The activator's pods (a subset of modelapi.activatorLabels): never app.kubernetes.io/name=modelapi. */}}
{{- define "modelapi.activatorSelectorLabels" -}}
app.kubernetes.io/name: modelapi-activator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
What the activator does in a namespace with models: list a model's pods (to find a ready one) and write the demand
annotation on a ModelAPI (patch); list ModelAPIs and Services to place a request that names a model by its bare name
or by a ClusterIP.
*/}}
{{- define "modelapi.activatorRules" -}}
- apiGroups: ["serving.modelapi.io"]
  resources: ["modelapis"]
  verbs: ["list", "patch"]
- apiGroups: [""]
  resources: ["pods", "services"]
  verbs: ["list"]
{{- end -}}

{{/* The base of the alerts' runbook_url: monitoring.runbookBaseUrl, else docs/runbooks.md of the chart's source
repository (Chart.yaml `sources`, when whoever publishes the chart names one) at this release's tag. */}}
{{- define "modelapi.runbookBaseUrl" -}}
{{- if .Values.monitoring.runbookBaseUrl -}}
{{- .Values.monitoring.runbookBaseUrl -}}
{{- else -}}
{{- $missing := printf "monitoring.prometheusRule.enabled needs monitoring.runbookBaseUrl (this chart names no source repository): the URL where your team opens docs/runbooks.md of modelapi v%s (a fork, an internal wiki); each alert's runbook_url is that URL#<alert name in lower case>" .Chart.AppVersion -}}
{{- $source := required $missing (first (.Chart.Sources | default list)) -}}
{{- printf "%s/blob/v%s/%s" (trimSuffix "/" $source) .Chart.AppVersion "docs/runbooks.md" -}}
{{- end -}}
{{- end -}}

{{- define "modelapi.metricsServiceName" -}}
{{- printf "%s-metrics" (include "modelapi.operatorName" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
