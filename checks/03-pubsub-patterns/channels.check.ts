import { afterEach, describe, test } from "vitest";
import {
  call,
  check,
  checkClient,
  ctx,
  eventually,
  fail,
  key,
  learnerClient,
  loadExercise,
  type Redis,
  sleep,
} from "../kit.ts";

interface StatusEvent {
  docId: string;
  stage: string;
  at: number;
}
type Unwatch = () => Promise<void>;

interface Exercise {
  stageChannel(prefix: string, stage: string): string;
  allStagesPattern(prefix: string): string;
  watchAllStages(
    subscriber: Redis,
    prefix: string,
    onEvent: (channel: string, event: StatusEvent) => void,
  ): Promise<Unwatch>;
  countSubscribers(
    client: Redis,
    channels: string[],
  ): Promise<{ channels: Record<string, number>; patterns: number }>;
}

const exercise = await loadExercise<Exercise>(
  "stageChannel",
  "allStagesPattern",
  "watchAllStages",
  "countSubscribers",
);

const STAGES = ["uploaded", "ocr", "ner", "classification", "embedding", "done"];
/** A stage another team added later: a pattern follows it without a code change. */
const NEW_STAGE = "translation";

/** The check's own names, so a wrong stageChannel() does not hide what the pattern does. */
const channelOf = (stage: string) => key(`docs:status:${stage}`);
const PATTERN = key("docs:status:*");

const event = (stage: string, i: number): StatusEvent => ({
  docId: "contract-17",
  stage,
  at: Date.UTC(2025, 0, 6, 9, 0, i),
});

const watching: Unwatch[] = [];
const connections: Redis[] = [];
afterEach(async () => {
  // An unwatch() that hangs must not take the remaining tests down with it.
  for (const unwatch of watching.splice(0)) {
    await Promise.race([unwatch(), sleep(2000)]).catch(() => {});
  }
  // A subscription left behind by one test must not reach into the next one's counts.
  for (const connection of connections.splice(0)) if (connection.isOpen) connection.destroy();
});

/** A learner connection that lives for one test only. */
async function learnerConnection(): Promise<Redis> {
  const connection = await learnerClient();
  connections.push(connection);
  return connection;
}

interface Received {
  channel: string;
  event: unknown;
}

async function watch(subscriber: Redis): Promise<Received[] & { unwatch: Unwatch }> {
  const received: Received[] = [];
  const unwatch = await call("watchAllStages()", () =>
    exercise.watchAllStages(subscriber, ctx.prefix, (channel, event) =>
      received.push({ channel, event }),
    ),
  );
  check(
    typeof unwatch === "function",
    `watchAllStages() should return an unwatch() function; it returned ${typeof unwatch}.`,
    2,
  );
  watching.push(unwatch);
  return Object.assign(received, { unwatch });
}

