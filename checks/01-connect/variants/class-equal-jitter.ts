// variant: a class that owns the client and its ever-ready flag, ErrorReply tested by instanceof and wrapped as a cause, equal jitter, and withRedis() as a then() that closes before it rethrows.
import { createClient, ErrorReply, type RedisClientOptions, type RedisClientType } from "redis";

export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

export type Profile =
  | { kind: "local"; host?: string; port?: number }
  | { kind: "azure-cache"; host: string; accessKey: string }
  | { kind: "azure-managed"; host: string; objectId: string; token: string };

const CAP = 5000;

// "Equal jitter": half the exponential step fixed, half random.
export function reconnectDelay(retries: number): number {
  const step = Math.min(CAP, 100 * 2 ** Math.min(retries, 10));
  return Math.floor(step / 2 + Math.random() * (step / 2));
}

function tlsSocket(host: string, port: number) {
  return { host, port, tls: true as const, servername: host, reconnectStrategy: reconnectDelay };
}

export function buildOptions(profile: Profile, name: string): RedisClientOptions {
  if (profile.kind === "azure-cache") {
    return { name, password: profile.accessKey, socket: tlsSocket(profile.host, 6380) };
  }
  if (profile.kind === "azure-managed") {
    return {
      name,
      username: profile.objectId,
      password: profile.token,
      socket: tlsSocket(profile.host, 10000),
    };
  }
  return {
    name,
    socket: {
      host: profile.host ?? "127.0.0.1",
      port: profile.port ?? 6379,
      reconnectStrategy: reconnectDelay,
    },
  };
}

class Connection {
  everReady = false;
  readonly client: Redis;
  constructor(url: string, name: string) {
    this.client = createClient({
      url,
      name,
      socket: { reconnectStrategy: (retries, cause) => this.next(retries, cause) },
    }) as Redis;
    this.client.on("error", (e: Error) => console.warn(`[${name}] ${e.message}`));
    this.client.once("ready", () => {
      this.everReady = true;
    });
  }
  next(retries: number, cause: Error): number | Error {
    const loginRefused = cause instanceof ErrorReply && /WRONGPASS|NOAUTH/.test(cause.message);
    if (loginRefused && !this.everReady) return new Error("Redis refused the login", { cause });
    return reconnectDelay(retries);
  }
}

export async function connect(url: string, name: string): Promise<Redis> {
  const { client } = new Connection(url, name);
  return client.connect();
}

export function withRedis<T>(
  url: string,
  name: string,
  work: (client: Redis) => Promise<T>,
): Promise<T> {
  return connect(url, name).then(async (client) => {
    let outcome: { ok: true; value: T } | { ok: false; error: unknown };
    try {
      outcome = { ok: true, value: await work(client) };
    } catch (error) {
      outcome = { ok: false, error };
    }
    await client.close();
    if (!outcome.ok) throw outcome.error;
    return outcome.value;
  });
}
