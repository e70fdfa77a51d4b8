// variant: a Go-style backoff: a class keeps its own attempt count, started again on "ready" (Reset() after a success), URLs for every profile, and withRedis() closing in both arms of a then().
import { createClient, type RedisClientOptions, type RedisClientType } from "redis";

export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

export type Profile =
  | { kind: "local"; host?: string; port?: number }
  | { kind: "azure-cache"; host: string; accessKey: string }
  | { kind: "azure-managed"; host: string; objectId: string; token: string };

const BASE_MS = 100;
const CAP_MS = 5000;

export function reconnectDelay(retries: number): number {
  let delay = BASE_MS;
  for (let i = 0; i < retries && delay < CAP_MS; i++) delay *= 2;
  return Math.min(delay, CAP_MS);
}

const PORTS = { "azure-cache": 6380, "azure-managed": 10000 } as const;

export function buildOptions(profile: Profile, name: string): RedisClientOptions {
  if (profile.kind === "local") {
    const host = profile.host ?? "127.0.0.1";
    const port = profile.port ?? 6379;
    return { url: `redis://${host}:${port}`, name, socket: { reconnectStrategy: reconnectDelay } };
  }
  const user = profile.kind === "azure-managed" ? encodeURIComponent(profile.objectId) : "";
  const secret = encodeURIComponent(
    profile.kind === "azure-managed" ? profile.token : profile.accessKey,
  );
  return {
    url: `rediss://${user}:${secret}@${profile.host}:${PORTS[profile.kind]}`,
    name,
    socket: { tls: true, servername: profile.host, reconnectStrategy: reconnectDelay },
  };
}

/** Keeps its own attempt counter, like a Go backoff.Backoff, reset whenever the client is ready. */
class Connection {
  private attempts = 0;
  private everReady = false;
  readonly client: Redis;

  constructor(url: string, name: string) {
    this.client = createClient({
      url,
      name,
      socket: { reconnectStrategy: (_retries: number, cause: Error) => this.next(cause) },
    });
    this.client.on("error", (err: Error) => console.error(`[${name}] ${err.message}`));
    this.client.on("ready", () => {
      this.everReady = true;
      this.attempts = 0;
    });
  }

  private next(cause: Error): number | Error {
    if (!this.everReady && cause.message.startsWith("WRONGPASS")) return cause;
    if (!this.everReady && cause.message.startsWith("NOAUTH")) return cause;
    return reconnectDelay(this.attempts++);
  }

  async open(): Promise<Redis> {
    await this.client.connect();
    return this.client;
  }
}

export async function connect(url: string, name: string): Promise<Redis> {
  return new Connection(url, name).open();
}

export async function withRedis<T>(
  url: string,
  name: string,
  work: (client: Redis) => Promise<T>,
): Promise<T> {
  const client = await connect(url, name);
  // Like a Go defer: close on both outcomes, then pass the outcome on.
  return Promise.resolve()
    .then(() => work(client))
    .then(
      async (result) => {
        await client.close();
        return result;
      },
      async (error: unknown) => {
        await client.close();
        throw error;
      },
    );
}
