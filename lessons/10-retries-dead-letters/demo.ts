/**
 * Demo for lesson 10: a corrupt PDF among healthy documents. The healthy ones flow past it;
 * it is retried with growing waits and, after its last delivery, parked in the dead-letter
 * stream with the reason. Run it with `npm run demo -- 10`.
 */
import kleur from "kleur";
import { createClient, type RedisClientType } from "redis";

type Redis = RedisClientType<{}, {}, {}, 3, {}>;

const GROUP = "ocr";
const CONSUMER = "ocr-1";
const MAX_DELIVERIES = 4;
const BASE_MS = 300;
/** The scan that fails every time. */
const CORRUPT = "scan-7";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const backoffMs = (deliveries: number) => BASE_MS * 2 ** (deliveries - 1);

async function connect(url: string, name: string): Promise<Redis> {
  const client: Redis = createClient({ url, name, socket: { reconnectStrategy: false } });
  client.on("error", () => {});
  await client.connect();
  return client;
}

export default async function demo(redisUrl: string, prefix: string): Promise<void> {
  const stream = `${prefix}docs:ocr`;
  const dead = `${prefix}docs:ocr:dead`;
  const client = await connect(redisUrl, "demo:ocr-1");
  const started = Date.now();
  const clock = () => kleur.dim(`${((Date.now() - started) / 1000).toFixed(1).padStart(4)} s`);
  try {
    await client.xGroupCreate(stream, GROUP, "0", { MKSTREAM: true });
    const docs = [CORRUPT, "lease-18", "nda-19", "invoice-20", "contract-21"];
    for (const docId of docs.slice(0, 3)) await client.xAdd(stream, "*", { docId });

    console.log(
      kleur.bold(
        `\nOne worker, maxDeliveries ${MAX_DELIVERIES}, backoff ${BASE_MS} ms doubling. The corrupt scan-7 is first in line:\n`,
      ),
    );

    const attempt = async (id: string, docId: string, deliveries: number) => {
      const tag = kleur.dim(`delivery ${deliveries}`);
      if (docId !== CORRUPT) {
        await sleep(80);
        await client.xAck(stream, GROUP, id);
        console.log(`${clock()}  ${kleur.green(`✓ ${docId}`)} ${tag} XACK`);
        return;
      }
      const reason = "unreadable PDF: page 3 is corrupt";
      if (deliveries < MAX_DELIVERIES) {
        const wait = backoffMs(deliveries);
        console.log(
          `${clock()}  ${kleur.yellow(`✗ ${docId}`)} ${tag} ${kleur.dim(`failed (${reason}): left pending, due again in ${wait} ms`)}`,
        );
        return;
      }
      await client
        .multi()
        .xAdd(dead, "*", { docId, originalId: id, reason, deliveries: String(deliveries) })
        .xAck(stream, GROUP, id)
        .exec();
      console.log(
        `${clock()}  ${kleur.red().bold(`✗ ${docId}`)} ${tag} ${kleur.red("last delivery failed: MULTI XADD docs:ocr:dead + XACK")}`,
      );
    };

    let uploads = docs.slice(3);
    while ((await client.xPending(stream, GROUP)).pending > 0 || uploads.length > 0) {
      const pending = await client.xPendingRange(stream, GROUP, "-", "+", 100, { IDLE: BASE_MS });
      for (const entry of pending) {
        const wait = backoffMs(entry.deliveriesCounter);
        if (entry.millisecondsSinceLastDelivery < wait) continue;
        const [claimed] = await client.xClaim(stream, GROUP, CONSUMER, wait, entry.id);
        if (claimed) {
          console.log(
            `${clock()}  ${kleur.cyan("↻")} ${kleur.dim(`XCLAIM ${claimed.message.docId}: idle ${entry.millisecondsSinceLastDelivery} ms ≥ ${wait} ms`)}`,
          );
          await attempt(claimed.id, claimed.message.docId ?? "?", entry.deliveriesCounter + 1);
        }
      }
      const reply = await client.xReadGroup(
        GROUP,
        CONSUMER,
        { key: stream, id: ">" },
        { COUNT: 10 },
      );
      for (const { id, message } of reply?.[0]?.messages ?? []) {
        await attempt(id, message.docId ?? "?", 1);
      }
      // New uploads keep arriving while the corrupt scan waits for its next try.
      const next = uploads[0];
      if (next !== undefined) {
        uploads = uploads.slice(1);
        await client.xAdd(stream, "*", { docId: next });
      }
      await sleep(100);
    }

    console.log(kleur.bold("\nThe dead-letter stream, for a person to look at:"));
    for (const { id, message } of (await client.xRange(dead, "-", "+")) ?? []) {
      console.log(`    XRANGE docs:ocr:dead  ${kleur.dim(id)}`);
      for (const [field, value] of Object.entries(message)) {
        console.log(`        ${field.padEnd(11)} ${value}`);
      }
    }
    const left = (await client.xPending(stream, GROUP)).pending;
    console.log(kleur.green().bold(`\nNothing is left pending (XPENDING: ${left}).\n`));
  } finally {
    client.destroy();
  }
}
