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
interface StatusEvent {
  docId: string;
  stage: Stage;
  at: number;
}
type Stop = () => Promise<void>;

interface Exercise {
  publishStatus(client: Redis, channel: string, event: StatusEvent): Promise<number>;
  openDashboard(
    client: Redis,
    channel: string,
    onEvent: (event: StatusEvent) => void,
  ): Promise<Stop>;
}

const exercise = await loadExercise<Exercise>("publishStatus", "openDashboard");

const STAGES: Stage[] = ["uploaded", "ocr", "ner", "classification", "embedding", "done"];

/** Two documents moving through the pipeline side by side: 12 events, interleaved. */
function pipelineEvents(): StatusEvent[] {
  const start = Date.UTC(2025, 0, 6, 9, 0, 0);
  return STAGES.flatMap((stage, i) => [
    { docId: "contract-17", stage, at: start + i * 1000 },
    { docId: "nda-4", stage, at: start + i * 1000 + 500 },
  ]);
}

/** Dashboards still open when a test ends are stopped, so one failure does not leak into the next. */
const open: Stop[] = [];
afterEach(async () => {
  // A stop() that hangs must not take the remaining tests down with it.
  for (const stop of open.splice(0)) await Promise.race([stop(), sleep(2000)]).catch(() => {});
});

async function openDashboard(client: Redis, channel: string, label: string) {
  const received: unknown[] = [];
  const stop = await call(`openDashboard() for ${label}`, () =>
    exercise.openDashboard(client, channel, (event) => received.push(event)),
  );
  check(
    typeof stop === "function",
    `openDashboard() should return a stop() function; it returned ${typeof stop}.`,
    2,
  );
  let stopped = false;
  const once: Stop = async () => {
    if (stopped) return;
    stopped = true;
    await stop();
  };
  open.push(once);
  return { received, stop: once };
}

async function subscribersOf(observer: Redis, channel: string): Promise<number> {
  const counts = await observer.pubSubNumSub(channel);
  return Number(counts[channel] ?? 0);
}

/**
 * The learner's client for one test, and the id Redis gave its connection. Connections opened
 * later (the dashboards' duplicates) have higher ids, which tells them apart from connections
 * left over from earlier tests.
 */
async function freshClient(observer: Redis): Promise<{ client: Redis; since: number }> {
  const client = await learnerClient();
  const ids = (await learnerConnections(observer)).map((c) => Number(c.id));
  return { client, since: Math.max(...ids) };
}

async function connectionsSince(observer: Redis, since: number) {
  return (await learnerConnections(observer))
    .filter((c) => Number(c.id) >= since)
    .sort((a, b) => Number(a.id) - Number(b.id));
}

function describeValue(value: unknown): string {
  const text = JSON.stringify(value);
  return text.length > 90 ? `${text.slice(0, 89)}…` : text;
}

describe("publishing", () => {
  test("publishStatus() reports 0 receivers when no dashboard is listening", async () => {
    const client = await learnerClient();
    const [event] = pipelineEvents();
    const n = await call("publishStatus()", () =>
      exercise.publishStatus(client, key("status:nobody"), event as StatusEvent),
    );
    check(
      n === 0,
      `With nobody subscribed, PUBLISH answers 0; publishStatus() returned ${describeValue(n)}. Return what client.publish() resolves to.`,
      2,
    );
  });

  test("publishStatus() sends the event as JSON", async () => {
    const client = await learnerClient();
    const listener = (await checkClient("listener")).duplicate();
    listener.on("error", () => {});
    await listener.connect();
    const channel = key("status:json");
    const messages: string[] = [];
    await listener.subscribe(channel, (message) => messages.push(message));
    try {
      const [event] = pipelineEvents();
      const n = await call("publishStatus()", () =>
        exercise.publishStatus(client, channel, event as StatusEvent),
      );
      check(
        n === 1,
        `One subscriber was listening, so PUBLISH answers 1; publishStatus() returned ${describeValue(n)}.`,
        2,
      );
      await eventually(
        () => messages.length > 0,
        2000,
        "publishStatus() returned, but no message arrived on the channel.",
        2,
      );
      let parsed: unknown;
      try {
        parsed = JSON.parse(messages[0] ?? "");
      } catch {
        fail(
          `The message on the channel is not JSON: ${describeValue(messages[0])}. Send JSON.stringify(event).`,
          2,
        );
      }
      check(
        JSON.stringify(parsed) === JSON.stringify(event),
        `The message should be the event as JSON, ${JSON.stringify(event)}; it was ${describeValue(messages[0])}.`,
        2,
      );
    } finally {
      listener.destroy();
    }
  });
});

