{{/*
Names are fixed (one stateguard per cluster): the kustomize base uses the same ones, the
self-protection rule's defaults name them, and the webhook configuration is cluster-scoped.
*/}}

{{/* Labels on every object. */}}
{{- define "stateguard.labels" -}}
{{ include "stateguard.selectorLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels the Service, PodDisruptionBudget and anti-affinity select the pods by. */}}
{{- define "stateguard.selectorLabels" -}}
app.kubernetes.io/name: stateguard
app.kubernetes.io/component: webhook
{{- end }}

{{- define "stateguard.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The Secret with tls.crt, tls.key (and ca.crt) the webhook serves with. */}}
{{- define "stateguard.tlsSecretName" -}}
{{- if eq (include "stateguard.certMode" .) "provided" -}}
{{ required "certificates.provided.secretName is required" .Values.certificates.provided.secretName }}
{{- else -}}
stateguard-webhook-tls
{{- end -}}
{{- end }}

{{- define "stateguard.certMode" -}}
{{- $mode := .Values.certificates.mode -}}
{{- if not (has $mode (list "certManager" "provided")) -}}
{{- fail (printf "certificates.mode must be certManager or provided, not %q" (toString $mode)) -}}
{{- end -}}
{{- $mode -}}
{{- end }}

{{/*
A failure policy value, checked: call with (list "destructive" .Values.failurePolicy), or with a
third element, the value to use when the key is missing (a release installed by an older chart
and upgraded with --reuse-values keeps its old values, without the keys added since).
*/}}
{{- define "stateguard.failurePolicy" -}}
{{- $group := index . 0 -}}
{{- $value := index (index . 1) $group -}}
{{- if and (kindIs "invalid" $value) (gt (len .) 2) -}}
{{- $value = index . 2 -}}
{{- end -}}
{{- if not (has $value (list "Fail" "Ignore")) -}}
{{- fail (printf "failurePolicy.%s must be Fail or Ignore, not %q" $group (toString $value)) -}}
{{- end -}}
{{- $value -}}
{{- end }}

{{- define "stateguard.timeoutSeconds" -}}
{{- $t := int .Values.timeoutSeconds -}}
{{- if or (lt $t 1) (gt $t 10) -}}
{{- fail (printf "timeoutSeconds must be between 1 and 10 (well under kube-apiserver's own timeout), not %v" .Values.timeoutSeconds) -}}
{{- end -}}
{{- $t -}}
{{- end }}

{{/* kube-system, the release namespace, then namespaceExclusions; no duplicates. */}}
{{- define "stateguard.excludedNamespaces" -}}
{{- $ns := list "kube-system" .Release.Namespace -}}
{{- range .Values.namespaceExclusions -}}
{{- $ns = append $ns . -}}
{{- end -}}
{{- toYaml (uniq $ns) -}}
{{- end }}

{{/* The fields every webhook entry shares (all but failurePolicy, namespaceSelector, rules). */}}
{{- define "stateguard.webhookCommon" -}}
matchPolicy: Equivalent
sideEffects: None
admissionReviewVersions: [v1]
timeoutSeconds: {{ include "stateguard.timeoutSeconds" . }}
clientConfig:
  service:
    name: stateguard-webhook
    namespace: {{ .Release.Namespace }}
    path: /validate
    port: 443
  {{- if eq (include "stateguard.certMode" .) "provided" }}
  caBundle: {{ required "certificates.provided.caBundle is required when certificates.mode is provided (certs/gen-certs.sh prints it)" .Values.certificates.provided.caBundle | quote }}
  {{- end }}
{{- end }}

{{/*
namespaceSelector of the destructive and advisory entries (webhook-groups.yaml: exclusions): the
webhook's own namespace and kube-system are never sent, so the add-on (and the control plane) can
always be repaired. Cluster-scoped objects (PersistentVolumes) are not filtered by a
namespaceSelector; a Namespace object is matched by its own labels.
*/}}
{{- define "stateguard.namespaceSelector.exclusions" -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- include "stateguard.excludedNamespaces" . | nindent 8 }}
{{- end }}

{{/*
namespaceSelector of the self entry (webhook-groups.yaml: own): the release namespace only. No
objectSelector: the rule checks the object names itself; a selector on labels would let a user
who may edit the labels remove them and escape the check.
*/}}
{{- define "stateguard.namespaceSelector.own" -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: In
      values: [{{ .Release.Namespace | quote }}]
{{- end }}

{{/*
Only the updates a rule judges reach the destructive entry (Kubernetes 1.28+, see
manifests/base/validatingwebhookconfiguration.yaml): the PV binder's updates never wait for the
webhook. Older clusters get no matchConditions; their PV/PVC updates go to the advisory entry.
*/}}
{{- define "stateguard.matchConditions" -}}
{{- $allow := .Values.policy.breakGlass.annotation | default "stateguard.io/allow" | squote -}}
{{- if semverCompare ">=1.28-0" .Capabilities.KubeVersion.Version -}}
matchConditions:
  - name: guarded-change
    expression: >-
      request.operation != 'UPDATE' ||
      !(request.resource.resource in ['persistentvolumes', 'persistentvolumeclaims', 'statefulsets']) ||
      (has(request.subResource) && request.subResource == 'scale') ||
      (has(oldObject.metadata.finalizers) && oldObject.metadata.finalizers.exists(f,
      f in ['kubernetes.io/pv-protection', 'kubernetes.io/pvc-protection'] &&
      !(has(object.metadata.finalizers) && f in object.metadata.finalizers))) ||
      (has(object.metadata.annotations) && {{ $allow }} in object.metadata.annotations &&
      !(has(oldObject.metadata.annotations) && {{ $allow }} in oldObject.metadata.annotations &&
      oldObject.metadata.annotations[{{ $allow }}] == object.metadata.annotations[{{ $allow }}])) ||
      (request.resource.resource == 'persistentvolumes' &&
      (has(object.spec.persistentVolumeReclaimPolicy) ? object.spec.persistentVolumeReclaimPolicy : 'Delete') !=
      (has(oldObject.spec.persistentVolumeReclaimPolicy) ? oldObject.spec.persistentVolumeReclaimPolicy : 'Delete')) ||
      (request.resource.resource == 'persistentvolumeclaims' &&
      (has(object.metadata.ownerReferences) ? object.metadata.ownerReferences : []) !=
      (has(oldObject.metadata.ownerReferences) ? oldObject.metadata.ownerReferences : [])) ||
      (request.resource.resource == 'statefulsets' &&
      ((has(object.spec.replicas) ? object.spec.replicas : 1) != (has(oldObject.spec.replicas) ? oldObject.spec.replicas : 1) ||
      object.spec.template != oldObject.spec.template ||
      (has(object.spec.persistentVolumeClaimRetentionPolicy) ? object.spec.persistentVolumeClaimRetentionPolicy : {}) !=
      (has(oldObject.spec.persistentVolumeClaimRetentionPolicy) ? oldObject.spec.persistentVolumeClaimRetentionPolicy : {})))
{{- end -}}
{{- end -}}
