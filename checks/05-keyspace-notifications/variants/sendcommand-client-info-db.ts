// variant: Everything through sendCommand; the database read from CLIENT INFO; the flags extended as a string, x left out when A is on; stop() destroys the watcher.
import type { RedisClientType } from "redis";

export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

export async function acquireLease(client: Redis, leaseKey: string, worker: string, ttlMs: number) {
  const reply = await client.sendCommand(["SET", leaseKey, worker, "NX", "PX", String(ttlMs)]);
  return reply !== null;
}

export async function renewLease(client: Redis, leaseKey: string, worker: string, ttlMs: number) {
  const script =
    "local holder = redis.call('GET', KEYS[1]) if holder ~= ARGV[1] then return 0 end redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1";
  const reply = await client.sendCommand(["EVAL", script, "1", leaseKey, worker, String(ttlMs)]);
  return Number(reply) === 1;
}

export async function enableExpiredEvents(client: Redis): Promise<void> {
  const reply = (await client.sendCommand(["CONFIG", "GET", "notify-keyspace-events"])) as unknown;
  const current = Array.isArray(reply)
    ? String(reply[1] ?? "")
    : String(Object.values(reply as object)[0] ?? "");
  let flags = current;
  if (!flags.includes("E")) flags += "E";
  if (!flags.includes("x") && !flags.includes("A")) flags += "x";
  if (flags !== current)
    await client.sendCommand(["CONFIG", "SET", "notify-keyspace-events", flags]);
}

export async function watchExpiredLeases(
  client: Redis,
  leasePrefix: string,
  onExpired: (docId: string) => void,
): Promise<() => Promise<void>> {
  const info = String(await client.sendCommand(["CLIENT", "INFO"]));
  const db = Number(/\bdb=(\d+)/.exec(info)?.[1] ?? 0);
  const channel = `__keyevent@${db}__:expired`;
  const watcher = client.duplicate();
  watcher.on("error", (e) => console.error("watcher:", String(e)));
  await watcher.connect();
  const onKey = (key: string) => {
    if (key.slice(0, leasePrefix.length) !== leasePrefix) return;
    try {
      onExpired(key.slice(leasePrefix.length));
    } catch (e) {
      console.error("requeue failed", e);
    }
  };
  await watcher.subscribe(channel, onKey).catch((e) => {
    watcher.destroy();
    throw e;
  });
  return async () => {
    watcher.destroy();
  };
}