describe("dashboards", () => {
  test("openDashboard() resolves only once its subscription is active", async () => {
    const client = await learnerClient();
    const observer = await checkClient();
    // Three fresh channels: each sample asks Redis, right after openDashboard() resolved, whether
    // the subscription exists yet. A dashboard that is still connecting has not sent SUBSCRIBE.
    for (const n of [1, 2, 3]) {
      const channel = key(`status:ready:${n}`);
      await openDashboard(client, channel, `dashboard ${n}`);
      const subscribers = await subscribersOf(observer, channel);
      check(
        subscribers === 1,
        `openDashboard() returned before its subscription was active: right after it resolved, PUBSUB NUMSUB counted ${subscribers} subscribers on the channel, so a status published at that moment would have been lost. Await connect() and subscribe() before returning.`,
        2,
      );
    }
  });

  test("three dashboards each receive every status event, in order", async () => {
    const client = await learnerClient();
    const observer = await checkClient();
    const channel = key("status:docs");
    const dashboards = [];
    for (const label of ["dashboard A", "dashboard B", "dashboard C"]) {
      dashboards.push(await openDashboard(client, channel, label));
    }
    // Readiness has its own test above; here give a slow subscription a moment, so this test
    // speaks about broadcasting only.
    for (let i = 0; i < 50 && (await subscribersOf(observer, channel)) < 3; i++) await sleep(20);

    const events = pipelineEvents();
    for (const event of events) {
      const n = await call("publishStatus()", () => exercise.publishStatus(client, channel, event));
      check(
        n === 3,
        `With three dashboards open, PUBLISH should reach 3 subscribers; publishStatus() reported ${describeValue(n)}. PUBLISH counts connections, not listeners: each dashboard needs its own connection (client.duplicate()), not the client you were given.`,
        2,
      );
    }

    for (const [i, dashboard] of dashboards.entries()) {
      const name = `Dashboard ${"ABC"[i]}`;
      await eventually(
        () => dashboard.received.length >= events.length,
        3000,
        `${name} received ${dashboard.received.length} of the ${events.length} status events.`,
        2,
      );
      const first = dashboard.received[0];
      check(
        typeof first === "object" && first !== null,
        `${name} received ${describeValue(first)}, a ${typeof first}, instead of an event object. Messages arrive as strings: JSON.parse each one before calling onEvent.`,
        2,
      );
      check(
        dashboard.received.length === events.length,
        `${name} received ${dashboard.received.length} events for ${events.length} published: each event should arrive exactly once.`,
        3,
      );
      for (const [n, event] of events.entries()) {
        const got = dashboard.received[n];
        check(
          JSON.stringify(got) === JSON.stringify(event),
          `${name}'s event ${n + 1} should be ${JSON.stringify(event)}; it was ${describeValue(got)}. Pass each parsed event to onEvent as it arrives.`,
          3,
        );
      }
    }
  });

  test("your command connection stays free while dashboards listen", async () => {
    const observer = await checkClient();
    const { client, since } = await freshClient(observer);
    await openDashboard(client, key("status:free"), "a dashboard");
    const [main] = await connectionsSince(observer, since);
    check(
      main !== undefined && main.sub === 0 && main.psub === 0,
      "openDashboard() subscribed on the client you were given. That ties every dashboard to your command connection, and PUBLISH counts it once however many dashboards share it: give each dashboard its own connection with client.duplicate().",
      2,
    );
    const pong = await call("client.ping() while a dashboard listens", () => client.ping(), 2000);
    check(pong === "PONG", `PING on your client answered ${describeValue(pong)} instead of PONG.`);
  });

  test("stop() unsubscribes and closes the dashboard's connection", async () => {
    const observer = await checkClient();
    const { client, since } = await freshClient(observer);
    const channel = key("status:stop");
    const first = await openDashboard(client, channel, "dashboard A");
    const second = await openDashboard(client, channel, "dashboard B");
    await call("stop()", () => first.stop());
    await call("stop()", () => second.stop());
    await eventually(
      async () => (await connectionsSince(observer, since)).every((c) => c.sub + c.psub === 0),
      2000,
      "After stop() a connection of yours is still subscribed. stop() should unsubscribe.",
      3,
    );
    await eventually(
      async () => (await connectionsSince(observer, since)).length === 1,
      2000,
      "After stop() the dashboard's connection is still open. stop() should close() the duplicate it made, or every dashboard that ever opened leaves a connection behind.",
      3,
    );
    const [event] = pipelineEvents();
    const n = await call("publishStatus()", () =>
      exercise.publishStatus(client, channel, event as StatusEvent),
    );
    check(n === 0, `After both dashboards stopped, PUBLISH still reached ${n} subscribers.`, 3);
  });
});
