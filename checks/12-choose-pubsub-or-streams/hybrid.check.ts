import { describe, test } from "vitest";
import {
  call,
  check,
  checkClient,
  ctx,
  fail,
  fresh,
  learnerClient,
  learnerConnections,
  loadExercise,
  parseJson,
  type Redis,
  sameValue,
  sleep,
  until,
  within,
} from "../kit.ts";
import { fireUntilQuiet, timersFired } from "../own-timers.ts";
import { compareIds, isStreamId, pendingCount } from "../streams-support.ts";
import * as wire from "../wire.ts";
import { DECISIONS } from "./decisions.ts";
import {
  type Event,
  type Exercise,
  type HybridKeys,
  holdsLastEvent,
  hybridKeys,
  latest,
  listen,
  show,
  stateOf,
} from "./hybrid-support.ts";

const exercise = await loadExercise<Exercise>("choose", "createGroup", "submitTask", "workOnce");

let shared: Promise<[Redis, Redis]> | undefined;
/**
 * The check's own connection and one learner connection for the calls that do not block, opened
 * once for the file: connecting is slow on a busy machine.
 */
function connections(): Promise<[Redis, Redis]> {
  shared ??= Promise.all([checkClient(), learnerClient()]);
  return shared;
}

describe("part 1: choose", () => {
  test("each situation gets pub/sub, Streams or both, for the right reason", async () => {
    const scenarios = Object.keys(exercise.SCENARIOS ?? {});
    check(
      scenarios.length === Object.keys(DECISIONS).length,
      "Your file should still export SCENARIOS with all eight situations: restore it with `npm run reset -- 12` if you changed it.",
    );
    const wrong: string[] = [];
    for (const [scenario, decision] of Object.entries(DECISIONS)) {
      const chosen = await call(`choose("${scenario}")`, () => exercise.choose(scenario));
      if (!["pubsub", "streams", "both"].includes(String(chosen))) {
        fail(
          `choose("${scenario}") returned ${JSON.stringify(chosen)}; it must return "pubsub", "streams" or "both".`,
        );
      }
      if (chosen !== decision.answer) {
        wrong.push(`- ${scenario}: you chose "${chosen}". ${decision.why}`);
      }
    }
    check(
      wrong.length === 0,
      `${wrong.length} of ${scenarios.length} decisions need another look:\n${wrong.join("\n")}`,
      1,
    );
  });
});

/** An ocr() the check controls: it returns when the check releases it. */
function heldOcr(): {
  ocr: (doc: string) => Promise<void>;
  entered: Promise<string>;
  release(): void;
} {
  let entered!: (doc: string) => void;
  let release!: () => void;
  const enteredPromise = new Promise<string>((resolve) => {
    entered = resolve;
  });
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  return {
    ocr: (doc) => {
      entered(doc);
      return released;
    },
    entered: enteredPromise,
    release,
  };
}

/**
 * call() for workOnce(). When it fails after an XACK that named no stream entry ID (the
 * document's ID, say), Redis refused that XACK: the failure says so in the learner's terms
 * instead of node-redis's "1 commands failed".
 */
async function callWork<T>(what: string, keys: HybridKeys, run: () => Promise<T>): Promise<T> {
  const from = wire.sent().at(-1)?.seq ?? 0;
  try {
    return await call(what, run);
  } catch (error) {
    const wrong = wire.sent((c) => c.seq > from && c.name === "XACK" && c.args[1] === keys.tasks);
    const ids = wrong.flatMap((c) => c.args.slice(3)).filter((id) => !isStreamId(id));
    if (ids.length > 0) {
      const inMulti = wrong.some((c) => c.multi !== undefined);
      fail(
        `${what} failed: its XACK named ${ids.map((id) => JSON.stringify(id)).join(", ")}, which is no stream entry ID, and Redis refused it. Acknowledge the ID of the entry XREADGROUP returned (like "1718000000000-0"), not the document's ID.${inMulti ? ' The other commands of that MULTI ran all the same (a MULTI is no rollback): the task is still pending while the hash and the channel say "done".' : ""}`,
        2,
      );
    }
    throw error;
  }
}

/** Runs workOnce() and reports how it ended, without failing: the caller judges. */
async function workOnceSettled(
  client: Redis,
  keys: HybridKeys,
  consumer: string,
  ocr: (doc: string) => Promise<void>,
): Promise<"returned" | "threw" | "hung" | { returned: string }> {
  const run = Promise.resolve()
    .then(() => exercise.workOnce(client, keys, consumer, ocr, 100))
    .then(
      // A document id returned tells the caller that document is done.
      (doc) => (doc === undefined ? ("returned" as const) : { returned: String(doc) }),
      () => "threw" as const,
    );
  return within(run, 3000, "workOnce()").catch(() => "hung" as const);
}

/** The versions of `events`, when each is a number that is higher than the one before. */
function versionsRise(events: Event[]): boolean {
  return events.every(
    (e, i) =>
      typeof e.version === "number" &&
      (i === 0 || e.version > ((events[i - 1] as Event).version as number)),
  );
}

/** Why versions that do not rise are wrong, when the reason is that they are no numbers. */
function versionsNotNumbers(events: Event[]): string | undefined {
  const odd = events.find((e) => typeof e.version !== "number");
  if (!odd) return undefined;
  if (odd.version === undefined) {
    return `The "${String(odd.state)}" event ${show(odd)} has no version: give each event its state's version, VERSIONS[state] (1, 2, 3), so a dashboard can drop an event that is not newer than what it shows (lesson 04).`;
  }
  return `The version of a "${String(odd.state)}" event is ${show(odd.version)}, a ${typeof odd.version}: a version is a number in the JSON (VERSIONS[state]: 1, 2, 3), so a dashboard compares versions as numbers ("10" sorts before "9" as text).`;
}

/**
 * Why tasks are still pending after the work, from the XACKs the learner's code sent on
 * `keys.tasks`: none at all, or one that named something else where the group goes (Redis
 * then acknowledges nothing and answers 0).
 */
