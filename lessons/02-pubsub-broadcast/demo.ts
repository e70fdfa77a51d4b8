/**
 * Demo for lesson 02: one pipeline publishes document status; three dashboards, each on its
 * own connection, receive every event. Run it with `npm run demo -- 02`.
 */
import kleur from "kleur";
import { createClient, type RedisClientType } from "redis";

type Redis = RedisClientType<{}, {}, {}, 3, {}>;

const STAGES = ["uploaded", "ocr", "ner", "classification", "embedding", "done"] as const;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Dashboard {
  name: string;
  stop(): Promise<void>;
}

async function openDashboard(
  client: Redis,
  channel: string,
  name: string,
  paint: (text: string) => string,
): Promise<Dashboard> {
  const subscriber = client.duplicate({ name: `demo:${name.replaceAll(" ", "-")}` });
  subscriber.on("error", (error: Error) => console.error(kleur.red(`${name}: ${error.message}`)));
  await subscriber.connect();
  const listener = (message: string) => {
    const event = JSON.parse(message) as { docId: string; stage: string };
    console.log(`    ${paint(name.padEnd(14))} ${event.docId} ${kleur.dim("→")} ${event.stage}`);
  };
  await subscriber.subscribe(channel, listener);
  return {
    name,
    async stop() {
      await subscriber.unsubscribe(channel, listener);
      await subscriber.close();
    },
  };
}

export default async function demo(redisUrl: string, prefix: string): Promise<void> {
  const channel = `${prefix}docs:status`;
  const pipeline: Redis = createClient({ url: redisUrl, name: "demo:pipeline" });
  pipeline.on("error", (error: Error) => console.error(kleur.red(error.message)));
  await pipeline.connect();
  const dashboards: Dashboard[] = [];
  try {
    const publish = async (docId: string, stage: string) => {
      const reached = await pipeline.publish(
        channel,
        JSON.stringify({ docId, stage, at: Date.now() }),
      );
      const count =
        reached === 0 ? kleur.red("0 dashboards") : kleur.green(`${reached} dashboards`);
      console.log(
        `${kleur.bold("pipeline")}  PUBLISH ${docId} → ${stage}  ${kleur.dim("reached")} ${count}`,
      );
      // Let the dashboards print before the next event, so the output reads top to bottom.
      await sleep(300);
    };

    console.log(
      kleur.bold(`\nThree dashboards subscribe to ${channel}, each on its own connection:`),
    );
    for (const [name, paint] of [
      ["legal team", kleur.cyan],
      ["ops console", kleur.magenta],
      ["client portal", kleur.yellow],
    ] as const) {
      dashboards.push(await openDashboard(pipeline, channel, name, paint));
      const subscribers = (await pipeline.pubSubNumSub(channel))[channel];
      console.log(`  ${paint(name)} subscribed ${kleur.dim(`(PUBSUB NUMSUB: ${subscribers})`)}`);
    }

    console.log(
      kleur.bold("\nThe pipeline publishes each stage once; every dashboard receives it:"),
    );
    for (const stage of STAGES.slice(0, 4)) {
      await publish("contract-17", stage);
    }

    const portal = dashboards.pop();
    await portal?.stop();
    console.log(kleur.bold(`\n${portal?.name} stops: PUBLISH now reaches two dashboards.`));
    for (const stage of STAGES.slice(4)) {
      await publish("contract-17", stage);
    }

    for (const dashboard of dashboards.splice(0)) await dashboard.stop();
    console.log(kleur.bold("\nEvery dashboard stopped. A message nobody hears is simply gone:"));
    await publish("nda-4", "uploaded");
    console.log(
      kleur.dim(
        "\nPUBLISH answers how many connections received the message; nobody stores it for later.",
      ),
    );
  } finally {
    for (const dashboard of dashboards) await dashboard.stop().catch(() => {});
    await pipeline.close();
  }
}
