/**
 * Lesson 10: Retries, backoff and dead letters.
 *
 * Some documents fail: the OCR service times out, or the PDF is corrupt and will never work.
 * Retry the first kind later, waiting longer each time, and park the second kind in a
 * dead-letter stream with the reason, so nobody retries it forever and the healthy documents
 * behind it keep moving. Fill in the four functions below and run `npm run check -- 10`.
 */
import type { RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

/** One stream entry handed to your handler. `deliveries` is 1 the first time, 2 on the first retry. */
export interface Task {
  id: string;
  fields: Record<string, string>;
  deliveries: number;
}

export interface RetryOptions {
  stream: string;
  group: string;
  consumer: string;
  /** Where documents go that failed maxDeliveries times, e.g. "docs:ocr:dead". */
  deadLetterStream: string;
  /** How many deliveries a document gets before it is dead-lettered. */
  maxDeliveries: number;
  /** The wait before the first retry; it doubles with each delivery (see backoffMs). */
  retryBaseMs: number;
  /** Does the work; throws when the document cannot be processed. */
  handle(task: Task): Promise<void>;
  /**
   * How long one read waits for new entries (milliseconds); also how often due retries are
   * looked for. Optional: default to a second or so. BLOCK 0 waits forever, and under 100 ms
   * an idle worker polls Redis.
   */
  blockMs?: number;
}

export interface Worker {
  stop(): Promise<void>;
}

/** No retry waits longer than this, however many deliveries a document has had. */
export const MAX_BACKOFF_MS = 60_000;

/**
 * How long after its last delivery a failed task is retried: `baseMs` after the first
 * delivery, then twice as long after each further one (200, 400, 800, ... for a base of 200),
 * never more than MAX_BACKOFF_MS.
 */
export function backoffMs(deliveries: number, baseMs: number): number {
  // TODO: baseMs doubled (deliveries - 1) times, capped at MAX_BACKOFF_MS.
  throw new Error("TODO: backoffMs");
}

/**
 * Up to `limit` pending entries whose backoff is over, claimed for this consumer. XPENDING's
 * extended form (with IDLE) lists each pending entry with its idle time and delivery count; an
 * entry is due once idle for backoffMs(deliveries). XCLAIM with that same min-idle-time takes
 * it, so two workers never both retry it. The returned tasks carry the new delivery count (one
 * more). Claim only what you handle now (limit 1): a claimed entry waiting in your hands ages
 * like any other, and another worker's sweep would take it while it is still yours.
 *
 * Idle time alone cannot tell a failed entry from one a worker is still working on: that is why
 * a worker keeps the entry in hand fresh with a heartbeat (see startWorker), and the sweep never
 * sees it idle.
 */
export async function claimDueRetries(
  client: Redis,
  options: RetryOptions,
  limit = 1,
): Promise<Task[]> {
  // TODO: XPENDING stream group IDLE retryBaseMs - + 100; XCLAIM entries whose wait is over,
  // with that wait as min-idle-time, until `limit` are claimed. A page with nothing due (all
  // still waiting out longer backoffs) is no reason to stop: read the next one from "(" + the
  // last ID, until a page comes back short.
  throw new Error("TODO: claimDueRetries");
}

/**
 * Moves a task to the dead-letter stream: its fields plus originalId (the entry's ID here),
 * reason and deliveries, and acknowledges it here, in one MULTI so it is never in both places
 * or in neither: a worker that dies before EXEC leaves it pending, to be dead-lettered once by
 * whoever takes it over.
 */
export async function deadLetter(
  client: Redis,
  options: RetryOptions,
  task: Task,
  reason: string,
): Promise<void> {
  // TODO: MULTI: XADD deadLetterStream * ...fields originalId reason deliveries; XACK; EXEC.
  throw new Error("TODO: deadLetter");
}

/**
 * Starts a worker that, until stop(), first retries what is due (claimDueRetries), then reads
 * new entries. While handle() runs, a heartbeat keeps the entry's idle time near 0, so its
 * idle time counts from the failure, not from the delivery. A task that succeeds is
 * acknowledged. One that fails stays pending for a later retry, unless this was delivery
 * number maxDeliveries: then it is dead-lettered with the error message as the reason. A task
 * claimed with more deliveries than that (its workers kept crashing on it) is dead-lettered
 * without another try.
 */
export function startWorker(client: Redis, options: RetryOptions): Worker {
  // TODO: create the group if needed, read new entries one at a time on a duplicate()
  // connection, with BLOCK only when no retry was due, keep the entry in hand fresh with a heartbeat (XCLAIM ... JUSTID to yourself) while
  // handle() runs, run the loop in the background, and return { stop }.
  throw new Error("TODO: startWorker");
}
