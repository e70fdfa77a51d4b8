/**
 * Demo for lesson 07: a dashboard and a search indexer follow the status stream with XREAD BLOCK,
 * each on its own connection, while a pub/sub listener hears the same events live. The indexer
 * and the listener are away for a while: the indexer catches up from its checkpoint, the pub/sub
 * listener cannot. Run it with `npm run demo -- 07`.
 */
import kleur from "kleur";
import { createClient, type RedisClientType } from "redis";

type Redis = RedisClientType<{}, {}, {}, 3, {}>;
type StreamMessage = { id: string; message: Record<string, string> };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Reader {
  seen: string[];
  stop(): Promise<void>;
}

/** The lesson's tail: own connection, start at the checkpoint or the newest ID, save each. */
async function startTail(
  client: Redis,
  stream: string,
  name: string,
  paint: (text: string) => string,
  seen: string[],
): Promise<Reader> {
  const checkpoint = `${stream}:checkpoint:${name}`;
  const reader = client.duplicate({ name: `demo:${name}` });
  reader.on("error", (error: Error) => console.error(kleur.red(`${name}: ${error.message}`)));
  await reader.connect();
  const saved = await client.get(checkpoint);
  // "$" resolved to a real ID and saved at once, so no entry falls between two reads.
  const [newest] = saved ? [] : ((await client.xRevRange(stream, "+", "-", { COUNT: 1 })) ?? []);
  let cursor = saved ?? newest?.id ?? "0-0";
  if (!saved) await client.set(checkpoint, cursor);
  console.log(
    `  ${paint(name.padEnd(10))} starts at ${saved ? `its checkpoint ${saved}` : `the newest ID ${cursor}`}`,
  );
  let stopping = false;
  const running = (async () => {
    try {
      while (!stopping) {
        const reply = await reader.xRead({ key: stream, id: cursor }, { BLOCK: 300, COUNT: 100 });
        for (const { messages } of reply ?? []) {
          for (const { id, message } of messages as StreamMessage[]) {
            seen.push(message.docId ?? "?");
            console.log(`  ${paint(name.padEnd(10))} ${message.docId} ${kleur.dim(id)}`);
            cursor = id;
            await client.set(checkpoint, cursor);
          }
        }
      }
    } finally {
      await reader.close();
    }
  })();
  running.catch(() => {});
  return {
    seen,
    async stop() {
      stopping = true;
      await running;
    },
  };
}

/** A pub/sub listener on the same events, for comparison. */
async function startListener(client: Redis, channel: string, seen: string[]): Promise<Reader> {
  const subscriber = client.duplicate({ name: "demo:live-view" });
  subscriber.on("error", (error: Error) => console.error(kleur.red(error.message)));
  await subscriber.connect();
  await subscriber.subscribe(channel, (docId) => {
    seen.push(docId);
    console.log(`  ${kleur.yellow("live view ")} ${docId} ${kleur.dim("(pub/sub)")}`);
  });
  return {
    seen,
    async stop() {
      await subscriber.unsubscribe(channel);
      await subscriber.close();
    },
  };
}

export default async function demo(redisUrl: string, prefix: string): Promise<void> {
  const stream = `${prefix}docs:status`;
  const channel = `${prefix}docs:status:live`;
  const client: Redis = createClient({ url: redisUrl, name: "demo:pipeline" });
  client.on("error", (error: Error) => console.error(kleur.red(error.message)));
  await client.connect();
  const running: Reader[] = [];
  const dashboardSeen: string[] = [];
  const indexerSeen: string[] = [];
  const liveSeen: string[] = [];

  const emit = async (from: number, to: number) => {
    for (let n = from; n <= to; n++) {
      const docId = `doc-${String(n).padStart(2, "0")}`;
      console.log(kleur.bold(`pipeline     XADD + PUBLISH ${docId}`));
      await client.xAdd(stream, "*", { docId, stage: "ocr", status: "done" });
      await client.publish(channel, docId);
      await sleep(120);
    }
  };
  const stop = async (reader: Reader) => {
    running.splice(running.indexOf(reader), 1);
    await reader.stop();
  };

  try {
    console.log(kleur.bold("\nTwo stream readers and one pub/sub listener follow the pipeline:"));
    running.push(await startTail(client, stream, "dashboard", kleur.cyan, dashboardSeen));
    let indexer = await startTail(client, stream, "indexer", kleur.magenta, indexerSeen);
    let live = await startListener(client, channel, liveSeen);
    running.push(indexer, live);
    console.log();
    await emit(1, 3);

    console.log(kleur.bold("\nThe indexer is redeployed and the live view loses its connection:"));
    await stop(indexer);
    await stop(live);
    await emit(4, 6);

    console.log(kleur.bold("\nBoth come back:"));
    indexer = await startTail(client, stream, "indexer", kleur.magenta, indexerSeen);
    live = await startListener(client, channel, liveSeen);
    running.push(indexer, live);
    await sleep(200);
    await emit(7, 8);
    await sleep(200);

    console.log(kleur.bold("\nWhat each one saw of doc-01 to doc-08:"));
    for (const [name, seen, paint] of [
      ["dashboard", dashboardSeen, kleur.cyan],
      ["indexer", indexerSeen, kleur.magenta],
      ["live view", liveSeen, kleur.yellow],
    ] as const) {
      const missed = 8 - new Set(seen).size;
      const verdict = missed === 0 ? kleur.green("nothing missed") : kleur.red(`missed ${missed}`);
      console.log(
        `  ${paint(name.padEnd(10))} ${String(seen.length).padStart(2)} events, ${verdict}`,
      );
    }
    console.log(
      kleur.dim(
        "\nThe stream kept the entries, so the indexer resumed from its checkpoint; pub/sub kept nothing.",
      ),
    );
  } finally {
    for (const reader of running.splice(0)) await reader.stop().catch(() => {});
    await client.close();
  }
}
