#!/usr/bin/env bash
# Checks the Helm chart: lint, render with default and full values, validate every
# rendered object against the Kubernetes schemas (offline), and make sure bad values
# are refused at install time with a message naming the value.
set -euo pipefail
cd "$(dirname "$0")/.."
helm=.tools/helm
validate=".venv/bin/kubernetes-validate --strict --quiet -k 1.30.0"
chart=charts/eventpipe
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

$helm lint --strict "$chart"
# The CRDs themselves are valid apiextensions.k8s.io/v1 objects for Kubernetes 1.30.
$validate crds/*.yaml
diff -r crds "$chart/crds" --exclude='*.rs' --exclude=src --exclude=tests --exclude=Cargo.toml

$helm template t "$chart" -n eventpipe > "$out/default.yaml"
$helm template t "$chart" -n eventpipe \
  --set jaeger.enabled=true,localAws.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true \
  --set operator.replicas=2,externalMetrics.tlsSecret=tls,externalMetrics.certManagerCertificate=cert,console.enabled=true,console.redriveToken.secretName=ct \
  --set aws.credentialsSecret=aws,aws.endpoint=http://localstack:4566,otlp.endpoint=http://otel:4318,logLevel=debug \
  > "$out/full.yaml"
# Unknown kinds (the Prometheus operator's) only warn; any invalid object fails.
$validate "$out/default.yaml" "$out/full.yaml"

# What only an API server checks (port names, CEL rules, defaulting, admission): the
# CRDs and every rendered object, sent with --dry-run=server to the cluster in
# KUBECONFIG when one answers. Kinds the cluster does not serve (the Prometheus
# operator's) are left out, and said so.
kubectl=.tools/kubectl
if [ -n "${KUBECONFIG:-}" ] && $kubectl version --request-timeout=5s >/dev/null 2>&1; then
  $kubectl api-resources -o name --request-timeout=10s > "$out/served"
  for values in default full; do
    $helm template t "$chart" -n default $([ $values = full ] && echo \
      --set jaeger.enabled=true,localAws.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true \
      --set operator.replicas=2,externalMetrics.tlsSecret=tls,aws.credentialsSecret=aws,console.enabled=true,console.redriveToken.secretName=ct) > "$out/server-$values.yaml"
    .venv/bin/python - "$out/server-$values.yaml" "$out/served" <<'PY'
import sys, yaml
path, served = sys.argv[1], set(open(sys.argv[2]).read().split())
docs = [d for d in yaml.safe_load_all(open(path)) if d]
def name(d):
    group = d["apiVersion"].rpartition("/")[0]
    plural = d["kind"].lower() + ("es" if d["kind"].endswith("s") else "s")
    return f"{plural}.{group}" if group else plural
# A hook (the `helm test` Pod) is admitted against objects a dry run does not make.
hook = lambda d: "helm.sh/hook" in (d["metadata"].get("annotations") or {})
kept = [d for d in docs if name(d) in served and not hook(d)]
for d in docs:
    if hook(d):
        print(f"server dry-run: {d['kind']} {d['metadata']['name']} is a hook, run by helm test instead", file=sys.stderr)
    elif d not in kept:
        print(f"server dry-run: {d['kind']} not served by this cluster, not checked", file=sys.stderr)
yaml.safe_dump_all(kept, open(path, "w"))
PY
    $kubectl apply --server-side --force-conflicts --dry-run=server -f crds/ -f "$out/server-$values.yaml" >/dev/null
  done
  echo "chart: every rendered object accepted by the API server (dry run)"
else
  echo "chart: no cluster in KUBECONFIG answers; the API server's own checks (dry run) skipped"
fi

refuse() { # values... then the message that must appear
  local want=${*: -1} args=("${@:1:$#-1}")
  if msg=$($helm template t "$chart" "${args[@]}" 2>&1); then
    echo "accepted ${args[*]}, want a refusal mentioning $want"; exit 1
  fi
  grep -q -- "$want" <<<"$msg" || { echo "refused ${args[*]} without mentioning $want: $msg"; exit 1; }
}
refuse --set operator.replicas=lots "/operator/replicas"
refuse --set operator.replicas=0 "/operator/replicas"
refuse --set logLevel=loud "/logLevel"
refuse --set aws.region=mars "/aws/region"
refuse --set jaeger.enabled=yes "/jaeger/enabled"
refuse --set operator.typo=1 "typo"
refuse --set console.port=80 "/console/port"
refuse --set console.port=9090 "/console/port"   # the operator's own metrics port
refuse --set console.enabled=yes "/console/enabled"
refuse --set console.redriveToken.key= "/console/redriveToken/key"
echo "chart: lint, render, schema validation and value checks passed"
