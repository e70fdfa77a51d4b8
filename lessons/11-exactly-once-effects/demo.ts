/**
 * Demo for lesson 11: a worker dies between the work and its XACK, twice. Without a marker the
 * redelivery calls the model again and the next stage gets two different results; with the
 * result stored under the document's ID and a MULTI hand-off it gets one. Run it with
 * `npm run demo -- 11`.
 */
import kleur from "kleur";
import { createClient, type RedisClientType } from "redis";

type Redis = RedisClientType<{}, {}, {}, 3, {}>;

const GROUP = "ner";
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function connect(url: string, name: string): Promise<Redis> {
  const client: Redis = createClient({ url, name, socket: { reconnectStrategy: false } });
  client.on("error", () => {});
  await client.connect();
  return client;
}

/** A model that, like a real one, does not answer the same way twice. */
function model() {
  let calls = 0;
  const answers = ["PARTY:Acme Corp;DATE:2024-05-01", "PARTY:ACME Corporation;DATE:1 May 2024"];
  return async (docId: string) => {
    calls++;
    await sleep(300);
    const entities = answers[(calls - 1) % answers.length] ?? "";
    console.log(
      `    ${kleur.yellow(`model call #${calls}`)} for ${docId} ${kleur.dim("(billed)")} → ${entities}`,
    );
    return entities;
  };
}

async function deliver(client: Redis, stream: string, consumer: string, from: ">" | "0") {
  const reply = await client.xReadGroup(GROUP, consumer, { key: stream, id: from }, { COUNT: 1 });
  const message = reply?.[0]?.messages[0];
  if (!message) throw new Error("nothing delivered");
  const what = from === ">" ? "delivered" : kleur.bold("redelivered (still pending)");
  console.log(`    ${consumer}: ${message.message.docId} ${what}`);
  return { id: message.id, docId: message.message.docId ?? "" };
}

async function showNextStage(client: Redis, next: string) {
  const entries = (await client.xRange(next, "-", "+")) ?? [];
  const paint = entries.length === 1 ? kleur.green : kleur.red;
  const count = entries.length === 1 ? "1 entry" : `${entries.length} entries`;
  console.log(paint().bold(`    docs:classify now holds ${count} for doc-17:`));
  for (const { message } of entries) console.log(`        entities ${message.entities}`);
}

export default async function demo(redisUrl: string, prefix: string): Promise<void> {
  const client = await connect(redisUrl, "demo:ner");
  try {
    console.log(kleur.bold("\n1. No marker, hand-off as two commands (XADD, then XACK):"));
    {
      const stream = `${prefix}plain:ner`;
      const next = `${prefix}plain:classify`;
      const extract = model();
      await client.xGroupCreate(stream, GROUP, "0", { MKSTREAM: true });
      await client.xAdd(stream, "*", { docId: "doc-17" });
      const first = await deliver(client, stream, "ner-1", ">");
      await client.xAdd(next, "*", { docId: first.docId, entities: await extract(first.docId) });
      console.log(kleur.red("    ✗ ner-1 dies after its XADD, before its XACK"));
      const again = await deliver(client, stream, "ner-1", "0");
      await client.xAdd(next, "*", { docId: again.docId, entities: await extract(again.docId) });
      await client.xAck(stream, GROUP, again.id);
      await showNextStage(client, next);
    }

    console.log(kleur.bold("\n2. Result stored under the document's ID, hand-off in one MULTI:"));
    {
      const stream = `${prefix}safe:ner`;
      const next = `${prefix}safe:classify`;
      const resultKey = `${prefix}safe:ner:result:doc-17`;
      const extract = model();
      await client.xGroupCreate(stream, GROUP, "0", { MKSTREAM: true });
      await client.xAdd(stream, "*", { docId: "doc-17" });

      const entitiesOnce = async (docId: string) => {
        const stored = await client.get(resultKey);
        if (stored !== null) {
          console.log(`    GET ner:result:${docId} → found: ${kleur.green("no model call")}`);
          return stored;
        }
        console.log(`    GET ner:result:${docId} → nothing yet`);
        const entities = await extract(docId);
        await client.set(resultKey, entities, {
          condition: "NX",
          expiration: { type: "EX", value: 60 },
        });
        console.log(`    SET ner:result:${docId} ... NX`);
        return (await client.get(resultKey)) ?? entities;
      };

      const first = await deliver(client, stream, "ner-1", ">");
      await entitiesOnce(first.docId);
      console.log(kleur.red("    ✗ ner-1 dies before its hand-off"));
      const again = await deliver(client, stream, "ner-1", "0");
      const entities = await entitiesOnce(again.docId);
      await client
        .multi()
        .xAdd(next, "*", { docId: again.docId, entities })
        .xAck(stream, GROUP, again.id)
        .exec();
      console.log("    MULTI XADD docs:classify + XACK docs:ner EXEC");
      await showNextStage(client, next);
    }
    console.log(kleur.dim("\nOne model call, one result, one hand-off: an exactly-once effect.\n"));
  } finally {
    client.destroy();
  }
}
