/**
 * Demo for lesson 04: a dashboard that joins late misses everything published before it
 * subscribed; one that catches up from the latest-status hash shows the truth. On the
 * workbook's private server it also shows Redis cutting off a subscriber that falls behind.
 * Run it with `npm run demo -- 04`.
 */
import kleur from "kleur";
import { createClient, type RedisClientType } from "redis";

type Redis = RedisClientType<{}, {}, {}, 3, {}>;

const STAGES = ["uploaded", "ocr", "ner", "classification", "embedding", "done"] as const;

interface DocStatus {
  docId: string;
  stage: string;
  version: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

class Pipeline {
  private readonly versions = new Map<string, number>();
  constructor(
    private readonly redis: Redis,
    private readonly channel: string,
    private readonly latest: string,
  ) {}

  async advance(docId: string, quiet = false): Promise<void> {
    const version = (this.versions.get(docId) ?? 0) + 1;
    this.versions.set(docId, version);
    const status: DocStatus = { docId, stage: STAGES[Math.min(version, 6) - 1] ?? "done", version };
    const json = JSON.stringify(status);
    if (!quiet) {
      console.log(
        `${kleur.bold("pipeline")}   ${docId} → ${status.stage} v${version}  ${kleur.dim("(HSET + PUBLISH in one MULTI)")}`,
      );
    }
    await this.redis.multi().hSet(this.latest, docId, json).publish(this.channel, json).exec();
    await sleep(150);
  }
}

/** A dashboard's view: docId -> latest status it shows. */
type View = Map<string, DocStatus>;

async function naiveDashboard(client: Redis, channel: string, view: View) {
  const subscriber = client.duplicate({ name: "demo:naive-dashboard" });
  subscriber.on("error", (error: Error) => console.error(kleur.red(`live only: ${error.message}`)));
  await subscriber.connect();
  // Caught inside the listener: node-redis 6.3 drops the rest of a socket read when a listener
  // throws, so one bad message would also lose the statuses that came with it.
  const listener = (message: string) => {
    try {
      const status = JSON.parse(message) as DocStatus;
      view.set(status.docId, status);
      console.log(
        `  ${kleur.red("live only  ")} ${status.docId} → ${status.stage} v${status.version}`,
      );
    } catch (error) {
      console.error(kleur.red(`live only: could not show ${message}: ${(error as Error).message}`));
    }
  };
  try {
    await subscriber.subscribe(channel, listener);
  } catch (error) {
    subscriber.destroy();
    throw error;
  }
  return subscriber;
}

async function catchUpDashboard(
  client: Redis,
  channel: string,
  latest: string,
  view: View,
  meanwhile: () => Promise<void>,
) {
  const show = (status: DocStatus, how: string) => {
    const current = view.get(status.docId)?.version ?? 0;
    if (status.version <= current) {
      console.log(
        kleur.dim(
          `  catch-up    ${status.docId} v${status.version} ${how}: not newer than v${current}, dropped`,
        ),
      );
      return;
    }
    view.set(status.docId, status);
    console.log(
      `  ${kleur.green("catch-up   ")} ${status.docId} → ${status.stage} v${status.version} ${kleur.dim(how)}`,
    );
  };
  let buffer: DocStatus[] | undefined = [];
  const subscriber = client.duplicate({ name: "demo:catch-up-dashboard" });
  subscriber.on("error", (error: Error) => console.error(kleur.red(`catch-up: ${error.message}`)));
  await subscriber.connect();
  // Caught inside the listener, the parse too: one bad message costs only itself.
  const listener = (message: string) => {
    try {
      const status = JSON.parse(message) as DocStatus;
      if (buffer) buffer.push(status);
      else show(status, "(live)");
    } catch (error) {
      console.error(kleur.red(`catch-up: could not show ${message}: ${(error as Error).message}`));
    }
  };
  try {
    await subscriber.subscribe(channel, listener);
    console.log(kleur.green("  catch-up    1. subscribed, holding live events back"));
    // A status published now, after SUBSCRIBE and before HGETALL, is in the buffer and the snapshot.
    await meanwhile();
    await sleep(50);
    const snapshot = await client.hGetAll(latest);
    console.log(
      kleur.green(`  catch-up    2. read the snapshot: ${Object.keys(snapshot).length} documents`),
    );
    for (const json of Object.values(snapshot)) show(JSON.parse(json) as DocStatus, "(snapshot)");
    console.log(kleur.green(`  catch-up    3. apply ${buffer.length} buffered event(s)`));
    for (const status of buffer) show(status, "(buffered)");
  } catch (error) {
    // Nobody gets this subscriber back to close it: close it here.
    subscriber.destroy();
    throw error;
  }
  buffer = undefined;
  return subscriber;
}

function table(truth: View, naive: View, catchUp: View) {
  const cell = (s: DocStatus | undefined) => (s ? `${s.stage} v${s.version}` : "—").padEnd(18);
  console.log(
    `\n  ${"document".padEnd(12)} ${"truth (hash)".padEnd(18)} ${"live only".padEnd(18)} catch-up`,
  );
  for (const [docId, status] of [...truth].sort(([a], [b]) => a.localeCompare(b))) {
    const n = naive.get(docId);
    const c = catchUp.get(docId);
    const paint = (s: DocStatus | undefined) =>
      s?.version === status.version ? kleur.green(cell(s)) : kleur.red(cell(s));
    console.log(`  ${docId.padEnd(12)} ${cell(status)} ${paint(n)} ${paint(c)}`);
  }
}

async function slowSubscriber(pipeline: Redis, prefix: string) {
  console.log(kleur.bold("\nWhat if a dashboard cannot keep up?"));
  if (process.env.REDIS_URL) {
    console.log(
      kleur.dim(
        "  Skipped: this part changes client-output-buffer-limit with CONFIG SET, which the demo only\n  does on the workbook's private server. Unset REDIS_URL to see it.",
      ),
    );
    return;
  }
  const channel = `${prefix}docs:firehose`;
  const [original] = Object.values(await pipeline.configGet("client-output-buffer-limit"));
  // Redis queues what a subscriber has not read yet; past the hard limit (64 kB here, 32 MB by
  // default) it closes the connection rather than run out of memory.
  await pipeline.configSet("client-output-buffer-limit", "pubsub 64kb 32kb 60");
  const slow = pipeline.duplicate({ name: "demo:slow-dashboard" });
  slow.on("error", (error: Error) =>
    console.log(`  ${kleur.red("slow dashboard")} error: ${error.message}`),
  );
  slow.on("reconnecting", () => console.log(`  ${kleur.yellow("slow dashboard")} reconnecting…`));
  try {
    await slow.connect();
    const back = new Promise((resolve) =>
      slow.once("ready", () => {
        console.log(`  ${kleur.yellow("slow dashboard")} connected again`);
        resolve(undefined);
      }),
    );
    let received = 0;
    await slow.subscribe(channel, () => {
      received++;
    });
    console.log(
      `  ${kleur.dim("client-output-buffer-limit pubsub 64kb 32kb 60; a burst of 200 × 1 kB in one MULTI")}`,
    );
    const burst = pipeline.multi();
    for (let i = 0; i < 200; i++) burst.publish(channel, "x".repeat(1024));
    await burst.exec();
    await Promise.race([back, sleep(3000)]);
    // The reconnect sends SUBSCRIBE again; give its confirmation a moment.
    await sleep(100);
    console.log(
      `  ${kleur.bold("slow dashboard")} received ${kleur.red(String(received))} of 200: Redis dropped the connection and its queue.`,
    );
    const reached = await pipeline.publish(channel, "after the burst");
    console.log(
      kleur.dim(
        `  node-redis reconnected and subscribed again (PUBLISH now reaches ${reached}), but nothing tells\n  the dashboard what it missed: on "ready" after a reconnect, catch up from the hash again.`,
      ),
    );
  } finally {
    if (original) await pipeline.configSet("client-output-buffer-limit", original);
    slow.destroy();
  }
}

export default async function demo(redisUrl: string, prefix: string): Promise<void> {
  const channel = `${prefix}docs:status`;
  const latest = `${prefix}docs:latest`;
  const redis: Redis = createClient({ url: redisUrl, name: "demo:pipeline" });
  redis.on("error", (error: Error) => console.error(kleur.red(error.message)));
  await redis.connect();
  const pipeline = new Pipeline(redis, channel, latest);
  const truth: View = new Map();
  const naive: View = new Map();
  const catchUp: View = new Map();
  const subscribers: Redis[] = [];
  try {
    console.log(
      kleur.bold(
        "\nThe pipeline works through three documents. No dashboard is open: each PUBLISH reaches 0.",
      ),
    );
    for (const _ of STAGES) await pipeline.advance("contract-1", true);
    console.log(`${kleur.bold("pipeline")}   contract-1 went through all six stages`);
    for (const docId of ["nda-2", "nda-2", "lease-3"]) await pipeline.advance(docId);

    console.log(kleur.bold("\nTwo dashboards open late:"));
    subscribers.push(await naiveDashboard(redis, channel, naive));
    console.log(`  ${kleur.red("live only  ")} subscribed, shows nothing yet`);
    subscribers.push(
      await catchUpDashboard(redis, channel, latest, catchUp, () => pipeline.advance("nda-2")),
    );

    console.log(kleur.bold("\nLive events reach both:"));
    for (const docId of ["nda-2", "memo-4"]) await pipeline.advance(docId);

    for (const [docId, json] of Object.entries(await redis.hGetAll(latest))) {
      truth.set(docId, JSON.parse(json) as DocStatus);
    }
    table(truth, naive, catchUp);
    console.log(
      kleur.dim(
        "\n  Pub/sub delivers at most once, to whoever is subscribed at that moment. The hash is the memory.",
      ),
    );

    await slowSubscriber(redis, prefix);
  } finally {
    for (const subscriber of subscribers) await subscriber.close().catch(() => {});
    await redis.close();
  }
}
