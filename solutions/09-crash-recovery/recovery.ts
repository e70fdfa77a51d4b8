/**
 * Lesson 09: Crash recovery (reference solution).
 *
 * An OCR worker that loses nothing when a worker dies mid-task: on start it finishes what it
 * had already been given, and while it runs it takes over entries a dead worker left behind.
 */
import type { RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

/** One stream entry handed to your handler: its ID and its fields, e.g. { docId: "doc-17" }. */
export interface Task {
  id: string;
  fields: Record<string, string>;
}

export interface WorkerOptions {
  stream: string;
  group: string;
  /** This worker's name in the group. A restarted worker comes back under the same name. */
  consumer: string;
  /** Does the work. When it throws, the entry stays pending and is taken over later. */
  handle(task: Task): Promise<void>;
  /**
   * Entries pending for longer than this (milliseconds) belong to a worker that is presumed
   * dead, and are taken over. It must be longer than your slowest task.
   */
  claimIdleMs: number;
  /** How long one read waits for new entries; also how often stale entries are looked for. */
  blockMs?: number;
}

export interface Worker {
  /** Finishes the task at hand, stops reading and closes the worker's connection. */
  stop(): Promise<void>;
}

/**
 * XREADGROUP's reply exactly as Redis sends it (RESP3), read with client.sendCommand():
 * stream name -> entries, each [id, [field, value, field, value, ...]]. An entry deleted while
 * it was pending comes back as [id, null].
 */
type RawReadReply = Record<string, [string, string[] | null][]> | null;

function toFields(flat: string[]): Record<string, string> {
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i] as string] = flat[i + 1] as string;
  return fields;
}

/**
 * The entries this consumer was given before and never acknowledged: what a previous run under
 * the same name was doing when it died. Reads with XREADGROUP ... STREAMS <stream> 0, page by
 * page. An entry deleted in the meantime has nothing left to do: acknowledge it and skip it.
 */
export async function readOwnPending(
  client: Redis,
  stream: string,
  group: string,
  consumer: string,
): Promise<Task[]> {
  const tasks: Task[] = [];
  let after = "0";
  for (;;) {
    const page = await readOwnPage(client, stream, group, consumer, after, 100);
    if (page.last === undefined) return tasks;
    tasks.push(...page.tasks);
    after = page.last;
  }
}

/**
 * Up to `count` of this consumer's pending entries after ID `after`, and the last ID the page
 * held (undefined once there are no more). Deleted ones are acknowledged, not returned.
 */
async function readOwnPage(
  client: Redis,
  stream: string,
  group: string,
  consumer: string,
  after: string,
  count: number,
): Promise<{ tasks: Task[]; last: string | undefined }> {
  // node-redis 6.3's xReadGroup() throws on the null fields of a deleted entry, so this read
  // is sent as a raw command and its reply parsed here.
  const reply = (await client.sendCommand([
    "XREADGROUP",
    "GROUP",
    group,
    consumer,
    "COUNT",
    String(count),
    "STREAMS",
    stream,
    after,
  ])) as RawReadReply;
  const entries = reply?.[stream] ?? [];
  const tasks: Task[] = [];
  for (const [id, flat] of entries) {
    if (flat === null) await client.xAck(stream, group, id);
    else tasks.push({ id, fields: toFields(flat) });
  }
  return { tasks, last: entries.at(-1)?.[0] };
}

/** What one claimStale() call took over, and where the next call goes on scanning. */
export interface StaleClaim {
  tasks: Task[];
  /** XAUTOCLAIM's cursor: pass it to the next call; "0-0" means the scan went round. */
  cursor: string;
}

/**
 * Takes over at most `count` entries of the group, whoever holds them, that have been pending
 * for longer than `minIdleMs`: one XAUTOCLAIM ... COUNT <count>, scanning the pending entries
 * list from `cursor`. Claim only what you handle now: a claimed entry's idle time starts
 * again, and entries waiting in your hands age past minIdleMs and are taken over by another
 * worker while they are still yours. One call looks at no more than count * 10 pending
 * entries, so carry the returned cursor into the next call instead of starting again at 0-0.
 * Entries deleted while pending are skipped (Redis 7 drops them from the list itself).
 */