function pendingCause(keys: HybridKeys): string {
  const acks = wire.sent((c) => c.name === "XACK" && c.args[1] === keys.tasks);
  if (acks.length === 0) return "Your code sent no XACK for them.";
  const elsewhere = acks.find((c) => c.args[2] !== keys.group);
  if (elsewhere) {
    return `Your code sent XACK ${keys.tasks} ${elsewhere.args[2]} ${elsewhere.args[3] ?? ""}: the second argument is the group (${keys.group}), and for a group that does not exist Redis acknowledges nothing and answers 0.`;
  }
  return "";
}

/** Each state's version, as the starter's VERSIONS has it. */
const VERSIONS: Record<string, number> = { queued: 1, processing: 2, done: 3 };

/**
 * Whether each event carries its state's version. A version taken from a clock also rises here,
 * in one process, but not across machines: a "queued" from an uploader whose clock runs ahead
 * outranks the "processing" that follows it, and dashboards drop the rest.
 */
function versionsOfStates(events: Event[]): boolean {
  return events.every((e) => e.version === VERSIONS[String(e.state)]);
}

/**
 * The command that sends the transition to `state` to Redis: its EXEC when it is queued in a
 * MULTI, or the command itself (a script, an HSET or PUBLISH on its own).
 */
const records = (state: string) => (cmd: wire.SentCommand) => {
  const carries = (c: wire.SentCommand) =>
    c.args.some((a) => stateOf(parseJson(a)) === state || a.includes(`"${state}"`));
  if (cmd.name === "EXEC") return wire.sent((c) => c.multi === cmd.multi).some(carries);
  return cmd.multi === undefined && carries(cmd);
};

/** Fresh keys, a dashboard listening, the group created and one task submitted. */
async function oneTaskQueued() {
  const keys = hybridKeys();
  const [c, client] = await connections();
  const dashboard = await listen(keys.progress);
  await call("createGroup()", () => exercise.createGroup(client, keys));
  const doc = fresh("doc");
  await call("submitTask()", () => exercise.submitTask(client, keys, doc));
  return { keys, c, client, dashboard, doc };
}

