// variant: Polls one entry at a time without BLOCK (a timer between empty reads), the MULTI built in a loop, an ACL built with map(), the watcher as an async iterator whose listener only queues, and a reconnect strategy method that ends a refused first login with the refusal itself.
import { createClient, ErrorReply, type RedisClientType } from "redis";

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

import * as tls from "node:tls";

export function stageClient(conn: StageConnection): Redis {
  let readyOnce = false;
  const client: Redis = createClient({
    socket: {
      tls: true,
      host: conn.host,
      port: conn.port,
      ca: [conn.ca],
      servername: conn.servername,
      checkServerIdentity: (_host, cert) => tls.checkServerIdentity(conn.servername, cert),
      reconnectStrategy(retries, cause) {
        // Never ready and refused: the secret is wrong, and connect() rejects with the refusal.
        if (!readyOnce && cause instanceof ErrorReply && /WRONGPASS|NOAUTH/.test(cause.message)) {
          return cause;
        }
        return Math.min((retries + 1) * 100, 2000);
      },
    },
    credentialsProvider: {
      type: "async-credentials-provider",
      async credentials() {
        const password = await conn.password();
        return { username: conn.username, password };
      },
    },
  });
  client.on("ready", () => {
    readyOnce = true;
  });
  return client;
}

export function stageAcl({ input, output, status }: StageNames): string[] {
  const keys = [input, output].map((k) => `~${k}`);
  return [
    ...keys,
    `&${status}`,
    ...["xreadgroup", "xack", "xadd", "publish", "multi", "exec"].map((c) => `+${c}`),
  ];
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// Polls without BLOCK, one entry at a time, waiting between empty reads with a timer.
export async function startStage(
  conn: StageConnection,
  names: StageNames,
  handle: (doc: string) => Promise<void>,
  blockMs: number,
): Promise<Stoppable> {
  const client = stageClient(conn);
  client.on("error", (err) => void err);
  await client.connect();
  const controller = new AbortController();
  const loop = async () => {
    while (!controller.signal.aborted) {
      const reply = await client
        .xReadGroup(names.group, names.consumer, [{ key: names.input, id: ">" }], { COUNT: 1 })
        .catch(() => undefined);
      const entry = reply?.[0]?.messages[0];
      if (!entry) {
        await sleep(Math.min(50, blockMs));
        continue;
      }
      const doc = String(entry.message.doc);
      try {
        await handle(doc);
      } catch {
        continue; // stays pending
      }
      const steps: Array<(tx: ReturnType<typeof client.multi>) => ReturnType<typeof client.multi>> =
        [
          (tx) => tx.xAdd(names.output, "*", { doc }),
          (tx) => tx.xAck(names.input, names.group, entry.id),
          (tx) =>
            tx.publish(names.status, JSON.stringify({ doc, state: "done" } satisfies StatusEvent)),
        ];
      let tx = client.multi();
      for (const step of steps) tx = step(tx);
      await tx.exec().catch(() => {});
    }
  };
  const done = loop().finally(() => client.close().catch(() => client.destroy()));
  return {
    stop: async () => {
      controller.abort();
      await done;
    },
  };
}

// The watcher as an async iterator of parsed events.
async function subscribeEvents(
  sub: Redis,
  channel: string,
  signal: AbortSignal,
): Promise<AsyncIterable<StatusEvent>> {
  const queue: StatusEvent[] = [];
  let wake: (() => void) | undefined;
  await sub.subscribe(channel, (m) => {
    try {
      queue.push(JSON.parse(m));
    } catch {
      return; // not JSON: not a status event
    }
    wake?.();
  });
  signal.addEventListener("abort", () => wake?.());
  return {
    async *[Symbol.asyncIterator]() {
      while (!signal.aborted) {
        const next = queue.shift();
        if (next) yield next;
        else await new Promise<void>((r) => (wake = r));
      }
    },
  };
}

export async function watchStatus(
  conn: StageConnection,
  channel: string,
  onEvent: (event: StatusEvent) => void,
): Promise<Stoppable> {
  const sub = stageClient(conn);
  sub.on("error", () => {});
  await sub.connect();
  const controller = new AbortController();
  const events = await subscribeEvents(sub, channel, controller.signal).catch((error: unknown) => {
    sub.destroy();
    throw error;
  });
  const pump = (async () => {
    for await (const event of events) {
      try {
        onEvent(event);
      } catch {
        // A dashboard that fails to draw one event must not end the watcher.
      }
    }
  })();
  return {
    stop: async () => {
      controller.abort();
      await pump.catch(() => {});
      sub.destroy();
    },
  };
}
