"""The loop teams write with boto3: a few threads, each receiving 10, POSTing each
message to the sink and deleting the batch. With --no-deliver it is the raw
receive/delete loop that shows the backend's own ceiling (one line per deleted batch)."""

import argparse
import os
import sys
import threading

import boto3
import urllib3


def consume(sqs, queue_url, sink, http):
    while True:
        got = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=20
        ).get("Messages", [])
        done = []
        for m in got:
            if sink:
                r = http.request("POST", sink, body=m["Body"], headers={"content-type": "application/json"})
                if r.status >= 300:
                    continue
            done.append({"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]})
        if done:
            sqs.delete_message_batch(QueueUrl=queue_url, Entries=done)
            if not sink:
                print(len(done), flush=True)


def main():
    args = argparse.ArgumentParser()
    args.add_argument("--threads", type=int, default=4)
    args.add_argument("--no-deliver", action="store_true")
    opts = args.parse_args()
    sink = None if opts.no_deliver else os.environ["SINK_URL"]
    http = urllib3.PoolManager(maxsize=opts.threads)
    for _ in range(opts.threads):
        sqs = boto3.session.Session().client("sqs")  # clients are not shared across threads
        threading.Thread(target=consume, args=(sqs, os.environ["QUEUE_URL"], sink, http), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
