/**
 * Lesson 14: Production on Azure.
 *
 * The OCR stage moves to Azure: TLS on port 6380 or 10000, a user of its own that may touch only
 * its streams, and a password that is an Entra ID token, replaced before it expires. Fill in
 * the four functions below and run `npm run check -- 14` after each one.
 */
import { createClient, type RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

/** Where and as whom a worker connects: what the Azure portal and Entra ID give you. */
export interface StageConnection {
  /** The address to connect to (on Azure: <name>.redis.cache.windows.net). */
  host: string;
  /** The TLS port (on Azure: 6380, or 10000 for Azure Managed Redis). */
  port: number;
  /** PEM text of the certificate authority that signed the server's certificate. */
  ca: string;
  /** The name the server's certificate is issued for, which may differ from `host`. */
  servername: string;
  /** The ACL user (with Entra ID: the object id of the identity). */
  username: string;
  /**
   * The current password (with Entra ID: an access token). It changes while the worker runs:
   * ask again for every new connection, never keep the first answer.
   */
  password(): Promise<string>;
}

/** The names one stage worker uses. */
export interface StageNames {
  /** This stage's stream, read through the group. */
  input: string;
  group: string;
  consumer: string;
  /** The next stage's stream: one entry { doc } per finished document. */
  output: string;
  /** The status channel: one JSON StatusEvent per finished document. */
  status: string;
}

export interface StatusEvent {
  doc: string;
  state: "done";
}

export interface Stoppable {
  /** Finishes the document in hand, stops, and closes what was opened. */
  stop(): Promise<void>;
}

/**
 * A client (not connected yet) for `conn`: TLS that checks the server's certificate against
 * `conn.ca` for the name `conn.servername`, authenticated as `conn.username` with a password
 * asked from `conn.password()` each time a connection is made. A login refused before the
 * client was first ready (a wrong secret) ends the attempt: connect() rejects instead of
 * retrying for ever.
 */
export function stageClient(conn: StageConnection): Redis {
  let wasReady = false;
  const client: Redis = createClient({
    socket: {
      tls: true,
      host: conn.host,
      port: conn.port,
      ca: conn.ca,
      servername: conn.servername,
      // node-redis retries a refused login for ever, so with a wrong secret connect() would
      // never settle. Before the first ready that is a deployment error: give up, and connect()
      // rejects with it. Once connected, a refusal is a rotation under way: keep retrying.
      reconnectStrategy: (retries, cause) =>
        !wasReady && isAuthError(cause)
          ? new Error(`Redis refused the login of ${conn.username}: ${cause.message}`)
          : Math.min(2 ** retries * 50, 2000),
    },
    credentialsProvider: {
      type: "async-credentials-provider",
      credentials: async () => ({ username: conn.username, password: await conn.password() }),
    },
  });
  client.on("ready", () => {
    wasReady = true;
  });
  return client;
}

/** A wrong password or a rejected token (WRONGPASS), or none sent (NOAUTH). */
function isAuthError(error: Error): boolean {
  return /^(WRONGPASS|NOAUTH)\b/.test(error?.message ?? "");
}

/**
 * The ACL rules of the stage worker's user, as ACL SETUSER arguments (the check adds `reset`,
 * `on` and the password): read and acknowledge `input` through the group, add to `output`,
 * publish on `status`, and nothing else.
 */
export function stageAcl(names: StageNames): string[] {
  return [
    `~${names.input}`,
    `~${names.output}`,
    `&${names.status}`,
    "+xreadgroup",
    "+xack",
    "+xadd",
    "+publish",
    // The hand-off is one transaction: without these, MULTI is refused, the three commands run
    // one by one, and EXEC fails after they did.
    "+multi",
    "+exec",
  ];
}

/**
 * Starts the stage worker: takes documents from `input` through the group, calls `handle`,
 * then adds { doc } to `output`, acknowledges, and publishes { doc, state: "done" } on `status`.
 * It keeps going when its connection is dropped (a rotated password, a failover): node-redis
 * reconnects, and the loop reads again.
 */
export async function startStage(
  conn: StageConnection,
  names: StageNames,
  handle: (doc: string) => Promise<void>,
  blockMs: number,
): Promise<Stoppable> {
  const client = stageClient(conn);
  // A dropped connection is reported here while node-redis reconnects; the loop sees it too.
  client.on("error", () => {});
  await connectOrClose(client);
  let stopping = false;
  const running = (async () => {
    try {
      while (!stopping) {
        let reply: Awaited<ReturnType<typeof client.xReadGroup>>;
        try {
          reply = await client.xReadGroup(
            names.group,
            names.consumer,
            { key: names.input, id: ">" },
            { COUNT: 10, BLOCK: blockMs },
          );
        } catch {
          // The connection dropped (a rotated password, a failover): node-redis reconnects,
          // asking the credentials provider again. Read again once it is back.
          if (!stopping) await new Promise((resolve) => setTimeout(resolve, 100));
          continue;
        }
        for (const { messages } of reply ?? []) {
          for (const { id, message } of messages) {
            const doc = message.doc ?? "";
            try {
              await handle(doc);
              const event: StatusEvent = { doc, state: "done" };
              await client
                .multi()
                .xAdd(names.output, "*", { doc })
                .xAck(names.input, names.group, id)
                .publish(names.status, JSON.stringify(event))
                .exec();
            } catch {
              // Not acknowledged, so it stays pending; lesson 09 takes such entries back.
            }
          }
        }
      }
    } finally {
      client.destroy();
    }
  })();
  // stop() reports a failure of the loop; until then nobody awaits it.
  running.catch(() => {});
  return {
    async stop() {
      stopping = true;
      await running;
    },
  };
}

/**
 * Subscribes to `channel` as `conn.username` and calls `onEvent` with each parsed StatusEvent,
 * through password rotations: a dropped subscriber reconnects and subscribes again. An
 * exception from `onEvent` is caught inside the listener (node-redis 6.3 drops the rest of a
 * read when a listener throws).
 */
export async function watchStatus(
  conn: StageConnection,
  channel: string,
  onEvent: (event: StatusEvent) => void,
): Promise<Stoppable> {
  const subscriber = stageClient(conn);
  // A dropped connection is reported here (node-redis reconnects and subscribes again): without
  // a listener, Node would end the process on the first drop.
  subscriber.on("error", () => {});
  await connectOrClose(subscriber);
  const listener = (message: string) => {
    // Caught here, not left to the error listener: node-redis 6.3 drops the rest of a read when
    // a listener throws, so one failing dashboard would also lose the events that came with it.
    try {
      onEvent(JSON.parse(message) as StatusEvent);
    } catch (error) {
      console.error(`status watcher of ${conn.username}: could not show ${message}: ${error}`);
    }
  };
  try {
    await subscriber.subscribe(channel, listener);
  } catch (error) {
    // Refused (an ACL that keeps this account off the channel): the caller gets no stop().
    subscriber.destroy();
    throw error;
  }
  return {
    async stop() {
      subscriber.destroy();
    },
  };
}

/** Connects `client`; if it gives up (a refused login), closes it, so nothing is left behind. */
async function connectOrClose(client: Redis): Promise<void> {
  try {
    await client.connect();
  } catch (error) {
    client.destroy();
    throw error;
  }
}
