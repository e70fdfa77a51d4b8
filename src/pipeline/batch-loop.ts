/**
 * One stage worker's batched loop (lesson 16): take a batch (new work, or what a recovery sweep
 * claimed), call the service for all of it with a bounded number in flight, then commit the
 * batch in one transaction. The Redis-facing steps are the lesson's parts; the policy (when to
 * sweep, retry, give up, trim) lives here, as in the one-at-a-time loop of stage-loop.ts.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { BatchParts, BatchReadOptions, Outcome } from "./batch-parts.ts";
import { type StageKeys, stageKeys } from "./keys.ts";
import type { Redis, Work } from "./parts.ts";
import {
  callService,
  type DocFields,
  hasMarker,
  PermanentError,
  TransientError,
} from "./services.ts";
import { deadLetterReason, type StageLoop } from "./stage-loop.ts";

export interface BatchSettings {
  /** The file with the lesson 16 parts. */
  parts: string;
  /** Entries per batch (XREADGROUP COUNT). */
  count: number;
  /** Service calls in flight at once per worker and stage. */
  inFlight: number;
  /** How often the recovery sweep starts over at the head of the pending list. */
  sweepMs: number;
  /** How often each stage's stream is trimmed; 0: never. */
  trimMs: number;
}

export const BATCH_DEFAULTS: Omit<BatchSettings, "parts"> = {
  count: 100,
  inFlight: 32,
  sweepMs: 500,
  trimMs: 1000,
};

/** Each key's HGETALL as a flat [field, value, ...] list: one command for the whole batch. */
const READ_DOCS =
  "local r = {} for i, k in ipairs(KEYS) do r[i] = redis.call('HGETALL', k) end return r";

/**
 * Every document's hash in one read-only script: the batch's N hashes cost one command and one
 * reply instead of N, which is most of what a stage spends in node-redis per document.
 */
async function readDocs(client: Redis, docKeys: string[]): Promise<DocFields[]> {
  if (docKeys.length === 0) return [];
  const flat = (await client.eval(READ_DOCS, { keys: docKeys })) as string[][];
  return flat.map((pairs) => {
    const doc: DocFields = {};
    for (let i = 0; i + 1 < pairs.length; i += 2) doc[pairs[i] as string] = pairs[i + 1] as string;
    return doc;
  });
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

async function handleBatch(
  loop: StageLoop,
  parts: BatchParts,
  settings: BatchSettings,
  keys: StageKeys,
  works: Work[],
): Promise<void> {
  const { client, stage, config } = loop;
  const over = works.filter((w) => w.deliveries > config.maxDeliveries);
  const live = works.filter((w) => w.deliveries <= config.maxDeliveries);
  // One round trip: every document's hash, and why the ones given up on failed last time.
  const [docs, lastErrors] = await Promise.all([
    readDocs(
      client,
      live.map((w) => keys.doc(w.doc)),
    ),
    over.length > 0
      ? client.hmGet(
          loop.keys.errors,
          over.map((w) => `${w.doc}:${stage}`),
        )
      : Promise.resolve([]),
  ]);
  const settled = await parts.inFlight(
    live.map((work, i) => ({ work, doc: docs[i] ?? {} })),
    settings.inFlight,
    ({ work, doc }) =>
      callService(stage, doc, {
        latencyMs: config.latencyMs,
        failureRate: config.failureRate,
        attempt: work.deliveries,
      }),
  );
  // A model server taking the worker down in the middle of a batch: nothing of it is committed.
  live.forEach((work, i) => {
    if (work.deliveries === 1 && hasMarker(docs[i]?.text, "crash", stage)) loop.crash();
  });
  const outcomes: Outcome[] = over.map((work, i) => ({
    work,
    error: deadLetterReason(stage, work.deliveries - 1, lastErrors[i] ?? null),
    final: true,
  }));
  const errors: Record<string, string> = {};
  settled.forEach((s, i) => {
    const work = live[i] as Work;
    if (s.status === "fulfilled") {
      outcomes.push({ work, result: s.value });
      return;
    }
    const message = messageOf(s.reason);
    if (!(s.reason instanceof PermanentError || s.reason instanceof TransientError)) {
      loop.log(`${loop.consumer}: ${work.doc} (entry ${work.id}): ${message}`);
      return;
    }
    errors[`${work.doc}:${stage}`] = message;
    const final = work.deliveries >= config.maxDeliveries;
    // Not final: the entry stays pending and comes back after claimIdleMs: that is the retry.
    outcomes.push({
      work,
      error: final ? deadLetterReason(stage, work.deliveries, message) : message,
      final,
    });
  });
  // Before the commit: a later delivery that gives up reads why this one failed.
  const failed = Object.keys(errors).length;
  if (failed > 0) await client.hSet(loop.keys.errors, errors);
  const committed = await parts.commitBatch(client, keys, outcomes);
  const retried = works.filter((w) => w.deliveries > 1).length;
  // Counters for the live view only: best effort, one round trip.
  const stats = client.multi();
  const count = (what: string, n: number) => {
    if (n > 0) stats.hIncrBy(loop.keys.stats, `${stage}:${what}`, n);
  };
  count("done", committed.handedOff.length);
  count("dead", committed.deadLettered.length);
  count("failed", failed);
  count("retried", retried);
  await stats.execAsPipeline();
}

/** Runs until `signal` aborts; a failing step is logged and retried, never fatal. */
export async function runBatchLoop(
  loop: StageLoop,
  parts: BatchParts,
  settings: BatchSettings,
): Promise<void> {
  const { signal, config, client } = loop;
  const keys = stageKeys(loop.keys, loop.stage);
  const options: BatchReadOptions = {
    consumer: loop.consumer,
    count: settings.count,
    blockMs: config.blockMs,
    claimIdleMs: config.claimIdleMs,
  };
  let cursor = "0-0";
  let nextSweep = 0;
  let nextTrim = performance.now() + settings.trimMs;
  while (!signal.aborted) {
    try {
      let works: Work[] = [];
      if (performance.now() >= nextSweep) {
        const swept = await parts.sweep(client, keys, options, cursor);
        cursor = swept.cursor;
        works = swept.works;
        // Back at the head of the pending list: rest for an interval; else go on from the cursor.
        if (cursor === "0-0") nextSweep = performance.now() + settings.sweepMs;
      }
      if (works.length === 0) works = await parts.readBatch(client, keys, options);
      if (works.length > 0) await handleBatch(loop, parts, settings, keys, works);
      if (settings.trimMs > 0 && performance.now() >= nextTrim) {
        nextTrim = performance.now() + settings.trimMs;
        await parts.trim(client, keys.stream);
      }
    } catch (error) {
      if (signal.aborted) break;
      loop.log(`${loop.consumer}: batch failed: ${messageOf(error)}`);
      await sleep(250, undefined, { signal }).catch(() => {});
    }
  }
}
