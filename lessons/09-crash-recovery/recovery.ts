/**
 * Lesson 09: Crash recovery.
 *
 * The OCR workers of the document platform get killed: a deploy, an out-of-memory kill, a
 * node that disappears. Make sure no document is lost when that happens mid-task. Fill in the
 * four functions below and run `npm run check -- 09` after each one.
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
  /**
   * How long one read waits for new entries (milliseconds); also how often stale entries are
   * looked for. Optional: default to a second or so. BLOCK 0 waits forever, and under 100 ms
   * an idle worker polls Redis.
   */
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

/** ["docId", "doc-17", "pages", "12"] -> { docId: "doc-17", pages: "12" } */
function toFields(flat: string[]): Record<string, string> {
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i] as string] = flat[i + 1] as string;
  return fields;
}

/**
 * The entries this consumer was given before and never acknowledged: what a previous run under
 * the same name was doing when it died. Reads with XREADGROUP ... STREAMS <stream> 0, page by
 * page. An entry deleted in the meantime has nothing left to do: acknowledge it and skip it.
 *
 * node-redis 6.3's xReadGroup() throws on a deleted entry's null fields, so send this read with
 * client.sendCommand([...]) and read the reply as a RawReadReply.
 */
export async function readOwnPending(
  client: Redis,
  stream: string,
  group: string,
  consumer: string,
): Promise<Task[]> {
  // TODO: XREADGROUP ... COUNT 100 ... STREAMS stream 0 (a page: COUNT at most 1000), then
  // after the last ID returned, until a page is empty; XACK (and await) entries whose fields
  // are null, return the others as tasks.
  throw new Error("TODO: readOwnPending");
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
  // TODO: one XAUTOCLAIM from `cursor` with COUNT `count`; keep the messages that are not null
  // and return them with nextId as the cursor.
  throw new Error("TODO: claimStale");
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
  // TODO: XINFO CONSUMERS; XGROUP DELCONSUMER each one with pending 0 and idle > idleMs.
  throw new Error("TODO: removeDeadConsumers");
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
  // TODO: create the group if needed (BUSYGROUP is fine), open and connect a duplicate()
  // connection for the blocking reads, start the loop in the background (do not await it
  // here), and return { stop }.
  throw new Error("TODO: startWorker");
}
