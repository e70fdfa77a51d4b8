/**
 * Bulk uploads and backpressure for the intake API (lesson 16).
 *
 *   POST /documents/batch  {"documents": [{"name", "text", "idempotencyKey"?}, ...]}
 *                          -> 200 {"results": [{"id", "status": 202, "duplicate"?} |
 *                                              {"status": 409 | 422, "error"}]}
 *
 * Each document keeps the single upload's idempotency (the same key gets the same id and is
 * never queued twice; the same key with another document is 409), and the whole batch is
 * queued in one transaction: one round trip for up to MAX_BATCH documents.
 *
 * Backpressure: when a stage's backlog (XINFO GROUPS lag + pending) passes the limit, uploads
 * get 429 with Retry-After instead of growing the streams without end.
 */
import { WatchError } from "redis";
import type { PipelineKeys } from "./keys.ts";
import { STAGES } from "./keys.ts";
import type { Parts, Redis } from "./parts.ts";

export const MAX_BATCH = 500;

export interface Upload {
  name: string;
  text: string;
}

export interface BatchItem {
  index: number;
  id: string;
  upload: Upload;
}

export type BatchAnswer =
  | { id: string; status: 202; duplicate?: true }
  | { id: string; status: 409; error: string };

/**
 * Queues every item whose id is new, in one MULTI guarded by WATCH on every document: a
 * concurrent request with one of the same keys voids it, and the next look finds a duplicate.
 * Needs a connection of its own (WATCH is per connection).
 */
export async function queueMany(
  client: Redis,
  keys: PipelineKeys,
  broadcast: Parts["broadcast"],
  items: BatchItem[],
): Promise<BatchAnswer[]> {
  for (;;) {
    const docKeys = items.map((item) => keys.doc(item.id));
    const [, ...found] = await Promise.all([
      client.watch(docKeys),
      ...docKeys.map((docKey) => client.hmGet(docKey, ["submitted", "name", "text"])),
    ]);
    const tx = client.multi();
    const queued = new Map<string, Upload>();
    const answers = items.map((item, i): BatchAnswer => {
      const [submitted, name, text] = found[i] ?? [];
      const earlier =
        submitted != null ? { name: String(name), text: String(text) } : queued.get(item.id);
      if (earlier) {
        if (earlier.name === item.upload.name && earlier.text === item.upload.text) {
          return { id: item.id, status: 202, duplicate: true };
        }
        return {
          id: item.id,
          status: 409,
          error: "This idempotency key was already used for a different document.",
        };
      }
      queued.set(item.id, item.upload);
      tx.hSet(keys.doc(item.id), { ...item.upload, submitted: String(Date.now()) });
      tx.xAdd(keys.stream("ocr"), "*", { doc: item.id });
      broadcast(tx, keys, { doc: item.id, stage: "intake", state: "queued", at: Date.now() });
      return { id: item.id, status: 202 };
    });
    if (queued.size > 0) tx.hIncrBy(keys.stats, "intake:accepted", queued.size);
    try {
      await tx.exec();
      return answers;
    } catch (error) {
      if (!(error instanceof WatchError)) throw error;
    }
  }
}

export interface Backlog {
  stage: string;
  waiting: number;
}

/** The stage with the most documents waiting or in progress: XINFO GROUPS lag + pending. */
export async function largestBacklog(client: Redis, keys: PipelineKeys): Promise<Backlog> {
  const infos = await Promise.all(
    STAGES.map((stage) =>
      // A stage whose stream does not exist yet has nothing waiting.
      client.xInfoGroups(keys.stream(stage)).catch((error: Error) => {
        if (/no such key/i.test(error.message)) return [];
        throw error;
      }),
    ),
  );
  let largest: Backlog = { stage: STAGES[0], waiting: 0 };
  STAGES.forEach((stage, i) => {
    for (const group of infos[i] ?? []) {
      // lag is null when Redis cannot tell (entries deleted out of order): count pending only.
      const waiting = Number(group.lag ?? 0) + Number(group.pending);
      if (waiting > largest.waiting) largest = { stage, waiting };
    }
  });
  return largest;
}

/**
 * Answers "is the pipeline too far behind?" from a reading at most `maxAgeMs` old, so a burst
 * of uploads costs one XINFO round trip, not one each.
 */
export function backlogGate(client: Redis, keys: PipelineKeys, limit: number, maxAgeMs = 100) {
  let reading: Promise<Backlog> | undefined;
  let readAt = 0;
  return async (): Promise<Backlog | undefined> => {
    if (!reading || performance.now() - readAt > maxAgeMs) {
      readAt = performance.now();
      reading = largestBacklog(client, keys);
      reading.catch(() => {
        reading = undefined;
      });
    }
    const backlog = await reading;
    return backlog.waiting > limit ? backlog : undefined;
  };
}
