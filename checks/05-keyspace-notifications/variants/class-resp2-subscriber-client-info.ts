// variant: A watcher class (start/stop) that reads the database with CLIENT INFO and subscribes on a RESP2 duplicate; renewal re-SETs the lease with XX PX in a script once GET names the holder
import type { RedisClientType } from "redis";

export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

// Renew by re-SETting with XX only when we still hold it: same effect as PEXPIRE.
const RENEW = `
local holder = redis.call("GET", KEYS[1])
if holder ~= ARGV[1] then return 0 end
redis.call("SET", KEYS[1], ARGV[1], "XX", "PX", ARGV[2])
return 1`;

export async function acquireLease(client: Redis, leaseKey: string, worker: string, ttlMs: number) {
  return (
    String(await client.sendCommand(["SET", leaseKey, worker, "PX", String(ttlMs), "NX"])) === "OK"
  );
}

export async function renewLease(client: Redis, leaseKey: string, worker: string, ttlMs: number) {
  return (await client.eval(RENEW, { keys: [leaseKey], arguments: [worker, `${ttlMs}`] })) === 1;
}

export async function enableExpiredEvents(client: Redis): Promise<void> {
  const cfg = await client.configGet("notify-keyspace-events");
  const have = cfg["notify-keyspace-events"] ?? "";
  const missing = ["E", "x"].filter((c) => !have.includes(c)).join("");
  if (missing) await client.configSet({ "notify-keyspace-events": have + missing });
}

class LeaseWatcher {
  private sub: Redis | null = null;
  private channel = "";
  constructor(
    private readonly client: Redis,
    private readonly prefix: string,
    private readonly onExpired: (docId: string) => void,
  ) {}

  private async currentDb(): Promise<number> {
    const info = String(await this.client.sendCommand(["CLIENT", "INFO"]));
    const match = / db=(\d+)/.exec(info);
    return match ? Number(match[1]) : 0;
  }

  private handle = (key: string) => {
    if (!key.startsWith(this.prefix)) return;
    try {
      this.onExpired(key.slice(this.prefix.length));
    } catch (error) {
      console.error("onExpired failed", error);
    }
  };

  async start(): Promise<void> {
    this.channel = `__keyevent@${await this.currentDb()}__:expired`;
    const sub = this.client.duplicate({
      RESP: 2,
      maintNotifications: "disabled",
    }) as unknown as Redis;
    sub.on("error", (e: Error) => console.error("lease watcher", e.message));
    await sub.connect();
    try {
      await sub.subscribe(this.channel, this.handle);
    } catch (error) {
      sub.destroy();
      throw error;
    }
    this.sub = sub;
  }

  async stop(): Promise<void> {
    const sub = this.sub;
    this.sub = null;
    if (!sub) return;
    try {
      await sub.unsubscribe(this.channel);
    } finally {
      await sub.close();
    }
  }
}

export async function watchExpiredLeases(
  client: Redis,
  leasePrefix: string,
  onExpired: (docId: string) => void,
): Promise<() => Promise<void>> {
  const watcher = new LeaseWatcher(client, leasePrefix, onExpired);
  await watcher.start();
  return () => watcher.stop();
}
