#!/usr/bin/env python3
"""Soak with faults: does every accepted webhook end stored or dead-lettered?

Runs bench/soak.yaml on one moto server with real processes: the ingress, the ingest
worker, the aggregator worker, and a recording HTTP processor. A load generator sends
signed webhooks at a steady rate for --minutes while faults are injected:

  * a worker is killed with SIGKILL every 5 s (the ingest worker and the aggregator
    in turn) and restarted at once;
  * moto is frozen (SIGSTOP) for 30 s, then resumed;
  * the processor answers 503 (Retry-After: 2) for 20 s.

Then the pipeline drains and every 202 is accounted for: stored (in soak-effects),
dead-lettered (in soak-events-dlq, with its reason), or lost. Duplicate effects are
aggregator counts beyond the events stored (eventpipe's own DynamoDB processor, with
idempotency). Deliveries repeated to the HTTP processor are counted too: a delivery
whose worker dies after the processor answered, before the claim is marked done,
is delivered again once the claim expires, so an HTTP processor's effect is exactly
once only if it keys its writes by the event id (ce-id). Writes bench/soak-results.json and the soak part of
RELIABILITY.md. `make soak` builds what this needs, then runs it.
"""

import argparse
import collections
import itertools
import datetime
import json
import os
import signal
import sys
import tempfile
import threading
import time
import http.client
from pathlib import Path

import boto3

from run import (ROOT, Moto, Proc, boto_auth, free_port, http_ok, machine, serve_posts,
                 sign, wait_until)

BENCH = ROOT / "bench"
SECRET_NAME = "soak-webhook"
QUEUE, DLQ = "soak-events", "soak-events-dlq"
EFFECTS, COUNTS = "soak-effects", "soak-counts"
BUCKETS = 16
# The two workers, by the pipeline each consumes and its extra arguments; each is
# killed every 10 s in turn. A short stream lease lets a restarted aggregator take its
# shard back within seconds rather than the default 30 s.
WORKERS = {
    "worker": ("soak-ingest", []),
    "aggregator": ("soak-aggregate", ["--lease-duration", "5s"]),
}
BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"


def say(line):
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


class Processor:
    """The ingest pipeline's HTTP processor: records each event in soak-effects (see
    `record`), or answers 503 during an outage."""

    def __init__(self, endpoint):
        self.down_until = 0.0
        self.calls = collections.Counter()
        self.lock = threading.Lock()
        ddb = boto3.client("dynamodb", endpoint_url=endpoint, **boto_auth())
        self.server, self.url = serve_posts(
            lambda headers, body: self.handle(ddb, headers.get("ce-id", ""), body))

    def handle(self, ddb, event_id, body):
        """(status, headers) for one delivery."""
        down = time.monotonic() < self.down_until
        with self.lock:
            self.calls["503" if down else "call"] += 1
        if down:
            return 503, [("Retry-After", "2")]
        try:
            record(ddb, event_id, json.loads(body)["seq"])
        except Exception as e:  # moto frozen or overloaded: the worker retries
            with self.lock:
                self.calls[f"error: {type(e).__name__}"] += 1
            return 500, []
        return 200, []

    def outage(self, seconds):
        self.down_until = time.monotonic() + seconds

    def stop(self):
        self.server.shutdown()


def record(ddb, event_id, seq):
    """The effect of one delivery: the first a put (the stream's INSERT, with the
    whole item), each repeat a count (a MODIFY) that shows as a duplicate effect."""
    item = {"id": {"S": event_id}, "seq": {"N": str(seq)},
            "bucket": {"S": f"b{seq % BUCKETS}"}, "deliveries": {"N": "1"}}
    try:
        ddb.put_item(TableName=EFFECTS, Item=item, ConditionExpression="attribute_not_exists(id)")
    except ddb.exceptions.ConditionalCheckFailedException:
        ddb.update_item(TableName=EFFECTS, Key={"id": {"S": event_id}},
                        UpdateExpression="ADD deliveries :one",
                        ExpressionAttributeValues={":one": {"N": "1"}})


