// The npm `sqs-consumer` library as its README shows it: batches of 10, each message
// POSTed to the sink, the batch deleted once every delivery succeeded.
import { SQSClient } from "@aws-sdk/client-sqs";
import { Consumer } from "sqs-consumer";

const { QUEUE_URL, SINK_URL, AWS_ENDPOINT_URL, AWS_REGION = "us-east-1" } = process.env;

const deliver = async (message) => {
  const res = await fetch(SINK_URL, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: message.Body,
  });
  await res.arrayBuffer();
  if (!res.ok) throw new Error(`sink answered ${res.status}`);
};

const consumer = Consumer.create({
  queueUrl: QUEUE_URL,
  batchSize: 10,
  waitTimeSeconds: 20,
  sqs: new SQSClient({ endpoint: AWS_ENDPOINT_URL, region: AWS_REGION }),
  handleMessageBatch: async (messages) => {
    await Promise.all(messages.map(deliver));
    return messages;
  },
});
consumer.on("error", (err) => console.error(err.message));
consumer.on("processing_error", (err) => console.error(err.message));
consumer.start();
process.on("SIGTERM", () => {
  consumer.stop();
  process.exit(0);
});
console.log("ready");
