/**
 * Lesson 01: Connect safely (reference solution).
 */
import { createClient, type RedisClientOptions, type RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

/** Where the document platform's Redis lives. */
export type Profile =
  | { kind: "local"; host?: string; port?: number }
  | { kind: "azure-cache"; host: string; accessKey: string }
  | { kind: "azure-managed"; host: string; objectId: string; token: string };

/** Exponential backoff: 50, 100, 200, ... ms, capped at 5 s, plus a little jitter. */
export function reconnectDelay(retries: number): number {
  const base = Math.min(50 * 2 ** retries, 4_900);
  // Jitter spreads the reconnects of many instances after one outage.
  return Math.round(base + Math.random() * 100);
}

export function buildOptions(profile: Profile, name: string): RedisClientOptions {
  switch (profile.kind) {
    case "local":
      return {
        name,
        socket: {
          host: profile.host ?? "127.0.0.1",
          port: profile.port ?? 6379,
          reconnectStrategy: reconnectDelay,
        },
      };
    case "azure-cache":
      // Azure Cache for Redis: the non-TLS port 6379 is disabled by default; TLS is on 6380.
      return {
        name,
        password: profile.accessKey,
        socket: {
          host: profile.host,
          port: 6380,
          tls: true,
          servername: profile.host,
          reconnectStrategy: reconnectDelay,
        },
      };
    case "azure-managed":
      // Azure Managed Redis listens on 10000 with TLS. With Microsoft Entra ID the user is the
      // identity's object id and the password a token, which @redis/entraid renews before expiry.
      return {
        name,
        username: profile.objectId,
        password: profile.token,
        socket: {
          host: profile.host,
          port: 10000,
          tls: true,
          servername: profile.host,
          reconnectStrategy: reconnectDelay,
        },
      };
  }
}

/** Redis refused the login: a wrong password, user name or expired token. */
function isAuthError(cause: Error): boolean {
  return /^(WRONGPASS|NOAUTH)/.test(cause.message);
}

export async function connect(url: string, name: string): Promise<Redis> {
  let ready = false;
  const client: Redis = createClient({
    url,
    name,
    socket: {
      // node-redis 6.3 retries a refused login like a dropped connection, so connect() would
      // never settle with a wrong secret. Before the first ready that is a configuration error:
      // give up and let connect() reject with it. After it, keep retrying, whatever the cause.
      reconnectStrategy: (retries: number, cause: Error) =>
        !ready && isAuthError(cause) ? cause : reconnectDelay(retries),
    },
  });
  // Without a listener, an "error" event (a dropped connection) would crash the process.
  client.on("error", (error: Error) => console.error(`redis ${name}: ${error.message}`));
  client.on("ready", () => {
    ready = true;
  });
  await client.connect();
  return client;
}

export async function withRedis<T>(
  url: string,
  name: string,
  work: (client: Redis) => Promise<T>,
): Promise<T> {
  const client = await connect(url, name);
  try {
    return await work(client);
  } finally {
    // close() lets replies already on their way arrive; destroy() would drop them.
    await client.close();
  }
}