class Load:
    """Signed webhooks at a steady rate; records every answer."""

    def __init__(self, url, rate, seconds, senders=8):
        self.url, self.rate, self.seconds, self.senders = url, rate, seconds, senders
        self.accepted = {}  # event id -> seq
        self.answers = collections.Counter()
        self.lock = threading.Lock()
        self.threads = []

    def start(self):
        self.started = time.monotonic()
        for n in range(self.senders):
            t = threading.Thread(target=self.send_from, args=(n,), daemon=True)
            t.start()
            self.threads.append(t)

    def send_from(self, n):
        host = self.url.removeprefix("http://").split("/")[0]
        path = "/" + self.url.removeprefix("http://").split("/", 1)[1]
        conn = None
        seq = n
        total = int(self.rate * self.seconds)
        while seq < total:
            due = self.started + seq / self.rate
            time.sleep(max(0.0, due - time.monotonic()))
            body = json.dumps({"seq": seq, "action": "created", "padding": "x" * 200})
            headers = {"Content-Type": "application/json", "X-GitHub-Event": "soak",
                       "X-GitHub-Delivery": f"d-{seq}", "X-Hub-Signature-256": sign(body)}
            try:
                conn = conn or http.client.HTTPConnection(host, timeout=15)
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                answer = response.read()
                self.record(seq, response.status, answer)
            except (OSError, http.client.HTTPException) as e:
                conn = None
                with self.lock:
                    self.answers[type(e).__name__] += 1
            seq += self.senders

    def record(self, seq, status, answer):
        with self.lock:
            self.answers[status] += 1
            if status == 202:
                self.accepted[json.loads(answer)["eventId"]] = seq

    def wait(self):
        for t in self.threads:
            t.join()


class Rig:
    """The processes under test, on one moto server, with their faults."""

    def __init__(self, tmp, binaries):
        self.tmp, self.binaries = tmp, binaries
        self.moto = Moto()
        self.processor = Processor(self.moto.endpoint)
        self.config = self.write_config()
        self.kills = collections.Counter()
        self.ingress, self.workers = None, {}
        self.env = {"AWS_ENDPOINT_URL": self.moto.endpoint, "RUST_LOG": "warn"}

    def write_config(self):
        text = (BENCH / "soak.yaml").read_text().replace("${PROCESSOR_URL}", self.processor.url)
        path = self.tmp / "soak.yaml"
        path.write_text(text)
        secret = self.tmp / "secrets" / SECRET_NAME
        secret.mkdir(parents=True, exist_ok=True)
        (secret / "secret").write_text("bench-webhook-secret")
        return path

    def provision(self):
        """What the operator would create: the queue, its DLQ, and the effects table
        with its stream (the harness's processor writes it)."""
        for name in (QUEUE, DLQ, "soak-effects-dlq"):
            self.moto.sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "20"})
        ddb = boto3.client("dynamodb", endpoint_url=self.moto.endpoint, **boto_auth())
        ddb.create_table(
            TableName=EFFECTS,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )

    def command(self, name):
        pipeline, args = WORKERS[name]
        return [self.binaries / "eventpipe-worker", "--config", self.config,
                "--metrics-listen", f"127.0.0.1:{free_port()}", "--secrets-dir",
                self.tmp / "secrets", "--pipeline", pipeline, *args]

    def started(self, name, cmd):
        ops = cmd[cmd.index("--metrics-listen") + 1]
        proc = Proc(name, cmd, env=self.env)
        wait_until(lambda: http_ok(f"http://{ops}/readyz") or not proc.alive(), 60, name)
        if not proc.alive():
            raise RuntimeError(f"{name} did not start:\n{proc.tail()}")
        return proc

    def start(self):
        self.provision()
        port = free_port()
        self.ingress = self.started("ingress", [
            self.binaries / "eventpipe-ingress", "--config", self.config, "--metrics-listen",
            f"127.0.0.1:{free_port()}", "--secrets-dir", self.tmp / "secrets",
            "--listen", f"127.0.0.1:{port}"])
        self.url = f"http://127.0.0.1:{port}/hooks/soak"
        self.workers = {name: self.started(name, self.command(name)) for name in WORKERS}

    def kill(self, name):
        """SIGKILL one worker and start it again at once, without waiting for it to
        be ready (moto may be frozen right now)."""
        proc = self.workers[name]
        os.killpg(proc.p.pid, signal.SIGKILL)
        proc.p.wait()
        proc.log.close()
        self.kills[name] += 1
        self.workers[name] = Proc(name, self.command(name), env=self.env)

    def freeze_moto(self, seconds):
        os.kill(self.moto.proc.p.pid, signal.SIGSTOP)
        time.sleep(seconds)
        os.kill(self.moto.proc.p.pid, signal.SIGCONT)

    def stop(self):
        for proc in [*self.workers.values(), self.ingress]:
            if proc:
                proc.stop()
        self.processor.stop()
        self.moto.stop()