describe("part 2: the hybrid", () => {
  test("createGroup() can be called by every worker that starts, and keeps tasks queued before it", async () => {
    const keys = hybridKeys();
    const [c, client] = await connections();
    const early = fresh("doc");
    const earlyId = await call(`submitTask("${early}")`, () =>
      exercise.submitTask(client, keys, early),
    );
    await call("createGroup()", () => exercise.createGroup(client, keys));
    await call("createGroup() a second time", () => exercise.createGroup(client, keys));
    // Two workers starting at once, on one connection: whatever each sends to look for the
    // group reaches Redis before either creates it, so both find none.
    const together = hybridKeys();
    // Each call may return only once Redis has the group: a call that remembers the group as
    // made (a flag, a Set of names) before any XGROUP CREATE was answered returns while the
    // group is still missing, and a worker that reads then gets NOGROUP. Holding the first
    // XGROUP reply shows it on every run: a real reply reaches node-redis only after every
    // call that did not wait for one has settled.
    const settled: number[] = [];
    let settledUnanswered = 0;
    const firstReply = wire.holdReply(
      (cmd) => cmd.name === "XGROUP" && cmd.args.includes(together.tasks),
      () => {
        settledUnanswered = settled.length;
      },
    );
    const both = await within(
      Promise.allSettled(
        [exercise.createGroup(client, together), exercise.createGroup(client, together)].map(
          (p, i) => p.finally(() => settled.push(i)),
        ),
      ),
      5000,
      "createGroup() called twice at once",
    ).finally(() => firstReply.cancel());
    check(
      settledUnanswered === 0,
      "Two workers called createGroup() at the same moment, and one call returned before Redis had answered any XGROUP CREATE: the group did not exist yet, and a worker that reads as soon as createGroup() returns gets NOGROUP. Remembering the group as made (a flag, a Set of names) before Redis made it lets the second call skip ahead. Send XGROUP CREATE on every call and ignore BUSYGROUP (or await the first call's own promise).",
      2,
    );
    const refused = both.find((r) => r.status === "rejected");
    check(
      refused === undefined,
      `Two workers called createGroup() at the same moment for a stream without the group, and one of them failed: ${String((refused as PromiseRejectedResult | undefined)?.reason?.message ?? (refused as PromiseRejectedResult | undefined)?.reason)}. Both looked, both found no group, both created it, and the second XGROUP CREATE answered BUSYGROUP. Create it and ignore BUSYGROUP, rather than checking first whether it exists.`,
      2,
    );
    const groups = await c.xInfoGroups(keys.tasks);
    check(
      groups.some((g) => String((g as { name?: unknown }).name) === keys.group),
      `There is no group "${keys.group}" on ${keys.tasks} (groups there: ${groups.map((g) => (g as { name?: unknown }).name).join(", ") || "none"}). Create the group named in keys.group: XGROUP CREATE <keys.tasks> <keys.group> 0 MKSTREAM.`,
      2,
    );
    const got = await callWork("workOnce()", keys, () =>
      exercise.workOnce(client, keys, fresh("ocr"), async () => {}, 100),
    );
    if (got !== early) {
      const group = (await c.xInfoGroups(keys.tasks)).find(
        (g) => String((g as { name?: unknown }).name) === keys.group,
      ) as { "last-delivered-id"?: unknown } | undefined;
      const last = String(group?.["last-delivered-id"] ?? "0-0");
      const skipped = isStreamId(earlyId) && isStreamId(last) && compareIds(last, earlyId) >= 0;
      // Created at "$" or read and handed out: last-delivered-id is the task's ID either way,
      // but only a handed-out task got a state beyond "queued".
      const state = parseJson(await c.hGet(keys.state, early)) as { state?: unknown } | undefined;
      const handedOut = state?.state === "processing" || state?.state === "done";
      // Read by XREADGROUP and never worked on: it sits in the group's pending list.
      const delivered = (await c.xPendingRange(keys.tasks, keys.group, "-", "+", 10)).some(
        (p) => p.id === earlyId,
      );
      fail(
        `A task submitted before the first worker called createGroup() should be handed out; workOnce() returned ${show(got)}. ${
          handedOut
            ? `The task was handed out and its state is "${String(state?.state)}": workOnce() must return the document id it worked on.`
            : delivered
              ? "XREADGROUP delivered the task to your consumer (it is pending in the group now), but workOnce() did not work on it: the task is in the read's reply, and your code did not find it there. With xReadGroup() it is reply?.[0]?.messages[0], an object { id, message: { doc } }; print the reply to see its shape."
              : skipped
                ? 'The group was created at "$", after the tasks already queued: create it from "0".'
                : 'The group never delivered it: read new entries with the ID ">" (an ID such as "0" re-reads only what this consumer already holds).'
        }`,
        2,
      );
    }
    // Its own connection: a read that never returns must not hold up the tests after this one.
    const quiet = await learnerClient();
    const started = Date.now();
    const before = wire.sent().at(-1)?.seq ?? 0;
    const none = await call(
      "workOnce() with nothing queued",
      () => exercise.workOnce(quiet, keys, fresh("ocr"), async () => {}, 100),
      2000,
    );
    check(
      none === undefined,
      `With nothing queued, workOnce() should wait blockMs (100 ms here) and return undefined; it returned ${show(none)} after ${Date.now() - started} ms.`,
      2,
    );
    // blockMs is the whole wait: a second read after an empty one doubles how long a worker
    // is deaf to a stop request.
    const reads = wire.sent(
      (x) =>
        x.seq > before &&
        x.name === "XREADGROUP" &&
        x.args.some((a) => a.toUpperCase() === "BLOCK"),
    ).length;
    check(
      reads <= 1,
      `With nothing queued, one workOnce(..., blockMs 100) sent ${reads} XREADGROUPs: blockMs is the whole wait, in one read with BLOCK blockMs. Reading again after an empty read waits longer than the caller allowed (a worker that should stop hears it late); return undefined instead, and let the caller's loop call again.`,
      2,
    );
    // A task arriving while the read waits: BLOCK counts milliseconds, and blockMs is one.
    const arriving = fresh("doc");
    const waitMs = 2000;
    const asked = Date.now();
    const waiting = call(
      "workOnce() while a task arrives",
      () => exercise.workOnce(quiet, keys, fresh("ocr"), async () => {}, waitMs),
      waitMs + 3000,
    );
    let answered = false;
    let answeredAt = 0;
    const answer = () => {
      answered = true;
      answeredAt = Date.now();
    };
    waiting.then(answer, answer);
    const blocked = async () =>
      (await learnerConnections(c)).some((x) => x.cmd === "xreadgroup" && x.flags.includes("b"));
    let readBlocked = false;
    await until(async () => {
      readBlocked = await blocked();
      return answered || readBlocked;
    }, waitMs);
    // No blocked read seen, and the call still ran (or ran out its blockMs): it polled.
    if (!readBlocked && (!answered || answeredAt - asked >= waitMs / 2)) {
      await waiting.catch(() => undefined);
      fail(
        `workOnce(..., blockMs ${waitMs}) never waited in a read with BLOCK (the check adds a task as soon as it sees one, and looked for ${waitMs} ms): reading again and again keeps Redis and the CPU busy while the queue is idle. Wait with XREADGROUP ... BLOCK blockMs, in milliseconds.`,
        2,
      );
    }
    const added = !answered;
    if (added) await c.xAdd(keys.tasks, "*", { doc: arriving });
    const caught = await waiting;
    check(
      caught === arriving,
      added && caught !== undefined
        ? `While workOnce(..., blockMs ${waitMs}) waited, the check added the task XADD ${keys.tasks} * doc ${arriving}, as submitTask() does; workOnce() returned ${show(caught)}. Return the doc field of the entry it read.`
        : `workOnce(..., blockMs ${waitMs}) returned ${show(caught)} after ${Date.now() - asked} ms${added ? `, though ${arriving} was added while it waited` : ", before the check could add a task"}: it should wait up to blockMs for a task and take the one that arrives. BLOCK is in milliseconds: pass blockMs as it is.`,
      2,
    );
    // Only BUSYGROUP means "there already": any other refusal must reach the worker starting up.
    const taken = hybridKeys();
    await c.set(taken.tasks, "not a stream");
    const outcome = await within(
      Promise.resolve()
        .then(() => exercise.createGroup(client, taken))
        .then(
          () => undefined,
          (error: unknown) => error,
        ),
      5000,
      "createGroup() on a key that is no stream",
    );
    check(
      outcome !== undefined,
      `createGroup() on ${taken.tasks}, a key that holds a string, returned as if all was well, though Redis refused with WRONGTYPE: the worker would go on to read from a group that does not exist, and its errors would point elsewhere. Only BUSYGROUP means the group is there already; let every other error through.`,
      2,
    );
  });

  test("tasks wait on a stream, progress goes out on pub/sub, the latest state sits in a hash", async () => {
    const keys = hybridKeys();
    const [c, client] = await connections();
    const dashboard = await listen(keys.progress);
    wire.clearSent();
    await call("createGroup()", () => exercise.createGroup(client, keys));
    const docs = Array.from({ length: 12 }, (_, i) => `doc-${i + 1}`);

    // Another upload instance, whose clock runs a minute ahead, queued a task a worker has
    // since deleted: the stream's last ID is ahead of this machine's clock. XADD * follows the
    // stream; an ID made from the local clock is refused.
    const ahead = `${Date.now() + 60_000}-0`;
    await c.xAdd(keys.tasks, ahead, { doc: "from-another-instance" });
    await c.xDel(keys.tasks, ahead);

    // No worker is running yet: the tasks must wait for them.
    const ids: string[] = [];
    for (const doc of docs) {
      const from = wire.sent().at(-1)?.seq ?? 0;
      const id = await call(`submitTask("${doc}")`, () =>
        exercise.submitTask(client, keys, doc),
      ).catch((error: unknown) => {
        const explicit = (x: wire.SentCommand) =>
          x.args.slice(2).find((a) => /^\d+-(\d+|\*)$/.test(a));
        const own = wire.sent((x) => x.seq > from && x.name === "XADD" && !!explicit(x));
        if (own.length === 0) throw error;
        return fail(
          `submitTask("${doc}") failed: its XADD gave the entry the ID ${show(own[0] && explicit(own[0]))}, made from this machine's clock, and Redis refused it, since another producer whose clock runs ahead already added ${ahead}. Let Redis choose the ID (XADD ... *): it keeps IDs rising whatever the clocks say.`,
          2,
        );
      });
      ids.push(id);
    }
    const queued = await c.xLen(keys.tasks);
    check(
      queued === 12,
      `After 12 submitTask() calls with no worker running, the task stream ${keys.tasks} holds ${queued} entries. ${
        queued > 0 && queued < 12
          ? "Some tasks were dropped before any worker read them: an XADD with MAXLEN (or a trim) removes the oldest entries whether they were handled or not. Do not trim a task stream by length; each task must wait on it until a worker takes it."
          : "A task published on a channel while no worker listens is lost; XADD it to the stream, where it waits."
      }`,
      2,
    );
    const first = isStreamId(ids[0]) ? await c.xRange(keys.tasks, ids[0], ids[0]) : [];
    const fields = first?.[0]?.message;
    check(
      fields?.doc === "doc-1",
      fields
        ? `submitTask("doc-1") added the entry ${show(ids[0])} with the fields ${show(fields)}: a task is { doc } (XADD <tasks> * doc doc-1), one field named doc, which every worker reads.`
        : `submitTask("doc-1") returned ${show(ids[0])}; it should return the ID of the stream entry it added, whose field doc is "doc-1".`,
      2,
    );
    await dashboard.settle();
    check(
      dashboard.bad.length === 0,
      `A progress event is not a JSON object: ${dashboard.bad[0]}. Publish JSON.stringify(event).`,
      2,
    );
    const queuedEvents = dashboard.events.filter((e) => e.state === "queued").length;
    check(
      queuedEvents === 12,
      `Dashboards should hear about each queued task on ${keys.progress}: ${queuedEvents} progress events arrived for 12 submissions. PUBLISH { doc, state: "queued", version } as JSON.`,
      2,
    );
    for (const doc of docs) {
      const value = await latest(c, keys, doc);
      check(
        holdsLastEvent(value, dashboard.of(doc)),
        `Before any worker ran, the latest state of ${doc} in ${keys.state} should be its last progress event, the JSON that was published (${show(dashboard.of(doc).at(-1))}); it is ${show(value)}. HSET the event itself, so a dashboard that opens later knows the state and its version.`,
        2,
      );
    }

    // Three workers share the work; each call to workOnce() handles at most one task.
    const handled: { doc: string; worker: string }[] = [];
    const names = [fresh("ocr"), fresh("ocr"), fresh("ocr")];
    const workers = await Promise.all(names.map(() => learnerClient()));
    const openBefore = wire.openLearnerConnections();
    const deadline = Date.now() + 8000;
    // When one worker fails, the others stop after their current call, and the test waits for
    // them: a worker still running would send its transitions into the next test's holds.
    let failed = false;
    const ran = await Promise.allSettled(
      workers.map(async (worker, i) => {
        const name = names[i] as string;
        while (!failed && new Set(handled.map((h) => h.doc)).size < 12 && Date.now() < deadline) {
          await callWork(`workOnce() as ${name}`, keys, () =>
            exercise.workOnce(
              worker,
              keys,
              name,
              async (doc) => {
                handled.push({ doc, worker: name });
                await sleep(20);
              },
              100,
            ),
          ).catch((error: unknown) => {
            failed = true;
            throw error;
          });
          if (handled.length > 60) break;
        }
      }),
    );
    const refused = ran.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (refused) throw refused.reason;
    const stranger = handled.find((h) => !docs.includes(h.doc))?.doc;
    check(
      stranger === undefined,
      `ocr() was called with ${show(stranger)}, which is none of the documents submitted (doc-1 to doc-12)${isStreamId(stranger) ? ": that is the stream entry's ID" : ""}. Call ocr() with the task's doc field (the entry's message.doc).`,
      2,
    );
    const held = await c.xPendingRange(keys.tasks, keys.group, "-", "+", 100);
    for (const doc of docs) {
      const by = handled.filter((h) => h.doc === doc).map((h) => h.worker);
      // Delivered and never worked on: a read took more than the one task workOnce() works on.
      const unworked = by.length === 0 && held.length > 0;
      // Read one at a time and still not worked on: the reply was read wrong, not too much of it.
      const readOne = wire
        .sent((x) => x.name === "XREADGROUP" && x.args.includes(keys.tasks))
        .every((x) => x.args.some((a, i) => /^count$/i.test(a) && x.args[i + 1] === "1"));
      check(
        by.length === 1,
        `${doc} was OCRed ${by.length} times by ${[...new Set(by)].join(", ") || "nobody"}. ${unworked ? (readOne ? `${held.length} task(s) sit pending in the group, delivered by your XREADGROUP ... COUNT 1 but never worked on: the task is in the read's reply (with xReadGroup(), reply?.[0]?.messages[0]) and your code did not find it there. ` : `${held.length} task(s) sit pending in the group, delivered but never worked on: workOnce() works on one task, so read with COUNT 1 (every entry a read returns is delivered to that consumer). `) : ""}Workers of one consumer group share the tasks: read with XREADGROUP GROUP <group> <consumer> ... ">" so each task goes to exactly one of them.`,
        2,
      );
    }
    check(
      new Set(handled.map((h) => h.worker)).size >= 2,
      `Only ${handled[0]?.worker} did any work: each worker reads as its own consumer name.`,
      2,
    );
    const consumers = (await c.xInfoConsumers(keys.tasks, keys.group)).map((x) => String(x.name));
    const strangers = consumers.filter((name) => !names.includes(name));
    check(
      strangers.length === 0,
      `The group has consumers named ${strangers.join(", ")}, but the workers were ${names.join(", ")}. Read as the consumer name workOnce() is given, so XPENDING shows which worker holds what.`,
      2,
    );
    const pending = await pendingCount(c, keys.tasks, keys.group);
    check(
      pending === 0,
      `${pending} tasks are still pending after they were done: XACK <tasks> <group> <entry id> each one, or a restarted worker does it again. ${pendingCause(keys)}`,
      2,
    );

    await dashboard.settle();
    for (const doc of docs) {
      const events = dashboard.of(doc);
      const seen = events.map((e) => e.state);
      check(
        seen.join(" > ") === "queued > processing > done",
        `The progress events for ${doc} arrived as ${seen.join(" > ") || "nothing"}; expected queued > processing > done.`,
        2,
      );
      check(
        versionsRise(events),
        versionsNotNumbers(events) ??
          `The versions of ${doc}'s events were ${events.map((e) => show(e.version)).join(", ")}. Each event needs a number higher than the one before (VERSIONS), so a dashboard can drop an event that is not newer than what it shows (lesson 04).`,
        2,
      );
      check(
        versionsOfStates(events),
        `The versions of ${doc}'s events were ${events.map((e) => `${String(e.state)} ${show(e.version)}`).join(" > ")}; each state has its own version, VERSIONS[state] (queued 1, processing 2, done 3). A version from a clock rises in one process but not across machines: a "queued" from an uploader whose clock runs ahead would outrank the "processing" after it, and dashboards would drop the rest.`,
        2,
      );
      const worker = handled.find((h) => h.doc === doc)?.worker;
      const named = events.filter((e) => e.state !== "queued").map((e) => e.worker);
      check(
        named.every((w) => w === worker),
        `${worker} OCRed ${doc}, but its "processing" and "done" events name ${named.map(show).join(" and ")}: put the consumer's name in worker.`,
        2,
      );
      const value = await latest(c, keys, doc);
      check(
        stateOf(value) === "done" && holdsLastEvent(value, events),
        `The latest state of ${doc} in ${keys.state} is ${show(value)}; after the work it should be its last progress event, ${show(events.at(-1))}. HSET the state as the task moves on.`,
        2,
      );
    }
    expectStateBeforeNews(keys);
    // Counted at the socket, however the connections were made or named; a connection being
    // closed gets a moment to finish closing.
    const leaked = () => wire.openLearnerConnections() - openBefore;
    await until(() => leaked() <= 0, 1000);
    check(
      leaked() <= 0,
      `After ${handled.length} calls of workOnce(), ${leaked()} more connections of your code are open than before them. Use the client you are given, or close() what you open in the same call: a worker that runs for days would run out of connections.`,
      2,
    );
  });

  test("a slow OCR: the task is marked processing, and acknowledged and done only after ocr() returns", async () => {
    const { keys, c, client, dashboard, doc } = await oneTaskQueued();
    const held = heldOcr();
    // The "processing" transition is held on its way to Redis for a moment: a workOnce() that
    // awaits it cannot call ocr() before it is let through.
    let released = false;
    let ocrFirst = false;
    const hold = wire.before(records("processing"), async () => {
      await Promise.race([held.entered, sleep(200)]);
      released = true;
    });
    const ocr = (d: string) => {
      ocrFirst = !released;
      return held.ocr(d);
    };
    const work = Promise.resolve().then(() =>
      exercise.workOnce(client, keys, fresh("ocr"), ocr, 100),
    );
    work.catch(() => {});
    await within(held.entered, 3000, "workOnce() to call ocr() with the task it took");
    // A workOnce() that did not wait for ocr() would finish now.
    await Promise.race([work.catch(() => {}), sleep(150)]);
    hold.cancel();
    check(
      !(ocrFirst && hold.hasFired()),
      `workOnce() called ocr("${doc}") before Redis had answered its "processing" transition (the check held that transition back for a moment): the work started before the task was recorded as processing, and had the transition failed, nothing would have noticed. await the transaction's exec() before calling ocr().`,
      2,
    );
    await dashboard.settle();
    const pending = await pendingCount(c, keys.tasks, keys.group);
    const states = dashboard.of(doc).map((e) => e.state);
    check(
      pending === 1 && !states.includes("done"),
      `While ocr("${doc}") was still running, the task was ${pending === 1 ? "still pending" : "acknowledged"} and the dashboards heard ${states.join(" > ")}. Acknowledge and announce "done" only after await ocr(doc) returned: a crash during the work must leave the task pending, for another worker to claim.`,
      2,
    );
    check(
      stateOf(await latest(c, keys, doc)) === "processing" && states.at(-1) === "processing",
      `While ocr("${doc}") was running, its latest state should be "processing" in the hash and on the channel; the hash holds ${show(await latest(c, keys, doc))} and the dashboards heard ${states.join(" > ")}.`,
      2,
    );
    // Likewise "done": a workOnce() that awaits it cannot return before it is let through.
    let settled = false;
    let returnedFirst = false;
    work
      .finally(() => {
        settled = true;
      })
      .catch(() => {});
    let judged = false;
    const neighbour = fresh("doc");
    const holdDone = wire.before(records("done"), async () => {
      // Just then another worker records its own document in the same hash, and an uploader
      // queues a task, as they do all the time: a workOnce() that WATCHes the shared hash or
      // the task stream has its "done" transaction refused.
      await c.hSet(
        keys.state,
        neighbour,
        JSON.stringify({ doc: neighbour, state: "processing", version: VERSIONS.processing }),
      );
      await c.xAdd(keys.tasks, "*", { doc: fresh("doc") });
      await Promise.race([work.catch(() => {}), sleep(200)]);
      returnedFirst = settled;
      judged = true;
    });
    held.release();
    const returned = await call("workOnce()", () =>
      work.catch((error: unknown) => {
        if (error instanceof Error && /watched keys/i.test(error.message)) {
          const all = wire
            .sent()
            .filter((x) => /^watch$/i.test(x.args[0] ?? ""))
            .flatMap((x) => x.args.slice(1));
          const watched = [keys.state, keys.tasks].filter((key) => all.includes(key));
          const why = [
            watched.includes(keys.state) &&
              `another worker recorded its own document in ${keys.state}, as every worker does with its documents`,
            watched.includes(keys.tasks) &&
              `an uploader queued a task on ${keys.tasks}, as uploaders do all day`,
          ].filter(Boolean);
          fail(
            `workOnce()'s "done" transaction was refused (${error.message}): it WATCHed ${watched.join(" and ") || "a key"}, and just then ${why.join(", and ") || "another client wrote it"}. The task stayed pending after the work was done. WATCH nothing here: MULTI alone makes the transition all or nothing, and no other worker writes this document's state while you hold its task.`,
            2,
          );
        }
        throw error;
      }),
    );
    // A transition nobody awaited may leave only after the call returned, and the hold acts
    // once Redis has answered the commands before it: wait for its verdict.
    await until(() => holdDone.hasFired(), 100);
    if (holdDone.hasFired()) await until(() => judged, 2000);
    holdDone.cancel();
    check(
      !returnedFirst,
      `workOnce() returned before Redis had answered its "done" transition (the check held that transition back for a moment): the caller moves on while the task is not yet acknowledged or done, and had the transition failed, nothing would have noticed. await the transaction's exec().`,
      2,
    );
    check(
      returned === doc,
      `workOnce() should return the document it handled ("${doc}"); it returned ${show(returned)}.`,
      2,
    );
    const after = await pendingCount(c, keys.tasks, keys.group);
    check(
      after === 0,
      `After ocr() finished, ${after} task is still pending: XACK it with the "done" state. ${pendingCause(keys)}`,
      2,
    );
  });

  test("a slow OCR: a timeout of workOnce()'s own never marks the task done", async () => {
    const { keys, c, client, dashboard, doc } = await oneTaskQueued();
    const held = heldOcr();
    // The timers the learner's file starts, not node-redis's: while ocr() is held, each is made
    // to fire, so a race against a timer is seen whatever its length, with no wait for it.
    const worker = wire.scope("worker");
    const timers = wire.scopeTimers(worker, { createdIn: ctx.target });
    let outcome: { returned: unknown } | { threw: unknown } | undefined;
    const work = worker.run(() =>
      Promise.resolve().then(() => exercise.workOnce(client, keys, fresh("ocr"), held.ocr, 100)),
    );
    work.then(
      (returned) => {
        outcome = { returned };
      },
      (threw: unknown) => {
        outcome = { threw };
      },
    );
    let fired: number[] = [];
    try {
      await within(held.entered, 3000, "workOnce() to call ocr() with the task it took");
      fired = await fireUntilQuiet(timers, () => outcome !== undefined);
    } finally {
      timers.stop();
    }
    await dashboard.settle();
    const pending = await pendingCount(c, keys.tasks, keys.group);
    const states = dashboard.of(doc).map((e) => e.state);
    const value = await latest(c, keys, doc);
    const returnedDoc = outcome !== undefined && "returned" in outcome && outcome.returned === doc;
    held.release();
    await within(
      work.catch(() => {}),
      3000,
      "workOnce() to return once ocr() had returned",
    );
    const timer = timersFired(fired);
    check(
      pending === 1 && !states.includes("done") && stateOf(value) !== "done" && !returnedDoc,
      `While ocr("${doc}") was still running${fired.length > 0 ? `, ${timer} that workOnce() had started fired (the check made it fire early: some page always takes longer than any limit you pick), and then` : ","} the task was ${pending === 1 ? "still pending" : "acknowledged"}, the hash held ${show(value)}, the dashboards heard ${states.join(" > ")}${returnedDoc ? ` and workOnce() returned "${doc}"` : ""}. A timer that wins a race against ocr() is not the work finished: the document was never read, yet with the task acknowledged and "done" nobody will retry it. Await ocr(doc) itself; if you want a time limit, let it end in an error (no XACK, no "done"), so the task stays pending for another worker to claim.`,
      2,
    );
  });

  test("a failing OCR: nothing acknowledged, nothing done, and the worker goes on", async () => {
    for (const how of ["rejects", "throws"] as const) {
      const { keys, c, client, dashboard, doc } = await oneTaskQueued();
      let called = false;
      const failing = (): Promise<void> => {
        called = true;
        const error = new Error("OCR service unavailable");
        if (how === "throws") throw error;
        // Handled in advance: a workOnce() that forgets to await it must not crash the check.
        const rejected = Promise.reject(error);
        rejected.catch(() => {});
        return rejected;
      };
      // The next task waits behind the one that fails: a workOnce() that reads a batch and
      // stops at the first failure leaves it delivered to this worker and never worked on.
      const next = fresh("doc");
      await call("submitTask()", () => exercise.submitTask(client, keys, next));
      const openBefore = wire.openLearnerConnections();
      const consumer = fresh("ocr");
      const ended = await workOnceSettled(client, keys, consumer, failing);
      check(
        ended !== "hung",
        `When ocr() ${how === "rejects" ? "rejected" : "threw"}, workOnce() did not finish within 3 s. Let the error reach the caller, or return.`,
        2,
      );
      check(
        await until(() => wire.openLearnerConnections() <= openBefore, 1000),
        `When ocr() ${how === "rejects" ? "rejected" : "threw"}, workOnce() left ${wire.openLearnerConnections() - openBefore} more connection(s) of your code open than before the call: what it opens is closed on the success path only. Close it in a finally (or use the client you are given), or every failed task leaks one.`,
        2,
      );
      check(called, `workOnce() never called ocr() for the task ${doc} that was waiting.`, 2);
      await dashboard.settle();
      const pending = await pendingCount(c, keys.tasks, keys.group);
      const value = await latest(c, keys, doc);
      const states = dashboard.of(doc).map((e) => e.state);
      check(
        pending <= 1 || stateOf(await latest(c, keys, next)) !== "queued",
        `ocr("${doc}") ${how === "rejects" ? "rejected" : "threw"}, and ${next}, the task queued behind it, is now pending on ${consumer} too, still "queued": your read took it along with ${doc} and the failure left it unworked, delivered to this worker and to no other, until a claim. workOnce() takes one task: read with COUNT 1.`,
        2,
      );
      check(
        pending === 1 && stateOf(value) !== "done" && !states.includes("done"),
        `ocr("${doc}") ${how === "rejects" ? "rejected" : "threw"}, yet the task is ${pending === 1 ? "still pending" : "acknowledged"}, the hash holds ${show(value)} and the dashboards heard ${states.join(" > ")}. Work that failed was not done: no XACK, no "done"; the pending entry is how another worker finds it again.`,
        2,
      );
      const heard = dashboard.of(doc);
      const highest = Math.max(0, ...heard.map((e) => Number(e.version)));
      const kept = Number((value as { version?: unknown } | undefined)?.version);
      const notNumbers = versionsNotNumbers(heard);
      if (notNumbers) fail(notNumbers, 2);
      check(
        versionsRise(heard) && !(kept < highest),
        `After ocr("${doc}") ${how === "rejects" ? "rejected" : "threw"}, the dashboards heard ${heard.map((e) => `${e.state} ${e.version}`).join(" > ")} and the hash holds ${show(value)}. A task only moves forward: a dashboard drops an event whose version is not newer than the last it showed, so a step back (to "queued") is ignored by those watching and contradicts what they show. Leave the state at "processing" when the work fails.`,
        2,
      );
      // A failure state of one's own ("failed", version 4) also rises, but it outranks the
      // "processing" and "done" that the retry of a claimed task publishes: dashboards drop
      // them and show the task failed for ever.
      check(
        stateOf(value) === "processing" && states.at(-1) === "processing",
        `After ocr("${doc}") ${how === "rejects" ? "rejected" : "threw"}, the dashboards heard ${heard.map((e) => `${e.state} ${e.version}`).join(" > ")} and the hash holds ${show(value)}; both should still say "processing". A state of your own for the failure outranks, or contradicts, the "processing" and "done" that the worker who claims the task later publishes (versions 2 and 3): dashboards would drop those and show the task failed even after it was done. Publish nothing when the work fails; the pending entry is the record.`,
        2,
      );
      check(
        typeof ended !== "object",
        `When ocr("${doc}") ${how === "rejects" ? "rejected" : "threw"}, workOnce() returned ${show(typeof ended === "object" ? ended.returned : undefined)}: returning the document id tells the caller the task is done, and a worker loop counts it as processed. Let the error reach the caller, or return undefined.`,
        2,
      );
      // The same worker goes on: a document whose OCR fails every time (poison) must not hold
      // it, so its next call takes new work and leaves the failed task pending for a claim.
      const got = await callWork("workOnce() after a failed ocr()", keys, () =>
        exercise.workOnce(client, keys, consumer, async () => {}, 100),
      );
      check(
        got !== doc,
        `After ocr("${doc}") failed, the same worker's next workOnce() took ${doc} again instead of the next task (${next}): a document whose OCR fails every time would hold this worker for ever. workOnce() takes one new task (">"); the failed one stays pending, for a claim after an idle time (lessons 09, 10).`,
        2,
      );
      check(
        got === next,
        `After ocr() failed once, the same worker's next workOnce() should take the next task (${next}); it returned ${show(got)}.`,
        2,
      );
    }
    // Redis refuses the read (a stream without the group: NOGROUP): whatever workOnce() opened
    // for it is closed all the same.
    const gone = hybridKeys();
    const [c, client] = await connections();
    await c.xAdd(gone.tasks, "*", { doc: fresh("doc") });
    const openBefore = wire.openLearnerConnections();
    await workOnceSettled(client, gone, fresh("ocr"), async () => {});
    check(
      await until(() => wire.openLearnerConnections() <= openBefore, 1000),
      `When Redis refused workOnce()'s read (NOGROUP: ${gone.tasks} has no group ${gone.group}), workOnce() left ${wire.openLearnerConnections() - openBefore} more connection(s) of your code open than before the call. Close what you open in a finally that also covers the read (or use the client you are given).`,
      2,
    );
  });

  test("a crash between the steps of a transition leaves all of it or none", async () => {
    const [c] = await connections();
    const says = (name: string, state: string) => (cmd: wire.SentCommand) =>
      cmd.name === name && cmd.args.some((a) => stateOf(parseJson(a)) === state);
    const submitSteps: Step[] = [
      ["XADD", wire.command("XADD")],
      ['the HSET of "queued"', says("HSET", "queued")],
      ['the PUBLISH of "queued"', says("PUBLISH", "queued")],
    ];
    for (const [step, match] of submitSteps) {
      const { keys, doc, dashboard } = await crashAt(
        match,
        "submitter",
        async (client, keys, doc) => {
          await exercise.submitTask(client, keys, doc);
        },
      );
      expectAllOrNone(step, "submitTask()", doc, "XADD, HSET and PUBLISH", {
        "the task is on the stream": (await c.xLen(keys.tasks)) === 1,
        'the hash says "queued"': stateOf(await latest(c, keys, doc)) === "queued",
        '"queued" was published': dashboard.of(doc).some((e) => e.state === "queued"),
      });
    }
    const doneSteps: Step[] = [
      ["XACK", wire.command("XACK")],
      ['the HSET of "done"', says("HSET", "done")],
      ['the PUBLISH of "done"', says("PUBLISH", "done")],
    ];
    for (const [step, match] of doneSteps) {
      const ended: { outcome?: Awaited<ReturnType<typeof workOnceSettled>> } = {};
      const { keys, doc, dashboard, fired } = await crashAt(
        match,
        "worker",
        async (client, keys) => {
          ended.outcome = await workOnceSettled(client, keys, fresh("ocr"), async () => {});
        },
        true,
      );
      if (!fired) continue;
      const told = ended.outcome;
      check(
        !(typeof told === "object" && told.returned === doc) ||
          (await pendingCount(c, keys.tasks, keys.group)) === 0,
        `The worker died just before ${step}, so the "done" transaction never ran and ${doc} is still pending, yet workOnce() returned "${doc}", which tells its caller the document is done. Let the error of exec() reach the caller (or return undefined): a catch that logs it and goes on reports work that was never recorded.`,
        3,
      );
      expectAllOrNone(step, "workOnce()", doc, "XACK, HSET and PUBLISH", {
        "the task is acknowledged": (await pendingCount(c, keys.tasks, keys.group)) === 0,
        'the hash says "done"': stateOf(await latest(c, keys, doc)) === "done",
        '"done" was published': dashboard.of(doc).some((e) => e.state === "done"),
      });
    }
    // One socket write (a pipeline) crashes as a whole here, so read how the steps went too.
    const { keys } = await crashAt(
      () => false,
      "worker",
      async (client, keys) => {
        await workOnceSettled(client, keys, fresh("ocr"), async () => {});
      },
      true,
    );
    const on = (name: string, key: string, state?: string) => (cmd: wire.SentCommand) =>
      cmd.name === name && cmd.args[1] === key && (state === undefined || says(name, state)(cmd));
    expectOneUnit("submitTask()", "XADD, HSET and PUBLISH", [
      on("XADD", keys.tasks),
      on("HSET", keys.state, "queued"),
      on("PUBLISH", keys.progress, "queued"),
    ]);
    expectOneUnit("workOnce()", "XACK, HSET and PUBLISH", [
      on("XACK", keys.tasks),
      on("HSET", keys.state, "done"),
      on("PUBLISH", keys.progress, "done"),
    ]);
  });
  test("a lost answer: the queued transaction ran, the connection dropped before its reply", async () => {
    const [c, setup] = await connections();
    const keys = hybridKeys();
    await call("createGroup()", () => exercise.createGroup(setup, keys));
    const doc = fresh("doc");
    // The reply to whatever ran the task's XADD (its EXEC, or a script naming the stream) is
    // kept from node-redis while the connection is cut: Redis did the work, the caller never hears.
    const ranTheXadd = (cmd: wire.SentCommand) =>
      cmd.name === "EXEC"
        ? wire.sent((x) => x.multi === cmd.multi && x.name === "XADD").length > 0
        : /^(XADD|EVAL|EVALSHA|EVAL_RO|EVALSHA_RO|FCALL)$/.test(cmd.name) &&
          cmd.args.includes(keys.tasks);
    const cut = wire.holdReply(ranTheXadd, (cmd) => wire.dropConnection(cmd.conn));
    const client = await learnerClient(undefined, { reconnect: true });
    client.on("error", () => {});
    try {
      // Rejecting is right here: the caller cannot know whether the task was queued.
      await within(
        Promise.resolve().then(() => exercise.submitTask(client, keys, doc)),
        5000,
        "submitTask()",
      ).catch(() => {});
    } finally {
      cut.cancel();
      client.destroy();
    }
    const entries = ((await c.xRange(keys.tasks, "-", "+")) ?? []).filter(
      (e) => String(e?.message.doc) === doc,
    );
    check(
      entries.length <= 1,
      `The connection dropped after Redis ran submitTask("${doc}")'s transaction and before its reply came back; the stream now holds the task ${entries.length} times, so it will be OCRed ${entries.length} times. A retry after an error whose reply was lost repeats work that already happened (lesson 11): let the error reach the caller instead of sending the XADD again.`,
      3,
    );
  });
});

