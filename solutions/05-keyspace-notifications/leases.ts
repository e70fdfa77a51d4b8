/**
 * Lesson 05: Keyspace notifications (reference solution).
 */
import type { RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

export async function acquireLease(
  client: Redis,
  leaseKey: string,
  worker: string,
  ttlMs: number,
): Promise<boolean> {
  // NX: only if nobody holds it. PX: the lease ends by itself if the worker dies.
  const reply = await client.set(leaseKey, worker, {
    condition: "NX",
    expiration: { type: "PX", value: ttlMs },
  });
  return reply === "OK";
}

/** Compare and extend in one step: between a GET and a PEXPIRE the lease could change hands. */
const RENEW = `
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`;

export async function renewLease(
  client: Redis,
  leaseKey: string,
  worker: string,
  ttlMs: number,
): Promise<boolean> {
  const renewed = await client.eval(RENEW, {
    keys: [leaseKey],
    arguments: [worker, String(ttlMs)],
  });
  return renewed === 1;
}

export async function enableExpiredEvents(client: Redis): Promise<void> {
  const config = await client.configGet("notify-keyspace-events");
  const flags = new Set(config["notify-keyspace-events"] ?? "");
  // E: publish on __keyevent@<db>__:<event> channels; x: the "expired" event. Keep whatever
  // else another part of the system turned on.
  flags.add("E");
  flags.add("x");
  await client.configSet("notify-keyspace-events", [...flags].join(""));
}

export async function watchExpiredLeases(
  client: Redis,
  leasePrefix: string,
  onExpired: (docId: string) => void,
): Promise<() => Promise<void>> {
  // Keyspace events are per database, and the channel name says which one.
  const db = client.options?.database ?? 0;
  const channel = `__keyevent@${db}__:expired`;
  const subscriber = client.duplicate();
  // A dropped connection is reported here: without a listener, it would crash the process.
  subscriber.on("error", (error: Error) => console.error(`lease watcher: ${error.message}`));
  await subscriber.connect();
  // The message is the name of the key that expired; every expiring key in the database shows up.
  const listener = (expiredKey: string) => {
    if (!expiredKey.startsWith(leasePrefix)) return;
    const docId = expiredKey.slice(leasePrefix.length);
    // Caught here, not left to the error listener: node-redis 6.3 drops the rest of a read when
    // a listener throws, so one failed requeue would also lose the expiries that came with it.
    try {
      onExpired(docId);
    } catch (error) {
      console.error(`lease watcher: could not requeue ${docId}: ${(error as Error).message}`);
    }
  };
  try {
    await subscriber.subscribe(channel, listener);
  } catch (error) {
    // Refused (an ACL without this channel, say): the caller gets no stop(), so close it here.
    subscriber.destroy();
    throw error;
  }
  return async () => {
    await subscriber.unsubscribe(channel, listener);
    await subscriber.close();
  };
}
