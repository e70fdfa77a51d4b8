import { afterEach, describe, test } from "vitest";
import { waitsForReply } from "../awaits-reply.ts";
import {
  expectDropWhileConnectingHeard,
  expectDropWhileSubscribingHeard,
} from "../drop-while-subscribing.ts";
import {
  type ConnectionInfo,
  call,
  check,
  checkClient,
  ctx,
  eventually,
  fail,
  freshKey,
  learnerClient,
  learnerConnections,
  loadExercise,
  parseJson,
  type Redis,
  restrictedLearnerClient,
  sameValue,
  settled,
  sleep,
  until,
} from "../kit.ts";
import { expectRefusedSubscribeCleanedUp } from "../refused-subscribe.ts";
import { hearDropErrors, hearEscapedErrors, hearUnheardErrors } from "../unheard-errors.ts";
import {
  describeUnsubscribes,
  subscribedOn,
  unsubscribedElsewhere,
} from "../unsubscribed-elsewhere.ts";
import {
  allLearnerAddrs,
  before,
  command,
  deliverTogether,
  dropConnection,
  learnerAddrs,
  openedSince,
  scope,
  scopeTimers,
  sent,
} from "../wire.ts";

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

/**
 * Two documents moving through the pipeline side by side, the NDA 1.5 s behind, and the
 * contract's OCR announced twice, word for word (a publisher retrying after a timeout sends the
 * same JSON again): 13 events, interleaved. The contract's "done" is not last, so a dashboard
 * that holds one kind of event back reorders them; the repeat catches a dashboard that drops a
 * stage it has seen or a message it has seen. The NDA's id is not ASCII: a message is UTF-8,
 * and one decoded as Latin-1 (a Buffer listener's toString("latin1")) reaches onEvent garbled.
 */
function pipelineEvents(): StatusEvent[] {
  const start = Date.UTC(2025, 0, 6, 9, 0, 0);
  const events = STAGES.flatMap((stage, i) => [
    { docId: "contract-17", stage, at: start + i * 1000 },
    { docId: "NDA-4 Müller/Øre ✓", stage, at: start + i * 1000 + 1500 },
  ]);
  events.push({ docId: "contract-17", stage: "ocr", at: start + 1000 });
  return events.sort((a, b) => a.at - b.at);
}

/** Dashboards still open when a test ends are stopped, so one failure does not leak into the next. */
const open: Stop[] = [];
afterEach(async () => {
  // A stop() that hangs must not take the remaining tests down with it.
  for (const stop of open.splice(0)) await Promise.race([stop(), sleep(2000)]).catch(() => {});
});

interface Session {
  observer: Redis;
  client: Redis;
  /** The local address of `client`'s connection: how CLIENT LIST tells it apart. */
  clientAddr: string;
}

/** The check's observer, and the learner's command connection with its address. */
async function session(options: { reconnect?: boolean } = {}): Promise<Session> {
  const observer = await checkClient();
  const before = allLearnerAddrs();
  const client = await learnerClient(undefined, options);
  return { observer, client, clientAddr: openedSince(before)[0] ?? "" };
}

/** The server's view of the learner connections at `addrs`, however they were named. */
async function connectionsAt(observer: Redis, addrs: string[]): Promise<ConnectionInfo[]> {
  return (await learnerConnections(observer)).filter((c) => addrs.includes(c.addr));
}

function describeConnection(c: ConnectionInfo): string {
  return `${c.addr}${c.name ? ` named "${c.name}"` : ""}`;
}

interface Dashboard {
  received: unknown[];
  stop: Stop;
  /** Addresses of the connections openDashboard() opened for this dashboard. */
  opened: string[];
  /** The learner connections (SentCommand.conn) its SUBSCRIBE went out on. */
  subscribedOn: number[];
}

interface DashboardOptions {
  /** The check's onEvent; by default it records each event. */
  onEvent?: (event: unknown, received: unknown[]) => void;
  /** Called as soon as the learner's openDashboard() resolves, before the check looks around. */
  resolved?: () => void;
}

