#!/usr/bin/env python3
"""What the operator costs, on the cluster in KUBECONFIG (kind, k3d, EKS, ...).

  rss        resident memory with 100 and with 1,000 pipelines
  latency    pipeline applied -> its worker Deployment created (p50, p99), 100 pipelines
  restart    a fresh operator process -> every one of 1,000 pipelines reconciled
  requests   Kubernetes API requests per pipeline per minute at steady state, by verb

The release operator runs out of cluster against one moto server (all pipelines share
one QueueBinding) in a namespace whose ResourceQuota allows no pods: what is measured
is the operator, not the node. Writes bench/operator-results.json and the operator
part of BENCHMARKS.md. `make bench-operator` builds what this needs, then runs it.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RELEASE, ROOT, TOOLS, Moto, Proc, free_port, http_ok, percentile, wait_until  # noqa: E402

KUBECTL = str(TOOLS / "kubectl")
SMALL, LARGE = 100, 1000
STEADY_SECONDS = 60


def kubectl(*args, stdin=None):
    out = subprocess.run([KUBECTL, *args], input=stdin, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def cluster_answers():
    if not os.environ.get("KUBECONFIG"):
        return "KUBECONFIG is not set"
    probe = subprocess.run([KUBECTL, "get", "--raw", "/version"], capture_output=True, text=True, timeout=30)
    return None if probe.returncode == 0 else f"the cluster does not answer: {probe.stderr.strip()}"


def documents(ns, first, last):
    """Pipelines first..last-1, as one multi-document YAML."""
    docs = []
    for i in range(first, last):
        docs.append(json.dumps({
            "apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline",
            "metadata": {"name": f"p{i:04d}", "namespace": ns},
            "spec": {"sources": [{"queueBindingRef": {"name": "shared"}}],
                     "processor": {"http": {"url": "http://processor.invalid/"}}},
        }))
    return "\n---\n".join(docs)


class Operator:
    def __init__(self, moto):
        self.port = free_port()
        self.proc = Proc("operator", [
            RELEASE / "eventpipe-operator", "run", "--no-leader-election",
            "--metrics-listen", f"127.0.0.1:{self.port}",
            "--external-metrics-listen", f"127.0.0.1:{free_port()}",
        ], env={"AWS_ENDPOINT_URL": moto.endpoint, "RUST_LOG": "warn"})
        self.started = time.monotonic()
        wait_until(lambda: http_ok(f"http://127.0.0.1:{self.port}/readyz"), 60, "the operator")

    def metrics(self):
        import urllib.request
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10).read().decode()
        found = {}
        for line in text.splitlines():
            m = re.match(r'^(eventpipe_operator_\w+?)(?:_total)?\{([^}]*)\} (\S+)$', line)
            if m:
                found[(m.group(1), m.group(2))] = float(m.group(3))
        return found

    def requests(self):
        return {labels.split('"')[1]: v for (name, labels), v in self.metrics().items()
                if name == "eventpipe_operator_api_requests"}

    def reconciled(self):
        """Reconciles of pipelines finished (the duration is observed at the end)."""
        key = ("eventpipe_operator_reconcile_duration_seconds_count", 'kind="EventPipeline"')
        return self.metrics().get(key, 0)

    def stop(self):
        self.proc.stop()


class DeploymentWatch:
    """When each worker Deployment of the namespace first appeared."""

    def __init__(self, ns):
        self.seen, self.lock = {}, threading.Lock()
        self.proc = subprocess.Popen(
            [KUBECTL, "get", "deployments", "-n", ns, "--watch", "--no-headers",
             "-o", "custom-columns=NAME:.metadata.name"],
            stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            name = line.strip()
            with self.lock:
                self.seen.setdefault(name, time.monotonic())

    def count(self):
        with self.lock:
            return len(self.seen)

    def stop(self):
        self.proc.terminate()


def measure():
    moto = Moto()
    ns = f"eventpipe-bench-{os.getpid()}"
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl("create", "namespace", ns)
    # No pods: the Deployments the operator makes stay at zero running replicas.
    kubectl("create", "quota", "no-pods", "--hard=pods=0", "-n", ns)
    binding = {"apiVersion": "eventpipe.dev/v1alpha1", "kind": "QueueBinding",
               "metadata": {"name": "shared", "namespace": ns},
               "spec": {"sqs": {"queueName": "bench-shared", "create": True}}}
    kubectl("apply", "-f", "-", stdin=json.dumps(binding))
    operator, watch, results = Operator(moto), DeploymentWatch(ns), {}
    try:
        # Latency: one pipeline at a time, a second apart at most.
        latencies = []
        for i in range(SMALL):
            kubectl("apply", "-f", "-", stdin=documents(ns, i, i + 1))
            applied = time.monotonic()
            name = f"p{i:04d}-worker"
            wait_until(lambda: name in watch.seen, 60, name)
            latencies.append(watch.seen[name] - applied)
        latencies.sort()
        results["apply_to_deployment_ms"] = {"p50": percentile(latencies, 50) * 1000,
                                             "p99": percentile(latencies, 99) * 1000}
        time.sleep(20)
        results["rss_mib_100"] = operator.proc.mib("VmRSS")
        before, t0 = operator.requests(), time.monotonic()
        time.sleep(STEADY_SECONDS)
        after, minutes = operator.requests(), (time.monotonic() - t0) / 60
        results["requests_per_pipeline_minute"] = {
            verb: round((after.get(verb, 0) - before.get(verb, 0)) / SMALL / minutes, 2) for verb in after}

        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            f.write(documents(ns, SMALL, LARGE))
            f.flush()
            kubectl("apply", "-f", f.name)
        wait_until(lambda: watch.count() >= LARGE, 600, f"{LARGE} worker Deployments")
        time.sleep(30)
        results["rss_mib_1000"] = operator.proc.mib("VmRSS")

        operator.stop()
        operator = Operator(moto)
        wait_until(lambda: operator.reconciled() >= LARGE, 600, f"{LARGE} pipelines reconciled")
        results["restart_reconcile_s"] = time.monotonic() - operator.started
    finally:
        watch.stop()
        operator.stop()
        subprocess.run([KUBECTL, "delete", "namespace", ns, "--wait=false"], capture_output=True)
        moto.stop()
    return results


GOALS = [
    ("RSS, 100 pipelines", lambda r: f"{r['rss_mib_100']:.1f} MiB", "≤ 40 MiB", lambda r: r["rss_mib_100"] <= 40),
    ("RSS, 1,000 pipelines", lambda r: f"{r['rss_mib_1000']:.1f} MiB", "–", None),
    ("apply → Deployment p50 / p99", lambda r: "{p50:.0f} ms / {p99:.0f} ms".format(**r["apply_to_deployment_ms"]),
     "p50 < 1 s", lambda r: r["apply_to_deployment_ms"]["p50"] < 1000),
    ("restart → 1,000 pipelines reconciled", lambda r: f"{r['restart_reconcile_s']:.1f} s", "< 30 s",
     lambda r: r["restart_reconcile_s"] < 30),
    ("API requests per pipeline per minute, steady",
     lambda r: ", ".join(f"{v} {k}" for k, v in sorted(r["requests_per_pipeline_minute"].items())) or "none",
     "watches only", lambda r: all(v == 0 for k, v in r["requests_per_pipeline_minute"].items() if k != "watch")),
]


def report(results):
    rows = ["| measure | measured | goal | met |", "|---|---|---|---|"]
    for name, shown, goal, met in GOALS:
        ok = "–" if met is None else ("yes" if met(results) else "no")
        rows.append(f"| {name} | {shown(results)} | {goal} | {ok} |")
    return "\n".join(rows)


def main():
    why = cluster_answers()
    if why:
        print(f"SKIP: {why}; the operator's cost needs a cluster")
        return
    results = measure()
    (ROOT / "bench" / "operator-results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = report(results)
    print(table)
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    start, end = "<!-- operator:start -->", "<!-- operator:end -->"
    if start in text:
        head, rest = text.split(start, 1)
        text = head + start + "\n" + table + "\n" + end + rest.split(end, 1)[1]
        path.write_text(text)


if __name__ == "__main__":
    main()
