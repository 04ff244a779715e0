// BullMQ doing the tracker's job, for the same-run comparison in `make bench`: delayed jobs
// due at given times, half of them removed before they are due, a worker (concurrency 50)
// that delivers each due job to an outbound Redis stream or a signed webhook.
//
//   node run.mjs '{"port":6379,"n":100000,"windowMs":1000,"cancelEvery":2,"firstDueMs":...,
//                  "sink":"stream","stream":"out","url":"http://...","secret":"whsec_...",
//                  "concurrency":50}'
//
// Prints one JSON line when every job left was delivered: {"added_s", "removed_s", "done"}.
import crypto from "node:crypto";
import { Queue, Worker } from "bullmq";
import IORedis from "ioredis";

const cfg = JSON.parse(process.argv[2]);
const connection = { host: "127.0.0.1", port: cfg.port, maxRetriesPerRequest: null };
const queue = new Queue("timeouts", { connection });
const out = new IORedis({ host: "127.0.0.1", port: cfg.port });
const key = Buffer.from(cfg.secret.replace(/^whsec_/, ""), "base64");
const iso = (ms) => new Date(ms).toISOString();
const CHUNK = 1000;

function dueOf(i) {
  return cfg.firstDueMs + Math.floor((i * cfg.windowMs) / cfg.n);
}

async function addAll() {
  const started = Date.now();
  for (let i = 0; i < cfg.n; i += CHUNK) {
    const jobs = [];
    for (let j = i; j < Math.min(cfg.n, i + CHUNK); j++) {
      const due = dueOf(j);
      jobs.push({
        name: "notify",
        data: { c: `bull-${j}`, due },
        opts: { jobId: `bull-${j}`, delay: Math.max(0, due - Date.now()), removeOnComplete: true, removeOnFail: true },
      });
    }
    await queue.addBulk(jobs);
  }
  return (Date.now() - started) / 1000;
}

async function removeHalf() {
  const started = Date.now();
  const ids = [];
  for (let j = 0; j < cfg.n; j += cfg.cancelEvery) ids.push(`bull-${j}`);
  for (let i = 0; i < ids.length; i += CHUNK) {
    await Promise.all(ids.slice(i, i + CHUNK).map((id) => queue.remove(id)));
  }
  return (Date.now() - started) / 1000;
}

async function deliver(job) {
  const { c, due } = job.data;
  const event = {
    event_id: `evt_${c}`,
    conversation_id: c,
    level: 1,
    due_at: iso(due),
    fired_at: iso(Date.now()),
  };
  if (cfg.sink === "stream") {
    await out.xadd(cfg.stream, "*", ...Object.entries(event).flat().map(String));
    return;
  }
  const body = JSON.stringify(event);
  const ts = Math.floor(Date.now() / 1000);
  const sig = crypto.createHmac("sha256", key).update(`${event.event_id}.${ts}.${body}`).digest("base64");
  const resp = await fetch(cfg.url, {
    method: "POST",
    body,
    headers: {
      "content-type": "application/json",
      "webhook-id": event.event_id,
      "webhook-timestamp": String(ts),
      "webhook-signature": `v1,${sig}`,
    },
  });
  await resp.arrayBuffer();
  if (resp.status >= 300) throw new Error(`HTTP ${resp.status}`);
}

const expected = cfg.n - Math.ceil(cfg.n / cfg.cancelEvery);
let done = 0;
const added_s = await addAll();
const removed_s = cfg.cancelEvery > 0 ? await removeHalf() : 0;
const finished = new Promise((resolve) => {
  const worker = new Worker("timeouts", deliver, { connection, concurrency: cfg.concurrency });
  worker.on("completed", () => {
    done += 1;
    if (done >= expected) resolve(worker);
  });
});
const worker = await finished;
await worker.close();
await queue.close();
out.disconnect();
console.log(JSON.stringify({ added_s, removed_s, done }));
