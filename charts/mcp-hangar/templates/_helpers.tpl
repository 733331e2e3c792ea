{{/* The chart name, for labels. */}}
{{- define "mcp-hangar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name: every resource name derives from it (at most 44 characters, so that
"<fullname>-webhook-tls" and the like stay valid names). */}}
{{- define "mcp-hangar.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 44 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 44 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 44 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Selector labels of the operator's pods (immutable in the Deployment). */}}
{{- define "mcp-hangar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcp-hangar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "mcp-hangar.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mcp-hangar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mcp-hangar
{{- end }}

{{- define "mcp-hangar.serviceAccountName" -}}
{{- default (include "mcp-hangar.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* The webhook Service: `serve --tls-service-name`, and the certificate's DNS names. */}}
{{- define "mcp-hangar.webhookService" -}}
{{- printf "%s-webhook" (include "mcp-hangar.fullname" .) }}
{{- end }}

{{/* Both webhook configurations: `serve --mutating-webhook-config` and `--validating-webhook-config`. */}}
{{- define "mcp-hangar.webhookConfiguration" -}}
{{- include "mcp-hangar.fullname" . }}
{{- end }}

{{/* The self-managed Secret: `serve --tls-secret-name`. */}}
{{- define "mcp-hangar.tlsSecret" -}}
{{- printf "%s-webhook-tls" (include "mcp-hangar.fullname" .) }}
{{- end }}

{{/* The Secret the pods mount in the files and cert-manager modes. */}}
{{- define "mcp-hangar.mountedTlsSecret" -}}
{{- if eq .Values.tls.mode "cert-manager" }}
{{- printf "%s-webhook-cert" (include "mcp-hangar.fullname" .) }}
{{- else }}
{{- required "tls.files.secretName is required with tls.mode=files" .Values.tls.files.secretName }}
{{- end }}
{{- end }}

{{/* The controller's leader-election Lease (the binary's default name). */}}
{{- define "mcp-hangar.leaseName" -}}
mcp-hangar-controller
{{- end }}

{{- define "mcp-hangar.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Namespaces the pod-level check never sees: kube-system, the release namespace, the extra ones. */}}
{{- define "mcp-hangar.excludedNamespaces" -}}
{{- $names := list "kube-system" .Release.Namespace | uniq }}
{{- range .Values.webhook.excludeNamespaces }}
{{- if and . (not (has . $names)) }}
{{- $names = append $names . }}
{{- end }}
{{- end }}
{{- toJson $names }}
{{- end }}
