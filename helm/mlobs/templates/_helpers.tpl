{{/*
Names: <release>-mlobs, or the release name alone when it already contains the chart's name.
Kubernetes names are at most 63 characters where they become DNS labels (Services).
*/}}
{{- define "mlobs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mlobs.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The name of one component's objects: <fullname>-<component>, at most 63 characters. */}}
{{- define "mlobs.componentName" -}}
{{- $fullname := include "mlobs.fullname" .root -}}
{{- printf "%s-%s" ($fullname | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component -}}
{{- end -}}

{{- define "mlobs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "mlobs.labels" -}}
helm.sh/chart: {{ include "mlobs.chart" . }}
{{ include "mlobs.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlobs
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "mlobs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlobs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels and selector labels of one component: (dict "root" $ "component" "gpu-exporter"). */}}
{{- define "mlobs.componentLabels" -}}
{{ include "mlobs.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mlobs.componentSelectorLabels" -}}
{{ include "mlobs.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference from {repository, tag, digest}; the tag defaults to the appVersion. */}}
{{- define "mlobs.image" -}}
{{- $image := .image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{/*
YAML text parsed and returned as JSON; fails the render with the parser's message (fromYaml
alone would give a map with an "Error" key): (dict "text" "..." "name" "what it is").
*/}}
{{- define "mlobs.parseYaml" -}}
{{- $doc := fromYaml .text -}}
{{- if hasKey $doc "Error" -}}
{{- fail (printf "%s: %s" .name (get $doc "Error")) -}}
{{- end -}}
{{- toJson $doc -}}
{{- end -}}

{{/* Where Alertmanager sees the files of alertmanagerConfig.existingSecret. */}}
{{- define "mlobs.alertmanager.secretFilesDir" -}}
{{- $am := .Values.alertmanagerConfig -}}
{{- if $am.secretFilesDir -}}
{{- $am.secretFilesDir | trimSuffix "/" -}}
{{- else -}}
{{- printf "/etc/alertmanager/secrets/%s" $am.existingSecret -}}
{{- end -}}
{{- end -}}

{{/*
The OpenTelemetry Collector's configuration (YAML): the compose stack's
(collectors/otel-collector/config.yaml) with listeners on the pod's address, the backends of the
values, and collector.extraConfig merged over it.
*/}}
{{- define "mlobs.collector.config" -}}
{{- $c := .Values.collector -}}
{{- $metricsOut := list -}}
{{- $signalsOut := list -}}
{{- if $c.prometheusRemoteWrite.enabled }}{{ $metricsOut = append $metricsOut "prometheusremotewrite" }}{{ end -}}
{{- if $c.influxdb.enabled }}
{{- $metricsOut = append $metricsOut "influxdb" -}}
{{- $signalsOut = append $signalsOut "influxdb" -}}
{{- end -}}
{{- $logsIn := list "otlp" -}}
{{- if $c.fluentForward.enabled }}{{ $logsIn = append $logsIn "fluentforward" }}{{ end -}}
{{- $args := dict "c" $c "metricsOut" (default (list "debug") $metricsOut) "signalsOut" (append $signalsOut "debug") "logsIn" $logsIn -}}
{{- $base := include "mlobs.parseYaml" (dict "text" (include "mlobs.collector.baseConfig" $args) "name" "the collector configuration") | fromJson -}}
{{- toYaml (mustMergeOverwrite $base (deepCopy $c.extraConfig)) -}}
{{- end -}}

{{- define "mlobs.collector.baseConfig" -}}
{{- $c := .c -}}
extensions:
  health_check:
    endpoint: ${env:MY_POD_IP}:{{ $c.ports.health }}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: ${env:MY_POD_IP}:{{ $c.ports.otlpGrpc }}
      http:
        endpoint: ${env:MY_POD_IP}:{{ $c.ports.otlpHttp }}
  {{- if $c.fluentForward.enabled }}
  fluentforward:
    endpoint: ${env:MY_POD_IP}:{{ $c.ports.fluentForward }}
  {{- end }}
processors:
  # first in every pipeline: refuses data before the container's memory limit is reached (the
  # senders retry; mlobs keeps it in its spool)
  memory_limiter:
    check_interval: 1s
    limit_percentage: 80
    spike_limit_percentage: 20
  batch:
    send_batch_size: 8192
    timeout: 5s
exporters:
  debug:
    verbosity: {{ $c.debugVerbosity }}
  {{- with $c.prometheusRemoteWrite }}
  {{- if .enabled }}
  prometheusremotewrite:
    endpoint: {{ .endpoint | quote }}
    {{- with .namespace }}
    namespace: {{ . | quote }}
    {{- end }}
    resource_to_telemetry_conversion:
      enabled: {{ .resourceToTelemetryConversion }}
    target_info:
      enabled: true
    # mlobs sends points with the time they were recorded and replays older ones after an
    # outage: one consumer keeps each series in order
    remote_write_queue:
      enabled: true
      queue_size: 10000
      num_consumers: 1
    {{- with .headers }}
    headers:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  {{- end }}
  {{- end }}
  {{- with $c.influxdb }}
  {{- if .enabled }}
  influxdb:
    endpoint: {{ .endpoint | quote }}
    org: {{ .org | quote }}
    bucket: {{ .bucket | quote }}
    {{- if .tokenSecret.name }}
    token: ${env:INFLUXDB_TOKEN}
    {{- end }}
    metrics_schema: {{ .metricsSchema }}
    {{- if .v1Compatibility.enabled }}
    v1_compatibility:
      enabled: true
      db: {{ .v1Compatibility.db | quote }}
    {{- end }}
    timeout: 10s
    retry_on_failure:
      enabled: true
      initial_interval: 1s
      max_interval: 30s
      max_elapsed_time: 10m
  {{- end }}
  {{- end }}
service:
  extensions: [health_check]
  telemetry:
    metrics:
      level: normal
      readers:
        - pull:
            exporter:
              prometheus:
                host: ${env:MY_POD_IP}
                port: {{ $c.ports.metrics }}
  pipelines:
    metrics:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: {{ toJson .metricsOut }}
    logs:
      receivers: {{ toJson .logsIn }}
      processors: [memory_limiter, batch]
      exporters: {{ toJson .signalsOut }}
    traces:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: {{ toJson .signalsOut }}
{{- end -}}
