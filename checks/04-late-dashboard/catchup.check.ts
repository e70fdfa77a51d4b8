import { afterEach, describe, test } from "vitest";
import {
  call,
  check,
  checkClient,
  eventually,
  fail,
  key,
  learnerClient,
  learnerConnections,
  loadExercise,
  type Redis,
  sleep,
} from "../kit.ts";

type Stage = "uploaded" | "ocr" | "ner" | "classification" | "embedding" | "done";
interface DocStatus {
  docId: string;
  stage: Stage;
  version: number;
  at: number;
}
interface StatusKeys {
  channel: string;
  latest: string;
}
type Stop = () => Promise<void>;

interface Exercise {
  publishStatus(client: Redis, keys: StatusKeys, status: DocStatus): Promise<void>;
  openDashboard(
    client: Redis,
    keys: StatusKeys,
    onChange: (status: DocStatus) => void,
  ): Promise<Stop>;
}

const exercise = await loadExercise<Exercise>("publishStatus", "openDashboard");

const STAGES: Stage[] = ["uploaded", "ocr", "ner", "classification", "embedding", "done"];
const START = Date.UTC(2025, 0, 6, 9, 0, 0);

const open: Stop[] = [];
afterEach(async () => {
  // A stop() that hangs must not take the remaining tests down with it.
  for (const stop of open.splice(0)) await Promise.race([stop(), sleep(2000)]).catch(() => {});
});

/**
 * The check's own pipeline, publishing the way the lesson teaches (HSET + PUBLISH in one MULTI).
 * It remembers every document's latest status: the truth a dashboard must end up showing.
 */
class Pipeline {
  readonly truth = new Map<string, DocStatus>();
  private readonly versions = new Map<string, number>();
  /** Documents the background traffic leaves alone, so a test can reason about them. */
  readonly reserved = new Set<string>();
  private next = 1;
  published = 0;

  constructor(
    private readonly redis: Redis,
    readonly keys: StatusKeys,
  ) {}

  async advance(docId: string): Promise<DocStatus> {
    // Assigned before the first await, so overlapping calls still publish versions in order.
    const version = (this.versions.get(docId) ?? 0) + 1;
    this.versions.set(docId, version);
    const stage = STAGES[Math.min(version, STAGES.length) - 1] as Stage;
    const status: DocStatus = { docId, stage, version, at: START + this.published * 250 };
    this.published++;
    const json = JSON.stringify(status);
    await this.redis
      .multi()
      .hSet(this.keys.latest, docId, json)
      .publish(this.keys.channel, json)
      .exec();
    this.truth.set(docId, status);
    return status;
  }

  /** A document that is not finished yet, or a new one. */
  unfinished(): string {
    const candidates = [...this.versions]
      .filter(([id, version]) => version < STAGES.length && !this.reserved.has(id))
      .map(([id]) => id);
    if (candidates.length >= 4) return candidates[this.next++ % candidates.length] as string;
    return `scan-${this.next++}`;
  }
}

/** Publishes continuously, as a busy pipeline does, until stopped. */
function startTraffic(pipeline: Pipeline) {
  let running = true;
  const loop = (async () => {
    while (running) {
      await pipeline.advance(pipeline.unfinished());
      await sleep(2);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
    },
  };
}

const SUBSCRIBE = new Set([
  "subscribe",
  "SUBSCRIBE",
  "pSubscribe",
  "PSUBSCRIBE",
  "sSubscribe",
  "SSUBSCRIBE",
]);

/**
 * The learner's client, with the check publishing at the two moments that decide whether a
 * dashboard joins correctly: just before its SUBSCRIBE is sent, and just after Redis confirmed
 * it. A gap or an overlap in the learner's catch-up then shows every time, instead of only when
 * the timing happens to be unlucky. Everything else passes straight through to the real client.
 */
function withPublishesAroundSubscribe(
  client: Redis,
  hooks: { before(): Promise<void>; after(): Promise<void> },
): Redis {
  const proxy: Redis = new Proxy(client, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== "function") return value;
      const method = value as (...args: unknown[]) => unknown;
      if (property === "duplicate") {
        return (...args: unknown[]) =>
          withPublishesAroundSubscribe(method.apply(target, args) as Redis, hooks);
      }
      if (typeof property === "string" && SUBSCRIBE.has(property)) {
        return async (...args: unknown[]) => {
          await hooks.before();
          const result = await method.apply(target, args);
          await hooks.after();
          return result;
        };
      }
      // Chained calls (on(), connect()) return the client itself: keep handing out the proxy.
      return (...args: unknown[]) => {
        const result = method.apply(target, args);
        if (result === target) return proxy;
        if (result instanceof Promise) return result.then((v) => (v === target ? proxy : v));
        return result;
      };
    },
  });
  return proxy;
}