type Step = [string, (cmd: wire.SentCommand) => boolean];

/**
 * Runs `run` as a simulated process (its own scope, its own connection) that dies just before
 * the first command matching `match` reaches Redis; returns once it is over and every event it
 * published has reached the check's dashboard. With `queued`, a task waits on the stream first.
 */
async function crashAt(
  match: (cmd: wire.SentCommand) => boolean,
  label: string,
  run: (client: Redis, keys: HybridKeys, doc: string) => Promise<void>,
  queued = false,
) {
  const keys = hybridKeys();
  const dashboard = await listen(keys.progress);
  const [, setup] = await connections();
  await call("createGroup()", () => exercise.createGroup(setup, keys));
  const doc = fresh("doc");
  if (queued) await call("submitTask()", () => exercise.submitTask(setup, keys, doc));
  const rule = wire.before(match, "crash");
  await wire.scope(label).run(async () => {
    const client = await learnerClient();
    // The crash rejects the learner's pending commands: that ending is expected here.
    await within(run(client, keys, doc), 3000, "the crashed call").catch(() => {});
  });
  rule.cancel();
  await dashboard.settle();
  return { keys, doc, dashboard, fired: rule.hasFired() };
}

function expectAllOrNone(
  step: string,
  what: string,
  doc: string,
  commands: string,
  parts: Record<string, boolean>,
): void {
  const values = Object.values(parts);
  if (values.every((v) => v) || values.every((v) => !v)) return;
  const told = Object.entries(parts)
    .map(([part, yes]) => `${part}: ${yes ? "yes" : "no"}`)
    .join("; ");
  fail(
    `A crash just before ${step} in ${what} left ${doc} half done (${told}). Send ${commands} in one MULTI ... EXEC: a transaction that never reached EXEC is discarded, so a crash leaves all of it or none.`,
    3,
  );
}

