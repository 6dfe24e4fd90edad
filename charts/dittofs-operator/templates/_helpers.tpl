{{/* Names, labels, images and RBAC rules shared by the templates. */}}

{{- define "dittofs-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or the release name alone when it already contains the chart name. */}}
{{- define "dittofs-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "dittofs-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dittofs-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dittofs-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of everything the release creates. */}}
{{- define "dittofs-operator.commonLabels" -}}
helm.sh/chart: {{ include "dittofs-operator.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: dittofs
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of the operator's own objects. */}}
{{- define "dittofs-operator.labels" -}}
{{ include "dittofs-operator.commonLabels" . }}
app.kubernetes.io/name: {{ include "dittofs-operator.name" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "dittofs-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dittofs-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest, else repository:tag (tag defaults to the appVersion). Argument: (list image $). */}}
{{- define "dittofs-operator.imageRef" -}}
{{- $img := index . 0 }}
{{- $root := index . 1 }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{- define "dittofs-operator.image" -}}
{{- include "dittofs-operator.imageRef" (list .Values.image .) }}
{{- end }}

{{- define "dittofs-operator.serverImage" -}}
{{- include "dittofs-operator.imageRef" (list .Values.serverImage .) }}
{{- end }}

{{- define "dittofs-operator.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.leaseNamespace }}
{{- end }}

{{- define "dittofs-operator.leaseName" -}}
{{- default (printf "%s-leader" (include "dittofs-operator.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "dittofs-operator.dittofsNamespace" -}}
{{- default .Release.Namespace .Values.dittofs.namespace }}
{{- end }}

{{/*
The operator's RBAC rules, from files/rbac-rules.yaml (the one place they are written).
"dittofs-operator.rules.watched": granted in each watched namespace (or cluster-wide).
"dittofs-operator.rules.leaderElection": granted in the lease namespace.
*/}}
{{- define "dittofs-operator.rules" -}}
{{- $rules := .Files.Get "files/rbac-rules.yaml" | fromYaml }}
{{- if or (not $rules) (hasKey $rules "Error") }}
{{- fail (printf "files/rbac-rules.yaml is missing or is not valid YAML: %v" $rules) }}
{{- end }}
{{- toYaml $rules }}
{{- end }}

{{- define "dittofs-operator.rules.watched" -}}
{{- $rules := include "dittofs-operator.rules" . | fromYaml }}
{{- toYaml (required "files/rbac-rules.yaml has no watched rules" $rules.watched) }}
{{- end }}

{{- define "dittofs-operator.rules.leaderElection" -}}
{{- $rules := include "dittofs-operator.rules" . | fromYaml }}
{{- toYaml (required "files/rbac-rules.yaml has no leaderElection rules" $rules.leaderElection) }}
{{- end }}

{{/* Checks of combinations that the values schema cannot express. */}}
{{- define "dittofs-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true: without a leader, the replicas would reconcile the same objects at once" }}
{{- end }}
{{- if .Values.dittofs.create }}
{{- $ns := include "dittofs-operator.dittofsNamespace" . }}
{{- if and .Values.watchNamespaces (not (has $ns .Values.watchNamespaces)) }}
{{- fail (printf "dittofs.create: the DittoFS would be in namespace %q, which the operator does not watch (watchNamespaces: %s)" $ns (join ", " .Values.watchNamespaces)) }}
{{- end }}
{{- end }}
{{- if ne (len .Values.watchNamespaces) (len (uniq .Values.watchNamespaces)) }}
{{- fail (printf "watchNamespaces has duplicates: %s" (join ", " .Values.watchNamespaces)) }}
{{- end }}
{{- end }}