interface Joined {
  pipeline: Pipeline;
  /** Every status passed to onChange, in order. */
  shown: DocStatus[];
  finishedBefore: string[];
  publishedWhileJoining: string[];
  publishedJustAfterSubscribing: string[];
}

/**
 * The scenario every dashboard test runs: documents finish and progress before the dashboard
 * exists, events keep arriving while it joins, and for a while after.
 */
async function lateDashboard(name: string): Promise<Joined> {
  const keys = { channel: key(`${name}:status`), latest: key(`${name}:latest`) };
  const pipeline = new Pipeline(await checkClient(`pipeline-${name}`), keys);
  const finishedBefore = ["contract-1", "contract-2"];
  for (const docId of finishedBefore) {
    for (const _ of STAGES) await pipeline.advance(docId);
  }
  for (const docId of ["contract-3", "nda-4", "lease-5"]) {
    for (const _ of [1, 2, 3]) await pipeline.advance(docId);
  }

  const publishedWhileJoining: string[] = [];
  const publishedJustAfterSubscribing: string[] = [];
  const client = withPublishesAroundSubscribe(await learnerClient(), {
    async before() {
      const docId = `nda-joining-${publishedWhileJoining.length + 1}`;
      publishedWhileJoining.push(docId);
      pipeline.reserved.add(docId);
      await pipeline.advance(docId);
      await pipeline.advance(docId);
    },
    async after() {
      const docId = `memo-overlap-${publishedJustAfterSubscribing.length + 1}`;
      publishedJustAfterSubscribing.push(docId);
      pipeline.reserved.add(docId);
      await pipeline.advance(docId);
      await pipeline.advance(docId);
    },
  });

  const traffic = startTraffic(pipeline);
  const shown: DocStatus[] = [];
  try {
    await sleep(20);
    const stop = await call("openDashboard()", () =>
      exercise.openDashboard(client, keys, (status) => shown.push(status)),
    );
    check(
      typeof stop === "function",
      `openDashboard() should return a stop() function; it returned ${typeof stop}.`,
      2,
    );
    open.push(stop);
    const target = pipeline.published + 30;
    while (pipeline.published < target) await sleep(5);
  } finally {
    await traffic.stop();
  }
  // The last live events are on their way; wait for them, but let the tests judge the result.
  for (let i = 0; i < 100 && !caughtUp(pipeline, shown); i++) await sleep(20);
  return { pipeline, shown, finishedBefore, publishedWhileJoining, publishedJustAfterSubscribing };
}

function lastShown(shown: DocStatus[], docId: string): DocStatus | undefined {
  return shown.filter((s) => s?.docId === docId).at(-1);
}

function caughtUp(pipeline: Pipeline, shown: DocStatus[]): boolean {
  return [...pipeline.truth.values()].every(
    (status) => lastShown(shown, status.docId)?.version === status.version,
  );
}

function describeStatus(status: DocStatus | undefined): string {
  return status ? `"${status.stage}" (version ${status.version})` : "nothing";
}

/** The first document whose final status on the dashboard is wrong, if any. */
function firstWrong(joined: Joined, docIds: Iterable<string>) {
  for (const docId of docIds) {
    const expected = joined.pipeline.truth.get(docId);
    const got = lastShown(joined.shown, docId);
    if (JSON.stringify(got) !== JSON.stringify(expected)) return { docId, expected, got };
  }
  return undefined;
}

function checkShape(joined: Joined): void {
  const odd = joined.shown.find((s) => typeof s !== "object" || s === null || !("version" in s));
  if (odd !== undefined) {
    fail(
      `onChange() received ${JSON.stringify(odd)} instead of a status object: JSON.parse each status, from the hash and from the channel.`,
      2,
    );
  }
}

function checkFinishedBefore(joined: Joined): void {
  checkShape(joined);
  const wrong = firstWrong(joined, joined.finishedBefore);
  if (wrong) {
    fail(
      `${wrong.docId} finished before your dashboard joined, so it should show ${describeStatus(wrong.expected)}; it shows ${describeStatus(wrong.got)}. Pub/sub only reaches connections subscribed at that moment and keeps nothing: read the latest-status hash (HGETALL) when the dashboard opens.`,
      1,
    );
  }
}

