/**
 * Lesson 01: Connect safely.
 *
 * Fill in the four functions below. Run `npm run check -- 01` after each one: the check tells
 * you what it expected and what your code did.
 */
import { createClient, type RedisClientOptions, type RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

/** Where the document platform's Redis lives. */
export type Profile =
  | { kind: "local"; host?: string; port?: number }
  | { kind: "azure-cache"; host: string; accessKey: string }
  | { kind: "azure-managed"; host: string; objectId: string; token: string };

/**
 * How long to wait before reconnect attempt number `retries` (0, 1, 2, ...), in milliseconds,
 * from 0 up. It should grow with the attempts, so a struggling server is not hammered, and never
 * exceed 5000, so the app comes back quickly once Redis is reachable again.
 */
export function reconnectDelay(retries: number): number {
  // TODO: return a delay that grows with `retries` and is capped at 5000 ms.
  throw new Error("TODO: reconnectDelay");
}

/**
 * node-redis options for a profile:
 * - local: plain TCP, host "127.0.0.1" and port 6379 unless the profile says otherwise;
 * - azure-cache: TLS on port 6380, the access key as the password;
 * - azure-managed: TLS on port 10000, the object id as the user name and the token as the password.
 * Both Azure profiles set servername to the host. Every profile names the connection `name` and
 * reconnects with reconnectDelay. Separate options or a redis:// / rediss:// URL: either works.
 */
export function buildOptions(profile: Profile, name: string): RedisClientOptions {
  // TODO: return { name, socket: { host, port, tls, servername, reconnectStrategy }, username?, password? }
  throw new Error("TODO: buildOptions");
}

/**
 * Opens a connection named `name` to the server at `url` and returns it once it is ready.
 * Listen for "error" before connecting: without a listener, a network blip crashes the process.
 * A wrong password must make it reject, with Redis's reason, and leave nothing retrying.
 */
export async function connect(url: string, name: string): Promise<Redis> {
  // TODO: createClient with url, name and the reconnect strategy; listen for errors; connect.
  throw new Error("TODO: connect");
}

/**
 * Connects, runs `work` with the client, and closes the connection afterwards: also when
 * `work` throws. Returns what `work` returns.
 */
export async function withRedis<T>(
  url: string,
  name: string,
  work: (client: Redis) => Promise<T>,
): Promise<T> {
  // TODO: connect, run the work, and close the client on every path.
  throw new Error("TODO: withRedis");
}
