// A webhook receiver the way teams write one today: Node's http server, the
// signature checked by @octokit/webhooks, one SendMessage per request, 202 after it.
import http from "node:http";
import { SQSClient, SendMessageCommand } from "@aws-sdk/client-sqs";
import { Webhooks } from "@octokit/webhooks";

const { PORT, SECRET, QUEUE_URL, AWS_ENDPOINT_URL, AWS_REGION = "us-east-1" } = process.env;
const webhooks = new Webhooks({ secret: SECRET });
const sqs = new SQSClient({ endpoint: AWS_ENDPOINT_URL, region: AWS_REGION });

const reply = (res, status, body) => {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
};

const server = http.createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const body = Buffer.concat(chunks).toString("utf8");
  try {
    if (!(await webhooks.verify(body, req.headers["x-hub-signature-256"] ?? ""))) {
      return reply(res, 401, { error: "bad signature" });
    }
    const id = req.headers["x-github-delivery"];
    await sqs.send(
      new SendMessageCommand({
        QueueUrl: QUEUE_URL,
        MessageBody: body,
        MessageAttributes: {
          "event-type": { DataType: "String", StringValue: req.headers["x-github-event"] ?? "unknown" },
          "delivery-id": { DataType: "String", StringValue: id ?? "" },
        },
      }),
    );
    reply(res, 202, { eventId: id });
  } catch (err) {
    reply(res, 503, { error: err.message });
  }
});
server.keepAliveTimeout = 60_000;
server.listen(Number(PORT), "127.0.0.1", () => console.log("ready"));
process.on("SIGTERM", () => process.exit(0));