describe("publishing", () => {
  test("publishStatus() records the latest status and publishes it", async () => {
    const client = await learnerClient();
    const observer = await checkClient();
    const keys = { channel: key("pub:status"), latest: key("pub:latest") };
    const listener = observer.duplicate();
    listener.on("error", () => {});
    await listener.connect();
    const messages: string[] = [];
    await listener.subscribe(keys.channel, (message) => messages.push(message));
    try {
      const status: DocStatus = { docId: "contract-17", stage: "ocr", version: 2, at: START };
      await call("publishStatus()", () => exercise.publishStatus(client, keys, status));
      const stored = await observer.hGet(keys.latest, status.docId);
      check(
        stored !== null && stored !== undefined,
        `publishStatus() did not record it in the latest-status hash: HGET ${keys.latest} ${status.docId} found nothing. A dashboard that joins later can only catch up from that hash: HSET it in the same MULTI as the PUBLISH.`,
        2,
      );
      check(
        stored === JSON.stringify(status),
        `The hash field ${status.docId} should hold the status as JSON, ${JSON.stringify(status)}; it holds ${JSON.stringify(stored)}.`,
        2,
      );
      await eventually(
        () => messages.length > 0,
        2000,
        `publishStatus() recorded the status but published nothing on ${keys.channel}: live dashboards would not hear of it.`,
        2,
      );
      check(
        messages[0] === JSON.stringify(status),
        `The message on the channel should be the status as JSON, ${JSON.stringify(status)}; it was ${JSON.stringify(messages[0])}.`,
        2,
      );
    } finally {
      listener.destroy();
    }
  });
});

describe("a dashboard that joins late", () => {
  test("shows the documents that finished before it joined", async () => {
    checkFinishedBefore(await lateDashboard("before"));
  });

  test("loses nothing published while it joins, under continuous traffic", async () => {
    const joined = await lateDashboard("gap");
    checkFinishedBefore(joined);
    const gap = firstWrong(joined, joined.publishedWhileJoining);
    if (gap) {
      fail(
        `${gap.docId} reached ${describeStatus(gap.expected)} while your dashboard was joining, just before it subscribed; your dashboard shows ${describeStatus(gap.got)}. A status published after you read the snapshot and before your subscription is active is in neither. Subscribe first, then read the snapshot, holding live events back until it is in.`,
        2,
      );
    }
    const wrong = firstWrong(joined, joined.pipeline.truth.keys());
    if (wrong) {
      fail(
        `After the pipeline went quiet, ${wrong.docId} should show ${describeStatus(wrong.expected)}; your dashboard shows ${describeStatus(wrong.got)} (${joined.shown.length} changes shown for ${joined.pipeline.published} statuses published).`,
        3,
      );
    }
  });

  test("shows each change once and never goes back to an older status", async () => {
    const joined = await lateDashboard("order");
    checkShape(joined);
    const last = new Map<string, number>();
    for (const status of joined.shown) {
      const before = last.get(status.docId);
      if (before !== undefined && status.version <= before) {
        const what =
          status.version === before
            ? `showed ${status.docId} at version ${before} twice`
            : `showed ${status.docId} at version ${before}, then went back to version ${status.version}`;
        fail(
          `Your dashboard ${what}. The snapshot and the live events overlap: a status published just after you subscribed is both in the hash and in your buffer. Remember the version each document shows and ignore any status that is not newer.`,
          3,
        );
      }
      last.set(status.docId, status.version);
    }
  });

  test("stop() unsubscribes and closes the dashboard's connection", async () => {
    const observer = await checkClient();
    const client = await learnerClient();
    const since = Math.max(...(await learnerConnections(observer)).map((c) => Number(c.id)));
    const keys = { channel: key("stop:status"), latest: key("stop:latest") };
    const stop = await call("openDashboard()", () =>
      exercise.openDashboard(client, keys, () => {}),
    );
    await call("stop()", () => stop());
    await eventually(
      async () =>
        (await learnerConnections(observer)).filter((c) => Number(c.id) > since).length === 0,
      2000,
      "After stop() the dashboard's connection is still open: stop() should unsubscribe and close() the duplicate.",
      3,
    );
    const reached = await observer.publish(keys.channel, "{}");
    check(reached === 0, `After stop() PUBLISH still reached ${reached} subscribers.`, 3);
  });
});
