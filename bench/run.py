#!/usr/bin/env python3
"""eventpipe side by side with what users run instead, on one moto server.

  worker   SQS -> HTTP sink: eventpipe-worker (one message per request, and batches),
           the worker's floor (its own requests and nothing else), npm sqs-consumer,
           a boto3 loop, the Rust SDK's own receive/delete loop (the floor under a
           consumer built on it) and moto's ceiling (a raw receive/delete loop in boto3)
  streams  DynamoDB table -> stream -> HTTP sink: eventpipe-worker (one record per
           request, and batches) and a boto3 GetRecords loop
  ingress  signed 2 KiB GitHub webhooks (wrk): eventpipe-ingress to moto and with
           its no-op backend, and a Node receiver (@octokit/webhooks + SendMessage)
  e2e      webhook sent -> sink received, through ingress -> SQS -> worker
  push     examples/notes.yaml under `eventpipe dev`: a note POSTed -> its outcome
           pushed to the sender subscribed (SSE) with the 202's token, at a low rate
  idle     RSS and CPU of idle components

Every round starts a fresh moto server; contenders alternate within a round and
the tables show medians. Writes bench/results.json and the results part of
BENCHMARKS.md. `make bench` builds what this needs, then runs it.
"""

import argparse
import concurrent.futures
import datetime
import hashlib
import hmac
import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RELEASE = ROOT / "target" / "release"
TOOLS = ROOT / ".tools"
PYTHON = ROOT / ".venv" / "bin" / "python"
MOTO = ROOT / ".venv" / "bin" / "moto_server"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SECRET = "bench-webhook-secret"
AWS_ENV = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
}
# A shallow backlog: moto slows sharply as a queue grows.
WINDOW = 200


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def http_ok(url):
    try:
        host, _, rest = url.removeprefix("http://").partition("/")
        conn = http.client.HTTPConnection(host, timeout=1)
        conn.request("GET", "/" + rest)
        return conn.getresponse().status < 400
    except OSError:
        return False