async function openDashboard(
  s: Session,
  channel: string,
  label: string,
  options: DashboardOptions = {},
): Promise<Dashboard> {
  const { onEvent, resolved } = options;
  const received: unknown[] = [];
  const addrsBefore = allLearnerAddrs();
  const mark = sent().length;
  const stop = await call(`openDashboard() for ${label}`, () =>
    exercise.openDashboard(s.client, channel, (event) =>
      onEvent ? onEvent(event, received) : received.push(event),
    ),
  );
  resolved?.();
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
  // Seen at once, not after a long wait for events: a dashboard that subscribes on the command
  // connection makes every later step of the check misleading (and its stop() may hang).
  const [own] = await connectionsAt(s.observer, [s.clientAddr]);
  if (own && own.sub + own.psub > 0) {
    fail(
      `openDashboard() subscribed on the client you were given: right after it resolved, CLIENT LIST showed your command connection (${describeConnection(own)}) with ${own.sub + own.psub} subscription(s). PUBLISH counts connections, not listeners, so dashboards sharing it count once, and they all go dark together when it drops. Give each dashboard its own connection: client.duplicate({ name }), connect it, subscribe on it.`,
      2,
    );
  }
  const subscribed = channelsSent(mark, "SUBSCRIBE");
  const patterns = sent()
    .slice(mark)
    .filter((c) => c.name === "PSUBSCRIBE");
  const sharded = sent()
    .slice(mark)
    .filter((c) => c.name === "SSUBSCRIBE");
  if (subscribed.length === 0 && sharded.length > 0) {
    fail(
      `openDashboard() sent ${sharded.map((c) => `SSUBSCRIBE ${c.args.slice(1).join(" ")}`).join(", ")}: sharded pub/sub, a separate system that hears only SPUBLISH. The pipeline (and redis-cli) announces statuses with PUBLISH, which never reaches an SSUBSCRIBE, and PUBSUB NUMSUB does not count it. A dashboard follows its channel with subscriber.subscribe(channel, listener).`,
      2,
    );
  }
  if (subscribed.length === 0 && patterns.length > 0) {
    fail(
      `openDashboard() sent ${patterns.map((c) => `PSUBSCRIBE ${c.args.slice(1).join(" ")}`).join(", ")}: a pattern subscription, not a subscription to the channel. A pattern is read as a glob (a channel name with *, ? or [ in it matches other channels, or not even itself), and PUBSUB NUMSUB does not count it. A dashboard follows one channel: subscriber.subscribe(channel, listener).`,
      2,
    );
  }
  if (subscribed.length > 0 && !subscribed.includes(channel)) {
    fail(
      `openDashboard() subscribed to ${subscribed.map((c) => describeValue(c)).join(", ")}, not to the channel it was given (${describeValue(channel)}). Subscribe to the channel parameter: the check gives every test a fresh channel name.`,
      2,
    );
  }
  return {
    received,
    stop: once,
    opened: openedSince(addrsBefore),
    subscribedOn: subscribedOn(mark),
  };
}

async function subscribersOf(observer: Redis, channel: string): Promise<number> {
  const counts = await observer.pubSubNumSub(channel);
  return Number(counts[channel] ?? 0);
}

function describeValue(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 90 ? `${text.slice(0, 89)}…` : text;
}

/** The channels the learner's code named in the given subscribe or publish commands since `mark`. */
function channelsSent(mark: number, name: "SUBSCRIBE" | "PUBLISH"): string[] {
  return sent()
    .slice(mark)
    .filter((c) => c.name === name)
    .flatMap((c) => (name === "PUBLISH" ? c.args.slice(1, 2) : c.args.slice(1)));
}