def faults(rig, seconds, stop):
    """SIGKILL a worker every 5 s, the two in turn; freeze moto at 30 % of the run,
    the processor at 60 %. Returns when the run is over."""
    start = time.monotonic()
    turns = itertools.cycle(WORKERS)
    plan = {"moto": 0.3 * seconds, "processor": 0.6 * seconds}
    while not stop.is_set() and time.monotonic() - start < seconds:
        stop.wait(5)
        elapsed = time.monotonic() - start
        if "moto" in plan and elapsed >= plan["moto"]:
            del plan["moto"]
            say("moto frozen (SIGSTOP) for 30 s")
            threading.Thread(target=rig.freeze_moto, args=(30,), daemon=True).start()
        if "processor" in plan and elapsed >= plan["processor"]:
            del plan["processor"]
            say("processor answers 503 for 20 s")
            rig.processor.outage(20)
        rig.kill(next(turns))


def drain(rig, accepted, timeout):
    """Waits until the queue is empty and the aggregator has counted every stored
    event (or `timeout`); the worker runs undisturbed meanwhile."""
    sqs = boto3.client("sqs", endpoint_url=rig.moto.endpoint, **boto_auth())
    url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        waiting = sum(int(attrs[k]) for k in ("ApproximateNumberOfMessages",
                                              "ApproximateNumberOfMessagesNotVisible",
                                              "ApproximateNumberOfMessagesDelayed"))
        effects, counted = stored(rig), sum(counts(rig).values())
        say(f"draining: {waiting} in the queue, {len(effects)} stored, {counted} counted")
        if waiting == 0 and counted >= len(effects) and len(effects) > 0:
            return
        time.sleep(5)


def scan(rig, table):
    ddb = boto3.client("dynamodb", endpoint_url=rig.moto.endpoint, **boto_auth())
    items, start = [], None
    while True:
        page = ddb.scan(TableName=table, **({"ExclusiveStartKey": start} if start else {}))
        items += page["Items"]
        start = page.get("LastEvaluatedKey")
        if not start:
            return items


def stored(rig):
    return {i["id"]["S"]: int(i["deliveries"]["N"]) for i in scan(rig, EFFECTS)}


def counts(rig):
    return {i["id"]["S"]: int(i["events"]["N"]) for i in scan(rig, COUNTS)}


def dead_letters(rig):
    """Event id -> reason of every message in the DLQ (read, then left there)."""
    sqs = boto3.client("sqs", endpoint_url=rig.moto.endpoint, **boto_auth())
    try:
        url = sqs.get_queue_url(QueueName=DLQ)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        return {}
    found = {}
    for _ in range(1000):  # bounded: 10 per receive
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                  VisibilityTimeout=300, MessageAttributeNames=["All"])
        if not got.get("Messages"):
            break
        for m in got["Messages"]:
            attrs = m.get("MessageAttributes", {})
            reason = attrs.get("eventpipe-error", {}).get("StringValue", "(no reason)")
            found[json.loads(m["Body"]).get("id", m["MessageId"])] = reason
    return found


