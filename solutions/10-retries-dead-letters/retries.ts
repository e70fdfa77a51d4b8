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

/**
 * The pending entries whose backoff is over, claimed for this consumer. XPENDING's extended
 * form (with IDLE) lists each pending entry with its idle time and delivery count; an entry is
 * due once idle for backoffMs(deliveries). XCLAIM with that same min-idle-time takes it, so two
 * workers never both retry it. The returned tasks carry the new delivery count (one more).
 */
export async function claimDueRetries(client: Redis, options: RetryOptions): Promise<Task[]> {
  const { stream, group, consumer, retryBaseMs } = options;
  const pending = await client.xPendingRange(stream, group, "-", "+", 100, { IDLE: retryBaseMs });
  const due: Task[] = [];
  for (const entry of pending) {
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
 * or in neither.
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

/**
 * Starts a worker that, until stop(), first retries what is due (claimDueRetries), then reads
 * new entries. A task that succeeds is acknowledged. One that fails stays pending for a later
 * retry, unless this was delivery number maxDeliveries: then it is dead-lettered with the
 * error message as the reason. A task claimed with more deliveries than that (its workers kept
 * crashing on it) is dead-lettered without another try.
 */
export function startWorker(client: Redis, options: RetryOptions): Worker {
  const { stream, group, consumer, handle, maxDeliveries, blockMs = 1000 } = options;
  let running = true;

  const attempt = async (task: Task) => {
    if (task.deliveries > maxDeliveries) {
      const reason = `delivered ${task.deliveries - 1} times without being acknowledged`;
      await deadLetter(client, options, task, reason);
      return;
    }
    try {
      await handle(task);
    } catch (error) {
      if (task.deliveries >= maxDeliveries) {
        await deadLetter(client, options, task, (error as Error).message);
      }
      return;
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
        for (const task of await claimDueRetries(client, options)) {
          if (running) await attempt(task);
        }
        const reply = await reader.xReadGroup(
          group,
          consumer,
          { key: stream, id: ">" },
          { COUNT: 10, BLOCK: blockMs },
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
