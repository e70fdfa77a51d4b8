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
    // node-redis 6.3's xReadGroup() throws on the null fields of a deleted entry, so this one
    // read is sent as a raw command and its reply parsed here.
    const reply = (await client.sendCommand([
      "XREADGROUP",
      "GROUP",
      group,
      consumer,
      "COUNT",
      "100",
      "STREAMS",
      stream,
      after,
    ])) as RawReadReply;
    const entries = reply?.[stream] ?? [];
    const last = entries.at(-1);
    if (!last) return tasks;
    for (const [id, flat] of entries) {
      if (flat === null) await client.xAck(stream, group, id);
      else tasks.push({ id, fields: toFields(flat) });
    }
    after = last[0];
  }
}

/**
 * Takes over every entry of the group, whoever holds it, that has been pending for longer than
 * `minIdleMs`, with XAUTOCLAIM, following its cursor until it comes back to 0-0. Entries deleted
 * while pending are skipped: Redis 7 lists them in deletedMessages, Redis 6.2 returns null.
 */
export async function claimStale(
  client: Redis,
  stream: string,
  group: string,
  consumer: string,
  minIdleMs: number,
): Promise<Task[]> {
  const tasks: Task[] = [];
  let cursor = "0-0";
  do {
    const { nextId, messages } = await client.xAutoClaim(
      stream,
      group,
      consumer,
      minIdleMs,
      cursor,
      {
        COUNT: 100,
      },
    );
    for (const message of messages) {
      if (message) tasks.push({ id: message.id, fields: message.message });
    }
    cursor = nextId;
  } while (cursor !== "0-0");
  return tasks;
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
 * Starts a worker: first its own pending entries (readOwnPending), then, in a loop until
 * stop(): stale entries of other workers (claimStale), then new entries (XREADGROUP ... >) on a
 * connection of its own. Each task is acknowledged after handle() succeeds.
 */
export function startWorker(client: Redis, options: WorkerOptions): Worker {
  const { stream, group, consumer, handle, claimIdleMs, blockMs = 1000 } = options;
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
    await ensureGroup(client, stream, group);
    const reader = client.duplicate();
    reader.on("error", () => {});
    await reader.connect();
    try {
      for (const task of await readOwnPending(client, stream, group, consumer)) {
        if (running) await finish(task);
      }
      while (running) {
        for (const task of await claimStale(client, stream, group, consumer, claimIdleMs)) {
          if (running) await finish(task);
        }
        const reply = await reader.xReadGroup(
          group,
          consumer,
          { key: stream, id: ">" },
          { COUNT: 10, BLOCK: blockMs },
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