describe("publishing", () => {
  test("publishStatus() reports 0 receivers when no dashboard is listening", async () => {
    const client = await learnerClient();
    const [event] = pipelineEvents();
    const before = allLearnerAddrs();
    const n = await call("publishStatus()", () =>
      exercise.publishStatus(client, freshKey("status"), event as StatusEvent),
    );
    check(
      n === 0,
      `With nobody subscribed, PUBLISH answers 0; publishStatus() returned ${describeValue(n)}. Return what client.publish() resolves to.`,
      2,
    );
    // A stage publishes thousands of times a day: a connection left behind by each call finds
    // the server's client limit within hours.
    const opened = openedSince(before);
    const left = opened.filter((addr) => learnerAddrs().has(addr));
    check(
      left.length === 0,
      `publishStatus() returned with a connection it opened still open (${left.join(", ")}): every status published would leave one behind. Publish on the client you were given; it is open and free for commands.`,
      2,
    );
    // Closed again or not, a connection per status costs a TCP (on Azure also a TLS and an
    // AUTH) handshake per event and churns the server's client table.
    check(
      opened.length === 0,
      `publishStatus() opened a connection of its own (${opened.join(", ")}) to send one PUBLISH, and closed it again: every status would pay a connection handshake (on Azure a TLS one and an AUTH too). Publish on the client you were given; it is open and free for commands.`,
      2,
    );
  });

  // A stage kept off the channel (a cloud account limited to its own channels, a typo in the
  // ACL) hears NOPERM: a publishStatus() that logs it and answers 0 says "nobody listened" for
  // "nobody could", and the stage carries on announcing into the void.
  test.skipIf(!ctx.privateServer)(
    "publishStatus() rejects when Redis refuses the PUBLISH",
    async () => {
      const client = await restrictedLearnerClient(["resetchannels"]);
      const [event] = pipelineEvents();
      const outcome = await settled(
        Promise.resolve().then(() =>
          exercise.publishStatus(client, freshKey("status"), event as StatusEvent),
        ),
      );
      check(
        "error" in outcome,
        `Redis refused the PUBLISH (NOPERM: the check's account may not use that channel), and publishStatus() resolved with ${"value" in outcome ? describeValue(outcome.value) : ""} instead of rejecting: its caller takes a refused status for one nobody happened to hear (0), and keeps announcing into the void. Let client.publish()'s error reach the caller (no try/catch that returns a count).`,
        2,
      );
    },
  );

  test("publishStatus() sends the event as JSON", async () => {
    const client = await learnerClient();
    const listener = (await checkClient("listener")).duplicate();
    listener.on("error", () => {});
    await listener.connect();
    const channel = freshKey("status");
    const messages: string[] = [];
    await listener.subscribe(channel, (message) => messages.push(message));
    try {
      const [event] = pipelineEvents();
      const mark = sent().length;
      const n = await call("publishStatus()", () =>
        exercise.publishStatus(client, channel, event as StatusEvent),
      );
      const published = channelsSent(mark, "PUBLISH");
      const sharded = sent()
        .slice(mark)
        .find((c) => c.name === "SPUBLISH");
      if (published.length === 0 && sharded) {
        fail(
          `publishStatus() sent SPUBLISH ${describeValue(sharded.args[1])}: sharded pub/sub, a separate system that only SSUBSCRIBE hears. Dashboards (and redis-cli's SUBSCRIBE) subscribe with SUBSCRIBE, which never receives an SPUBLISH, so PUBLISH-style counting answered ${describeValue(n)}. Publish with client.publish(channel, json).`,
          2,
        );
      }
      if (published.length > 0 && !published.includes(channel)) {
        fail(
          `publishStatus() published on ${describeValue(published[0])}, not on the channel it was given (${describeValue(channel)}). Use the channel parameter.`,
          2,
        );
      }
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
      const parsed = parseJson(messages[0]);
      if (parsed === undefined) {
        fail(
          `The message on the channel is not JSON: ${describeValue(messages[0])}. Send JSON.stringify(event).`,
          2,
        );
      }
      check(
        sameValue(parsed, event),
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
    const s = await session();
    for (const n of [1, 2, 3]) {
      const channel = freshKey("status");
      const { verdict } = await waitsForReply(command("SUBSCRIBE", channel), (resolved) =>
        openDashboard(s, channel, `dashboard ${n}`, { resolved }),
      );
      check(
        verdict !== "resolved-first",
        "openDashboard() returned before its subscription was active: it resolved before its SUBSCRIBE had reached Redis (the check held the command back at the socket), so a status published at that moment would have been lost. Await subscribe() before returning: it resolves once Redis has confirmed the subscription.",
        2,
      );
      const subscribers = await subscribersOf(s.observer, channel);
      check(
        subscribers === 1,
        `openDashboard() returned before its subscription was active: right after it resolved, PUBSUB NUMSUB counted ${subscribers} subscribers on the channel, so a status published at that moment would have been lost. Await connect() and subscribe() before returning.`,
        2,
      );
    }
  });

  test("three dashboards each receive every status event, in order", async () => {
    const s = await session();
    // A channel name may hold spaces and any UTF-8: a connection named after it is refused
    // (CLIENT SETNAME takes no spaces), and one read as Latin-1 garbles what it carries.
    const channel = freshKey("docs status Ü");
    const dashboards: Dashboard[] = [];
    for (const label of ["dashboard A", "dashboard B", "dashboard C"]) {
      const dashboard = await openDashboard(s, channel, label).catch((error: Error) => {
        if (!/Client names cannot contain/i.test(error.message)) throw error;
        fail(
          `openDashboard() for ${label} failed: Redis refused the connection's name (${error.message.replace(/^.*?threw an error: /, "").split("\n")[0]}). The check's channel is ${describeValue(channel)}: a channel name may hold spaces, a connection name may not. Name the dashboard's connection from something of your own (a counter, the client's name), not from the channel.`,
          2,
        );
      });
      dashboards.push(dashboard);
    }
    // Readiness has its own test above; here give a slow subscription a moment, so this test
    // speaks about broadcasting only.
    for (let i = 0; i < 50 && (await subscribersOf(s.observer, channel)) < 3; i++) await sleep(20);
    const listening = (await learnerConnections(s.observer)).filter((c) => c.sub > 0);
    check(
      listening.length >= 3,
      `Three dashboards are open, but only ${listening.length} of your connections is subscribed (${listening.map(describeConnection).join(", ") || "none"}): the dashboards share a connection. PUBLISH counts connections, not listeners, and one dropped connection takes every dashboard on it down. Give each dashboard a connection of its own (client.duplicate()).`,
      2,
    );

    const events = pipelineEvents();
    // Each dashboard's connection gets the whole burst in one read, as a busy one does: a
    // listener that hands some events on later than others (an await whose length depends on
    // the event) then reorders them on every run, not only when the publishes come close enough.
    await deliverTogether(
      dashboards.flatMap((d) => d.opened),
      events.map((e) => String(e.at)),
      async () => {
        for (const event of events) {
          const n = await call("publishStatus()", () =>
            exercise.publishStatus(s.client, channel, event),
          );
          check(
            n === 3,
            `Three dashboards are subscribed, so PUBLISH answers 3; publishStatus() returned ${describeValue(n)}. Return what client.publish() resolves to.`,
            2,
          );
        }
      },
    );

    for (const [i, dashboard] of dashboards.entries()) {
      const name = `Dashboard ${"ABC"[i]}`;
      // The count is read after the wait: a message built before it would report a stale one.
      if (!(await until(() => dashboard.received.length >= events.length, 3000))) {
        // Received events are a subsequence of the published ones: the first mismatch is lost.
        let at = 0;
        for (const got of dashboard.received) if (sameValue(got, events[at])) at++;
        const lost = events[at];
        const repeat = events.findIndex((e) => sameValue(e, lost)) < at;
        fail(
          `${name} received ${dashboard.received.length} of the ${events.length} status events${lost ? `; the first one missing is ${JSON.stringify(lost)}` : ""}.${repeat ? " It was published twice, word for word, as a publisher retrying after a timeout does, and Redis delivered it twice: a dashboard shows each delivery, it does not drop a message or a stage it has seen." : ""}`,
          2,
        );
      }
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
        const garbled = Buffer.from(event.docId, "utf8").toString("latin1");
        if (garbled !== event.docId && (got as StatusEvent | undefined)?.docId === garbled) {
          fail(
            `${name} received the document id ${describeValue(event.docId)} as ${describeValue(garbled)}: your code decoded the message as Latin-1. Redis carries bytes, and node-redis hands a string listener UTF-8 text: take the message as the string it is, or decode a Buffer with toString("utf8").`,
            2,
          );
        }
        check(
          sameValue(got, event),
          `${name}'s event ${n + 1} should be ${JSON.stringify(event)}; it was ${describeValue(got)}. Pass each parsed event to onEvent as it arrives.`,
          3,
        );
      }
    }
  });

  test("a dashboard whose onEvent throws loses no event that came with it", async () => {
    const s = await session();
    const channel = freshKey("status");
    const failure = new Error("dashboard render failed (thrown on purpose by the check's onEvent)");
    // A message that is not JSON goes first: JSON.parse throws on it as onEvent can.
    const typedByHand = "not json: typed into redis-cli while debugging";
    const ours = (e: unknown) => e === failure || e instanceof SyntaxError;
    const unheard = hearUnheardErrors(ours);
    const escaped = hearEscapedErrors(ours);
    // Three different stages: the repeated one is for the broadcast test to speak about.
    const events = pipelineEvents().slice(3, 6);
    const [firstEvent, ...laterEvents] = events as [StatusEvent, ...StatusEvent[]];
    let dashboard: Awaited<ReturnType<typeof openDashboard>>;
    try {
      dashboard = await openDashboard(s, channel, "a failing dashboard", {
        onEvent: (event, received) => {
          received.push(event);
          if (received.length === 1) throw failure;
        },
      });
      // A burst reaches a subscriber's socket together, and node-redis 6.3 drops the rest of a
      // read when a message listener throws: the check makes the four share one read.
      await deliverTogether(
        dashboard.opened,
        [typedByHand, ...events.map((e) => String(e.at))],
        async () => {
          await s.observer.publish(channel, typedByHand);
          for (const event of events) {
            await call("publishStatus()", () => exercise.publishStatus(s.client, channel, event));
          }
        },
      );
      await until(() => dashboard.received.length >= events.length, 2000);
      // The "error" event is emitted in the same turn as the throw, a rejection nobody handles
      // once that turn's promises have run: after this pause each was heard or not.
      await sleep(10);
    } finally {
      unheard.stop();
      escaped.stop();
    }
    escaped.expectNone("onEvent", firstEvent.docId, "dashboard", 2);
    unheard.expectNone("onEvent", firstEvent.docId, "dashboard", 2);
    if (dashboard.received.length === 0) {
      fail(
        `A message that is not JSON ("${typedByHand}", as someone debugging publishes by hand) reached the dashboard's connection in one read with three events, and none of the three reached onEvent: JSON.parse threw on it in your listener, and node-redis 6.3 drops the rest of a read when a message listener throws. Parse inside the try as well: try { onEvent(JSON.parse(message)) } catch (error) { log it }.`,
        2,
      );
    }
    if (dashboard.received.length === 1) {
      fail(
        `Three events reached the failing dashboard's connection together, as a burst does. onEvent threw for the first (the check made it fail, as a render can), and the ${laterEvents.length} after it never reached onEvent: node-redis 6.3 drops the rest of a read when a message listener throws. An error listener hears the exception, but the events are gone. Catch around onEvent inside your listener (try { onEvent(event) } catch (error) { log it }), so one failing render costs only its own event.`,
        2,
      );
    }
    check(
      dashboard.received.length >= events.length,
      `After onEvent threw on the first of ${events.length} events, the dashboard received ${dashboard.received.length} of them. One failing render must not end the subscription.`,
      2,
    );
    const later = pipelineEvents()[6] as StatusEvent;
    await call("publishStatus()", () => exercise.publishStatus(s.client, channel, later));
    if (!(await until(() => dashboard.received.length > events.length, 3000))) {
      fail(
        "After onEvent threw once, the dashboard received nothing published later. One failing render must not end the subscription.",
        2,
      );
    }
    const still = await connectionsAt(s.observer, dashboard.opened);
    check(
      still.some((c) => c.sub > 0),
      "After onEvent threw, the dashboard's connection is no longer subscribed. One failing render must not end the subscription.",
      2,
    );
  });

  test("a dashboard whose connection drops says so and keeps receiving", async () => {
    // Reconnecting, as node-redis's defaults do: the dashboard's duplicate copies that option.
    const s = await session({ reconnect: true });
    const channel = freshKey("status");
    const dashboard = await openDashboard(s, channel, "a dashboard");
    const events = pipelineEvents();
    // Twice: an error listener added with once() hears the first drop and is gone.
    const drops = hearDropErrors();
    try {
      for (let n = 1; n <= 2; n++) {
        const addrs = learnerAddrs();
        const cut = dashboard.opened.filter((addr) => addrs.has(addr));
        for (const addr of cut) dropConnection(addr);
        // Until Redis has seen the cut connections close, PUBLISH still counts them.
        await until(async () => (await connectionsAt(s.observer, cut)).length === 0, 2000);
        const event = events[n] as StatusEvent;
        // node-redis reconnects and subscribes again by itself; until then a PUBLISH reaches no one.
        const back = await until(async () => {
          const reached = await call("publishStatus()", () =>
            exercise.publishStatus(s.client, channel, event),
          );
          return reached > 0;
        }, 3000);
        dashboard.opened.push(...[...learnerAddrs()].filter((a) => !addrs.has(a)));
        drops.expectHeard(
          n,
          "the dashboard's connection",
          "dashboard",
          'Listen with subscriber.on("error", ...) on every connection you open.',
          2,
        );
        check(
          back,
          "After the check cut the dashboard's connection, no PUBLISH reached a subscriber for 3 s. node-redis reconnects and subscribes again by itself: keep the dashboard's connection open (do not close or quit it in the error listener).",
          2,
        );
      }
      // Back twice: one more event must show once. node-redis subscribes again by itself, with
      // the listeners it had; a subscribe() of the learner's own on "ready" adds a second one.
      const last = events[3] as StatusEvent;
      const mark = dashboard.received.length;
      const reached = await call("publishStatus()", () =>
        exercise.publishStatus(s.client, channel, last),
      );
      await eventually(
        () => dashboard.received.slice(mark).some((e) => sameValue(e, last)),
        2000,
        `After node-redis had reconnected the dashboard twice, the event ${describeValue(last)} (PUBLISH reached ${reached}) did not reach onEvent within 2 s.`,
        2,
      );
      const shown = dashboard.received.slice(mark).filter((e) => sameValue(e, last)).length;
      check(
        shown === 1,
        `After node-redis had reconnected the dashboard twice, one PUBLISH of ${describeValue(last)} reached ${reached} subscriber(s) and your onEvent ran ${shown} times for it: every event now shows more than once. node-redis subscribes again by itself after a reconnect, with the listeners the connection had; a subscribe() of your own in a "ready" or "connect" listener adds a second listener (or a second subscriber). Leave resubscribing to node-redis.`,
        2,
      );
    } finally {
      drops.stop();
    }
  });

  // A connection can drop at any step, also before the first subscription is confirmed: an
  // error listener added only once subscribe() resolved is not there yet.
  test("a dashboard whose connection drops while it subscribes says so", async () => {
    const s = await session({ reconnect: true });
    const channel = freshKey("status");
    await expectDropWhileSubscribingHeard({
      what: "openDashboard()",
      role: "dashboard",
      channel,
      start: () => exercise.openDashboard(s.client, channel, () => {}),
      keep: (stop) => {
        if (typeof stop === "function") open.push(stop as Stop);
      },
      hint: 2,
    });
  });

  // One step earlier still: an error listener added once connect() resolved, before
  // subscribe(), hears the drop above but not one while the connection says hello.
  test("a dashboard whose connection drops while it connects says so", async () => {
    const s = await session({ reconnect: true });
    await expectDropWhileConnectingHeard({
      what: "openDashboard()",
      role: "dashboard",
      start: () => exercise.openDashboard(s.client, freshKey("status"), () => {}),
      keep: (stop) => {
        if (typeof stop === "function") open.push(stop as Stop);
      },
      hint: 2,
    });
  });

  test("your command connection stays free while dashboards listen", async () => {
    const s = await session();
    await openDashboard(s, freshKey("status"), "a dashboard");
    const pong = await call("client.ping() while a dashboard listens", () => s.client.ping(), 2000);
    check(pong === "PONG", `PING on your client answered ${describeValue(pong)} instead of PONG.`);
  });

  test.skipIf(!ctx.privateServer)(
    "openDashboard() rejects when Redis refuses the subscription, and closes what it opened",
    async () => {
      await expectRefusedSubscribeCleanedUp(
        "openDashboard()",
        (client) => exercise.openDashboard(client, freshKey("status"), () => {}),
        (stop) => {
          if (typeof stop === "function") open.push(stop as Stop);
        },
        3,
      );
    },
  );

  // A dashboard is often closed while its connection is down (a page closed during a network
  // blip): node-redis is reconnecting it, isReady is false, and the connection comes back after.
  test("stop() during a reconnect closes the dashboard's connection all the same", async () => {
    const s = await session({ reconnect: true });
    const channel = freshKey("status");
    const dashboard = await openDashboard(s, channel, "a dashboard");
    const addrs = learnerAddrs();
    const cut = dashboard.opened.filter((addr) => addrs.has(addr));
    const before0 = allLearnerAddrs();
    let stopping: Promise<{ value: unknown } | { error: unknown }> | undefined;
    // stop() is called while node-redis says hello on the new connection (not ready yet); the
    // hello goes on once stop() has had a turn, and the connection comes back.
    const rule = before(command("HELLO"), async () => {
      stopping = settled(call("stop() during a reconnect", () => dashboard.stop(), 5000));
      await new Promise((resolve) => setImmediate(resolve));
    });
    try {
      for (const addr of cut) dropConnection(addr);
      check(
        await until(async () => rule.hasFired(), 3000),
        "After the check cut the dashboard's connection, node-redis did not reconnect it within 3 s. Keep the dashboard's connection open (do not close or quit it in the error listener).",
        2,
      );
    } finally {
      rule.cancel();
    }
    const outcome = await (stopping as Promise<{ value: unknown } | { error: unknown }>);
    if ("error" in outcome) throw outcome.error;
    const opened = [...cut, ...openedSince(before0)];
    const leftOpen = async () => connectionsAt(s.observer, opened);
    if (!(await until(async () => (await leftOpen()).length === 0, 2000))) {
      const left = await leftOpen();
      const subscribed = left.some((c) => c.sub + c.psub > 0);
      fail(
        `stop() was called while the dashboard's connection was down (node-redis was reconnecting it: isReady was false) and resolved; the connection then came back and stayed open${subscribed ? ", still subscribed" : ""} (${left.map(describeConnection).join(", ")}). A dashboard closed during a network blip leaks its connection for ever. stop() must close it whatever state it is in: do not skip the unsubscribe and close() when isReady is false (node-redis queues them until the connection is back), or destroy() it then.`,
        3,
      );
    }
  });

  test("stop() closes what its dashboard opened and leaves the others listening", async () => {
    const s = await session();
    const channel = freshKey("status");
    // Dashboard A opens in a scope of its own, so a setInterval() it leaves running after stop()
    // (a health-check PING, say) can be counted.
    const dashboardA = scope("dashboard A");
    const timersA = scopeTimers(dashboardA, { repeating: true });
    const first = await dashboardA.run(() => openDashboard(s, channel, "dashboard A"));
    const second = await openDashboard(s, channel, "dashboard B");
    const mark = sent().length;
    await call("stop() of dashboard A", () => first.stop(), 3000);
    const repeating = timersA.live();
    timersA.stop();
    check(
      repeating === 0,
      `stop() of dashboard A resolved with ${repeating} setInterval() that openDashboard() started still running (a health-check PING, say): it goes on for ever against a closed connection, and keeps the process alive. stop() must end everything its dashboard started: clearInterval() it before you close.`,
      3,
    );
    // An UNSUBSCRIBE sent on another connection (the client given, say) removes that
    // connection's own subscriptions to the channel, however many listeners they had.
    const elsewhere = unsubscribedElsewhere(mark, first.subscribedOn);
    if (elsewhere.length > 0) {
      fail(
        `stop() of dashboard A sent ${describeUnsubscribes(elsewhere)} on a connection the dashboard did not subscribe on (the client you were given, or another dashboard's). UNSUBSCRIBE without a listener drops every subscription that connection has to the channel, the caller's own too. Unsubscribe on the dashboard's own connection, the one stop() closes: subscriber.unsubscribe(channel, listener).`,
        3,
      );
    }
    const othersClosed = second.opened.filter((addr) => !learnerAddrs().has(addr));
    check(
      othersClosed.length === 0,
      `stop() of dashboard A closed the connection dashboard B opened (${othersClosed.join(", ")}): each stop() must close its own dashboard's connection. A stop() that reads a variable every openDashboard() call writes (one declared outside the function) closes whichever dashboard opened last. Keep the connection in a const inside openDashboard(), where its stop() closes over it.`,
      3,
    );
    check(
      s.client.isOpen,
      "stop() of dashboard A closed the client you were given: that connection belongs to the caller, who still publishes on it. Close only the connection the dashboard opened.",
      3,
    );
    // Looked at at once, on the client's side: an awaited close() has let go of the socket.
    const stillOpen = first.opened.filter((addr) => learnerAddrs().has(addr));
    check(
      stillOpen.length === 0,
      `stop() resolved while the connection dashboard A opened (${stillOpen.join(", ")}) was still open: it started closing without waiting for it. Await the unsubscribe and the close() in stop(), so that a caller who stops a dashboard knows it is gone.`,
      3,
    );

    const leftSubscribed = async () =>
      (await connectionsAt(s.observer, first.opened)).filter((c) => c.sub + c.psub > 0);
    await eventually(
      async () => (await leftSubscribed()).length === 0,
      2000,
      "After stop() a connection dashboard A opened is still subscribed. stop() should unsubscribe.",
      3,
    );
    const leftOpen = async () => connectionsAt(s.observer, first.opened);
    if (!(await until(async () => (await leftOpen()).length === 0, 2000))) {
      fail(
        `After stop() the connection dashboard A opened is still open (${(await leftOpen()).map(describeConnection).join(", ")}). stop() should close() the connection its dashboard made, or every dashboard that ever opened leaves one behind.`,
        3,
      );
    }

    const [event, next] = pipelineEvents();
    const n = await call("publishStatus()", () =>
      exercise.publishStatus(s.client, channel, event as StatusEvent),
    );
    check(
      n === 1,
      `With dashboard A stopped and B still open, PUBLISH should reach 1 subscriber; it reached ${describeValue(n)}. stop() should end its own dashboard only.`,
      3,
    );
    await eventually(
      () => second.received.length === 1 && first.received.length === 0,
      2000,
      `After dashboard A stopped, B should receive the next event and A nothing: B received ${second.received.length}, A ${first.received.length}.`,
      3,
    );
    const pong = await call("client.ping() after a stop()", () => s.client.ping(), 2000);
    check(pong === "PONG", "stop() must leave the client you were given open.");

    await call("stop() of dashboard B", () => second.stop(), 3000);
    await eventually(
      async () => (await connectionsAt(s.observer, second.opened)).length === 0,
      2000,
      "After stop() the connection dashboard B opened is still open. stop() should close() the duplicate it made.",
      3,
    );
    const after = await call("publishStatus()", () =>
      exercise.publishStatus(s.client, channel, next as StatusEvent),
    );
    check(after === 0, `After both dashboards stopped, PUBLISH still reached ${after}.`, 3);
  });
});
