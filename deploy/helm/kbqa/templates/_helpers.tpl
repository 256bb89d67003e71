{{/* Names, labels and the settings every kbqa container shares. */}}

{{- define "kbqa.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kbqa.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "kbqa.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "kbqa.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kbqa.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kbqa.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "api") */}}
{{- define "kbqa.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kbqa.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kbqa.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "kbqa.secretName" -}}
{{- default (include "kbqa.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "kbqa.dataClaim" -}}
{{- default (printf "%s-data" (include "kbqa.fullname" .)) .Values.persistence.existingClaim -}}
{{- end -}}

{{- define "kbqa.postgresSecretName" -}}
{{- default (printf "%s-postgresql" (include "kbqa.fullname" .)) .Values.postgresql.auth.existingSecret -}}
{{- end -}}

{{/* The LLM's base URL: the bundled vLLM, else llm.baseUrl. */}}
{{- define "kbqa.llmBaseUrl" -}}
{{- if .Values.vllm.enabled -}}
{{- printf "http://%s-vllm:8000/v1" (include "kbqa.fullname" .) -}}
{{- else -}}
{{- .Values.llm.baseUrl -}}
{{- end -}}
{{- end -}}

{{/* Refuse values that would give a release that cannot work, with the fix in the message. */}}
{{- define "kbqa.validate" -}}
{{- $external := or .Values.externalDatabase.url .Values.secrets.existingSecret -}}
{{- if and .Values.postgresql.enabled .Values.externalDatabase.url -}}
{{- fail "set either postgresql.enabled (bundled) or externalDatabase.url, not both" -}}
{{- end -}}
{{- if not (or .Values.postgresql.enabled $external) -}}
{{- fail "a database is required: set postgresql.enabled=true, externalDatabase.url, or secrets.existingSecret with a RAG_DATABASE_URL key" -}}
{{- end -}}
{{- if and .Values.postgresql.enabled (not (or .Values.postgresql.auth.password .Values.postgresql.auth.existingSecret)) -}}
{{- fail "postgresql.enabled needs postgresql.auth.password or postgresql.auth.existingSecret" -}}
{{- end -}}
{{- if and (eq .Values.index.backend "milvus") (not (or .Values.milvus.enabled .Values.externalMilvus.uri)) -}}
{{- fail "index.backend=milvus needs milvus.enabled=true or externalMilvus.uri" -}}
{{- end -}}
{{- if not (or .Values.vllm.enabled .Values.llm.baseUrl) -}}
{{- fail "an LLM is required: set vllm.enabled=true or llm.baseUrl" -}}
{{- end -}}
{{- if and .Values.persistence.enabled (not .Values.persistence.existingClaim) (not (has "ReadWriteMany" .Values.persistence.accessModes)) (gt (add (int .Values.api.replicas) (ternary (int .Values.worker.replicas) 0 .Values.worker.enabled)) 1) -}}
{{- fail "more than one kbqa pod shares /data: persistence.accessModes needs ReadWriteMany (or one API replica and worker.enabled=false)" -}}
{{- end -}}
{{- end -}}

{{/* The containers' environment beyond the ConfigMap and the Secret: values built from
     other Secrets (Kubernetes expands $(VAR) from variables listed before it). */}}
{{- define "kbqa.env" -}}
{{- if .Values.postgresql.enabled }}
- name: KBQA_POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "kbqa.postgresSecretName" . }}
      key: {{ .Values.postgresql.auth.secretKey }}
- name: RAG_DATABASE_URL
  value: {{ printf "postgresql+psycopg://%s:$(KBQA_POSTGRES_PASSWORD)@%s-postgresql:5432/%s" .Values.postgresql.auth.username (include "kbqa.fullname" .) .Values.postgresql.auth.database | quote }}
{{- end }}
{{- end -}}

{{/* Volumes and mounts shared by the API and the worker. */}}
{{- define "kbqa.volumes" -}}
- name: data
  {{- if .root.Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "kbqa.dataClaim" .root }}
  {{- else }}
  emptyDir: {}
  {{- end }}
- name: index-cache
  emptyDir:
    sizeLimit: {{ .sizeLimit }}
- name: tmp
  emptyDir: {}
{{- if .root.Values.models.existingClaim }}
- name: models
  persistentVolumeClaim:
    claimName: {{ .root.Values.models.existingClaim }}
    readOnly: true
{{- end }}
{{- end -}}

{{- define "kbqa.volumeMounts" -}}
- name: data
  mountPath: /data
- name: index-cache
  mountPath: /data/index
- name: tmp
  mountPath: /tmp
{{- if .Values.models.existingClaim }}
- name: models
  mountPath: {{ .Values.models.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}