def account(load, rig, started, duration):
    effects, dead = stored(rig), dead_letters(rig)
    accepted = set(load.accepted)
    stored_ids = accepted & set(effects)
    dead_ids = (accepted - stored_ids) & set(dead)
    lost = sorted(accepted - stored_ids - dead_ids)
    counted = sum(counts(rig).values())
    return {
        "date": datetime.date.today().isoformat(),
        "minutes": round(duration / 60, 1),
        "rate_per_s": load.rate,
        "sent": sum(load.answers.values()),
        "answers": {str(k): v for k, v in sorted(load.answers.items(), key=str)},
        "accepted": len(accepted),
        "stored": len(stored_ids),
        "dead_lettered": len(dead_ids),
        "dead_letter_reasons": dict(collections.Counter(dead[i][:80] for i in dead_ids)),
        "lost": len(lost),
        "lost_examples": lost[:10],
        # A publish that outlived its timeout still lands: the sender, told 503, would
        # send again, and the same delivery id makes it the same event.
        "stored_though_refused": len(set(effects) - accepted),
        "duplicate_effects": sum(1 for n in effects.values() if n > 1),
        "aggregated": counted,
        "aggregate_difference": counted - len(effects),
        "worker_kills": dict(rig.kills),
        "processor_503s": rig.processor.calls["503"],
        "processor_calls": dict(rig.processor.calls),
        "machine": machine(),
        "drain_s": round(time.monotonic() - started - duration, 1),
    }


def report(r):
    rows = [
        ("webhooks sent", r["sent"]),
        ("answers", ", ".join(f"{k}: {v}" for k, v in r["answers"].items())),
        ("accepted (202)", r["accepted"]),
        ("stored", r["stored"]),
        ("dead-lettered", r["dead_lettered"]),
        ("lost", r["lost"]),
        ("answered 503 yet stored (a retry is the same event)", r["stored_though_refused"]),
        ("deliveries repeated to the HTTP processor (it records each)", r["duplicate_effects"]),
        ("duplicate effects: aggregated minus stored", r["aggregate_difference"]),
        ("SIGKILLs", ", ".join(f"{k} {v}" for k, v in r["worker_kills"].items())),
        ("processor 503 answers", r["processor_503s"]),
        ("drain after the load (s)", r["drain_s"]),
    ]
    reasons = "".join(f"\n- dead-lettered because: {k} ({v})"
                      for k, v in r["dead_letter_reasons"].items())
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    m = r["machine"]
    on = f"{m['cores']} cores ({m['cpu']}), moto {m['moto']}"
    return (f"{BEGIN}\n`make soak` on {r['date']}, {on}: {r['minutes']} min at "
            f"{r['rate_per_s']} webhooks/s, a worker SIGKILLed every 5 s, moto frozen 30 s, "
            f"the processor down 20 s.\n\n| | |\n|---|---|\n{table}\n{reasons}\n{END}")


def write_report(text):
    path = ROOT / "RELIABILITY.md"
    doc = path.read_text()
    if BEGIN in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + text + rest.split(END, 1)[1]
    else:
        doc += f"\n## Soak with faults\n\n{text}\n"
    path.write_text(doc)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    # What the aggregator keeps up with on moto, reading its one shard a record at a time.
    parser.add_argument("--rate", type=float, default=5, help="webhooks per second")
    parser.add_argument("--binaries", type=Path, default=ROOT / "target" / "release")
    parser.add_argument("--drain-minutes", type=float, default=5)
    parser.add_argument("--no-write", action="store_true", help="print, leave files alone")
    args = parser.parse_args()
    duration = args.minutes * 60
    # Stopped early (Ctrl-C, SIGTERM): still stop every process it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with tempfile.TemporaryDirectory(prefix="eventpipe-soak-") as tmp:
        rig = Rig(Path(tmp), args.binaries)
        try:
            rig.start()
            say(f"sending {args.rate}/s for {args.minutes} min to {rig.url}")
            load = Load(rig.url, args.rate, duration)
            started = time.monotonic()
            load.start()
            faults(rig, duration, threading.Event())
            load.wait()
            say(f"load over: {dict(load.answers)}; draining")
            drain(rig, load.accepted, args.drain_minutes * 60)
            result = account(load, rig, started, duration)
        finally:
            rig.stop()
    print(json.dumps(result, indent=2))
    if not args.no_write:
        (BENCH / "soak-results.json").write_text(json.dumps(result, indent=2) + "\n")
        write_report(report(result))
    sys.exit(1 if result["lost"] else 0)


if __name__ == "__main__":
    main()
