{{/*
Names, labels, fixed paths and the checks every render runs.
*/}}

{{/* The oldest Istio and Envoy the filter works with (allow_on_headers_stop_iteration needs
Envoy 1.35; Istio 1.27 is the first release whose proxy is built on it). */}}
{{- define "portcullis.minIstio" -}}1.27.0{{- end -}}
{{- define "portcullis.minEnvoy" -}}1.35.0{{- end -}}

{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "portcullis.fullname" -}}
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

{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: runner
{{- end -}}

{{- define "portcullis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "portcullis.serviceAccountName" -}}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "portcullis.ticketSecret" -}}
{{- default (printf "%s-ticket-key" (include "portcullis.fullname" .)) .Values.ticketKey.existingSecret -}}
{{- end -}}

{{- define "portcullis.runnerKeySecret" -}}
{{- default (printf "%s-runner-key" (include "portcullis.fullname" .)) .Values.runner.signingKey.existingSecret -}}
{{- end -}}

{{- define "portcullis.policyConfigMap" -}}
{{- default (printf "%s-policy" (include "portcullis.fullname" .)) .Values.policy.existingConfigMap -}}
{{- end -}}

{{/* An image reference: by digest when one is given, else by tag. */}}
{{- define "portcullis.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .default .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Where the gateway (Envoy) listens: the runner's port behind the Istio sidecar, or the plain
Envoy's own port. */}}
{{- define "portcullis.gatewayPort" -}}
{{- if eq .Values.proxy "istio" -}}{{ .Values.runner.port }}{{- else -}}{{ .Values.envoy.port }}{{- end -}}
{{- end -}}

{{/* Paths inside the pod. */}}
{{- define "portcullis.filterDir" -}}/var/run/portcullis/filter{{- end -}}
{{- define "portcullis.accessLogDir" -}}/var/run/portcullis/gateway{{- end -}}
{{- define "portcullis.gatewayTlsDir" -}}/etc/portcullis/gateway-tls{{- end -}}

{{/*
Refuses values that cannot work. Every template that renders an object includes it, so a bad
value stops the whole render with one message.
*/}}
{{- define "portcullis.validate" -}}
{{- $v := .Values -}}
{{- if eq $v.proxy "istio" -}}
  {{- if not $v.istio.version -}}
    {{- fail "istio.version is required: the Istio version of the data plane (istioctl version)" -}}
  {{- else if semverCompare (printf "<%s" (include "portcullis.minIstio" .)) $v.istio.version -}}
    {{- fail (printf "Istio %s is too old: Portcullis needs Istio >= %s (Envoy >= %s, for allow_on_headers_stop_iteration)" $v.istio.version (include "portcullis.minIstio" .) (include "portcullis.minEnvoy" .)) -}}
  {{- end -}}
  {{- if not $v.istio.agentPrincipals -}}
    {{- fail "istio.agentPrincipals is empty: name at least one agent principal the AuthorizationPolicy admits" -}}
  {{- end -}}
{{- else -}}
  {{- if semverCompare (printf "<%s" (include "portcullis.minEnvoy" .)) $v.envoy.version -}}
    {{- fail (printf "Envoy %s is too old: Portcullis needs Envoy >= %s (allow_on_headers_stop_iteration)" $v.envoy.version (include "portcullis.minEnvoy" .)) -}}
  {{- end -}}
  {{- if not $v.envoy.trustDomains -}}
    {{- fail "envoy.trustDomains is empty: name the agents' SPIFFE trust domain(s) and bundle(s)" -}}
  {{- end -}}
{{- end -}}
{{- if has "local" $v.runner.backends -}}
  {{- fail "runner.backends: the local backend cannot run in this chart's pod (it needs unprivileged user namespaces, which seccomp RuntimeDefault and the dropped capabilities forbid); use kubernetes" -}}
{{- end -}}
{{- if not $v.filter.sha256 -}}
  {{- fail "filter.sha256 is required: the SHA-256 of portcullis_filter.wasm (make images prints it)" -}}
{{- end -}}
{{- if and (eq $v.filter.module.source "ociArtifact") (not (regexMatch "@sha256:[0-9a-f]{64}$" $v.filter.module.artifact)) -}}
  {{- fail "filter.module.artifact must be pinned by digest (registry/repo@sha256:<64 hex>) when filter.module.source is ociArtifact" -}}
{{- end -}}
{{- range $name, $value := dict "gateway.tlsSecret" $v.gateway.tlsSecret "gateway.spiffeId" $v.gateway.spiffeId "gateway.runnerSpiffeId" $v.gateway.runnerSpiffeId "runner.tlsSecret" $v.runner.tlsSecret "catalog.content" $v.catalog.content -}}
  {{- if not $value -}}{{- fail (printf "%s is required" $name) -}}{{- end -}}
{{- end -}}
{{- if not (or $v.ticketKey.existingSecret (and $v.ticketKey.privateKeyPem $v.ticketKey.publicKeyPem)) -}}
  {{- fail "ticketKey: give existingSecret, or both privateKeyPem and publicKeyPem" -}}
{{- end -}}
{{- if and $v.ticketKey.existingSecret (or $v.ticketKey.privateKeyPem $v.ticketKey.publicKeyPem) -}}
  {{- fail "ticketKey: give existingSecret or the PEMs, not both" -}}
{{- end -}}
{{- if not (or $v.runner.signingKey.existingSecret $v.runner.signingKey.privateKeyPem) -}}
  {{- fail "runner.signingKey: give existingSecret or privateKeyPem" -}}
{{- end -}}
{{- if and $v.runner.signingKey.existingSecret $v.runner.signingKey.privateKeyPem -}}
  {{- fail "runner.signingKey: give existingSecret or privateKeyPem, not both" -}}
{{- end -}}
{{- if not (or $v.policy.existingConfigMap $v.policy.files) -}}
  {{- fail "policy: give files or existingConfigMap" -}}
{{- end -}}
{{- if and $v.policy.existingConfigMap $v.policy.files -}}
  {{- fail "policy: give files or existingConfigMap, not both" -}}
{{- end -}}
{{- if and $v.networkPolicy.enabled (not $v.networkPolicy.apiServer.cidrs) -}}
  {{- fail "networkPolicy.apiServer.cidrs is empty: the Kubernetes backend must reach the API server (kubectl get endpoints kubernetes)" -}}
{{- end -}}
{{- $_ := include "portcullis.toolRules" . -}}
{{- end -}}

{{/*
The catalog parsed from catalog.content.
*/}}
{{- define "portcullis.catalog" -}}
{{- $catalog := fromYaml .Values.catalog.content -}}
{{- if hasKey $catalog "Error" -}}
{{- fail (printf "catalog.content is not valid YAML: %s" (get $catalog "Error")) -}}
{{- end -}}
{{- if not (kindIs "slice" (get $catalog "tools")) -}}
{{- fail "catalog.content has no list of tools" -}}
{{- end -}}
{{- toYaml $catalog -}}
{{- end -}}

{{/*
The union of the catalog's execution.kubernetes.rules, as RBAC PolicyRules (a YAML list), in
catalog order, duplicates removed. The runner must hold every permission it puts into a job's
Role (it has no escalate or bind), so these are bound to it cluster-wide; a rule that would give
it more than plain access (escalate, bind, impersonate, or a wildcard) is refused.
*/}}
{{- define "portcullis.toolRules" -}}
{{- $catalog := include "portcullis.catalog" . | fromYaml -}}
{{- $rules := list -}}
{{- range $tool := $catalog.tools -}}
  {{- $k := default dict (dig "execution" "kubernetes" dict $tool) -}}
  {{- range $r := (default list $k.rules) -}}
    {{- $rule := dict "apiGroups" (default list $r.api_groups) "resources" (default list $r.resources) "verbs" (default list $r.verbs) -}}
    {{- if $r.resource_names -}}{{- $_ := set $rule "resourceNames" $r.resource_names -}}{{- end -}}
    {{- range $verb := $rule.verbs -}}
      {{- if has $verb (list "escalate" "bind" "impersonate" "*") -}}
        {{- fail (printf "catalog tool %s: verb %q in execution.kubernetes.rules would be held by the runner cluster-wide; refused" $tool.name $verb) -}}
      {{- end -}}
    {{- end -}}
    {{- if or (has "*" $rule.resources) (has "*" $rule.apiGroups) -}}
      {{- fail (printf "catalog tool %s: a wildcard in execution.kubernetes.rules would be held by the runner cluster-wide; refused" $tool.name) -}}
    {{- end -}}
    {{- if not (has $rule $rules) -}}{{- $rules = append $rules $rule -}}{{- end -}}
  {{- end -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}

{{/*
The access log's JSON format: envoy/envoy.yaml's, so the runner's ingester reads the filter's
decision record (portcullis_decision) the same way in every deployment.
*/}}
{{- define "portcullis.accessLogFormat" -}}
start_time: "%START_TIME%"
request_id: "%REQ(X-REQUEST-ID)%"
method: "%REQ(:METHOD)%"
path: "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"
protocol: "%PROTOCOL%"
response_code: "%RESPONSE_CODE%"
response_code_details: "%RESPONSE_CODE_DETAILS%"
response_flags: "%RESPONSE_FLAGS%"
duration_ms: "%DURATION%"
bytes_received: "%BYTES_RECEIVED%"
bytes_sent: "%BYTES_SENT%"
downstream_peer_uri_san: "%DOWNSTREAM_PEER_URI_SAN%"
downstream_remote_address: "%DOWNSTREAM_REMOTE_ADDRESS%"
downstream_tls_version: "%DOWNSTREAM_TLS_VERSION%"
user_agent: "%REQ(USER-AGENT)%"
upstream_host: "%UPSTREAM_HOST%"
upstream_transport_failure_reason: "%UPSTREAM_TRANSPORT_FAILURE_REASON%"
portcullis_decision: "%FILTER_STATE(wasm.portcullis_decision:PLAIN)%"
{{- end -}}

{{/*
TLS from Envoy to the runner: TLS 1.3, the gateway's certificate as client certificate, and only
the runner's SPIFFE ID accepted upstream (envoy/envoy.yaml's cluster portcullis_runner).
*/}}
{{- define "portcullis.runnerTlsSocket" -}}
{{- $tls := include "portcullis.gatewayTlsDir" . -}}
name: envoy.transport_sockets.tls
typed_config:
  "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
  sni: localhost
  common_tls_context:
    tls_params:
      tls_minimum_protocol_version: TLSv1_3
      tls_maximum_protocol_version: TLSv1_3
    tls_certificates:
      - certificate_chain: { filename: {{ $tls }}/tls.crt }
        private_key: { filename: {{ $tls }}/tls.key }
    validation_context:
      trusted_ca: { filename: {{ $tls }}/ca.crt }
      match_typed_subject_alt_names:
        - san_type: URI
          matcher: { exact: {{ .Values.gateway.runnerSpiffeId | quote }} }
{{- end -}}

{{/*
The gateway's local_reply_config: envoy/envoy.yaml's. Envoy's own refusals of a request the
filter never decided (codec errors, 426, 431, an escaped slash, 408) come as JSON-RPC errors with
id null; the filter's own replies and the upstream errors it restates (the filter state
wasm.portcullis_decision is set) are left alone.
*/}}
{{- define "portcullis.localReplyConfig" -}}
mappers:
  - filter:
      extension_filter:
        name: envoy.access_loggers.extension_filters.cel
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter
          expression: "response.code >= 400 && response.code < 500 && !('wasm.portcullis_decision' in filter_state)"
    body_format_override:
      json_format:
        jsonrpc: "2.0"
        id: null
        error:
          code: -32600
          message: "the proxy refused the request before it was decided (HTTP %RESPONSE_CODE%: %RESPONSE_CODE_DETAILS%)"
  - filter:
      extension_filter:
        name: envoy.access_loggers.extension_filters.cel
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter
          expression: "response.code >= 500 && response.code < 600 && !('wasm.portcullis_decision' in filter_state)"
    body_format_override:
      json_format:
        jsonrpc: "2.0"
        id: null
        error:
          code: -32603
          message: "the proxy refused the request before it was decided (HTTP %RESPONSE_CODE%: %RESPONSE_CODE_DETAILS%)"
{{- end -}}
