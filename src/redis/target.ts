import { redact, rememberSecretsOf } from "./redact.ts";
import { type PrivateServer, startPrivateServer } from "./server.ts";
import { tlsSocketOptions } from "./tls.ts";

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
  /** Private server only: see PrivateServer.keep(). */
  keep?(seconds: number): { pid: number; dir: string };
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

/**
 * node-redis, loaded when a client is first needed. Loading it through tsx's hooks takes about
 * 0.4 s, and a check against the private server needs no client until its run is over
 * (its server and its trace speak RESP over plain sockets, ./raw.ts): `npm run check` starts the
 * check's own process that much sooner.
 */
async function newClient(...options: Parameters<typeof import("./client.ts").newClient>) {
  return (await import("./client.ts")).newClient(...options);
}

/**
 * Loads node-redis while the caller waits on something else (a check's tests), so that the
 * clean-up after it does not wait for the load.
 */
export function preloadClient(): void {
  import("./client.ts").catch(() => {});
}

/** The server's version, asked once without retrying; RedisUnreachable says why it failed. */
export async function serverVersion(url: string): Promise<string> {
  const client = await newClient({
    url,
    name: "wb:check:harness",
    socket: { connectTimeout: 5000, reconnectStrategy: false, ...tlsSocketOptions(url) },
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

/** REDIS_URL is not usable as it is; the message never repeats it (it may hold a password). */
export class RedisUrlError extends Error {
  override name = "RedisUrlError";
}

/**
 * The Azure portal's connection string (`<name>.redis.cache.windows.net:6380,password=<key>,
 * ssl=True,abortConnect=False`, the StackExchange.Redis form) as the equivalent redis:// URL;
 * undefined when the text is not in that form.
 */
export function fromConnectionString(text: string): string | undefined {
  const [endpoint = "", ...parts] = text.split(",").map((part) => part.trim());
  const hostPort = /^([a-z0-9.-]+)(?::(\d+))?$/i.exec(endpoint);
  if (!hostPort || parts.length === 0) return undefined;
  const options = new Map<string, string>();
  for (const part of parts) {
    const equals = part.indexOf("=");
    if (equals < 0) {
      throw new RedisUrlError(
        `REDIS_URL is a connection string with several endpoints; the workbook connects to one: rediss://:<access key>@${hostPort[1]}:6380`,
      );
    }
    options.set(part.slice(0, equals).trim().toLowerCase(), part.slice(equals + 1).trim());
  }
  const tls = /^true$/i.test(options.get("ssl") ?? "");
  const port = hostPort[2] ?? (tls ? "6380" : "6379");
  const user = encodeURIComponent(options.get("user") ?? "");
  const password = encodeURIComponent(options.get("password") ?? "");
  const auth = password ? `${user}:${password}@` : "";
  return `${tls ? "rediss" : "redis"}://${auth}${hostPort[1]}:${port}`;
}

/**
 * REDIS_URL as a URL node-redis accepts: a redis:// or rediss:// URL as it is, the Azure
 * portal's connection string converted; its secrets are remembered so nothing prints them.
 */
export function redisUrlFrom(raw: string): string {
  const text = raw.trim();
  const url = /^rediss?:\/\//i.test(text) ? text : fromConnectionString(text);
  if (!url) {
    throw new RedisUrlError(
      "REDIS_URL must be a redis:// or rediss:// URL, like rediss://:<access key>@<name>.redis.cache.windows.net:6380. Fix it or unset it.",
    );
  }
  rememberSecretsOf(url);
  return url;
}

/**
 * REDIS_URL opts into the user's own server; otherwise we start a private one. Either way the
 * caller must release() it, which stops the private server.
 */
export async function openRedisTarget(env: NodeJS.ProcessEnv = process.env): Promise<RedisTarget> {
  const raw = env.REDIS_URL?.trim();
  if (raw) {
    const url = redisUrlFrom(raw);
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
    keep: server.keep,
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
  const client = await newClient({
    url,
    name: "wb:check:cleanup",
    socket: { reconnectStrategy: false, ...tlsSocketOptions(url) },
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
