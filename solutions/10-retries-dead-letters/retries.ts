/**
 * Lesson 10: Retries, backoff and dead letters (reference solution).
 *
 * A worker that retries a failed document later, waiting longer each time, and after a few
 * deliveries parks it in a dead-letter stream with the reason, so one bad PDF cannot block the
 * queue or be retried forever.
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
  /** How long one read waits for new entries; also how often due retries are looked for. */
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
  return Math.min(baseMs * 2 ** (deliveries - 1), MAX_BACKOFF_MS);
}

/** How many pending entries one XPENDING reads. */
const PENDING_PAGE = 100;

/**
 * The group's pending entries idle for at least retryBaseMs, a page at a time as the caller
 * asks for more. Such an entry may still wait out a longer backoff: a page full of those must
 * not hide a due one behind it, so the next page starts just after the last ID ("(" + id).
 */
async function* idleEntries(client: Redis, options: RetryOptions) {
  const { stream, group, retryBaseMs } = options;
  let start = "-";
  for (;;) {
    const page = await client.xPendingRange(stream, group, start, "+", PENDING_PAGE, {
      IDLE: retryBaseMs,
    });
    yield* page;
    const last = page.at(-1);
    if (!last || page.length < PENDING_PAGE) return;
    start = `(${last.id}`;
  }
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
  const { stream, group, consumer, retryBaseMs } = options;
  const due: Task[] = [];
  for await (const entry of idleEntries(client, options)) {
    if (due.length >= limit) break;
    const wait = backoffMs(entry.deliveriesCounter, retryBaseMs);
    if (entry.millisecondsSinceLastDelivery < wait) continue;
    const [claimed] = await client.xClaim(stream, group, consumer, wait, entry.id);
    if (claimed) {
      due.push({
        id: claimed.id,
        fields: claimed.message,
        deliveries: entry.deliveriesCounter + 1,
      });
    }
  }
  return due;
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
  await client
    .multi()
    .xAdd(options.deadLetterStream, "*", {
      ...task.fields,
      originalId: task.id,
      reason,
      deliveries: String(task.deliveries),
    })
    .xAck(options.stream, options.group, task.id)
    .exec();
}

async function ensureGroup(client: Redis, stream: string, group: string): Promise<void> {
  try {
    await client.xGroupCreate(stream, group, "0", { MKSTREAM: true });
  } catch (error) {
    if (!(error as Error).message.startsWith("BUSYGROUP")) throw error;
  }
}

/** A handler may reject with anything: a string, or an Error without a message. */
function reasonOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * How often a worker resets the idle time of the entry it is working on (XCLAIM ... JUSTID to
 * itself): well inside the shortest backoff, so no retry sweep mistakes live work for a failure.
 */
function heartbeatMs(retryBaseMs: number): number {
  return Math.max(10, Math.floor(retryBaseMs / 4));
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
  const { stream, group, consumer, handle, maxDeliveries, retryBaseMs, blockMs = 1000 } = options;
  let running = true;

  // JUSTID: the claim to itself resets the idle time without counting a delivery.
  const heartbeat = (task: Task) =>
    setInterval(() => {
      client.xClaimJustId(stream, group, consumer, 0, task.id).catch(() => {});
    }, heartbeatMs(retryBaseMs));

  const attempt = async (task: Task) => {
    if (task.deliveries > maxDeliveries) {
      const reason = `delivered ${task.deliveries - 1} times without being acknowledged`;
      await deadLetter(client, options, task, reason);
      return;
    }
    const beating = heartbeat(task);
    try {
      await handle(task);
    } catch (error) {
      if (task.deliveries >= maxDeliveries) {
        await deadLetter(client, options, task, reasonOf(error));
      }
      return;
    } finally {
      clearInterval(beating);
    }
    await client.xAck(stream, group, task.id);
  };

  const run = async () => {
    await ensureGroup(client, stream, group);
    const reader = client.duplicate();
    reader.on("error", () => {});
    await reader.connect();
    try {
      while (running) {
        const due = await claimDueRetries(client, options);
        for (const task of due) {
          if (running) await attempt(task);
        }
        if (!running) break;
        // While retries are due, do not wait for new entries.
        const reply = await reader.xReadGroup(
          group,
          consumer,
          { key: stream, id: ">" },
          due.length > 0 ? { COUNT: 1 } : { COUNT: 1, BLOCK: blockMs },
        );
        for (const { id, message } of reply?.[0]?.messages ?? []) {
          if (running) await attempt({ id, fields: message, deliveries: 1 });
        }
      }
    } finally {
      await reader.close();
    }
  };

  const done = run();
  done.catch((error: Error) => console.error(`worker ${consumer} stopped: ${error.message}`));
  return {
    async stop() {
      running = false;
      await done;
    },
  };
}
