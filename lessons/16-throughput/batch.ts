/**
 * Lesson 16: the capstone's stage, batched.
 *
 * The same guarantees as lesson 13 (recovery, the atomic hand-off, the duplicate guard, dead
 * letters, status events), paid once per batch instead of once per document.
 */
import type { RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

/** The names one stage works with: the same as lesson 13's. */
export interface StageKeys {
  stage: "ocr" | "ner" | "classify" | "embed";
  stream: string;
  group: string;
  /** The next stage's stream; null for the last stage. */
  next: string | null;
  dead: string;
  /** The latest-status hash: field = document id, value = its last status event as JSON. */
  status: string;
  channel: string;
  doc(id: string): string;
}

/** One delivery of a stream entry: which document, and how many times it has been delivered. */
export interface Work {
  id: string;
  doc: string;
  deliveries: number;
}

/**
 * What the service made of one document: a result to hand on, or an error. `final` errors are
 * dead-lettered; the others leave the entry pending, so it comes back after the claim threshold.
 */
export type Outcome =
  | { work: Work; result: string }
  | { work: Work; error: string; final: boolean };

/** What one commitBatch() did: document ids handed on, dead-lettered, and found done already. */
export interface Committed {
  handedOff: string[];
  deadLettered: string[];
  duplicates: string[];
}

export interface ReadOptions {
  consumer: string;
  /** Entries per batch: XREADGROUP COUNT, and XAUTOCLAIM COUNT. */
  count: number;
  /** How long readBatch() waits for new work before returning []. */
  blockMs: number;
  /** Entries pending longer than this belong to a worker that is gone. */
  claimIdleMs: number;
}

/**
 * Up to `options.count` new entries for `options.consumer`, in one XREADGROUP that waits at most
 * `options.blockMs` for them; [] when none came. An error from Redis (NOGROUP, a dropped
 * connection) rejects: it is not "no work".
 */
export async function readBatch(
  client: Redis,
  keys: StageKeys,
  options: ReadOptions,
): Promise<Work[]> {
  throw new Error("TODO: readBatch");
}

/**
 * One step of the recovery sweep: one XAUTOCLAIM from `cursor`, and the cursor to pass next
 * time ("0-0" once the whole pending list has been looked at). Call it once per interval, not
 * once per document: XAUTOCLAIM examines at most COUNT*10 entries per call.
 */
export async function sweep(
  client: Redis,
  keys: StageKeys,
  options: ReadOptions,
  cursor: string,
): Promise<{ works: Work[]; cursor: string }> {
  throw new Error("TODO: sweep");
}

/**
 * Runs `task` on every item with at most `limit` running at once, in order of start; the
 * settled results in the items' order. A slow model answers several documents at a time, but
 * a batch of 500 never means 500 requests at once. A limit below 1 would run nothing and
 * settle nothing: refuse it (throw a RangeError). Leave `items` as it is: the caller matches
 * each result to its item.
 */
export async function inFlight<T, R>(
  items: T[],
  limit: number,
  task: (item: T) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  throw new Error("TODO: inFlight");
}

/**
 * Hands on, dead-letters and acknowledges a whole batch in one MULTI: one XADD per document
 * to the next stage, ONE XACK with every finished id, the status hash and events. Entries
 * whose error is not final are left pending. WATCH on every document voids the transaction if
 * a competitor commits one of them first; the duplicate guard then acknowledges it only.
 */
export async function commitBatch(
  client: Redis,
  keys: StageKeys,
  outcomes: Outcome[],
): Promise<Committed> {
  throw new Error("TODO: commitBatch");
}

/**
 * Removes what every group of `stream` is finished with: entries below the oldest one still
 * pending in any group, and below what any group has yet to read. Returns how many went.
 */
export async function trim(client: Redis, stream: string): Promise<number> {
  throw new Error("TODO: trim");
}
