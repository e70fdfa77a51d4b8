/**
 * Demo for lesson 09: worker ocr-1 is killed in the middle of a contract; its entries wait in
 * the pending entries list until they have been idle long enough, then ocr-2 takes them over.
 * Run it with `npm run demo -- 09`.
 */
import kleur from "kleur";
import { createClient, type RedisClientType } from "redis";

type Redis = RedisClientType<{}, {}, {}, 3, {}>;

const GROUP = "ocr";
const CLAIM_IDLE_MS = 2000;

const DOCS = [
  { docId: "contract-17", pages: 40 },
  { docId: "lease-18", pages: 12 },
  { docId: "nda-19", pages: 3 },
  { docId: "invoice-20", pages: 2 },
];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function connect(url: string, name: string): Promise<Redis> {
  const client: Redis = createClient({ url, name, socket: { reconnectStrategy: false } });
  client.on("error", () => {});
  await client.connect();
  return client;
}

const who = {
  "ocr-1": kleur.cyan("ocr-1"),
  "ocr-2": kleur.magenta("ocr-2"),
};

/** Pretends to run OCR, showing progress a few pages at a time (on one line in a terminal). */
async function ocr(worker: keyof typeof who, docId: string, pages: number, upTo = pages) {
  const steps: number[] = [];
  for (let page = 4; page < upTo; page += 4) steps.push(page);
  steps.push(upTo);
  for (const page of steps) {
    const line = `    ${who[worker]} OCR ${docId} page ${page}/${pages}`;
    if (process.stdout.isTTY) process.stdout.write(`\r${line}`);
    else if (page === upTo) process.stdout.write(line);
    await sleep(60);
  }
  process.stdout.write("\n");
}

async function showPending(admin: Redis, stream: string, docIds: Map<string, string>) {
  const pending = await admin.xPendingRange(stream, GROUP, "-", "+", 10);
  console.log(kleur.dim("    XPENDING        consumer  idle     deliveries"));
  for (const entry of pending) {
    const idle = `${(entry.millisecondsSinceLastDelivery / 1000).toFixed(1)} s`;
    console.log(
      `    ${(docIds.get(entry.id) ?? entry.id).padEnd(15)} ${entry.consumer.padEnd(9)} ${idle.padEnd(8)} ${entry.deliveriesCounter}`,
    );
  }
  if (pending.length === 0) console.log("    (nothing pending)");
}

