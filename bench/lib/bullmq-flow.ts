/**
 * The capstone's four-stage flow written the way a BullMQ user would: one queue per stage, a
 * worker per queue whose processor computes the stage's result (the same simulated services as
 * the capstone, zero latency) and adds the document with its results so far to the next queue.
 * Configured fairly: uploads go in with addBulk, finished jobs are removed (removeOnComplete),
 * and the caller picks the worker concurrency.
 */

import { setTimeout as sleep } from "node:timers/promises";
import { type Job, Queue, Worker } from "bullmq";
import { createClient } from "redis";
import { sampleUpload } from "../../src/pipeline/documents.ts";
import { STAGES } from "../../src/pipeline/keys.ts";
import { compute, type DocFields } from "../../src/pipeline/services.ts";

export interface FlowResult {
  docs: number;
  durationMs: number;
  /** Upload (the addBulk that queued it) to the last stage done, per document, in ms. */
  endToEndMs: number[];
  /**
   * Last-stage completions of a document already done: BullMQ redelivers a job whose lock
   * lapsed (a starved event loop could not renew it), so its work runs twice.
   */
  redone: number;
}

interface Payload {
  n: number;
  doc: DocFields;
  uploadedAt: number;
}

/** addBulk in slices this big: one round trip each, and no 20,000-job array in one call. */
const BULK = 500;

function upload(n: number): DocFields {
  const { name, text } = sampleUpload(n);
  return { name, text };
}

/**
 * `intake` "bulk": every upload queued by addBulk as fast as it goes in; a number: one add at a
 * time at that many documents per second, so that no backlog forms when it is below what the
 * workers manage.
 */
export async function runBullmq(
  url: string,
  docs: number,
  concurrency: number,
  intake: "bulk" | number = "bulk",
): Promise<FlowResult> {
  // BullMQ 6 drives node-redis through an adapter when handed a client (ioredis is not
  // installed), and leaves a client it was handed open: ours to close.
  const clients: { destroy(): void }[] = [];
  const connection = () => {
    // No per-command timeout, as the capstone's workers run: node-redis's default of 5 s would
    // fail a worker's blocking BZPOPMIN (up to BullMQ's drainDelay, 5 s) on a quiet queue, and
    // its timer per command costs CPU the comparison should not charge either side for.
    const client = createClient({ url, commandOptions: { timeout: 0 } });
    client.on("error", () => {});
    clients.push(client);
    return client;
  };
  const queues = STAGES.map((stage) => new Queue<Payload>(stage, { connection: connection() }));
  const endToEndMs: number[] = [];
  const done = new Set<number>();
  let redone = 0;
  let finish: () => void = () => {};
  let fail: (error: Error) => void = () => {};
  const finished = new Promise<void>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  const jobOptions = { removeOnComplete: true, removeOnFail: 1000 };
  const workers = STAGES.map(
    (stage, i) =>
      new Worker<Payload>(
        stage,
        async (job: Job<Payload>) => {
          const doc = { ...job.data.doc, [stage]: compute(stage, job.data.doc) };
          const next = queues[i + 1];
          if (next) {
            await next.add("doc", { ...job.data, doc }, jobOptions);
            return;
          }
          if (done.has(job.data.n)) {
            redone++;
            return;
          }
          done.add(job.data.n);
          endToEndMs.push(Date.now() - job.data.uploadedAt);
          if (done.size === docs) finish();
        },
        { connection: connection(), concurrency },
      ),
  );
  for (const worker of workers) {
    worker.on("failed", (_job, error) => fail(error));
    // A lapsed lock ("Missing lock for job"): counted in `redone` when the job comes back.
    worker.on("error", () => {});
  }
  try {
    await Promise.all(workers.map((w) => w.waitUntilReady()));
    const started = performance.now();
    if (intake === "bulk") {
      for (let from = 0; from < docs; from += BULK) {
        const uploadedAt = Date.now();
        const slice = Array.from({ length: Math.min(BULK, docs - from) }, (_, k) => ({
          name: "doc",
          data: { n: from + k, doc: upload(from + k), uploadedAt },
          opts: jobOptions,
        }));
        await queues[0]?.addBulk(slice);
      }
    } else {
      const adds: Promise<unknown>[] = [];
      while (adds.length < docs) {
        const due = Math.min(docs, Math.floor((intake * (performance.now() - started)) / 1000));
        for (let n = adds.length; n < due; n++) {
          adds.push(
            queues[0]?.add("doc", { n, doc: upload(n), uploadedAt: Date.now() }, jobOptions) ??
              Promise.resolve(),
          );
        }
        await sleep(1);
      }
      await Promise.all(adds);
    }
    await finished;
    return { docs, durationMs: performance.now() - started, endToEndMs, redone };
  } finally {
    await Promise.all(workers.map((w) => w.close(true)));
    await Promise.all(queues.map((q) => q.close()));
    for (const client of clients) client.destroy();
  }
}
