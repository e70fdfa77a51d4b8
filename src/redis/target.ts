import { createClient } from "redis";
import { redact } from "./redact.ts";
import { type PrivateServer, startPrivateServer } from "./server.ts";

/** The Redis a session runs its checks against: our own private server, or the user's. */
export interface RedisTarget {
  kind: "private" | "external";
  /** Includes the password: pass it to clients, never print it. */
  url: string;
  /** The URL with its password hidden. */
  display: string;
  version: string;
  /** Set for the private server, whose port MONITOR may follow. */
  port?: number;
  /**
   * Private server only: makes it as it was started (restarted if a run changed its settings,
   * paused it or shut it down), so one check cannot poison the next. runCheck calls it.
   */
  refresh?(): Promise<void>;
  release(): Promise<void>;
}

export class RedisUnreachable extends Error {
  constructor(url: string, cause: string) {
    super(
      [
        `Could not connect to REDIS_URL (${redact(url)}): ${redact(cause)}`,
        "",
        "Check the host, the port (Azure Cache for Redis: 6380, Azure Managed Redis: 10000),",
        "rediss:// for TLS, and the user name and password. `npm run doctor` tests the connection.",
        "Or unset REDIS_URL to use the workbook's private redis-server.",
      ].join("\n"),
    );
    this.name = "RedisUnreachable";
  }
}

async function serverVersion(url: string): Promise<string> {
  const client = createClient({
    url,
    name: "wb:check:harness",
    socket: { connectTimeout: 5000, reconnectStrategy: false },
  });
  let lastError: Error | undefined;
  client.on("error", (error: Error) => {
    lastError = error;
  });
  try {
    await client.connect();
    const info = await client.info("server");
    return /redis_version:(\S+)/.exec(info)?.[1] ?? "unknown";
  } catch (error) {
    throw new RedisUnreachable(url, (lastError ?? (error as Error)).message);
  } finally {
    client.destroy();
  }
}

/**
 * REDIS_URL opts into the user's own server; otherwise we start a private one. Either way the
 * caller must release() it, which stops the private server.
 */
export async function openRedisTarget(env: NodeJS.ProcessEnv = process.env): Promise<RedisTarget> {
  const url = env.REDIS_URL?.trim();
  if (url) {
    if (!/^rediss?:\/\//i.test(url)) {
      throw new Error(
        `REDIS_URL must start with redis:// or rediss:// (got ${redact(url)}). Fix it or unset it.`,
      );
    }
    const version = await serverVersion(url);
    return { kind: "external", url, display: redact(url), version, release: async () => {} };
  }
  const server: PrivateServer = await startPrivateServer();
  return {
    kind: "private",
    url: server.url,
    display: `${server.url} (private, started by the workbook)`,
    version: server.version,
    port: server.port,
    refresh: server.refresh,
    release: server.stop,
  };
}

/**
 * Removes every key under our prefix: SCAN + UNLINK, never a global command. With `timeoutMs`,
 * gives up (closing its connection) when the server does not answer in time, e.g. paused.
 */
export async function deletePrefixedKeys(
  url: string,
  prefix: string,
  timeoutMs?: number,
): Promise<number> {
  const client = createClient({
    url,
    name: "wb:check:cleanup",
    socket: { reconnectStrategy: false },
  });
  client.on("error", () => {});
  const limit = timeoutMs === undefined ? undefined : setTimeout(() => client.destroy(), timeoutMs);
  let removed = 0;
  try {
    await client.connect();
    for await (const keys of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 500 })) {
      if (keys.length > 0) removed += await client.unlink(keys);
    }
  } finally {
    clearTimeout(limit);
    if (client.isOpen) client.destroy();
  }
  return removed;
}

/** "7.0.15" >= "6.2" */
export function versionAtLeast(version: string, minimum: string): boolean {
  const a = version.split(".").map(Number);
  const b = minimum.split(".").map(Number);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) return x > y;
  }
  return true;
}