export default async function demo(redisUrl: string, prefix: string): Promise<void> {
  const stream = `${prefix}docs:ocr`;
  const admin = await connect(redisUrl, "demo:admin");
  const clients: Redis[] = [admin];
  try {
    await admin.xGroupCreate(stream, GROUP, "0", { MKSTREAM: true });
    const docIds = new Map<string, string>();
    const pagesOf = new Map<string, number>();
    for (const doc of DOCS.slice(0, 2)) {
      docIds.set(await admin.xAdd(stream, "*", { docId: doc.docId }), doc.docId);
      pagesOf.set(doc.docId, doc.pages);
    }

    console.log(kleur.bold("\nWorker ocr-1 reads two documents and starts on the first one:"));
    const first = await connect(redisUrl, "demo:ocr-1");
    clients.push(first);
    const batch = await first.xReadGroup(GROUP, "ocr-1", { key: stream, id: ">" }, { COUNT: 2 });
    const held: { id: string; message: Record<string, string> }[] = batch?.[0]?.messages ?? [];
    console.log(
      `    ${who["ocr-1"]} XREADGROUP ... > got ${held.map((m) => m.message.docId).join(", ")}`,
    );
    await ocr("ocr-1", "contract-17", 40, 16);
    first.destroy();
    console.log(
      kleur
        .red()
        .bold("    ✗ ocr-1 dies, as under kill -9: its connection drops, nothing was acknowledged"),
    );

    console.log(
      kleur.bold("\nBoth documents wait in the pending entries list, under ocr-1's name:"),
    );
    await showPending(admin, stream, docIds);

    console.log(
      kleur.bold(
        `\nWorker ocr-2 starts. It claims entries idle for more than ${CLAIM_IDLE_MS / 1000} s,`,
      ),
    );
    console.log(kleur.bold("and meanwhile new uploads keep arriving:"));
    const second = await connect(redisUrl, "demo:ocr-2");
    clients.push(second);
    for (const doc of DOCS.slice(2)) {
      docIds.set(await admin.xAdd(stream, "*", { docId: doc.docId }), doc.docId);
      pagesOf.set(doc.docId, doc.pages);
    }
    // One entry at a time, carrying the cursor: what ocr-2 claims, it handles right away.
    let cursor = "0-0";
    const claimOne = async () => {
      const reply = await second.xAutoClaim(stream, GROUP, "ocr-2", CLAIM_IDLE_MS, cursor, {
        COUNT: 1,
      });
      cursor = reply.nextId;
      return reply.messages.filter((m): m is NonNullable<typeof m> => m !== null);
    };
    let claimed: { id: string; message: Record<string, string> }[] = [];
    for (let round = 0; round < 20 && claimed.length === 0; round++) {
      claimed = await claimOne();
      if (claimed.length === 0) {
        const [oldest] = await admin.xPendingRange(stream, GROUP, "-", "+", 1, {
          consumer: "ocr-1",
        });
        const idle = ((oldest?.millisecondsSinceLastDelivery ?? 0) / 1000).toFixed(1);
        console.log(
          `    ${who["ocr-2"]} XAUTOCLAIM min-idle ${CLAIM_IDLE_MS} ms ${kleur.dim(`→ nothing yet (contract-17 idle ${idle} s: ocr-1 might still be working)`)}`,
        );
      }
      const fresh = await second.xReadGroup(
        GROUP,
        "ocr-2",
        { key: stream, id: ">" },
        { COUNT: 1, BLOCK: 400 },
      );
      for (const { id, message } of fresh?.[0]?.messages ?? []) {
        const docId = message.docId ?? "?";
        await ocr("ocr-2", docId, pagesOf.get(docId) ?? 1);
        await second.xAck(stream, GROUP, id);
        console.log(`    ${who["ocr-2"]} ${kleur.green(`✓ ${docId}`)} XACK`);
      }
    }
    console.log(
      `    ${who["ocr-2"]} XAUTOCLAIM ${kleur.green(`→ took over ${claimed.map((m) => m.message.docId).join(", ")}`)}`,
    );
    await showPending(admin, stream, docIds);
    console.log(kleur.dim("    (a claim is a delivery: the count went from 1 to 2)"));

    while (claimed.length > 0) {
      for (const { id, message } of claimed) {
        const docId = message.docId ?? "?";
        await ocr("ocr-2", docId, pagesOf.get(docId) ?? 1);
        await second.xAck(stream, GROUP, id);
        console.log(`    ${who["ocr-2"]} ${kleur.green(`✓ ${docId}`)} XACK`);
      }
      claimed = cursor === "0-0" ? [] : await claimOne();
      for (const { message } of claimed) {
        console.log(
          `    ${who["ocr-2"]} XAUTOCLAIM ${kleur.green(`→ took over ${message.docId}`)}`,
        );
      }
    }

    console.log(kleur.bold("\nocr-1 still sits in the group, now holding nothing:"));
    for (const consumer of await admin.xInfoConsumers(stream, GROUP)) {
      console.log(
        `    XINFO CONSUMERS ${String(consumer.name).padEnd(6)} pending ${consumer.pending}  idle ${(consumer.idle / 1000).toFixed(1)} s`,
      );
    }
    await admin.xGroupDelConsumer(stream, GROUP, "ocr-1");
    console.log(`    XGROUP DELCONSUMER ocr-1 ${kleur.dim("(safe: its pending count is 0)")}`);
    console.log(kleur.green().bold("\nEvery document finished; none was processed twice.\n"));
  } finally {
    for (const client of clients) if (client.isOpen) client.destroy();
  }
}
