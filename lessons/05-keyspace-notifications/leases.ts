/**
 * Lesson 05: Keyspace notifications (bonus).
 *
 * A worker that takes a document holds a lease: a key that expires unless the worker renews it.
 * When a worker stalls or dies, its lease expires, and Redis can announce that. Fill in the four
 * functions below, then run `npm run check -- 05`.
 */
import type { RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

/**
 * Takes the lease `leaseKey` for `worker` for `ttlMs` milliseconds, only if nobody holds it.
 * Returns true when this worker got it.
 */
export async function acquireLease(
  client: Redis,
  leaseKey: string,
  worker: string,
  ttlMs: number,
): Promise<boolean> {
  // TODO: SET leaseKey worker PX ttlMs NX
  throw new Error("TODO: acquireLease");
}

/**
 * Extends the lease to `ttlMs` from now, but only if `worker` still holds it. Returns true when
 * it was extended.
 */
export async function renewLease(
  client: Redis,
  leaseKey: string,
  worker: string,
  ttlMs: number,
): Promise<boolean> {
  // TODO: check the holder and PEXPIRE in one atomic step (a small Lua script with EVAL).
  throw new Error("TODO: renewLease");
}

/**
 * Turns on the keyspace events this lesson needs (expired events, published on the
 * __keyevent@<db>__ channels), keeping any flags that are already on.
 */
export async function enableExpiredEvents(client: Redis): Promise<void> {
  // TODO: CONFIG GET notify-keyspace-events, add the flags you need, CONFIG SET.
  throw new Error("TODO: enableExpiredEvents");
}

/**
 * Calls `onExpired(docId)` whenever a lease named `<leasePrefix><docId>` expires, in the
 * database `client` uses. Other expiring keys are none of its business. Resolve once listening;
 * return a stop() that unsubscribes and closes the connection it opened. If Redis refuses the
 * subscription, close that connection and reject: the caller has no stop() to close it with.
 * An onExpired that throws must cost only its own document, and a dropped connection must not
 * crash the process.
 */
export async function watchExpiredLeases(
  client: Redis,
  leasePrefix: string,
  onExpired: (docId: string) => void,
): Promise<() => Promise<void>> {
  // TODO: subscribe on a duplicate to __keyevent@<db>__:expired (db: client.options?.database);
  //       each message is the expired key's name.
  throw new Error("TODO: watchExpiredLeases");
}
