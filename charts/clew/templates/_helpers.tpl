{{/* Names and labels shared by every object. */}}
{{- define "clew.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "clew.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "clew.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The image by digest when one is given (immutable), else by tag. */}}
{{- define "clew.image" -}}
{{- if .Values.image.digest -}}
{{ printf "%s@%s" .Values.image.repository .Values.image.digest | quote }}
{{- else -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}
{{- end -}}
{{- end -}}

{{/* Flags and environment naming the Kafka bus, for every clew container. */}}
{{- define "clew.kafkaArgs" -}}
{{- $tls := .Values.kafka.tls.enabled }}
{{- $sasl := .Values.kafka.sasl.enabled }}
- --kafka-property=security.protocol={{ if and $sasl $tls }}SASL_SSL{{ else if $sasl }}SASL_PLAINTEXT{{ else if $tls }}SSL{{ else }}PLAINTEXT{{ end }}
{{- range $k, $v := .Values.kafka.properties }}
- --kafka-property={{ $k }}={{ $v }}
{{- end }}
{{- if .Values.kafka.tls.enabled }}
- --kafka-property=ssl.ca.location=/etc/clew/kafka-ca/ca.crt
{{- end }}
{{- if .Values.kafka.sasl.enabled }}
- --kafka-property=sasl.mechanism={{ .Values.kafka.sasl.mechanism }}
{{- end }}
{{- end -}}

{{- define "clew.kafkaEnv" -}}
- name: CLEW_KAFKA
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: CLEW_TOPIC_PREFIX
  value: {{ .Values.kafka.topicPrefix | quote }}
- name: CLEW_KAFKA_REPLICATION
  value: {{ .Values.kafka.replicationFactor | quote }}
- name: CLEW_LOG
  value: {{ .Values.logLevel | quote }}
{{- if .Values.kafka.sasl.enabled }}
# The SASL credentials are files of the mounted Secret, never environment values.
- name: CLEW_KAFKA_SASL_USERNAME_FILE
  value: /etc/clew/kafka-sasl/username
- name: CLEW_KAFKA_SASL_PASSWORD_FILE
  value: /etc/clew/kafka-sasl/password
{{- end }}
{{- end -}}

{{- define "clew.blobStoreEnv" -}}
# The bucket every pod keeps manifests in; credentials from their Secret.
- name: CLEW_BLOB_STORE
  value: {{ .Values.blobStore.url | quote }}
{{- with .Values.blobStore.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
- name: AWS_REGION
  value: {{ .Values.blobStore.region | quote }}
# The credentials are files of the mounted Secret, never environment values.
- name: CLEW_BLOB_STORE_ACCESS_KEY_ID_FILE
  value: /etc/clew/blob-store/AWS_ACCESS_KEY_ID
- name: CLEW_BLOB_STORE_SECRET_ACCESS_KEY_FILE
  value: /etc/clew/blob-store/AWS_SECRET_ACCESS_KEY
{{- if .Values.blobStore.caSecret }}
- name: CLEW_BLOB_STORE_CA
  value: /etc/clew/blob-store-ca/ca.crt
{{- end }}
{{- end -}}

{{- define "clew.blobStoreVolumes" -}}
- name: blob-store-credentials
  secret:
    secretName: {{ .Values.blobStore.credentialsSecret }}
    defaultMode: 0400
{{- if .Values.blobStore.caSecret }}
- name: blob-store-ca
  secret:
    secretName: {{ .Values.blobStore.caSecret }}
{{- end }}
{{- end -}}

{{- define "clew.blobStoreMounts" -}}
- name: blob-store-credentials
  mountPath: /etc/clew/blob-store
  readOnly: true
{{- if .Values.blobStore.caSecret }}
- name: blob-store-ca
  mountPath: /etc/clew/blob-store-ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "clew.kafkaCaVolume" -}}
{{- if .Values.kafka.tls.enabled }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
{{- end }}
{{- if .Values.kafka.sasl.enabled }}
- name: kafka-sasl
  secret:
    secretName: {{ .Values.kafka.sasl.existingSecret }}
    defaultMode: 0400
{{- end }}
{{- end -}}

{{- define "clew.kafkaCaMount" -}}
{{- if .Values.kafka.tls.enabled }}
- name: kafka-ca
  mountPath: /etc/clew/kafka-ca
  readOnly: true
{{- end }}
{{- if .Values.kafka.sasl.enabled }}
- name: kafka-sasl
  mountPath: /etc/clew/kafka-sasl
  readOnly: true
{{- end }}
{{- end -}}

{{/* The witnesses, for the sequencer (it sends them checkpoints) and the
replicas (they keep their cosignatures); nothing when none are listed. */}}
{{- define "clew.witnessArgs" -}}
{{- if gt (int .Values.witnesses.quorum) (len .Values.witnesses.list) }}
{{- fail (printf "witnesses.quorum %d needs at least %d witnesses in witnesses.list; %d listed" (int .Values.witnesses.quorum) (int .Values.witnesses.quorum) (len .Values.witnesses.list)) }}
{{- end }}
{{- range .Values.witnesses.list }}
- --witness={{ .verifierKey }}@{{ .url }}
{{- end }}
{{- if and .Values.witnesses.list .Values.witnesses.quorum }}
- --witness-quorum={{ .Values.witnesses.quorum }}
{{- end }}
{{- end -}}
