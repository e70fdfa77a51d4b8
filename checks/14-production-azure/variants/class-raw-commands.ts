// variant: A StageWorker class: XREADGROUP and the MULTI sent as raw commands, a named duplicate() for the blocking read, the watcher built with createClient(stageClient(conn).options) and its listener made by a named wrapper that catches, and a refused first login ended by a strategy factory that remembers ready clients in a WeakSet.
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

const everReady = new WeakSet<Redis>();

/**
 * Retries like node-redis, except a login refused before the client was first ready: that is a
 * wrong secret, which no retry mends, so connect() should reject with it.
 */
function refusedLoginEnds(username: string, wasReady: () => boolean) {
  return (retries: number, cause: Error): number | Error =>
    !wasReady() && /^(WRONGPASS|NOAUTH)/.test(cause.message)
      ? new Error(`Redis refused the credentials of ${username} (${cause.message})`)
      : Math.min(50 * 2 ** retries, 2000);
}

export function stageClient(conn: StageConnection): Redis {
  const client: Redis = createClient({
    url: `rediss://${conn.host}:${conn.port}`,
    socket: {
      tls: true,
      ca: conn.ca,
      servername: conn.servername,
      reconnectStrategy: refusedLoginEnds(conn.username, () => everReady.has(client)),
    },
    credentialsProvider: {
      type: "async-credentials-provider",
      credentials: () =>
        conn.password().then((password) => ({ username: conn.username, password })),
    },
  });
  client.once("ready", () => everReady.add(client));
  return client;
}

export function stageAcl(names: StageNames): string[] {
  return [
    "resetkeys",
    "resetchannels",
    "-@all",
    `%RW~${names.input}`,
    `%RW~${names.output}`,
    `&${names.status}`,
    "+XREADGROUP",
    "+XACK",
    "+XADD",
    "+PUBLISH",
    "+MULTI",
    "+EXEC",
  ];
}

type Entry = [id: string, fields: string[]];

class StageWorker implements Stoppable {
  private stopping = false;
  private readonly done: Promise<void>;
  constructor(
    private readonly reader: Redis,
    private readonly writer: Redis,
    private readonly names: StageNames,
    private readonly handle: (doc: string) => Promise<void>,
    private readonly blockMs: number,
  ) {
    this.done = this.run();
    this.done.catch(() => {});
  }
  private async read(): Promise<Entry[]> {
    const n = this.names;
    const reply = (await this.reader.sendCommand([
      "XREADGROUP",
      "GROUP",
      n.group,
      n.consumer,
      "COUNT",
      "5",
      "BLOCK",
      String(this.blockMs),
      "STREAMS",
      n.input,
      ">",
    ])) as unknown;
    if (reply == null) return [];
    // RESP3: a map stream -> entries; RESP2: an array of [stream, entries]
    const streams =
      reply instanceof Map
        ? [...reply.values()]
        : Array.isArray(reply)
          ? (reply as [string, Entry[]][]).map((s) => s[1])
          : Object.values(reply as Record<string, Entry[]>);
    return streams.flat() as Entry[];
  }
  private async run(): Promise<void> {
    try {
      while (!this.stopping) {
        let entries: Entry[];
        try {
          entries = await this.read();
        } catch {
          if (!this.stopping) await new Promise((r) => setTimeout(r, 50));
          continue;
        }
        for (const [id, fields] of entries) {
          const i = fields.indexOf("doc");
          const doc = i >= 0 ? String(fields[i + 1]) : "";
          try {
            await this.handle(doc);
            await this.writer
              .multi()
              .addCommand(["XADD", this.names.output, "*", "doc", doc])
              .addCommand(["XACK", this.names.input, this.names.group, id])
              .addCommand(["PUBLISH", this.names.status, JSON.stringify({ doc, state: "done" })])
              .exec();
          } catch {
            // stays pending
          }
        }
      }
    } finally {
      this.reader.destroy();
      this.writer.destroy();
    }
  }
  async stop(): Promise<void> {
    this.stopping = true;
    await this.done;
  }
}

export async function startStage(
  conn: StageConnection,
  names: StageNames,
  handle: (doc: string) => Promise<void>,
  blockMs: number,
): Promise<Stoppable> {
  const writer = stageClient(conn);
  writer.on("error", () => {});
  await writer.connect();
  const reader = writer.duplicate({ name: "ocr-reader" }) as Redis;
  reader.on("error", () => {});
  await reader.connect();
  return new StageWorker(reader, writer, names, handle, blockMs);
}

/**
 * `onEvent` as a message listener that never throws: node-redis 6.3 drops the rest of a read
 * when a listener throws, which would lose the events that came with a failing one.
 */
function parsedAndCaught(onEvent: (event: StatusEvent) => void): (message: string) => void {
  return (message) => {
    try {
      onEvent(JSON.parse(message) as StatusEvent);
    } catch (error) {
      console.error(`status watcher: ${message} not shown: ${error}`);
    }
  };
}

export async function watchStatus(
  conn: StageConnection,
  channel: string,
  onEvent: (event: StatusEvent) => void,
): Promise<Stoppable> {
  const base = stageClient(conn);
  const subscriber = createClient(base.options) as Redis;
  subscriber.on("error", () => {});
  await subscriber.connect();
  await subscriber.sendCommand(["CLIENT", "SETNAME", "status-watcher"]).catch(() => {});
  try {
    await subscriber.subscribe(channel, parsedAndCaught(onEvent));
  } catch (error) {
    subscriber.destroy();
    throw error;
  }
  return {
    stop: async () => {
      await subscriber.close();
    },
  };
}