/**
 * The steps of one transition went inside one MULTI ... EXEC, or none of them is visible (a
 * script ran them). A pipeline (execAsPipeline) or separate commands each reach Redis alone.
 */
function expectOneUnit(
  what: string,
  commands: string,
  steps: ((cmd: wire.SentCommand) => boolean)[],
): void {
  const log = wire.sent();
  const found = steps.map((step) => log.find(step));
  if (found.every((cmd) => cmd === undefined)) return;
  const multi = found[0]?.multi;
  const oneUnit =
    multi !== undefined &&
    found.every((cmd) => cmd?.multi === multi) &&
    log.some((cmd) => cmd.name === "EXEC" && cmd.multi === multi);
  check(
    oneUnit,
    `${what} sent ${commands} ${found.some((cmd) => cmd?.multi !== undefined) ? "in more than one transaction" : "as separate commands"}, not inside one MULTI ... EXEC: a crash between them leaves the transition half done. execAsPipeline() only batches the writes, it is no transaction: use exec(), or one script.`,
    3,
  );
}

/**
 * Every progress event the learner published was in the hash first, or in the same MULTI: a
 * dashboard that hears an event and reads the hash, or opens between the two, never finds an
 * older state there. A script (EVAL, FCALL) runs whole and sends no PUBLISH of its own here.
 */
function expectStateBeforeNews(keys: HybridKeys): void {
  const log = wire.sent();
  for (const publish of log.filter((s) => s.name === "PUBLISH" && s.args[1] === keys.progress)) {
    const event = parseJson(publish.args[2]);
    const written = log.some(
      (s) =>
        s.name === "HSET" &&
        s.args[1] === keys.state &&
        s.args.some((arg, i) => i >= 3 && i % 2 === 1 && sameValue(parseJson(arg), event)) &&
        (s.seq < publish.seq || (s.multi !== undefined && s.multi === publish.multi)),
    );
    const setNx = log.some((s) => s.name === "HSETNX" && s.args[1] === keys.state);
    check(
      written,
      `The event ${publish.args[2]} was published before the latest state in ${keys.state} said so: a dashboard that hears it and reads the hash, or opens in between, finds an older state. HSET the event first, or in the same MULTI.${setNx ? " Your code sent HSETNX, which writes only a field that does not exist yet: the hash kept the older state." : ""}`,
      2,
    );
  }
}
