"""The loop teams write with boto3 to read a DynamoDB stream: per shard, GetRecords
(1,000 at most) from the trim horizon, POST each record to the sink, and follow the
next iterator, at most four reads a second as AWS asks (five per shard at most)."""

import json
import os
import sys
import threading
import time

import boto3
import urllib3


def read_shard(streams, arn, shard, sink, http):
    it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard,
                                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    while it:
        started = time.monotonic()
        out = streams.get_records(ShardIterator=it, Limit=1000)
        for record in out["Records"]:
            body = json.dumps(record["dynamodb"], default=str)
            http.request("POST", sink, body=body, headers={"content-type": "application/json"})
        time.sleep(max(0.0, started + 0.25 - time.monotonic()))
        it = out.get("NextShardIterator")


def main():
    arn, sink = os.environ["STREAM_ARN"], os.environ["SINK_URL"]
    streams = boto3.client("dynamodbstreams")
    shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    http = urllib3.PoolManager(maxsize=len(shards))
    for shard in shards:
        client = boto3.session.Session().client("dynamodbstreams")  # one per thread
        threading.Thread(target=read_shard, args=(client, arn, shard["ShardId"], sink, http),
                         daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