class Proc:
    """A measured child process: CPU time and memory from /proc."""

    def __init__(self, name, cmd, env=None, stdout=None):
        self.name = name
        self.log = open(tempfile.mktemp(prefix=f"bench-{name}-", suffix=".log"), "w")
        self.p = subprocess.Popen(
            [str(c) for c in cmd],
            env={**os.environ, **AWS_ENV, **(env or {})},
            stdout=stdout or self.log,
            stderr=self.log,
            text=True,
            start_new_session=True,
        )

    def cpu_s(self):
        user, kernel = self.cpu_split()
        return user + kernel

    def cpu_split(self):
        """CPU seconds in user space and in the kernel (utime, stime)."""
        fields = Path(f"/proc/{self.p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS

    def mib(self, field):
        for line in Path(f"/proc/{self.p.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return None

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.alive():
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self.log.close()

    def tail(self):
        return Path(self.log.name).read_text()[-2000:]


class Moto:
    def __init__(self):
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc = Proc("moto", [MOTO, "-H", "127.0.0.1", "-p", port])
        wait_until(lambda: http_ok(self.endpoint + "/moto-api/"), 30, "moto")
        self.sqs = boto3.client("sqs", endpoint_url=self.endpoint, **boto_auth())

    def queue(self, name):
        attrs = {"VisibilityTimeout": "30"}
        return self.sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]

    def stop(self):
        self.proc.stop()


def boto_auth():
    return {
        "region_name": AWS_ENV["AWS_REGION"],
        "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    }


def serve_posts(answer):
    """An HTTP/1.1 server on loopback that answers each POST with `answer(headers,
    body)` -> (status, extra headers); returns the server and its URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, headers = answer(self.headers, body)
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    # A consumer killed mid-request resets its connection: expected, not worth a trace.
    server.handle_error = lambda *_: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/events"


class Sink:
    """The no-op HTTP processor every consumer delivers to. Records when each
    sequence number first arrived."""

    # A webhook's `"seq": 7`, or a stream record's image `"seq": {"N": "7"}`.
    SEQ = re.compile(rb'"seq":\s*(?:\{"N":\s*")?(\d+)')

    def __init__(self):
        self.first = {}
        self.deliveries = 0
        self.lock = threading.Lock()
        self.server, self.url = serve_posts(self.answer)

    def answer(self, _headers, body):
        self.record(body)
        return 200, []

    def record(self, body):
        """One event, or each event of a batch (a JSON array of CloudEvents)."""
        now = time.monotonic()
        seqs = [int(m.group(1)) for m in self.SEQ.finditer(body)]
        with self.lock:
            self.deliveries += max(len(seqs), 1)
            for seq in seqs:
                self.first.setdefault(seq, now)

    def count(self):
        return len(self.first)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def payload(seq, size):
    """A GitHub issue_comment webhook padded to `size` bytes."""
    event = {
        "seq": seq,
        "action": "created",
        "issue": {"number": 1000 + seq % 97, "title": "Crash on start"},
        "repository": {"full_name": f"acme/repo-{seq % 7}"},
        "comment": {"id": seq, "body": ""},
        "sender": {"login": "octocat"},
    }
    pad = size - len(json.dumps(event, separators=(",", ":")))
    event["comment"]["body"] = "x" * max(pad, 0)
    return json.dumps(event, separators=(",", ":"))


def sign(body):
    digest = hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    return "sha256=" + digest


# What `-batch` contenders add to the HTTP processor: up to 10 events per POST, the
# first waiting at most 10 ms for the others (a receive's messages reach the batch
# one task at a time).
BATCH = ", batch: {maxSize: 10, window: 10ms}"


def pipeline_config(tmp, sink_url, batch=False, manifest="pipeline.yaml"):
    text = (BENCH / manifest).read_text().replace("${SINK_URL}", sink_url)
    text = text.replace("${PROCESSOR_BATCH}", BATCH if batch else "")
    path = tmp / manifest
    path.write_text(text)
    secret = tmp / "secrets" / "github-webhook"
    secret.mkdir(parents=True, exist_ok=True)
    (secret / "secret").write_text(SECRET)
    return path


def start_worker(tmp, moto, sink_url, batch=False, manifest="pipeline.yaml"):
    ops = f"127.0.0.1:{free_port()}"
    proc = Proc(
        "eventpipe-worker",
        [RELEASE / "eventpipe-worker", "--config", pipeline_config(tmp, sink_url, batch, manifest),
         "--metrics-listen", ops, "--secrets-dir", tmp / "secrets"],
        env={"AWS_ENDPOINT_URL": moto.endpoint},
    )
    wait_until(lambda: http_ok(f"http://{ops}/readyz") or not proc.alive(), 30, "the worker")
    return checked(proc)


def start_ingress(tmp, moto, noop=False):
    port, ops = free_port(), free_port()
    cmd = [RELEASE / "eventpipe-ingress", "--config", pipeline_config(tmp, "http://unused"),
           "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{ops}",
           "--secrets-dir", tmp / "secrets"]
    if noop:
        cmd += ["--publish", "noop"]
    env = {"AWS_ENDPOINT_URL": moto.endpoint} if moto else {}
    proc = Proc("eventpipe-ingress-noop" if noop else "eventpipe-ingress", cmd, env=env)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{ops}/readyz") or not proc.alive(), 30, "the ingress")
    return checked(proc), f"http://127.0.0.1:{port}/hooks/github"


def start_peer(name, cmd, env):
    """A peer prints `ready` once it serves or consumes."""
    proc = Proc(name, cmd, env=env, stdout=subprocess.PIPE)
    line = proc.p.stdout.readline().strip()
    if line != "ready":
        proc.stop()
        raise RuntimeError(f"{name} did not start: {line}\n{proc.tail()}")
    return proc


def checked(proc):
    if not proc.alive():
        raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
    return proc


# ---------------------------------------------------------------- worker


WORKER_CONTENDERS = ["eventpipe", "eventpipe-batch", "floor", "floor-batch", "sqs-consumer", "boto3",
                     "sdk-floor", "ceiling"]
# Loops that only receive and delete, counted by what they print: nothing reaches the sink.
DELETE_LOOPS = {"sdk-floor", "ceiling"}
INGRESS_CONTENDERS = ["eventpipe", "eventpipe-noop", "octokit-node"]


def start_consumer(name, tmp, moto, queue_url, sink):
    env = {"QUEUE_URL": queue_url, "SINK_URL": sink.url, "AWS_ENDPOINT_URL": moto.endpoint}
    if name.startswith("eventpipe"):
        return start_worker(tmp, moto, sink.url, batch=name == "eventpipe-batch")
    if name == "sqs-consumer":
        return start_peer(name, ["node", BENCH / "peers" / "sqs-consumer.mjs"], env)
    if name.startswith("floor"):
        batch = {"BATCH": "1"} if name == "floor-batch" else {}
        return start_peer(name, [RELEASE / "examples" / "floor"], env | batch)
    if name == "sdk-floor":
        return start_peer(name, [RELEASE / "examples" / "sdk_floor"], env)
    script = BENCH / "peers" / "boto3_consumer.py"
    if name == "boto3":
        return start_peer(name, [PYTHON, script], env)
    return start_peer(name, [PYTHON, script, "--no-deliver"], env)


def deleted_counter(proc):
    """The delete loops print one line per deleted batch."""
    total = [0]

    def read():
        for line in proc.p.stdout:
            if line.strip().isdigit():
                total[0] += int(line)

    threading.Thread(target=read, daemon=True).start()
    return lambda: total[0]


def feed(sqs, queue_url, n, size, done):
    """Sends n messages in batches of 10, never more than WINDOW ahead of `done()`."""
    sent = 0
    while sent < n:
        if sent - done() >= WINDOW:
            time.sleep(0.002)
            continue
        entries = [
            {"Id": str(i), "MessageBody": payload(sent + i, size)}
            for i in range(min(10, n - sent))
        ]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        sent += len(entries)


class Profile:
    """`perf record` of a contender while it is measured (--perf DIR): where its CPU goes."""

    out = None

    def __init__(self, proc):
        self.perf = None
        if Profile.out and proc.name.startswith("eventpipe"):
            self.data = Profile.out / f"{proc.name}.perf.data"
            self.perf = subprocess.Popen(
                ["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-p", str(proc.p.pid),
                 "-o", str(self.data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        if self.perf:
            self.perf.send_signal(signal.SIGINT)
            self.perf.wait(60)
            report = subprocess.run(
                ["perf", "report", "-i", str(self.data), "--stdio", "--no-children",
                 "--sort", "dso,symbol", "--percent-limit", "0.5", "-g", "none"],
                capture_output=True, text=True).stdout
            self.data.with_suffix(".txt").write_text(report)


def worker_round(name, n, size):
    moto, sink, proc = Moto(), Sink(), None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            queue_url = moto.queue("bench-events")
            proc = start_consumer(name, Path(tmp), moto, queue_url, sink)
            done = deleted_counter(proc) if name in DELETE_LOOPS else sink.count
            time.sleep(1)  # the first long poll is out
            (user0, kernel0), t0 = proc.cpu_split(), time.monotonic()
            with Profile(proc):
                feed(moto.sqs, queue_url, n, size, done)
                wait_until(lambda: done() >= n or not proc.alive(), 120 + n / 10, f"{name} to drain {n}")
            checked(proc)
            last = time.monotonic() if name in DELETE_LOOPS else max(sink.first.values())
            user, kernel = proc.cpu_split()
            user, kernel = user - user0, kernel - kernel0
            elapsed, cpu = last - t0, user + kernel
            return {
                "msgs_per_s": n / elapsed,
                "cpu_s_per_1k": cpu / n * 1000,
                "kernel_cpu_s_per_1k": kernel / n * 1000,
                "cpu_share": cpu / elapsed,
                "peak_rss_mib": proc.mib("VmHWM"),
                "duplicates": max(sink.deliveries - sink.count(), 0),
            }
    finally:
        if proc:
            proc.stop()
        sink.stop()
        moto.stop()


# ---------------------------------------------------------------- streams


STREAM_CONTENDERS = ["eventpipe", "eventpipe-batch", "boto3"]
STREAM_TABLE = "bench-records"


def stream_table(moto):
    """A fresh table with a stream of new images; returns the stream's ARN."""
    ddb = boto3.client("dynamodb", endpoint_url=moto.endpoint, **boto_auth())
    out = ddb.create_table(
        TableName=STREAM_TABLE, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"})
    return ddb, out["TableDescription"]["LatestStreamArn"]


def write_records(ddb, n, size):
    """n items of about `size` bytes, 25 to a BatchWriteItem."""
    for start in range(0, n, 25):
        items = [{"PutRequest": {"Item": {
            "id": {"S": f"r{seq}"}, "seq": {"N": str(seq)}, "body": {"S": "x" * size}}}}
            for seq in range(start, min(start + 25, n))]
        ddb.batch_write_item(RequestItems={STREAM_TABLE: items})


def start_stream_consumer(name, tmp, moto, arn, sink):
    if name.startswith("eventpipe"):
        return start_worker(tmp, moto, sink.url, batch=name == "eventpipe-batch",
                            manifest="streams.yaml")
    env = {"STREAM_ARN": arn, "SINK_URL": sink.url, "AWS_ENDPOINT_URL": moto.endpoint}
    return start_peer(name, [PYTHON, BENCH / "peers" / "boto3_streams.py"], env)


def stream_round(name, n, size):
    """Records written to a table while one consumer reads its stream and delivers
    each record to the sink: records/s and CPU from the consumer's ready to the last."""
    moto, sink, proc = Moto(), Sink(), None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ddb, arn = stream_table(moto)
            proc = start_stream_consumer(name, Path(tmp), moto, arn, sink)
            time.sleep(1)  # its first reads are out
            cpu0, t0 = proc.cpu_s(), time.monotonic()
            with Profile(proc):
                write_records(ddb, n, size)
                wait_until(lambda: sink.count() >= n or not proc.alive(), 120 + n / 10,
                           f"{name} to deliver {n} records")
            checked(proc)
            elapsed, cpu = max(sink.first.values()) - t0, proc.cpu_s() - cpu0
            return {
                "records_per_s": n / elapsed,
                "cpu_s_per_1k": cpu / n * 1000,
                "cpu_share": cpu / elapsed,
                "peak_rss_mib": proc.mib("VmHWM"),
            }
    finally:
        if proc:
            proc.stop()
        sink.stop()
        moto.stop()


# ---------------------------------------------------------------- ingress


WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def start_receiver(name, tmp, moto):
    if name == "eventpipe-noop":
        return start_ingress(tmp, None, noop=True)
    queue_url = moto.queue("bench-events")
    if name == "eventpipe":
        return start_ingress(tmp, moto)
    port = free_port()
    env = {"PORT": str(port), "SECRET": SECRET, "QUEUE_URL": queue_url,
           "AWS_ENDPOINT_URL": moto.endpoint}
    proc = start_peer(name, ["node", BENCH / "peers" / "octokit-ingress.mjs"], env)
    return proc, f"http://127.0.0.1:{port}/hooks/github"


def wrk(url, seconds, connections, body_file, signature):
    out = subprocess.run(
        [TOOLS / "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
         "--latency", "-s", BENCH / "wrk" / "github.lua", url],
        env={**os.environ, "BENCH_BODY": str(body_file), "BENCH_SIGNATURE": signature},
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout

    def latency(pct):
        found = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not found:
            raise RuntimeError(f"unexpected wrk output:\n{out}")
        value, unit = found.groups()
        return float(value) * WRK_UNITS[unit]

    requests = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests": requests,
        "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": latency(50),
        "p99_ms": latency(99),
        "failed": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else None,
    }


def ingress_round(name, seconds, connections, size):
    moto = None if name == "eventpipe-noop" else Moto()
    proc = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            body_file = Path(tmp) / "body.json"
            body = payload(1, size)
            body_file.write_text(body)
            proc, url = start_receiver(name, Path(tmp), moto)
            wrk(url, 2, connections, body_file, sign(body))  # warm-up, not counted
            cpu0 = proc.cpu_s()
            with Profile(proc):
                result = wrk(url, seconds, connections, body_file, sign(body))
            cpu = proc.cpu_s() - cpu0
            checked(proc)
            result["cpu_s_per_1k"] = cpu / result["requests"] * 1000
            result["req_per_cpu_s"] = result["requests"] / cpu
            return result
    finally:
        if proc:
            proc.stop()
        if moto:
            moto.stop()


# ---------------------------------------------------------------- e2e


def e2e_run(rate, seconds, size):
    moto, sink, procs = Moto(), Sink(), []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            moto.queue("bench-events")
            procs.append(start_worker(Path(tmp), moto, sink.url))
            ingress, url = start_ingress(Path(tmp), moto)
            procs.append(ingress)
            sent = send_steadily(url, rate, seconds, size)
            wait_until(lambda: sink.count() >= len(sent), 60, "every event at the sink")
            latencies = sorted((sink.first[s] - t) * 1000 for s, t in sent.items() if s in sink.first)
            return {
                "events": len(sent),
                "p50_ms": percentile(latencies, 50),
                "p99_ms": percentile(latencies, 99),
                "max_ms": latencies[-1],
                "lost": len(sent) - len(latencies),
            }
    finally:
        for p in procs:
            p.stop()
        sink.stop()
        moto.stop()


def send_steadily(url, rate, seconds, size):
    """Signed webhooks at a fixed rate; returns each accepted one's send time."""
    host, _, path = url.removeprefix("http://").partition("/")
    local = threading.local()
    sent, lock = {}, threading.Lock()

    def send(seq):
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(host, timeout=10)
        body = payload(seq, size)
        headers = {"Content-Type": "application/json", "X-GitHub-Event": "issue_comment",
                   "X-GitHub-Delivery": f"e2e-{seq}", "X-Hub-Signature-256": sign(body)}
        start = time.monotonic()
        local.conn.request("POST", "/" + path, body=body, headers=headers)
        response = local.conn.getresponse()
        response.read()
        if response.status == 202:
            with lock:
                sent[seq] = start

    total = int(rate * seconds)
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for seq in range(total):
            time.sleep(max(0.0, t0 + seq / rate - time.monotonic()))
            pool.submit(send, seq)
    return sent


# ---------------------------------------------------------------- push


NOTES_TOKEN = "bench-notes-token"


def push_run(rate, notes):
    """examples/notes.yaml under `eventpipe dev`; each note's time from just before
    its POST to its outcome's arrival at the sender, subscribed after the 202."""
    moto, dev = Moto(), None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            secrets = Path(tmp) / "secrets"
            (secrets / "notes-api").mkdir(parents=True)
            (secrets / "notes-api" / "token").write_text(NOTES_TOKEN)
            port, ops = free_port(), free_port()
            cmd = [RELEASE / "eventpipe", "dev", "-f", ROOT / "examples" / "notes.yaml",
                   "--listen", f"127.0.0.1:{port}", "--ops-listen", f"127.0.0.1:{ops}",
                   "--console-listen", "127.0.0.1:0", "--secrets-dir", secrets,
                   "--log-format", "json"]
            dev = Proc("eventpipe-dev", cmd, env={"AWS_ENDPOINT_URL": moto.endpoint, "RUST_LOG": "warn"})
            wait_until(lambda: http_ok(f"http://127.0.0.1:{ops}/readyz") or not dev.alive(), 60,
                       "eventpipe dev")
            checked(dev)
            outcomes = post_and_follow(f"127.0.0.1:{port}", rate, notes)
            latencies = sorted(ms for ms, kind in outcomes if kind == "note-saved")
            if not latencies:
                raise RuntimeError(f"no note was pushed saved: {outcomes[:5]}\n{dev.tail()}")
            return {
                "notes": notes,
                "rate": rate,
                "p50_ms": percentile(latencies, 50),
                "p99_ms": percentile(latencies, 99),
                "max_ms": latencies[-1],
                "not_saved": notes - len(latencies),
            }
    finally:
        if dev:
            dev.stop()
        moto.stop()


def post_and_follow(host, rate, notes):
    """Notes POSTed at `rate`, each then followed to its first push: (ms, type) each,
    type None when refused or nothing came."""
    outcomes, lock = [], threading.Lock()

    def one(seq):
        start = time.monotonic()
        conn = http.client.HTTPConnection(host, timeout=30)
        try:
            conn.request("POST", "/notes", body=json.dumps({"text": f"note {seq}"}),
                         headers={"Authorization": f"Bearer {NOTES_TOKEN}", "X-Event-Type": "note",
                                  "Content-Type": "application/json"})
            response = conn.getresponse()
            answer = json.loads(response.read() or b"{}")
            kind = response.status == 202 and first_push(conn, answer)
        except (OSError, ValueError):
            kind = None
        finally:
            conn.close()
        with lock:
            outcomes.append(((time.monotonic() - start) * 1000, kind or None))

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for seq in range(notes):
            time.sleep(max(0.0, t0 + seq / rate - time.monotonic()))
            pool.submit(one, seq)
    return outcomes


def first_push(conn, accepted):
    """Subscribes (SSE) as the 202 says; the type of the first event pushed."""
    query = urllib.parse.urlencode({"correlationId": accepted["correlationId"],
                                    "access_token": accepted["subscribeToken"]})
    conn.request("GET", f"/notes/outcomes?{query}", headers={"Accept": "text/event-stream"})
    response = conn.getresponse()
    if response.status != 200:
        return None
    while line := response.readline():
        if line.startswith(b"data:"):
            return json.loads(line[5:]).get("type")
    return None


def push_report(p, date, m, command):
    return "\n\n".join([
        f"### Push: note POSTed → outcome pushed ({p['notes']:.0f} notes at {p['rate']}/s)",
        f"Run {date} on {m['cpu']} ({m['cores']} cores), moto {m['moto']}. Command: "
        f"`{command}`.",
        table(["p50 ms", "p99 ms", "max ms", "not pushed saved"],
              [[f"{p['p50_ms']:.1f}", f"{p['p99_ms']:.1f}", f"{p['max_ms']:.1f}",
                f"{p['not_saved']:.0f}"]]),
        f"Goal POST → push p50 ≤ 50 ms: {'met' if p['p50_ms'] <= 50 else '**not met**'}.",
    ])


def percentile(values, pct):
    return values[min(len(values) - 1, round(pct / 100 * (len(values) - 1)))]


# ---------------------------------------------------------------- idle


def idle(seconds):
    moto, sink, found = Moto(), Sink(), {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            moto.queue("bench-events")
            worker = start_worker(Path(tmp), moto, sink.url)
            ingress, _ = start_ingress(Path(tmp), moto)
            time.sleep(3)
            before = {p: p.cpu_s() for p in (worker, ingress)}
            time.sleep(seconds)
            for name, p in (("worker", worker), ("ingress", ingress)):
                found[name] = {
                    "rss_mib": p.mib("VmRSS"),
                    "cpu_pct": (p.cpu_s() - before[p]) / seconds * 100,
                }
                p.stop()
    finally:
        sink.stop()
        moto.stop()
    found["operator"] = {"rss_mib": None, "note": operator_idle_note()}
    return found


def operator_idle_note():
    return "measured on a cluster by `make bench-operator` (below)"


# ---------------------------------------------------------------- report


def median_of(rounds):
    keys = [k for k, v in rounds[0].items() if isinstance(v, (int, float))]
    merged = {k: statistics.median(r[k] for r in rounds) for k in keys}
    merged["rounds"] = len(rounds)
    return merged


def goals(results):
    w, i, e = results["worker"], results["ingress"], results["e2e"]
    ep, batched = w["eventpipe"], w["eventpipe-batch"]
    peers = min(w["sqs-consumer"]["cpu_s_per_1k"], w["boto3"]["cpu_s_per_1k"])
    ceiling = w["backend_ceiling_msgs_per_s"]
    fastest = max(ep["msgs_per_s"], batched["msgs_per_s"])
    # The floor makes the same requests and does nothing else: the least any worker pays.
    floor = {k: w[f"floor{k}"]["cpu_s_per_1k"] if f"floor{k}" in w else float("nan")
             for k in ("", "-batch")}
    checks = [
        ("worker CPU per message ≤ 1/10 of either peer, batch delivery",
         f"{batched['cpu_s_per_1k']:.3f} vs {peers:.3f} s/1k (floor {floor['-batch']:.3f})",
         batched["cpu_s_per_1k"] <= peers / 10),
        ("worker CPU per message ≤ 1/4 of either peer, one message per request",
         f"{ep['cpu_s_per_1k']:.3f} vs {peers:.3f} s/1k (floor {floor['']:.3f})",
         ep["cpu_s_per_1k"] <= peers / 4),
        ("worker ≥ 90 % of the backend's ceiling",
         f"{fastest / ceiling:.0%}", fastest >= 0.9 * ceiling),
        ("worker ≤ 25 % of a core",
         f"{ep['cpu_share']:.0%}", ep["cpu_share"] <= 0.25),
        ("ingress ≥ 20,000 verified req/s per core (no-op backend)",
         f"{i['eventpipe-noop']['req_per_cpu_s']:,.0f}", i["eventpipe-noop"]["req_per_cpu_s"] >= 20000),
        ("e2e p50 ≤ 25 ms", f"{e['p50_ms']:.1f} ms", e["p50_ms"] <= 25),
        ("e2e p99 ≤ 100 ms", f"{e['p99_ms']:.1f} ms", e["p99_ms"] <= 100),
    ]
    return [{"goal": g, "measured": m, "met": ok} for g, m, ok in checks]


def table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(results, command):
    w, i, e, idle_ = results["worker"], results["ingress"], results["e2e"], results["idle"]
    m = results["machine"]
    parts = [
        f"Run {results['date']} on {m['cpu']} ({m['cores']} cores), Linux {m['kernel']}, "
        f"moto {m['moto']}, Node {m['node']}. Command: `{command}`. "
        f"Medians of {results['rounds']} rounds.",
        "### Worker: SQS → HTTP sink "
        f"({results['params']['messages']:,} messages of {results['params']['message_bytes']} B)",
        table(["consumer", "msgs/s", "CPU s per 1k msgs", "of which kernel", "share of a core",
               "peak RSS MiB"],
              [[k, f"{v['msgs_per_s']:.0f}", f"{v['cpu_s_per_1k']:.3f}",
                f"{v['kernel_cpu_s_per_1k']:.3f}" if "kernel_cpu_s_per_1k" in v else "–",
                f"{v['cpu_share']:.0%}", f"{v['peak_rss_mib']:.0f}"]
               for k, v in w.items() if isinstance(v, dict)]
              + [["moto's ceiling (raw receive/delete)", f"{w['backend_ceiling_msgs_per_s']:.0f}",
                  "", "", "", ""]]),
        f"### Streams: table → stream → HTTP sink ({results['params']['records']:,} records "
        f"of {results['params']['record_bytes']} B, one shard)",
        table(["consumer", "records/s", "CPU s per 1k records", "share of a core",
               "peak RSS MiB"],
              [[k, f"{v['records_per_s']:.0f}", f"{v['cpu_s_per_1k']:.3f}",
                f"{v['cpu_share']:.0%}", f"{v['peak_rss_mib']:.0f}"]
               for k, v in results["streams"].items()]),
        f"### Ingress: signed {results['params']['webhook_bytes']} B GitHub webhooks, "
        f"{results['params']['connections']} connections, {results['params']['seconds']} s",
        table(["receiver", "req/s", "p50 ms", "p99 ms", "CPU s per 1k req", "req per CPU-second",
               "failed"],
              [[k, f"{v['req_per_s']:,.0f}", f"{v['p50_ms']:.2f}", f"{v['p99_ms']:.2f}",
                f"{v['cpu_s_per_1k']:.3f}", f"{v['req_per_cpu_s']:,.0f}", f"{v['failed']:.0f}"]
               for k, v in i.items()]),
        f"### End to end: webhook sent → sink received ({e['events']:.0f} events at "
        f"{results['params']['e2e_rate']}/s)",
        table(["p50 ms", "p99 ms", "max ms", "lost"],
              [[f"{e['p50_ms']:.1f}", f"{e['p99_ms']:.1f}", f"{e['max_ms']:.1f}", f"{e['lost']:.0f}"]]),
        "### Idle footprint",
        table(["component", "RSS MiB", "CPU %", "note"],
              [[k, f"{v['rss_mib']:.1f}" if v.get("rss_mib") else "–",
                f"{v['cpu_pct']:.2f}" if "cpu_pct" in v else "–", v.get("note", "")]
               for k, v in idle_.items()]),
        "### Goals",
        table(["goal", "measured", "met"],
              [[g["goal"], g["measured"], "yes" if g["met"] else "**no**"] for g in results["goals"]]),
    ]
    return "\n\n".join(parts)


def write_markdown(text, part="results"):
    path = ROOT / "BENCHMARKS.md"
    start, end = f"<!-- {part}:start -->", f"<!-- {part}:end -->"
    doc = path.read_text() if path.exists() else f"# Benchmarks\n\n{start}\n{end}\n"
    head, _, rest = doc.partition(start)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    moto = subprocess.run([PYTHON, "-c", "import moto; print(moto.__version__)"],
                          capture_output=True, text=True).stdout.strip()
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "moto": moto, "node": node}


def main():
    args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--rounds", type=int, default=3)
    args.add_argument("--messages", type=int, default=5000)
    args.add_argument("--seconds", type=int, default=10, help="per ingress round")
    args.add_argument("--connections", type=int, default=64)
    args.add_argument("--e2e-rate", type=int, default=50)
    args.add_argument("--e2e-seconds", type=int, default=60)
    args.add_argument("--records", type=int, default=3000, help="per streams round")
    args.add_argument("--push-rate", type=int, default=10)
    args.add_argument("--push-notes", type=int, default=200)
    args.add_argument("--only", choices=["worker", "streams", "ingress", "e2e", "idle", "push"],
                      action="append")
    args.add_argument("--contender", action="append", help="run only these contenders")
    args.add_argument("--no-write", action="store_true", help="print only")
    args.add_argument("--perf", type=Path, help="profile eventpipe's contenders into this folder")
    opts = args.parse_args()
    if opts.perf:
        opts.perf.mkdir(parents=True, exist_ok=True)
        Profile.out = opts.perf
    sections = ["worker", "streams", "ingress", "e2e", "idle"]
    only = set(opts.only or sections + ["push"])
    if opts.contender:
        WORKER_CONTENDERS[:] = [c for c in WORKER_CONTENDERS if c in opts.contender]
        STREAM_CONTENDERS[:] = [c for c in STREAM_CONTENDERS if c in opts.contender]
        INGRESS_CONTENDERS[:] = [c for c in INGRESS_CONTENDERS if c in opts.contender]
    path = BENCH / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    # The push section carries its own date and machine: a run of it alone leaves
    # the other sections' as they were.
    if only - {"push"}:
        results.update({
            "date": datetime.date.today().isoformat(),
            "machine": machine(),
            "rounds": opts.rounds,
            "params": {"messages": opts.messages, "message_bytes": 1024, "webhook_bytes": 2048,
                       "records": opts.records, "record_bytes": 1024,
                       "connections": opts.connections, "seconds": opts.seconds,
                       "e2e_rate": opts.e2e_rate, "e2e_seconds": opts.e2e_seconds},
        })

    if "worker" in only:
        rounds = {c: [] for c in WORKER_CONTENDERS}
        for r in range(opts.rounds):
            for c in WORKER_CONTENDERS:
                rounds[c].append(worker_round(c, opts.messages, 1024))
                say(f"worker round {r + 1} {c}: {fmt(rounds[c][-1])}")
        worker = {c: median_of(rounds[c]) for c in WORKER_CONTENDERS if c != "ceiling"}
        if rounds.get("ceiling"):
            worker["backend_ceiling_msgs_per_s"] = median_of(rounds["ceiling"])["msgs_per_s"]
        results.setdefault("worker", {}).update(worker)
    if "streams" in only:
        rounds = {c: [] for c in STREAM_CONTENDERS}
        for r in range(opts.rounds):
            for c in STREAM_CONTENDERS:
                rounds[c].append(stream_round(c, opts.records, 1024))
                say(f"streams round {r + 1} {c}: {fmt(rounds[c][-1])}")
        results.setdefault("streams", {}).update({c: median_of(v) for c, v in rounds.items()})
    if "ingress" in only:
        rounds = {c: [] for c in INGRESS_CONTENDERS}
        for r in range(opts.rounds):
            for c in INGRESS_CONTENDERS:
                rounds[c].append(ingress_round(c, opts.seconds, opts.connections, 2048))
                say(f"ingress round {r + 1} {c}: {fmt(rounds[c][-1])}")
        results.setdefault("ingress", {}).update({c: median_of(v) for c, v in rounds.items()})
    if "e2e" in only:
        results["e2e"] = e2e_run(opts.e2e_rate, opts.e2e_seconds, 2048)
        say(f"e2e: {fmt(results['e2e'])}")
    if "idle" in only:
        results["idle"] = idle(20)
        say(f"idle: {results['idle']}")
    if "push" in only:
        push = push_run(opts.push_rate, opts.push_notes)
        results["push"] = {**push, "date": datetime.date.today().isoformat(), "machine": machine()}
        say(f"push: {fmt(push)}")
        command = "bench/run.py --only push" if only == {"push"} else "make bench"
        text = push_report(push, results["push"]["date"], results["push"]["machine"], command)
        print("\n" + text)
        if not opts.no_write:
            write_markdown(text, "push")

    if all(k in results for k in sections) and "eventpipe-batch" in results["worker"]:
        results["goals"] = goals(results)
        text = report(results, "make bench")
        print("\n" + text)
        if not opts.no_write:
            write_markdown(text)
    if not opts.no_write:
        path.write_text(json.dumps(results, indent=2) + "\n")


def say(line):
    print(line, flush=True)


def fmt(d):
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())


if __name__ == "__main__":
    sys.exit(main())