export async function claimStale(
  client: Redis,
  stream: string,
  group: string,
  consumer: string,
  minIdleMs: number,
  cursor = "0-0",
  count = 1,
): Promise<StaleClaim> {
  const { nextId, messages } = await client.xAutoClaim(stream, group, consumer, minIdleMs, cursor, {
    COUNT: count,
  });
  const tasks: Task[] = [];
  for (const message of messages) {
    if (message) tasks.push({ id: message.id, fields: message.message });
  }
  return { tasks, cursor: nextId };
}

/**
 * Removes consumers that hold no pending entries and have been idle for longer than `idleMs`
 * (XINFO CONSUMERS, then XGROUP DELCONSUMER). A consumer that still holds entries is kept:
 * deleting it would drop its pending entries with it. Returns the names removed.
 */
export async function removeDeadConsumers(
  client: Redis,
  stream: string,
  group: string,
  idleMs: number,
): Promise<string[]> {
  const removed: string[] = [];
  for (const consumer of await client.xInfoConsumers(stream, group)) {
    if (consumer.pending === 0 && consumer.idle > idleMs) {
      await client.xGroupDelConsumer(stream, group, consumer.name);
      removed.push(consumer.name);
    }
  }
  return removed;
}

async function ensureGroup(client: Redis, stream: string, group: string): Promise<void> {
  try {
    await client.xGroupCreate(stream, group, "0", { MKSTREAM: true });
  } catch (error) {
    if (!(error as Error).message.startsWith("BUSYGROUP")) throw error;
  }
}

/**
 * Starts a worker: first its own pending entries, one at a time (XREADGROUP ... COUNT 1 ... 0,
 * then after the last ID: a re-read is a delivery, so an entry re-read before its turn would
 * age in the worker's hands, like a claimed one), then, in a loop until
 * stop(): one stale entry of another worker (claimStale, carrying the cursor), then one new
 * entry (XREADGROUP ... > COUNT 1) on a connection of its own. It waits for new entries (BLOCK)
 * only once a scan of the pending entries found nothing left to take over. Each task is
 * acknowledged after handle() succeeds.
 */
export async function startWorker(client: Redis, options: WorkerOptions): Promise<Worker> {
  const { stream, group, consumer, handle, claimIdleMs, blockMs = 1000 } = options;
  await ensureGroup(client, stream, group);
  // Blocking reads get a connection of their own: the shared client stays free for XACK.
  const reader = client.duplicate();
  reader.on("error", () => {});
  await reader.connect();
  let running = true;

  const finish = async (task: Task) => {
    try {
      await handle(task);
    } catch {
      // Left pending on purpose: once idle for claimIdleMs, a worker takes it over and retries.
      return;
    }
    await client.xAck(stream, group, task.id);
  };

  const run = async () => {
    try {
      // Its own pending entries one at a time, like claims: a re-read is a delivery, and what
      // was re-read but not handled yet would age in this worker's hands.
      let after = "0";
      while (running) {
        const page = await readOwnPage(client, stream, group, consumer, after, 1);
        if (page.last === undefined) break;
        after = page.last;
        for (const task of page.tasks) await finish(task);
      }
      let cursor = "0-0";
      while (running) {
        const claim = await claimStale(client, stream, group, consumer, claimIdleMs, cursor);
        cursor = claim.cursor;
        for (const task of claim.tasks) {
          if (running) await finish(task);
        }
        if (!running) break;
        const scanning = claim.tasks.length > 0 || cursor !== "0-0";
        const reply = await reader.xReadGroup(
          group,
          consumer,
          { key: stream, id: ">" },
          scanning ? { COUNT: 1 } : { COUNT: 1, BLOCK: blockMs },
        );
        for (const { id, message } of reply?.[0]?.messages ?? []) {
          if (running) await finish({ id, fields: message });
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
