/**
 * Demo for lesson 08: 30 documents wait for OCR; three workers in one consumer group share them,
 * each on its own connection. Every document is processed once, by one worker, and acknowledged.
 * Run it with `npm run demo -- 08`.
 */
import kleur from "kleur";
import { createClient, type RedisClientType } from "redis";

type Redis = RedisClientType<{}, {}, {}, 3, {}>;
type StreamMessage = { id: string; message: Record<string, string> };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const WORKERS = [
  ["ocr-1", kleur.cyan],
  ["ocr-2", kleur.magenta],
  ["ocr-3", kleur.yellow],
] as const;

/** Stand-in OCR timings, the same every run: doc-04, doc-13 and doc-22 are long contracts. */
function ocrTime(docId: string): number {
  const n = Number(docId.replace(/\D/g, ""));
  return n % 9 === 4 ? 700 : 60 + ((n * 37) % 5) * 30;
}

interface Worker {
  stop(): Promise<void>;
}

async function startWorker(
  client: Redis,
  stream: string,
  group: string,
  consumer: string,
  paint: (text: string) => string,
  done: Map<string, string>,
): Promise<Worker> {
  const connection = client.duplicate({ name: `demo:${consumer}` });
  connection.on("error", (error: Error) =>
    console.error(kleur.red(`${consumer}: ${error.message}`)),
  );
  await connection.connect();
  let stopping = false;
  const running = (async () => {
    try {
      while (!stopping) {
        const reply = await connection.xReadGroup(
          group,
          consumer,
          { key: stream, id: ">" },
          { COUNT: 2, BLOCK: 300 },
        );
        for (const { messages } of reply ?? []) {
          const batch = messages as StreamMessage[];
          const docs = batch.map((m) => m.message.docId).join(", ");
          console.log(`  ${paint(consumer)}  ${kleur.dim("XREADGROUP >  took")} ${docs}`);
          for (const { id, message } of batch) {
            const docId = message.docId ?? "?";
            const ms = ocrTime(docId);
            await sleep(ms);
            await connection.xAck(stream, group, id);
            done.set(docId, consumer);
            console.log(
              `  ${paint(consumer)}  ${docId.padEnd(7)} OCR done in ${String(ms).padStart(3)} ms  ${kleur.dim(`XACK ${id}`)}`,
            );
          }
        }
      }
    } finally {
      await connection.close();
    }
  })();
  running.catch(() => {});
  return {
    async stop() {
      stopping = true;
      await running;
    },
  };
}

export default async function demo(redisUrl: string, prefix: string): Promise<void> {
  const stream = `${prefix}tasks:ocr`;
  const group = "ocr";
  const client: Redis = createClient({ url: redisUrl, name: "demo:intake" });
  client.on("error", (error: Error) => console.error(kleur.red(error.message)));
  await client.connect();
  const workers: Worker[] = [];
  try {
    console.log(kleur.bold(`\nThe upload API queues 30 documents on ${stream}:`));
    for (let n = 1; n <= 30; n++) {
      await client.xAdd(stream, "*", { docId: `doc-${String(n).padStart(2, "0")}` });
    }
    console.log(`  XADD x 30, XLEN = ${await client.xLen(stream)}`);

    await client.xGroupCreate(stream, group, "0", { MKSTREAM: true });
    console.log(
      kleur.bold(`\nXGROUP CREATE ${group} at 0: the group starts before the first task.`),
    );
    console.log(
      kleur.bold("Three workers join, each with its own connection, taking 2 at a time:\n"),
    );

    const done = new Map<string, string>();
    for (const [name, paint] of WORKERS) {
      workers.push(await startWorker(client, stream, group, name, paint, done));
    }
    const deadline = Date.now() + 8000;
    while (done.size < 30 && Date.now() < deadline) await sleep(50);
    for (const worker of workers.splice(0)) await worker.stop();

    console.log(kleur.bold("\nWho did what:"));
    for (const [name, paint] of WORKERS) {
      const mine = [...done.values()].filter((consumer) => consumer === name).length;
      console.log(`  ${paint(name)}  ${String(mine).padStart(2)} documents`);
    }
    const pending = await client.xPending(stream, group);
    console.log(
      `\n${done.size} of 30 documents processed, each by exactly one worker. XPENDING: ${kleur.green(String(pending.pending))} unacknowledged.`,
    );
    console.log(
      kleur.dim(
        "The long contracts held up no one: a worker that finished early simply asked for more.",
      ),
    );
  } finally {
    for (const worker of workers) await worker.stop().catch(() => {});
    await client.close();
  }
}
