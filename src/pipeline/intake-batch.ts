/**
 * Bulk uploads and backpressure for the intake API (lesson 16).
 *
 *   POST /documents/batch  {"documents": [{"name", "text", "idempotencyKey"?}, ...]}
 *                          -> 200 {"results": [{"id", "status": 202, "duplicate"?} |
 *                                              {"status": 409 | 422, "error"}]}
 *
 * Each document keeps the single upload's idempotency (the same key gets the same id and is
 * never queued twice; the same key with another document is 409), and the whole batch is
 * queued by one script: one command, atomic, for up to MAX_BATCH documents.
 *
 * Backpressure: when a stage's backlog (XINFO GROUPS lag + pending) passes the limit, uploads
 * get 429 with Retry-After instead of growing the streams without end.
 */
import type { PipelineKeys } from "./keys.ts";
import { STAGES } from "./keys.ts";
import type { Redis } from "./parts.ts";

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
 * KEYS: the OCR stream, the status hash, the stats hash, then each item's document hash.
 * ARGV: the status channel, the time, then per item its id, name, text and "queued" event.
 * Per item: 0 queued, 1 the same upload was queued before (a retry), 2 the key was used for
 * another upload. Checking and queueing are one step: no other request runs in between.
 */
const QUEUE_MANY = `
local answers, queued = {}, 0
for i = 4, #KEYS do
  local a = 2 + (i - 4) * 4
  local id, name, text, event = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local found = redis.call('HMGET', KEYS[i], 'submitted', 'name', 'text')
  if found[1] then
    answers[#answers + 1] = (found[2] == name and found[3] == text) and 1 or 2
  else
    redis.call('HSET', KEYS[i], 'name', name, 'text', text, 'submitted', ARGV[2])
    redis.call('XADD', KEYS[1], '*', 'doc', id)
    redis.call('HSET', KEYS[2], id, event)
    redis.call('PUBLISH', ARGV[1], event)
    queued = queued + 1
    answers[#answers + 1] = 0
  end
end
if queued > 0 then redis.call('HINCRBY', KEYS[3], 'intake:accepted', queued) end
return answers`;

/**
 * Queues every item whose id is new, with its status (the latest-status hash and the "queued"
 * event, as lesson 13's broadcast() writes them), in one script: a whole upload is one command
 * instead of five per document, and a concurrent request with one of the same keys runs
 * before or after it, never in between.
 */
export async function queueMany(
  client: Redis,
  keys: PipelineKeys,
  items: BatchItem[],
): Promise<BatchAnswer[]> {
  const at = Date.now();
  const args = [keys.channel, String(at)];
  for (const { id, upload } of items) {
    const event = JSON.stringify({ doc: id, stage: "intake", state: "queued", at });
    args.push(id, upload.name, upload.text, event);
  }
  const answers = (await client.eval(QUEUE_MANY, {
    keys: [keys.stream("ocr"), keys.status, keys.stats, ...items.map((i) => keys.doc(i.id))],
    arguments: args,
  })) as number[];
  return items.map((item, i): BatchAnswer => {
    if (answers[i] === 0) return { id: item.id, status: 202 };
    if (answers[i] === 1) return { id: item.id, status: 202, duplicate: true };
    return {
      id: item.id,
      status: 409,
      error: "This idempotency key was already used for a different document.",
    };
  });
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
