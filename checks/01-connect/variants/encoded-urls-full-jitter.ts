// variant: URLs with encoded credentials and user default, full jitter, a promise chain for withRedis() that starts the work inside then().
import { createClient, type RedisClientOptions, type RedisClientType } from "redis";
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;
export type Profile =
  | { kind: "local"; host?: string; port?: number }
  | { kind: "azure-cache"; host: string; accessKey: string }
  | { kind: "azure-managed"; host: string; objectId: string; token: string };
export function reconnectDelay(retries: number): number {
  return Math.random() * Math.min(100 * 2 ** retries, 5000);
}
export function buildOptions(profile: Profile, name: string): RedisClientOptions {
  const socket = { reconnectStrategy: reconnectDelay };
  const e = encodeURIComponent;
  switch (profile.kind) {
    case "local":
      return {
        name,
        url: `redis://${profile.host ?? "127.0.0.1"}:${profile.port ?? 6379}`,
        socket,
      };
    case "azure-cache":
      return {
        name,
        url: `rediss://default:${e(profile.accessKey)}@${profile.host}:6380`,
        socket: { ...socket, servername: profile.host },
      };
    case "azure-managed":
      return {
        name,
        url: `rediss://${e(profile.objectId)}:${e(profile.token)}@${profile.host}:10000`,
        socket: { ...socket, servername: profile.host },
      };
  }
}
export async function connect(url: string, name: string): Promise<Redis> {
  let everReady = false;
  // A login refused before the first ready is a wrong secret: fail now, with Redis's reason.
  const strategy = (retries: number, cause: Error) =>
    !everReady && /^(WRONGPASS|NOAUTH)/.test(cause.message) ? cause : reconnectDelay(retries);
  return createClient({ url, name, socket: { reconnectStrategy: strategy } })
    .on("error", (e: Error) => console.error(e.message))
    .once("ready", () => {
      everReady = true;
    })
    .connect();
}
export function withRedis<T>(
  url: string,
  name: string,
  work: (client: Redis) => Promise<T>,
): Promise<T> {
  // Promise.resolve(client).then(work): a work that throws at once still ends in finally().
  return connect(url, name).then((client) =>
    Promise.resolve(client)
      .then(work)
      .finally(() => client.close()),
  );
}