/** Lets messages already published arrive: PUBLISH has answered, delivery is a moment later. */
async function settle(received: unknown[], expected: number): Promise<void> {
  for (let i = 0; i < 100 && received.length < expected; i++) await sleep(20);
  await sleep(50);
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

describe("channel design", () => {
  test("stage channels are named <prefix>docs:status:<stage>", async () => {
    const ocr = await call("stageChannel()", () => exercise.stageChannel(ctx.prefix, "ocr"));
    check(
      ocr === channelOf("ocr"),
      `stageChannel("${ctx.prefix}", "ocr") should be "${channelOf("ocr")}"; it was ${JSON.stringify(ocr)}.`,
      1,
    );
    const pattern = await call("allStagesPattern()", () => exercise.allStagesPattern(ctx.prefix));
    check(
      pattern === PATTERN,
      `allStagesPattern("${ctx.prefix}") should be "${PATTERN}", which matches every stage channel and nothing outside docs:status:; it was ${JSON.stringify(pattern)}.`,
      2,
    );
  });
});

describe("pattern subscriptions", () => {
  test("a pattern listener sees every stage channel, with its real name, once", async () => {
    const subscriber = await learnerConnection();
    const publisher = await checkClient();
    const received = await watch(subscriber);

    const published: Received[] = [];
    const reached = new Map<string, number>();
    for (const [i, stage] of [...STAGES, NEW_STAGE].entries()) {
      const e = event(stage, i);
      reached.set(channelOf(stage), await publisher.publish(channelOf(stage), JSON.stringify(e)));
      published.push({ channel: channelOf(stage), event: e });
    }
    // Neighbours the pattern must not match.
    for (const outside of [key("docs:uploads"), key("docs:statusboard"), `x${channelOf("ocr")}`]) {
      await publisher.publish(outside, JSON.stringify(event("ocr", 99)));
    }
    await settle(received, published.length);

    const reportedPattern = received.find((r) => r.channel === PATTERN || r.channel.includes("*"));
    if (reportedPattern) {
      fail(
        `onEvent() was called with the channel "${reportedPattern.channel}": that is the pattern you subscribed to, not the channel the event was published on. Report the channel instead of the pattern: node-redis passes it to a pSubscribe listener as its second argument, (message, channel).`,
        2,
      );
    }
    for (const r of received) {
      const twice = received.filter((other) => same(other, r)).length;
      if (twice > 1) {
        fail(
          `The event on "${r.channel}" reached onEvent ${twice} times, so it would be counted twice. A connection subscribed to a channel and to a pattern that matches it gets the message once per subscription (PUBLISH answered ${reached.get(r.channel)}). Follow the stages with the pattern only.`,
          2,
        );
      }
    }
    const stray = received.find((r) => !published.some((p) => p.channel === r.channel));
    if (stray) {
      fail(
        `onEvent() received a message from "${stray.channel}", which is not a stage channel: the pattern should match ${PATTERN} only.`,
        2,
      );
    }
    const missed = published.filter((p) => !received.some((r) => same(r, p)));
    if (missed.some((p) => p.channel === channelOf(NEW_STAGE))) {
      fail(
        `Nothing arrived from "${channelOf(NEW_STAGE)}", a stage your code did not know about. Subscribing to each known stage misses the ones added later; one PSUBSCRIBE to ${PATTERN} follows them all.`,
        2,
      );
    }
    check(
      missed.length === 0,
      `onEvent() missed the events on ${missed.map((p) => `"${p.channel}"`).join(", ")}. Received: ${JSON.stringify(received).slice(0, 200)}.`,
      3,
    );
    check(
      same(received, published),
      `Events should reach onEvent() as { channel, event } in the order they were published. Expected ${JSON.stringify(published).slice(0, 160)}…; got ${JSON.stringify(received).slice(0, 160)}….`,
      3,
    );
  });

  test("after unwatch() nothing more arrives, and the connection keeps its other subscriptions", async () => {
    const subscriber = await learnerConnection();
    const publisher = await checkClient();
    // The caller's own subscription on the same connection, e.g. model-update alerts.
    const alerts: string[] = [];
    const alertChannel = key("models:updated");
    await subscriber.subscribe(alertChannel, (message) => alerts.push(message));

    const received = await watch(subscriber);
    const ocr = channelOf("ocr");
    const before = await publisher.publish(ocr, JSON.stringify(event("ocr", 1)));
    check(
      before === 1,
      `While watching, PUBLISH on "${ocr}" should reach 1 subscriber; it reached ${before}.`,
      2,
    );
    await settle(received, 1);

    await call("unwatch()", () => received.unwatch());
    check(
      subscriber.isOpen,
      "unwatch() closed the subscriber connection. It belongs to the caller, who may have other subscriptions on it (this one followed model-update alerts). Remove only your own pattern subscription.",
      3,
    );
    const count = received.length;
    const after = await publisher.publish(ocr, JSON.stringify(event("ocr", 2)));
    await sleep(150);
    check(
      after === 0 && received.length === count,
      `After unwatch() a status published on "${ocr}" still reached your connection (PUBLISH answered ${after}; onEvent() ran ${received.length - count} more time(s)). The pattern subscription is still active: remove it with PUNSUBSCRIBE (subscriber.pUnsubscribe(pattern, listener)); UNSUBSCRIBE only removes channels.`,
      3,
    );

    const alert = await publisher.publish(alertChannel, "model ner-v7 deployed");
    await eventually(
      () => alerts.length === 1,
      2000,
      `After unwatch() the connection lost its other subscriptions: the model-update alert reached ${alert} subscribers. Remove only your own pattern subscription.`,
      3,
    );
  });
});

describe("counting subscribers", () => {
  test("PUBSUB NUMSUB counts subscribers by channel name only", async () => {
    const subscriber = await learnerConnection();
    const client = await learnerConnection();
    const watcher = await checkClient("watcher");
    await watch(subscriber);
    // Two of the check's own connections subscribe to the OCR channel by name.
    const own: Redis[] = [];
    for (const n of [1, 2]) {
      const dashboard = watcher.duplicate({ name: `wb:check:dashboard${n}:${ctx.runId}` });
      dashboard.on("error", () => {});
      await dashboard.connect();
      await dashboard.subscribe(channelOf("ocr"), () => {});
      own.push(dashboard);
    }
    try {
      const channels = [channelOf("ocr"), channelOf("ner")];
      const counts = await call("countSubscribers()", () =>
        exercise.countSubscribers(client, channels),
      );
      check(
        counts && typeof counts.channels === "object" && counts.channels !== null,
        `countSubscribers() should return { channels, patterns }; it returned ${JSON.stringify(counts)}.`,
        2,
      );
      const ocr = counts.channels[channelOf("ocr")];
      const ner = counts.channels[channelOf("ner")];
      check(
        ocr === 2 && ner === 0,
        `Two connections subscribed to "${channelOf("ocr")}" by name and none to "${channelOf("ner")}", so channels should be { ocr: 2, ner: 0 }; yours said { ocr: ${ocr}, ner: ${ner} }. PUBSUB NUMSUB counts subscriptions to the exact channel name; the pattern is counted by PUBSUB NUMPAT.`,
        2,
      );
      check(
        typeof counts.patterns === "number" && counts.patterns >= 1,
        `A pattern subscription is active, so patterns should be at least 1; it was ${JSON.stringify(counts.patterns)}. Use PUBSUB NUMPAT.`,
        2,
      );
    } finally {
      for (const dashboard of own) dashboard.destroy();
    }
  });

  test("PUBSUB NUMPAT goes up by one while the pattern is watched", async ({ skip }) => {
    skip(
      !ctx.privateServer,
      "PUBSUB NUMPAT counts every pattern on the server, and other clients of a shared REDIS_URL server change it at any moment",
    );
    const subscriber = await learnerConnection();
    const client = await learnerConnection();
    const channels = [channelOf("ocr")];
    const before = await call("countSubscribers()", () =>
      exercise.countSubscribers(client, channels),
    );
    const received = await watch(subscriber);
    const during = await call("countSubscribers()", () =>
      exercise.countSubscribers(client, channels),
    );
    await call("unwatch()", () => received.unwatch());
    const after = await call("countSubscribers()", () =>
      exercise.countSubscribers(client, channels),
    );
    check(
      during.patterns === before.patterns + 1 && after.patterns === before.patterns,
      `PUBSUB NUMPAT should go from ${before.patterns} to ${before.patterns + 1} while watching and back after unwatch(); countSubscribers() reported ${before.patterns}, ${during.patterns}, ${after.patterns}.`,
      2,
    );
  });
});
