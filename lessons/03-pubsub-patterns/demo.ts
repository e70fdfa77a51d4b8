/**
 * Demo for lesson 03: one PSUBSCRIBE follows every stage channel and learns each message's real
 * channel; a connection subscribed twice hears twice; database numbers do not separate pub/sub.
 * Run it with `npm run demo -- 03`.
 */
import kleur from "kleur";
import { createClient, type RedisClientType } from "redis";

type Redis = RedisClientType<{}, {}, {}, 3, {}>;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const STAGE_COLOURS: Record<string, (text: string) => string> = {
  uploaded: kleur.white,
  ocr: kleur.cyan,
  ner: kleur.blue,
  classification: kleur.magenta,
  embedding: kleur.yellow,
  done: kleur.green,
  translation: kleur.red,
};

export default async function demo(redisUrl: string, prefix: string): Promise<void> {
  const channel = (stage: string) => `${prefix}docs:status:${stage}`;
  // The prefix is a literal: its glob characters are escaped, as allStagesPattern() does.
  const pattern = `${prefix.replace(/[*?[\]\\]/g, "\\$&")}docs:status:*`;
  const pipeline: Redis = createClient({ url: redisUrl, name: "demo:pipeline" });
  pipeline.on("error", (error: Error) => console.error(kleur.red(error.message)));
  await pipeline.connect();
  const opened: Redis[] = [];
  const connect = async (name: string, database?: number) => {
    const client = pipeline.duplicate({ name, database });
    client.on("error", (error: Error) => console.error(kleur.red(`${name}: ${error.message}`)));
    await client.connect();
    opened.push(client);
    return client;
  };
  const publish = async (stage: string, docId = "contract-17", to = channel(stage)) => {
    console.log(`${kleur.bold("pipeline")}     PUBLISH ${kleur.dim(to)}`);
    const reached = await pipeline.publish(to, JSON.stringify({ docId, stage, at: Date.now() }));
    // Let the listeners print first, so the output reads top to bottom.
    await sleep(250);
    console.log(kleur.dim(`               PUBLISH answered ${reached}`));
  };

  try {
    console.log(kleur.bold(`\nThe ops console subscribes once: PSUBSCRIBE ${pattern}`));
    const consoleConnection = await connect("demo:ops-console");
    // Caught inside the listener: node-redis 6.3 drops the rest of a socket read when a
    // listener throws, so one bad message would also lose the ones that came with it.
    const onStatus = (message: string, from: string) => {
      try {
        const { docId, stage } = JSON.parse(message) as { docId: string; stage: string };
        const paint = STAGE_COLOURS[stage] ?? kleur.white;
        console.log(`  ${kleur.bold("ops console")} ${paint(from)}  ${docId} → ${stage}`);
      } catch (error) {
        console.error(
          kleur.red(`ops console: could not show ${message}: ${(error as Error).message}`),
        );
      }
    };
    await consoleConnection.pSubscribe(pattern, onStatus);

    console.log(
      kleur.bold("\nEach stage publishes on its own channel; the listener is told which:"),
    );
    for (const stage of ["uploaded", "ocr", "ner", "classification", "embedding"]) {
      await publish(stage);
    }
    console.log(kleur.bold("\nA team adds a stage. No code change, no restart:"));
    await publish("translation");
    console.log(kleur.bold("\nA neighbouring channel the pattern does not match:"));
    await publish("uploaded", "nda-4", `${prefix}docs:uploads`);

    console.log(
      kleur.bold(
        "\nThe alerts bot subscribes to the done channel AND to the pattern, on one connection:",
      ),
    );
    const bot = await connect("demo:alerts-bot");
    let heard = 0;
    const onDone = (_message: string, from: string) => {
      try {
        heard++;
        console.log(
          `  ${kleur.yellow().bold("alerts bot")}  heard ${from} ${kleur.red(`(delivery ${heard})`)}`,
        );
      } catch (error) {
        console.error(kleur.red(`alerts bot: ${(error as Error).message}`));
      }
    };
    await bot.subscribe(channel("done"), onDone);
    await bot.pSubscribe(pattern, onDone);
    await publish("done");
    console.log(
      kleur.dim(
        "  PUBLISH counts deliveries: the console's pattern, the bot's channel, the bot's pattern.",
      ),
    );

    const numsub = await pipeline.pubSubNumSub(channel("done"));
    const numpat = await pipeline.pubSubNumPat();
    console.log(kleur.bold("\nCounting listeners:"));
    console.log(
      `  PUBSUB NUMSUB ${channel("done")} → ${numsub[channel("done")]} ${kleur.dim("(by name only)")}`,
    );
    console.log(
      `  PUBSUB NUMPAT → ${numpat} ${kleur.dim("(unique patterns on the whole server: both use the same one)")}`,
    );
    await bot.pUnsubscribe(pattern, onDone);
    await bot.unsubscribe(channel("done"), onDone);

    console.log(
      kleur.bold(
        "\nPub/sub ignores database numbers: a subscriber on database 5 hears database 0:",
      ),
    );
    const elsewhere = await connect("demo:db5-listener", 5);
    await elsewhere.subscribe(channel("ocr"), (_message, from) => {
      try {
        console.log(`  ${kleur.cyan().bold("db 5 listener")} ${from}`);
      } catch (error) {
        console.error(kleur.red(`db 5 listener: ${(error as Error).message}`));
      }
    });
    await publish("ocr", "memo-9");
    console.log(kleur.dim("  So scope channels with a name prefix, not with SELECT."));

    console.log(
      kleur.bold("\nEveryone unsubscribes; PUNSUBSCRIBE removes patterns, UNSUBSCRIBE channels:"),
    );
    await consoleConnection.pUnsubscribe(pattern, onStatus);
    await elsewhere.unsubscribe(channel("ocr"));
    await publish("done", "memo-9");
  } finally {
    for (const client of opened) await client.close().catch(() => {});
    await pipeline.close();
  }
}
