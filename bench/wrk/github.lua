-- Signed GitHub webhooks: the body and its X-Hub-Signature-256 come from the
-- harness (the signature covers the body only); every request gets its own delivery id.
local body = io.open(os.getenv("BENCH_BODY")):read("*a")
local signature = os.getenv("BENCH_SIGNATURE")
local thread_id, counter = 0, 0

function setup(thread)
  thread_id = thread_id + 1
  thread:set("prefix", string.format("%08x", thread_id))
end

function request()
  counter = counter + 1
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-GitHub-Event"] = "issue_comment",
    ["X-GitHub-Delivery"] = string.format("%s-%012x", prefix, counter),
    ["X-Hub-Signature-256"] = signature,
  }, body)
end
