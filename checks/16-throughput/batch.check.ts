import { describe, onTestFinished, test } from "vitest";
import type { BatchParts, Committed, Outcome } from "../../src/pipeline/batch-parts.ts";
import type { StageKeys } from "../../src/pipeline/keys.ts";
import type { Work } from "../../src/pipeline/parts.ts";
import {
  CheckFailure,
  call,
  check,
  checkClient,
  ctx,
  eventually,
  fail,
  failIfNotWritten,
  fresh,
  freshKey,
  learnerClient,
  loadExercise,
  type Redis,
  sameValue,
  settled,
  sleep,
  until,
  within,
} from "../kit.ts";
import { fireUntilQuiet, timersFired } from "../own-timers.ts";
import {
  answerToNewWork,
  blockOf,
  compareIds,
  pendingCount,
  wrongEventTime,
} from "../streams-support.ts";
import {
  before as beforeCommand,
  holdReply,
  nothingInFlight,
  openLearnerConnections,
  type Scope,
  type SentCommand,
  scope,
  scopeTimers,
  sent,
} from "../wire.ts";

// The exercise's parts are the ones the batched pipeline loads (npm run pipeline --batch-parts).
type Exercise = BatchParts;

const exercise = await loadExercise<Exercise>(
  "readBatch",
  "sweep",
  "inFlight",
  "commitBatch",
  "trim",
);

/** A stage with fresh names everywhere: code that hard-codes "ocr" or a key fails. */
function stageFor(label: string): StageKeys {
  const base = freshKey(label);
  return {
    stage: "ner",
    stream: `${base}:stream`,
    group: fresh("ner"),
    next: `${base}:next`,
    dead: `${base}:dead`,
    status: `${base}:status`,
    channel: `${base}:events`,
    doc: (id) => `${base}:doc:${id}`,
  };
}

let observer: Promise<Redis> | undefined;
const own = () => {
  observer ??= checkClient();
  return observer;
};

/** `docs` queued on the stage and delivered to `consumer`: the batch a worker holds. */
async function delivered(keys: StageKeys, docs: string[], consumer: string): Promise<Work[]> {
  const c = await own();
  await c.xGroupCreate(keys.stream, keys.group, "0", { MKSTREAM: true }).catch(() => {});
  const works: Work[] = [];
  for (const doc of docs) {
    await c.hSet(keys.doc(doc), { name: `${doc}.pdf`, text: "Invoice" });
    works.push({ id: await c.xAdd(keys.stream, "*", { doc }), doc, deliveries: 1 });
  }
  await c.xReadGroup(keys.group, consumer, { key: keys.stream, id: ">" }, { COUNT: docs.length });
  return works;
}

async function queuedOn(stream: string): Promise<string[]> {
  const entries = (await (await own()).xRange(stream, "-", "+")) ?? [];
  return entries.map((e) => String(e.message.doc));
}

function twice(docs: string[]): string[] {
  return [...new Set(docs.filter((d, i) => docs.indexOf(d) !== i))];
}

const resultFor = (doc: string) => JSON.stringify({ doc, entities: [{ type: "ORG" }] });

/** A simulated worker process: its own connection, which a crash takes down with the rest. */
async function worker(label: string): Promise<{ scope: Scope; client: Redis }> {
  const process = scope(label);
  return { scope: process, client: await process.run(() => learnerClient()) };
}

/** What one scope sent, after `from` (a seq). */
function sentBy(s: Scope, from = 0): SentCommand[] {
  return sent((c) => c.scope === s.name && c.seq > from);
}

const lastSeq = () => sent().at(-1)?.seq ?? 0;

/** For a message: " and made <the timers> your code had started fire at once: ...", or "". */
function firedAtOnce(fired: number[], what: "reply" | "answer"): string {
  return fired.length > 0
    ? ` and made ${timersFired(fired)} your code had started fire at once: some ${what} always comes later than any limit you pick`
    : "";
}

/**
 * Runs `read` (a readBatch() in worker `w`'s scope) with the answer to its XREADGROUP held back,
 * as a busy network can, while every timer the learner's code started is made to fire (however
 * long its delay: no wait for it). A read given up on such a timer (a Promise.race with a
 * timeout) then returns while its answer is still held or still blocked in Redis, on every run,
 * whichever of the timer and Redis's end of the BLOCK would have come first; code that awaits
 * its read is released at once. `gaveUp` tells.
 */
async function readPastTimers<T>(
  w: { scope: Scope },
  read: () => Promise<T>,
): Promise<{ value: T; gaveUp: boolean; fired: string }> {
  const timers = scopeTimers(w.scope, { createdIn: ctx.target });
  let settledYet = false;
  let holding = false;
  let gaveUp = false;
  let fired: number[] = [];
  // The hold's end: what the message says of the timers is known only then.
  let held: Promise<void> = Promise.resolve();
  const slow = holdReply(
    (x) => x.name === "XREADGROUP" && x.scope === w.scope.name,
    () => {
      holding = true;
      held = fireUntilQuiet(timers, () => settledYet).then((delays) => {
        fired = delays;
        holding = false;
      });
      return held;
    },
  );
  try {
    const value = await read().finally(() => {
      settledYet = true;
      gaveUp = holding || !nothingInFlight();
    });
    await held;
    // What the message says of the learner's timers the check made fire.
    return { value, gaveUp, fired: firedAtOnce(fired, "reply") };
  } finally {
    slow.cancel();
    timers.stop();
  }
}

describe("reading a batch", () => {
  test("readBatch() takes up to COUNT new entries in one XREADGROUP, each a first delivery", async () => {
    const keys = stageFor("read");
    const c = await own();
    await c.xGroupCreate(keys.stream, keys.group, "0", { MKSTREAM: true });
    const docs = Array.from({ length: 7 }, (_, i) => `d${i}`);
    for (const doc of docs) await c.xAdd(keys.stream, "*", { doc });
    const w = await worker("reader");
    const openBefore = openLearnerConnections();
    const from = lastSeq();
    const options = { consumer: fresh("w"), count: 5, blockMs: 200, claimIdleMs: 60_000 };
    // Inside the worker's scope: a connection readBatch() opens for its read is the worker's too.
    const works = await call("readBatch()", () =>
      w.scope.run(() => exercise.readBatch(w.client, keys, options)),
    );
    const reads = sentBy(w.scope, from).filter((x) => x.name === "XREADGROUP");
    check(
      reads.length === 1,
      `readBatch() should read the batch with one XREADGROUP (COUNT 5); it sent ${reads.length}.`,
      2,
    );
    check(
      sameValue(
        works.map((x) => x.doc),
        docs.slice(0, 5),
      ),
      `With 7 entries waiting and count 5, readBatch() should return the first 5 documents in order; it returned ${JSON.stringify(works.map((x) => x.doc))}.`,
      2,
    );
    check(
      works.every((x) => x.deliveries === 1 && typeof x.id === "string"),
      `Each new entry is a first delivery: { id, doc, deliveries: 1 }; got ${JSON.stringify(works[0])}.`,
      2,
    );
    const quiet = stageFor("quiet");
    await c.xGroupCreate(quiet.stream, quiet.group, "0", { MKSTREAM: true });
    const started = performance.now();
    const quietFrom = lastSeq();
    const {
      value: none,
      gaveUp,
      fired,
    } = await readPastTimers(w, () =>
      call("readBatch() on a quiet stream", () =>
        w.scope.run(() => exercise.readBatch(w.client, quiet, { ...options, blockMs: 150 })),
      ),
    );
    const waited = performance.now() - started;
    // Before the time it took: a read given up on a timer can return within blockMs too.
    check(
      !gaveUp,
      `On a quiet stream readBatch() returned ${JSON.stringify(none)} while its XREADGROUP had not been answered yet (the check held the answer back${fired}): your code gave up on a timer of its own (a Promise.race with a timeout?). That read still runs in Redis and takes the next entry to arrive, leaving it pending under your consumer with nobody working on it until a sweep takes it over after claimIdleMs. Await the XREADGROUP itself: its BLOCK already bounds the wait.`,
      2,
    );
    // The BLOCK as sent, so a loaded machine cannot fail a right answer; the time as well, for
    // a wait made some other way.
    const block = blockOf(sentBy(w.scope, quietFrom).find((x) => x.name === "XREADGROUP"));
    check(
      (block === undefined || (block > 0 && block <= 150)) && waited < 150 + 3000,
      `On a quiet stream with blockMs = 150, readBatch() ${block === undefined ? "" : `sent BLOCK ${block} and `}returned after ${Math.round(waited)} ms: blockMs bounds how long a worker is deaf to a stop request and to a sweep that is due. Block for options.blockMs (XREADGROUP ... BLOCK <blockMs>), not a time of your own.`,
      2,
    );
    check(
      Array.isArray(none) && none.length === 0,
      `On a quiet stream readBatch() should return [] after blockMs; it returned ${JSON.stringify(none)}.`,
      2,
    );
    check(
      waited >= 100,
      `On a quiet stream readBatch() returned after ${Math.round(waited)} ms: wait up to blockMs (BLOCK) for new work instead of spinning.`,
      2,
    );
    // New work arriving while readBatch() waits: BLOCK answers at once, a timer only when it fires.
    const waitMs = 3000;
    let arrived = "";
    const answer = await answerToNewWork(
      () =>
        call("readBatch() while a new entry arrives", () =>
          w.scope.run(() => exercise.readBatch(w.client, quiet, { ...options, blockMs: waitMs })),
        ),
      async () => {
        arrived = fresh("arriving");
        await c.xAdd(quiet.stream, "*", { doc: arrived });
      },
      "XREADGROUP",
    );
    const got = Array.isArray(answer.value) ? answer.value.map((x) => x.doc) : answer.value;
    check(
      !answer.early && sameValue(got, [arrived]) && answer.delay < 1000,
      answer.early
        ? `With blockMs = ${waitMs} and no work, readBatch() returned ${JSON.stringify(got)} before the wait was over. Wait for new work with XREADGROUP ... BLOCK <blockMs>.`
        : `With blockMs = ${waitMs}, a new entry (${arrived}) was added while readBatch() waited; it returned ${JSON.stringify(got)} ${answer.delay} ms after the entry came. Wait in Redis (XREADGROUP ... BLOCK <blockMs>), which answers the moment an entry arrives; a timer that sleeps between reads leaves new work waiting until it fires.`,
      2,
    );
    // An error is not an empty batch: [] would send the worker's loop round again at once,
    // hammering a broken stage with nobody told.
    await c.xAdd(keys.stream, "*", { doc: fresh("orphaned") });
    await c.xGroupDestroy(keys.stream, keys.group);
    const refused = await within(
      settled(w.scope.run(() => exercise.readBatch(w.client, keys, options))),
      options.blockMs + 5000,
      "readBatch() with its group gone",
    );
    check(
      "error" in refused,
      `With the stage's group gone (XGROUP DESTROY, so Redis answers NOGROUP) and entries waiting, readBatch() returned ${JSON.stringify("value" in refused ? refused.value : undefined)}. An error from Redis is not "no work": a worker that hears [] reads again at once, round and round, and nobody learns the stage is broken. Let the error reject readBatch().`,
      2,
    );
    // Counted at the socket however they were made: a worker reads every few hundred ms for
    // days, so a connection left per read (or per refused read) runs the server out of them.
    const leaked = () => openLearnerConnections() - openBefore;
    check(
      await until(() => leaked() <= 0, 1000),
      `After 4 readBatch() calls (one refused with NOGROUP), ${leaked()} more connection(s) of your code are open than before them. Read on the client you are given, or close what you open for the read in a finally, so a refused read closes it too.`,
      2,
    );
  });

  test("readBatch() returns what its XREADGROUP took, however long the reply takes to come back", async () => {
    const keys = stageFor("slow-reply");
    const c = await own();
    await c.xGroupCreate(keys.stream, keys.group, "0", { MKSTREAM: true });
    const doc = fresh("slow");
    await c.xAdd(keys.stream, "*", { doc });
    const w = await worker("slow-reader");
    const options = { consumer: fresh("w"), count: 5, blockMs: 200, claimIdleMs: 60_000 };
    // Redis has handed the entry to the consumer, and its reply is slow to come back (a busy
    // network). The reply is held while a timer of the learner's own (a timeout raced against
    // the read) is still to fire: a read given up on it loses what Redis already handed over.
    const { value: got, fired } = await readPastTimers(w, () =>
      call("readBatch() with a slow reply", () =>
        w.scope.run(() => exercise.readBatch(w.client, keys, options)),
      ),
    );
    const docs = Array.isArray(got) ? got.map((x: { doc?: unknown }) => x?.doc) : got;
    check(
      sameValue(docs, [doc]),
      `readBatch() returned ${JSON.stringify(docs)} while Redis had handed ${doc} to consumer ${options.consumer}: the reply to its XREADGROUP was slow to come back (the check held it${fired}), and your code gave up on a timer of its own (a Promise.race with a timeout?). The losing read still ran in Redis: the entry is now pending under your consumer, and nobody works on it until a sweep takes it over after claimIdleMs. Await the XREADGROUP itself: its BLOCK already bounds the wait.`,
      2,
    );
  });

  test("sweep() sends one XAUTOCLAIM per call and carries its cursor past live entries to a crashed worker's", async () => {
    const keys = stageFor("sweep");
    const c = await own();
    // 25 entries a live worker is busy with, then 3 a crashed worker left behind with live ones
    // between them: an XPENDING over the claimed range lists those too, unless it asks for this
    // consumer's entries only. The live ones between are the sweeper's own batch in hand, more
    // of them than count, so even that XPENDING lists them: its COUNT must cover the whole range
    // one XAUTOCLAIM looks at (COUNT*10), not the claimed entries plus count.
    const live = (i: number) => `live${i}`;
    const stale = ["gone0", "gone1", "gone2"];
    const order = [...Array.from({ length: 25 }, (_, i) => live(i))];
    order.push("gone0", live(25), live(26), live(27), "gone1", live(28), "gone2");
    const busy = fresh("busy");
    const works = await delivered(keys, order, busy);
    const consumer = fresh("sweeper");
    // Live entries idle for a little less than claimIdleMs (60 s): a threshold passed in the
    // wrong unit (60 ms) takes them, whatever the machine's speed. RETRYCOUNT keeps their counts.
    const idle = (ids: string[], to: string) =>
      c.sendCommand([
        "XCLAIM",
        keys.stream,
        keys.group,
        to,
        "0",
        ...ids,
        "IDLE",
        "50000",
        "RETRYCOUNT",
        "1",
      ]);
    const isLive = (x: Work) => x.doc.startsWith("live");
    const inHand = (x: Work) => [live(25), live(26), live(27)].includes(x.doc);
    await idle(
      works.filter((x) => isLive(x) && !inHand(x)).map((x) => x.id),
      busy,
    );
    await idle(
      works.filter(inHand).map((x) => x.id),
      consumer,
    );
    for (const work of works.filter((x) => stale.includes(x.doc))) {
      await c.sendCommand([
        "XCLAIM",
        keys.stream,
        keys.group,
        fresh("crashed"),
        "0",
        work.id,
        "IDLE",
        "120000",
        "RETRYCOUNT",
        "3",
      ]);
    }
    const w = await worker("sweeper");
    const options = { consumer, count: 2, blockMs: 100, claimIdleMs: 60_000 };
    const found: Work[] = [];
    /** How many works each round returned. */
    const sizes: number[] = [];
    let cursor = "0-0";
    for (let round = 1; round <= 6; round++) {
      const from = lastSeq();
      const swept = await call(`sweep() round ${round}`, () =>
        w.scope.run(() => exercise.sweep(w.client, keys, options, cursor)),
      );
      const claims = sentBy(w.scope, from).filter((x) => x.name === "XAUTOCLAIM");
      check(
        claims.length === 1,
        `One sweep() call should send one XAUTOCLAIM (the loop calls sweep() again with the cursor it returns); round ${round} sent ${claims.length}. Looping over the pending list inside sweep(), or once per document, costs a round trip per document.`,
        2,
      );
      sizes.push(swept.works.length);
      found.push(...swept.works);
      cursor = swept.cursor;
      if (cursor === "0-0") break;
    }
    const strangers = found.filter((x) => !order.includes(x.doc));
    check(
      strangers.length === 0,
      `sweep() returned ${JSON.stringify(strangers)}, which is no entry it claimed. Build the works from XAUTOCLAIM's messages: an XPENDING over a range lists other consumers' entries too.`,
      2,
    );
    const claimedLive = found.filter((x) => x.doc.startsWith("live"));
    check(
      claimedLive.length === 0,
      `sweep() took ${claimedLive.length} entries a live worker holds (idle for 50 s, less than claimIdleMs, 60000 ms): pass claimIdleMs as XAUTOCLAIM's min-idle-time, in milliseconds as it is.`,
      2,
    );
    const largest = Math.max(...sizes);
    check(
      largest <= options.count,
      `sweep() returned ${largest} entries in one round with count ${options.count}: a sweep is one batch, at most \`count\` entries. Pass count as XAUTOCLAIM's COUNT; without one, Redis claims up to 100 at a time.`,
      2,
    );
    const docs = found.map((x) => x.doc).sort();
    const mine = await c.xPendingRange(keys.stream, keys.group, "-", "+", 100, { consumer });
    const hidden = works.filter(
      (x) => stale.includes(x.doc) && !docs.includes(x.doc) && mine.some((p) => p.id === x.id),
    );
    check(
      hidden.length === 0,
      `sweep() claimed ${hidden.map((x) => x.doc).join(", ")} (pending for your consumer now) but did not return it: no one works on it until claimIdleMs passes again. Your consumer's own batch in hand (live25 to live27, more than count) lies between the claimed entries, so an XPENDING over the claimed range for your consumer lists those too: give it a COUNT that covers the range (the claimed entries plus COUNT*10), or look up each claimed id.`,
      2,
    );
    check(
      sameValue(docs, stale),
      `Following the cursor it returns, sweep() should claim the crashed worker's 3 entries (after 25 live ones and between 4 more, with COUNT 2) exactly once; it claimed ${JSON.stringify(docs)}. XAUTOCLAIM looks at COUNT*10 entries per call: return its next cursor and start from the cursor you are given.`,
      2,
    );
    const justId = sentBy(w.scope).some(
      (x) => x.name === "XAUTOCLAIM" && x.args.some((a) => a.toUpperCase() === "JUSTID"),
    );
    check(
      found.every((x) => x.deliveries === 4),
      `Each claimed entry had been delivered 3 times, so this is its 4th delivery; sweep() said ${JSON.stringify(found.map((x) => x.deliveries))}.${justId ? " Your XAUTOCLAIM had JUSTID, which claims without counting a delivery: a poison entry claimed that way is never dead-lettered. Claim without JUSTID." : ""} Read the count with XPENDING (the dead-letter decision depends on it). Live workers' entries lie between the claimed ones: an XPENDING over the claimed range lists them too, so ask for this consumer's entries only (XPENDING ... <consumer>), or look up each claimed id.`,
      2,
    );
    check(
      (await pendingCount(c, keys.stream, keys.group)) === order.length,
      "sweep() must only claim: every entry should still be pending.",
      2,
    );
  });
});

describe("in flight", () => {
  test("inFlight() keeps exactly `limit` calls running while they are slow, never more, and reports each outcome", async () => {
    const items = Array.from({ length: 9 }, (_, i) => i);
    let running = 0;
    let most = 0;
    const started: number[] = [];
    const release = new Map<number, () => void>();
    const task = async (i: number) => {
      running++;
      most = Math.max(most, running);
      started.push(i);
      await new Promise<void>((resolve) => release.set(i, resolve));
      running--;
      if (i === 4) throw new Error("the model timed out");
      return i * 10;
    };
    const given = [...items];
    // The timers inFlight() starts are made to fire once 3 calls run: a call given up on a
    // timeout of any length (the model still works on it) shows at once, with no wait for it.
    const flight = scope("in-flight");
    const timers = scopeTimers(flight, { createdIn: ctx.target });
    // Stopped once fired, below; a test that fails before then must not leave it watching.
    onTestFinished(() => timers.stop());
    let fired: number[] = [];
    let over = false;
    const done = flight.run(() => call("inFlight()", () => exercise.inFlight(items, 3, task)));
    done
      .finally(() => {
        over = true;
      })
      .catch(() => {});
    // inFlight() settling before it started its calls (a TODO, a RangeError) is its own failure:
    // reported as it is, not as "started 0 calls".
    let ended = false;
    done.then(
      () => {},
      () => {
        ended = true;
      },
    );
    for (let n = 0; n < given.length; n++) {
      await eventually(
        () => ended || started.length > n || running >= 3,
        2000,
        `inFlight() started ${started.length} calls and none is running: start the next one as soon as one finishes.`,
        3,
      );
      if (ended) await done;
      if (n === 0) {
        try {
          fired = await fireUntilQuiet(timers, () => over);
        } finally {
          timers.stop();
        }
      }
      await sleep(10);
      if (!sameValue(items, given)) {
        fail(
          `inFlight() changed the items array it was given: with ${started.length} calls started, it holds ${JSON.stringify(items)} instead of ${JSON.stringify(given)}. The caller still needs it, to match each result to its item (the batch's entries): read the items by index (items[i], with a counter of the next index) and leave the array as it is, no shift() or splice().`,
          3,
        );
      }
      if (running < Math.min(3, given.length - n)) {
        fail(
          `With 3 allowed and calls that take long, inFlight() had only ${running} running at once: start up to \`limit\` at a time, so a slow model answers several documents together.`,
          3,
        );
      }
      if (most > 3) {
        fail(
          `inFlight() had ${most} calls running at once with a limit of 3: a batch of 500 would mean 500 requests to the model.${fired.length > 0 ? ` The check made ${timersFired(fired)} your code had started fire at once (some model call is always slower than any limit you pick), and your code then started more: a timeout that gives up on a call does not end it, the model still works on it.` : ""} Start a new one only when one finishes.`,
          3,
        );
      }
      // The latest started finishes first: results must still come back in the items' order.
      const next = started.findLast((i) => release.has(i));
      if (next === undefined) break;
      const resolve = release.get(next);
      release.delete(next);
      resolve?.();
    }
    const results = await done;
    check(most === 3, `inFlight() should run up to 3 at once; it ran ${most} at most.`, 3);
    const ok = results.map((r) => (r.status === "fulfilled" ? r.value : "rejected"));
    check(
      sameValue(ok, [0, 10, 20, 30, "rejected", 50, 60, 70, 80]),
      `inFlight() should settle every item in the items' order, a failure as { status: "rejected" } without stopping the others; it returned ${JSON.stringify(ok)}.`,
      3,
    );
    // A limit below 1 would start nothing and settle nothing: refused, and no task is run.
    for (const limit of [0, -1]) {
      let calls = 0;
      const outcome = await settled(
        within(
          Promise.resolve().then(() =>
            exercise.inFlight([1, 2, 3], limit, async (i: number) => {
              calls++;
              return i;
            }),
          ),
          2000,
          `inFlight() with a limit of ${limit}`,
        ),
      );
      if ("error" in outcome && outcome.error instanceof CheckFailure) throw outcome.error;
      check(
        "error" in outcome && calls === 0,
        `inFlight([1, 2, 3], ${limit}, task) ${"error" in outcome ? `ran task() ${calls} times before it rejected` : `resolved with ${JSON.stringify(Array.from(outcome.value ?? [], (r) => r?.status ?? "(empty slot)"))}${calls === 0 ? ", having run nothing" : ` after ${calls} calls`}`}. A limit below 1 cannot run anything: a caller that passed 0 (a setting left empty) would get a batch of results that never ran, or no results at all. Refuse it before starting anything: if (!(limit >= 1)) throw new RangeError(...).`,
        3,
      );
    }
    // A limit of 1 is one call at a time, not a limit below 1.
    const one = await settled(
      within(
        Promise.resolve().then(() => exercise.inFlight([1, 2, 3], 1, async (i: number) => i * 2)),
        2000,
        "inFlight() with a limit of 1",
      ),
    );
    if ("error" in one && one.error instanceof CheckFailure) throw one.error;
    const oneByOne = "error" in one ? undefined : Array.from(one.value ?? [], (r) => r?.status);
    check(
      !("error" in one) && oneByOne?.join() === "fulfilled,fulfilled,fulfilled",
      `inFlight([1, 2, 3], 1, task) ${"error" in one ? `rejected (${String(one.error)})` : `resolved with ${JSON.stringify(oneByOne)}`}: a limit of 1 runs the items one at a time; only a limit below 1 is refused (if (!(limit >= 1)) throw ...).`,
      3,
    );
    // A task that throws before it returns a promise (a client that validates its input first)
    // fails its item like a rejection does.
    const thrown = "the model refused the input";
    // With a limit below the number of items, and with one that covers them all (no shortcut
    // of calling task() on every item outside a try).
    for (const limit of [2, 5]) {
      const early = await settled(
        call(`inFlight([1, 2, 3], ${limit}) with a task that throws at once`, () =>
          exercise.inFlight([1, 2, 3], limit, (i: number) => {
            if (i === 1) throw new Error(thrown);
            return Promise.resolve(i * 10);
          }),
        ),
      );
      if (
        "error" in early &&
        !(early.error instanceof Error && early.error.message.includes(thrown))
      )
        throw early.error;
      const shape =
        "value" in early
          ? early.value?.map((r) => (r.status === "fulfilled" ? r.value : "rejected"))
          : `a rejection (${thrown})`;
      check(
        sameValue(shape, ["rejected", 20, 30]),
        `With a limit of ${limit} for 3 items, task() threw for the first item as it was called, before returning a promise; inFlight() should report that item as { status: "rejected" } and run the others; it returned ${JSON.stringify(shape)}. Call task() inside the try (await task(item)), not task(item).then(...) or items.map(task), which a throw skips.`,
        3,
      );
    }
    // Two batches at once (two stages in one process): each call keeps its own place in its
    // own items. Equal timers finish in the order they started, so the interleaving is fixed.
    const later = (x: string) => new Promise<string>((resolve) => setTimeout(resolve, 5, x));
    const [first, second] = await call("two inFlight() calls at the same time", () =>
      Promise.all([
        exercise.inFlight(["a0", "a1", "a2"], 2, later),
        exercise.inFlight(["b0", "b1", "b2", "b3", "b4"], 2, later),
      ]),
    );
    const values = (rs: PromiseSettledResult<string>[] | undefined) =>
      Array.from(rs ?? [], (r) => (r?.status === "fulfilled" ? r.value : r?.status));
    check(
      sameValue(values(first), ["a0", "a1", "a2"]) &&
        sameValue(values(second), ["b0", "b1", "b2", "b3", "b4"]),
      `Two inFlight() calls ran at the same time, over ["a0","a1","a2"] and ["b0",…,"b4"]; they returned ${JSON.stringify(values(first))} and ${JSON.stringify(values(second))}. Each call must keep its own counter and results (variables inside the function, not at module level), or one call skips or repeats the other's items.`,
      3,
    );
    // Equal items (one document twice in a batch): each result goes to the index it was taken
    // from, not to the first item equal to it. Each call gets the index it has in `items`.
    const twins = ["doc-7", "doc-7", "doc-8", "doc-7"];
    let n = 0;
    const numbered = await call("inFlight() over equal items", () =>
      exercise.inFlight(twins, 2, async (x: string) => `${x}#${n++}`),
    );
    const slots = Array.from({ length: twins.length }, (_, i) => numbered?.[i]?.status);
    const empty = slots.flatMap((status, i) => (status === undefined ? [i] : []));
    check(
      empty.length === 0,
      `inFlight(${JSON.stringify(twins)}, 2, task) returned no result for item${empty.length > 1 ? "s" : ""} ${empty.join(" and ")}: results ${JSON.stringify(slots.map((st) => st ?? "(empty slot)"))}. Two items can be equal (the same document delivered twice in a batch): put each result at the index you took the item from (const i = next++; results[i] = ...), not at items.indexOf(item), which finds the first equal one.`,
      3,
    );
  });
});

/** A server-side script: the guard and the writes inside it run as one step, like a MULTI. */
const SCRIPTS = ["EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL"];
const isScript = (c: SentCommand) => SCRIPTS.includes(c.name);

/** Every MULTI block one scope sent, with the commands inside. */
function transactions(commands: SentCommand[]): SentCommand[][] {
  const blocks = new Map<number, SentCommand[]>();
  for (const c of commands) {
    if (c.multi === undefined || c.name === "MULTI") continue;
    blocks.set(c.multi, [...(blocks.get(c.multi) ?? []), c]);
  }
  return [...blocks.values()].filter((b) => b.some((c) => c.name === "EXEC"));
}

async function statusOf(keys: StageKeys, doc: string): Promise<Record<string, unknown>> {
  const json = await (await own()).hGet(keys.status, doc);
  try {
    return JSON.parse(json ?? "null") ?? {};
  } catch {
    return {};
  }
}

describe("committing a batch", () => {
  test("commitBatch() hands the whole batch on in one MULTI: N XADDs, ONE XACK of N ids, status hash and events", async () => {
    const keys = stageFor("commit");
    const docs = ["a", "b", "c", "d", "e"].map((d) => fresh(d));
    const works = await delivered(keys, docs, fresh("w"));
    const events: Record<string, unknown>[] = [];
    const subscriber = await checkClient("events");
    await subscriber.subscribe(keys.channel, (m) => {
      events.push(JSON.parse(m));
    });
    const w = await worker("committer");
    const from = lastSeq();
    const outcomes = works.map((work) => ({ work, result: resultFor(work.doc) }));
    const startedAt = Date.now();
    const committed = await call("commitBatch()", () =>
      exercise.commitBatch(w.client, keys, outcomes),
    );
    const endedAt = Date.now();
    const mine = sentBy(w.scope, from);
    const blocks = transactions(mine);
    const scripts = mine.filter(isScript);
    const adds = (b: SentCommand[]) => b.filter((c) => c.name === "XADD").length;
    const outside = mine.filter((c) => c.multi === undefined && ["XADD", "XACK"].includes(c.name));
    check(
      outside.length === 0 && blocks.length + scripts.length === 1,
      `The hand-off of a batch should be one MULTI/EXEC; commitBatch() sent ${blocks.length} transactions${scripts.length > 0 ? `, ${scripts.length} scripts` : ""} and ${outside.length} XADD/XACK outside any. One transaction per batch is what makes a batch one round trip, and all-or-nothing if the worker dies in the middle.`,
      2,
    );
    // The news belongs to the hand-off: published after EXEC, a worker that dies in between
    // has handed documents on that no dashboard hears about, and the next stage's events can
    // overtake them.
    const loose = mine.filter(
      (c) => c.name === "PUBLISH" && c.multi === undefined && c.args[1] === keys.channel,
    );
    check(
      loose.length === 0,
      `commitBatch() sent ${loose.length} PUBLISH of status events outside its transaction: a worker that dies between EXEC and them has handed documents on with no event, and the next stage's "done" can arrive first. Queue each PUBLISH inside the MULTI, with its HSET of the latest status.`,
      2,
    );
    // What a script runs inside is not on the wire: its effects are checked below.
    if (scripts.length === 0) {
      const block = blocks[0] ?? [];
      const acks = block.filter((c) => c.name === "XACK");
      check(
        adds(block) === 5,
        `The transaction should carry one XADD to the next stage per document (5); it had ${adds(block)}.`,
        2,
      );
      check(
        acks.length === 1 && acks[0]?.args.length === 3 + 5,
        `Acknowledge the batch with ONE XACK carrying all 5 ids; the transaction had ${acks.length} XACK command(s) with ${acks.map((a) => a.args.length - 3).join(", ") || "no"} ids.`,
        2,
      );
    }
    const c = await own();
    check(
      sameValue(await queuedOn(keys.next ?? ""), docs),
      `Each document should be on the next stage once, in order; it holds ${JSON.stringify(await queuedOn(keys.next ?? ""))}.`,
      2,
    );
    check(
      (await pendingCount(c, keys.stream, keys.group)) === 0,
      "Every handed-on entry should be acknowledged.",
      2,
    );
    for (const doc of docs) {
      const stored = await c.hGet(keys.doc(doc), keys.stage);
      check(
        sameValue(JSON.parse(stored ?? "null"), JSON.parse(resultFor(doc))),
        `The document's hash should hold the result in the field "${keys.stage}"; it has ${stored}.`,
        2,
      );
      const status = await statusOf(keys, doc);
      check(
        status.state === "done" && status.stage === keys.stage && status.doc === doc,
        `The status hash should say ${doc} is done at ${keys.stage}; it says ${JSON.stringify(status)}.`,
        2,
      );
      const late = wrongEventTime(status.at, startedAt, endedAt);
      check(
        late === undefined,
        `The status of ${doc}, ${JSON.stringify(status)}, has the wrong time: ${late}. A status event is { doc, stage, state, at } with at = Date.now() when the stage finished.`,
        2,
      );
    }
    await eventually(() => events.length >= 5, 2000, "The 5 status events were not published.", 2);
    const heard = events.find((e) => e.doc === docs[0]);
    const lateNews = wrongEventTime(heard?.at, startedAt, endedAt);
    check(
      lateNews === undefined,
      `The event published for ${docs[0]}, ${JSON.stringify(heard)}, has the wrong time: ${lateNews}.`,
      2,
    );
    check(
      sameValue(committed?.handedOff?.slice().sort(), docs.slice().sort()) &&
        committed.deadLettered?.length === 0 &&
        committed.duplicates?.length === 0,
      `commitBatch() should return { handedOff: the 5 documents, deadLettered: [], duplicates: [] }; it returned ${JSON.stringify(committed)}.`,
      2,
    );
    // The last stage (embed) has no next stage: its batch is stored and acknowledged, no XADD.
    const last = { ...stageFor("last"), stage: "embed" as const, next: null };
    const [final] = await delivered(last, [fresh("f")], fresh("w"));
    const lastFrom = lastSeq();
    const ended = await settled(
      within(
        Promise.resolve().then(() =>
          exercise.commitBatch(w.client, last, [
            { work: final as Work, result: resultFor((final as Work).doc) },
          ]),
        ),
        5000,
        "commitBatch() at the last stage",
      ),
    );
    const queued = sentBy(w.scope, lastFrom).filter((x) => x.name === "XADD");
    check(
      "value" in ended &&
        queued.length === 0 &&
        (await pendingCount(c, last.stream, last.group)) === 0 &&
        (await c.hGet(last.doc((final as Work).doc), "embed")) != null,
      `At the last stage (keys.next is null) commitBatch() ${"error" in ended ? `failed (${String((ended.error as Error)?.message ?? ended.error).replace(/\.$/, "")})` : queued.length > 0 ? `sent XADD ${queued[0]?.args[1]}` : "did not store the result and acknowledge the entry"}. There is no next stage there: store the result, acknowledge and announce, and queue nothing (an XADD only when keys.next is set).`,
      2,
    );
  });

  test("commitBatch() returns only once Redis has answered its EXEC, however long that takes", async () => {
    const keys = stageFor("slow-exec");
    const docs = ["s1", "s2", "s3"].map((d) => fresh(d));
    const works = await delivered(keys, docs, fresh("w"));
    const w = await worker("slow-exec");
    const outcomes = works.map((work) => ({ work, result: resultFor(work.doc) }));
    // The answer to the EXEC (or the script) is held, as a busy network can, while every timer
    // the learner's code started is made to fire: a commit raced against a timeout of any length
    // shows at once, with no wait for it; one that awaits its EXEC simply waits.
    const timers = scopeTimers(w.scope, { createdIn: ctx.target });
    let outcome: { value: Committed } | { error: unknown } | undefined;
    let fired: number[] = [];
    let whileHeld: { outcome: typeof outcome; sent: SentCommand[] } | undefined;
    let held: Promise<void> = Promise.resolve();
    const slow = holdReply(
      (x) => x.scope === w.scope.name && (x.name === "EXEC" || isScript(x)),
      (x) => {
        held = fireUntilQuiet(timers, () => outcome !== undefined).then((delays) => {
          fired = delays;
          whileHeld = { outcome, sent: sentBy(w.scope, x.seq).filter((c) => c.name !== "QUIT") };
        });
        return held;
      },
    );
    try {
      const committing = settled(
        w.scope.run(() =>
          Promise.resolve().then(() => exercise.commitBatch(w.client, keys, outcomes)),
        ),
      );
      committing.then(
        (o) => {
          outcome = o;
        },
        () => {},
      );
      outcome = await within(committing, 5000, "commitBatch() to finish");
      await held;
    } finally {
      slow.cancel();
      timers.stop();
    }
    const made = firedAtOnce(fired, "answer");
    const early = whileHeld?.outcome;
    check(
      early === undefined || !("value" in early),
      `commitBatch() returned ${JSON.stringify(early && "value" in early ? early.value : undefined)} while Redis had not yet answered its EXEC (the check held the answer back${made}). The caller then believes the batch committed, but a transaction is done only when EXEC answers: had it failed (a WatchError from a competitor, a dropped connection), nothing would look again or report it. Await exec() itself; if you want a time limit, let it end in an error, never in a report of success.`,
      2,
    );
    const again = whileHeld?.sent ?? [];
    check(
      again.length === 0,
      `While Redis had not yet answered commitBatch()'s EXEC (the check held the answer back${made}), your code sent ${again.map((c) => c.name).join(", ")}: it started over before it knew whether the first transaction had committed. A retry belongs after a WatchError (EXEC answered: nothing done), never after a timer: the first transaction may well commit, and the second then finds every document done and reports them as duplicates. Await exec() itself.`,
      2,
    );
    // A deadline that rejects fails the batch loudly: its entries stay pending for a retry.
    if (early !== undefined && "error" in early) return;
    if (outcome === undefined || "error" in outcome) {
      fail(
        `commitBatch() rejected (${String((outcome?.error as Error)?.message ?? outcome?.error)}) once Redis had answered its EXEC, which went through.`,
        2,
      );
    }
    check(
      sameValue(outcome.value?.handedOff?.slice().sort(), docs.slice().sort()),
      `With its EXEC answered late, commitBatch() should report handedOff: the 3 documents; it returned ${JSON.stringify(outcome.value)}.`,
      2,
    );
  });

  test("a poison document and a failed one in a batch: the poison dead-lettered once with its delivery count, the failed one left pending", async () => {
    const keys = stageFor("poison");
    const docs = ["ok1", "poison", "flaky", "ok2"].map((d) => fresh(d));
    // The poison document was uploaded twice, and both copies failed for the last time.
    const works = (await delivered(keys, [...docs, docs[1] ?? ""], fresh("w"))).map((w, i) =>
      i === 1 || i === 4 ? { ...w, deliveries: 4 } : w,
    );
    const [ok1, poison, flaky, ok2, poisonCopy] = works as [Work, Work, Work, Work, Work];
    const reason = "gave up at ner after 4 deliveries: the text exceeds the context window";
    const events: Record<string, unknown>[] = [];
    const subscriber = await checkClient("events");
    await subscriber.subscribe(keys.channel, (m) => {
      events.push(JSON.parse(m));
    });
    const w = await worker("poison");
    const startedAt = Date.now();
    const committed = await call("commitBatch()", () =>
      exercise.commitBatch(w.client, keys, [
        { work: ok1, result: resultFor(ok1.doc) },
        { work: poison, error: reason, final: true },
        { work: flaky, error: "the model timed out", final: false },
        { work: ok2, result: resultFor(ok2.doc) },
        { work: poisonCopy, error: reason, final: true },
      ]),
    );
    const endedAt = Date.now();
    const c = await own();
    const pending = await c.xPendingRange(keys.stream, keys.group, "-", "+", 10);
    check(
      sameValue(
        pending.map((p) => p.id),
        [flaky.id],
      ),
      `Only the entry whose error is not final should stay pending (so it comes back for a retry); pending now: ${pending.length === 0 ? "nothing: the failed document was acknowledged and is lost" : JSON.stringify(pending.map((p) => p.id))}.`,
      2,
    );
    check(
      sameValue(await queuedOn(keys.next ?? ""), [ok1.doc, ok2.doc]),
      `Only the two finished documents go on; the next stage holds ${JSON.stringify(await queuedOn(keys.next ?? ""))}.`,
      2,
    );
    const letters = (await c.xRange(keys.dead, "-", "+")) ?? [];
    check(
      letters.length === 1 && letters[0]?.message.doc === poison.doc,
      `One dead letter for the poison document; the dead-letter stream holds ${letters.length}.${letters.length > 1 ? " The batch held it twice (a second upload, failed for the last time too): the second copy is a duplicate like any other, only acknowledged. Keep the set of documents seen in this batch for the dead-lettered ones too." : ""}`,
      2,
    );
    const letter = letters[0]?.message ?? {};
    check(
      letter.reason === reason &&
        Number(letter.deliveries) === 4 &&
        letter.stage === keys.stage &&
        letter.entry === poison.id,
      `The dead letter should carry { doc, stage, reason, entry: the stream entry's id (${poison.id}), deliveries: 4 }; it carries ${JSON.stringify(letter)}.`,
      2,
    );
    const mark = await c.hGet(keys.doc(poison.doc), "dead");
    check(
      mark === keys.stage,
      `The poison document's hash should hold the mark dead = "${keys.stage}" (the stage it died at), written in the same MULTI as its dead letter: that mark is what tells a late copy of the document (from a worker thought dead, or a second upload) that there is nothing left to do. Its hash holds dead = ${JSON.stringify(mark)}.`,
      2,
    );
    const status = await statusOf(keys, poison.doc);
    check(
      status.state === "dead" && status.reason === reason,
      `The status hash should say the poison document is dead, with its reason; it says ${JSON.stringify(status)}.`,
      2,
    );
    const late = wrongEventTime(status.at, startedAt, endedAt);
    check(
      late === undefined,
      `The "dead" status of the poison document, ${JSON.stringify(status)}, has the wrong time: ${late}.`,
      2,
    );
    await eventually(
      () => events.some((e) => e.doc === poison.doc && e.state === "dead" && e.reason === reason),
      2000,
      `No "dead" status event for the poison document was published on the channel (events seen: ${JSON.stringify(events.map((e) => `${e.doc}:${e.state}`))}): a dashboard learns of the dead letter only from it. PUBLISH it in the same MULTI as the status hash.`,
      2,
    );
    check(
      sameValue(committed?.deadLettered, [poison.doc]),
      `commitBatch() should report deadLettered: [the poison document]; it returned ${JSON.stringify(committed)}.`,
      2,
    );
    // A batch in which every call failed (the model is down): nothing to commit, nothing to
    // acknowledge. An XACK with no ids, or a MULTI around nothing, is an error from Redis.
    const retried = await call("commitBatch() of a batch whose every call failed", () =>
      exercise.commitBatch(w.client, keys, [
        { work: { ...flaky, deliveries: 2 }, error: "the model timed out", final: false },
      ]),
    );
    const still = await c.xPendingRange(keys.stream, keys.group, "-", "+", 10);
    check(
      sameValue(
        still.map((p) => p.id),
        [flaky.id],
      ) &&
        [retried?.handedOff, retried?.deadLettered, retried?.duplicates].every(
          (ids) => Array.isArray(ids) && ids.length === 0,
        ),
      `commitBatch() of a batch whose only outcome is an error that is not final should do nothing and return { handedOff: [], deadLettered: [], duplicates: [] }, the entry left pending; it returned ${JSON.stringify(retried)}, and pending now is ${JSON.stringify(still.map((p) => p.id))}.`,
      2,
    );
  });

  test("a duplicate in a batch and a document done already: each handed on once, every entry acknowledged", async () => {
    const keys = stageFor("dup");
    const [x, y, z, v] = ["x", "y", "z", "v"].map((d) => fresh(d)) as [
      string,
      string,
      string,
      string,
    ];
    // x twice (a redelivered copy), y finished already by a worker thought dead, v dead-lettered
    // already at this stage by one.
    const works = await delivered(keys, [x, y, x, z, v], fresh("w"));
    const c = await own();
    await c.hSet(keys.doc(y), keys.stage, resultFor(y));
    await c.hSet(keys.doc(v), "dead", keys.stage);
    // y has moved on since: its latest status is the next stage's.
    const later = JSON.stringify({ doc: y, stage: "classify", state: "done", at: Date.now() });
    await c.hSet(keys.status, y, later);
    const events: Record<string, unknown>[] = [];
    const subscriber = await checkClient("events");
    await subscriber.subscribe(keys.channel, (m) => {
      events.push(JSON.parse(m));
    });
    const w = await worker("dup");
    const committed = await call("commitBatch()", () =>
      exercise.commitBatch(
        w.client,
        keys,
        works.map((work) => ({ work, result: resultFor(work.doc) })),
      ),
    );
    const next = await queuedOn(keys.next ?? "");
    check(
      twice(next).length === 0 && !next.includes(y) && !next.includes(v),
      `Each document should reach the next stage once: ${twice(next).length > 0 ? `${twice(next).join(", ")} was queued twice (the same document twice in one batch)` : next.includes(y) ? `${y} was queued again although its result was there already` : `${v} was handed on although its hash says it was dead-lettered already (field "dead")`}. Check each document's hash for the stage's result and for "dead" before handing it on, and skip a document already handed on in this batch.`,
      2,
    );
    check(
      sameValue(next.slice().sort(), [x, z].sort()),
      `The next stage should hold ${x} and ${z}; it holds ${JSON.stringify(next)}.`,
      2,
    );
    check(
      (await pendingCount(c, keys.stream, keys.group)) === 0,
      "Every entry, the duplicates too, should be acknowledged: nothing is left to do for them.",
      2,
    );
    check(
      sameValue(committed?.duplicates?.slice().sort(), [x, y, v].sort()),
      `commitBatch() should report the three skipped copies (${x}, ${y}, ${v}) as duplicates; it returned ${JSON.stringify(committed)}.`,
      2,
    );
    await eventually(() => events.length >= 2, 2000, "The status events were not published.", 2);
    await sleep(100);
    const told = (doc: string) => events.filter((e) => e.doc === doc).length;
    const status = await c.hGet(keys.status, y);
    check(
      told(x) === 1 && told(y) === 0 && told(v) === 0 && status === later,
      `A copy that is only acknowledged tells no one anything: ${x} (twice in the batch) should get one status event and ${y} and ${v} (done already) none; they got ${told(x)}, ${told(y)} and ${told(v)}${status === later ? "" : `, and ${y}'s latest status, which said it was done at classify, now says ${status}`}. A second event counts as a duplicate in the audit, and an old one sent late sets a dashboard back.`,
      2,
    );
    // A batch of nothing but a copy of a finished document: nothing to commit, yet the copy
    // must be acknowledged, or every sweep claims it again.
    const [copy] = await delivered(keys, [y], fresh("w"));
    const alone = await call("commitBatch() of a batch holding only a finished document", () =>
      exercise.commitBatch(w.client, keys, [{ work: copy as Work, result: resultFor(y) }]),
    );
    const left = await pendingCount(c, keys.stream, keys.group);
    check(
      left === 0 && sameValue(alone?.duplicates, [y]),
      `A batch held only a new entry for ${y}, whose result was there already: commitBatch() should acknowledge it (an XACK, though there is nothing to hand on) and report it as a duplicate; it returned ${JSON.stringify(alone)} and ${left} entr${left === 1 ? "y is" : "ies are"} still pending, so every sweep claims it again.`,
      2,
    );
  });

  // The batch's last document is one to hand on, or one to dead-letter: a WATCH that leaves out
  // the dead-lettered documents lets a dead letter follow a competitor's hand-off.
  test.each([
    { last: "handed on", poison: false },
    { last: "dead-lettered", poison: true },
  ])(
    "a competitor commits the same documents while your transaction is on its way (your last one $last): nothing twice",
    async ({ poison }) => {
      const keys = stageFor("race");
      const docs = ["p", "q", "r"].map((d) => fresh(d));
      const works = await delivered(keys, docs, fresh("slow"));
      const slow = await worker("slow");
      const fast = await worker("fast");
      const outcomes: Outcome[] = works.map((work, i) =>
        poison && i === works.length - 1
          ? { work, error: "unreadable scan", final: true }
          : { work, result: resultFor(work.doc) },
      );
      // The competitor hands the last document on: it got a result where this worker gave up.
      const last = works.at(-1) as Work;
      const raced = { work: last, result: resultFor(last.doc) };
      // Once the slow worker has read the documents, before the next thing it sends (its WATCH if
      // it watches only then, else its MULTI or first write), the competitor commits the batch's
      // LAST document: only a WATCH sent before the reads and covering every document voids the
      // slow worker's transaction.
      const docKeys = new Set(docs.map((d) => keys.doc(d)));
      const readsDoc = (c: SentCommand) =>
        c.name !== "WATCH" && c.args.slice(1).some((a) => docKeys.has(a));
      // A competitor that commits `work` once the slow worker, `armed` (it sees each command),
      // has read a document and is about to send what follows the reads.
      const competeAfterReads = (armed: (c: SentCommand) => boolean, work: Work) => {
        let read = false;
        return beforeCommand(
          (c) => {
            if (c.scope !== slow.scope.name || !armed(c)) return false;
            // A script reads and writes in one step: the competitor can only come before it.
            if (isScript(c)) return true;
            if (readsDoc(c)) {
              read = true;
              return false;
            }
            return (
              read ||
              c.name === "MULTI" ||
              (c.multi === undefined && ["XADD", "XACK", "HSET"].includes(c.name))
            );
          },
          async () => {
            await call("commitBatch() by a competing worker", () =>
              exercise.commitBatch(fast.client, keys, [{ work, result: resultFor(work.doc) }]),
            );
          },
        );
      };
      const competitor = competeAfterReads(() => true, raced.work);
      // Once its EXEC was refused and it has read the documents again, the competitor commits the
      // batch's second document too: EXEC clears every WATCH, so only a retry that WATCHes again
      // before it reads again is voided a second time. (A script is never refused: no second.)
      const second = works[1] as Work;
      let refused = false;
      const again = competeAfterReads((c) => {
        if (!competitor.hasFired() || refused) return refused;
        refused = c.name === "EXEC";
        return false;
      }, second);
      const from = lastSeq();
      const committed = await call("commitBatch() racing a competitor", () =>
        exercise.commitBatch(slow.client, keys, outcomes),
      );
      competitor.cancel();
      again.cancel();
      check(competitor.hasFired(), "commitBatch() wrote nothing at all.", 2);
      // The documents the competitor committed: the last one, and the second one after a retry.
      const theirs = again.hasFired() ? [second.doc, raced.work.doc] : [raced.work.doc];
      const next = await queuedOn(keys.next ?? "");
      const deadLetters = await queuedOn(keys.dead);
      // WATCH guards only the transactions of the connection that sent it: a WATCH on a
      // connection that never sends EXEC (a duplicate(), an isolated client) guards nothing.
      const since = sent((c) => c.seq > from);
      const execOn = new Set(since.filter((c) => c.name === "EXEC").map((c) => c.conn));
      const watchAlone = since.some((c) => c.name === "WATCH" && !execOn.has(c.conn));
      check(
        !watchAlone || (deadLetters.length === 0 && twice(next).length === 0),
        `Two workers committed ${raced.work.doc}: the competitor committed it right after your reads, and your transaction went through all the same, so it is ${deadLetters.length > 0 ? "both on the next stage and among the dead letters" : "on the next stage twice"}. Your WATCH went on another connection than your MULTI (a duplicate(), an isolated client): WATCH guards only the transactions of the connection that sent it. Send the WATCH, the reads and the MULTI on the same client.`,
        2,
      );
      check(
        deadLetters.length === 0,
        `Your commitBatch() dead-lettered ${deadLetters.join(", ")}, which the competitor had handed on right after your reads: the document is now both on the next stage and among the dead letters. WATCH every document of the batch, the ones you dead-letter too, before reading any of them, so EXEC fails (WatchError) when one changed; then look again.`,
        2,
      );
      const execs = sentBy(slow.scope, from).filter((c) => c.name === "EXEC").length;
      check(
        twice(next).length === 0 || twice(next).includes(raced.work.doc),
        `Two workers committed ${second.doc} and it reached the next stage twice: your EXEC was refused (WatchError), your retry read the documents again, the competitor committed ${second.doc} right after that read, and your retry's EXEC went through all the same. EXEC clears every WATCH, refused or not: each try must WATCH every document again before it reads them.`,
        2,
      );
      check(
        twice(next).length === 0,
        execs > 1
          ? `Two workers committed ${raced.work.doc} and ${twice(next).join(", ")} reached the next stage twice: the competitor committed it right after your reads, your EXEC was refused (WatchError), and your retry committed what the first look had seen. After a WatchError, WATCH and read every document again: the look is what changed.`
          : `Two workers committed ${raced.work.doc} and ${twice(next).join(", ")} reached the next stage twice: yours read the documents, the competitor committed ${raced.work.doc} right after that read, then yours committed too. WATCH every document of the batch (not only the first) before reading any of them, so EXEC fails (WatchError) when one changed; then look again.`,
        2,
      );
      check(
        (await pendingCount(await own(), keys.stream, keys.group)) === 0,
        "After the race every entry should be acknowledged: when EXEC fails with WatchError, read the documents again and commit the batch (the competitor's document as a duplicate).",
        2,
      );
      check(
        sameValue(next.slice().sort(), docs.slice().sort()) &&
          // As a set: how many times each is reported is the next check's business.
          sameValue([...new Set(committed?.duplicates)].sort(), theirs.slice().sort()),
        `After the race each document should be on the next stage once and your commitBatch() should report ${theirs.join(" and ")} (committed by the competitor) as its only duplicate${theirs.length > 1 ? "s" : ""}; the next stage holds ${JSON.stringify(next)} and it returned ${JSON.stringify(committed)}.`,
        2,
      );
      // What the retry reports is what the transaction that ran did, not a sum of every look.
      const ours = docs.filter((d) => !theirs.includes(d));
      check(
        sameValue(committed?.handedOff.slice().sort(), ours.slice().sort()) &&
          sameValue(committed?.duplicates.slice().sort(), theirs.slice().sort()) &&
          committed?.deadLettered.length === 0,
        `After the race your commitBatch() should report handedOff ${JSON.stringify(ours)} and duplicates ${JSON.stringify(theirs)}, once each (what the EXEC that ran did); it returned ${JSON.stringify(committed)}. The refused first attempt did nothing: start each attempt with empty lists.`,
        2,
      );
    },
  );

  // Killed just before the acknowledgement, or just before the first XADD: wherever a split
  // hand-off is half done.
  test.each(["XACK", "XADD"])(
    "a worker killed before its %s while committing a batch leaves it whole for the next worker: nothing lost, nothing twice",
    async (step) => {
      const keys = stageFor("crash");
      const docs = ["k1", "k2", "k3", "k4"].map((d) => fresh(d));
      const works = await delivered(keys, docs, fresh("doomed"));
      const doomed = await worker("doomed");
      const outcomes = works.map((work) => ({ work, result: resultFor(work.doc) }));
      // A script holds every step: killed before it, the worker did nothing.
      const crash = beforeCommand(
        (c) => c.scope === doomed.scope.name && (c.name === step || isScript(c)),
        "crash",
      );
      // A dead process returns nothing; code that retries forever is cut off like one.
      let refused: unknown;
      await Promise.race([
        doomed.scope
          .run(() => exercise.commitBatch(doomed.client, keys, outcomes))
          .catch((error: unknown) => {
            refused = error;
          }),
        crash.fired.then(() => sleep(2000)),
      ]);
      crash.cancel();
      if (!crash.hasFired()) failIfNotWritten(refused);
      check(crash.hasFired(), `commitBatch() sent no ${step}.`, 2);
      const c = await own();
      const half = await queuedOn(keys.next ?? "");
      // The next worker takes over what is still pending, as the sweep would.
      const pending = await c.xPendingRange(keys.stream, keys.group, "-", "+", 10);
      const next = await worker("next");
      const left = works.filter((work) => pending.some((p) => p.id === work.id));
      await call("commitBatch() by the next worker", () =>
        exercise.commitBatch(
          next.client,
          keys,
          left.map((work) => ({ work: { ...work, deliveries: 2 }, result: resultFor(work.doc) })),
        ),
      );
      const after = await queuedOn(keys.next ?? "");
      check(
        twice(after).length === 0,
        `Killed before its ${step}, the worker had already queued ${half.length} documents on the next stage (${half.length > 0 ? "the hand-off was not one transaction" : ""}); the next worker handed ${twice(after).join(", ")} on again. Put the XADDs, the result and the XACK in one MULTI: a transaction that never reaches EXEC does nothing.`,
        2,
      );
      check(
        sameValue(after.slice().sort(), docs.slice().sort()),
        `After the crash and the next worker's commit, each of the 4 documents should be on the next stage once; it holds ${JSON.stringify(after)}${left.length < works.length ? `, and ${works.length - left.length} entries were acknowledged before the crash without being handed on: lost` : ""}.`,
        2,
      );
    },
  );
});

test("commitBatch() rejects a commit Redis refuses, rather than retrying it for ever", async () => {
  const keys = stageFor("broken");
  const works = await delivered(keys, [fresh("b1"), fresh("b2")], fresh("w"));
  const c = await own();
  // The next stage's stream is broken (a plain string under its name): the XADD fails with
  // WRONGTYPE on every try, so only a WatchError may send commitBatch() round again.
  await c.set(keys.next ?? "", "not a stream");
  const client = await learnerClient();
  let outcome: unknown;
  let rejected = false;
  try {
    outcome = await within(
      Promise.resolve().then(() =>
        exercise.commitBatch(
          client,
          keys,
          works.map((work) => ({ work, result: resultFor(work.doc) })),
        ),
      ),
      3000,
      "commitBatch() to finish",
    );
  } catch (error) {
    failIfNotWritten(error);
    if (error instanceof CheckFailure) {
      // Mended, so a loop that retries any error ends instead of running on after the check.
      await c.del(keys.next ?? "");
      fail(
        "The next stage's stream was broken (a plain string under its name, so the XADD fails with WRONGTYPE on every try), and commitBatch() had not returned 3 s later: it retries errors that no retry can fix. Start over only on WatchError (a competitor changed a document) and let every other error reject.",
        2,
      );
    }
    rejected = true;
  }
  check(
    rejected,
    `The next stage's stream was broken (a plain string under its name, so the XADD fails with WRONGTYPE), yet commitBatch() resolved to ${JSON.stringify(outcome)}: the caller believes the batch committed. Start over only on WatchError and let every other error reject.`,
    2,
  );
});

describe("trimming", () => {
  test("trim() removes what every group has finished with, and never a pending or unread entry", async () => {
    const c = await own();
    const stream = freshKey("trim");
    const [one, two] = [fresh("g1"), fresh("g2")];
    await c.xGroupCreate(stream, one, "0", { MKSTREAM: true });
    await c.xGroupCreate(stream, two, "0");
    const ids: string[] = [];
    const batch = c.multi();
    for (let i = 0; i < 400; i++) batch.xAdd(stream, "*", { doc: `d${i}` });
    ids.push(...((await batch.exec()) as unknown as string[]));
    // Group one read everything and acknowledged all but entry 250 and the last 50.
    await c.xReadGroup(one, "w", { key: stream, id: ">" }, { COUNT: 400 });
    await c.xAck(stream, one, [...ids.slice(0, 250), ...ids.slice(251, 350)]);
    // Group two has read only 300 entries, and acknowledged them all.
    await c.xReadGroup(two, "w", { key: stream, id: ">" }, { COUNT: 300 });
    await c.xAck(stream, two, ids.slice(0, 300));
    const w = await worker("trimmer");
    const removed = await call("trim()", () => exercise.trim(w.client, stream));
    const left = ((await c.xRange(stream, "-", "+")) ?? []).map((e) => e.id);
    const floor = ids[250] as string;
    const kept = ids.filter((id) => compareIds(id, floor) >= 0);
    const lost = kept.filter((id) => !left.includes(id));
    check(
      lost.length === 0,
      `trim() removed ${lost.length} entries a group still needs: ${left.length === 0 ? "nothing is left" : `the oldest entry left is number ${ids.indexOf(left[0] as string) + 1}`}, but the 251st is still pending in group one (and group two has not read past the 300th). Trim with MINID at the lowest of every group's floor (its oldest pending entry, else its last-delivered id), never a higher one, and never MAXLEN, which counts entries, not what was acknowledged.`,
      4,
    );
    const below = ids.length - left.length;
    check(
      below >= 125,
      `Every group is finished with the first 250 entries, but trim() removed only ${below}: memory grows without end. Find the oldest pending entry of every group (XPENDING) and what each has read (XINFO GROUPS last-delivered-id), then XTRIM MINID the lowest.`,
      4,
    );
    check(
      removed === below,
      `trim() should return how many entries it removed (${below}); it returned ${removed}.`,
      4,
    );
  });

  test("trim() orders entry ids as numbers, and keeps what a group has not read yet", async () => {
    const c = await own();
    const asNumbers =
      'Stream ids compare as two numbers, milliseconds then sequence, and as strings they do not: "1000-0" sorts before "999-0", and "1000-10" before "1000-9". Split an id at "-" and compare the parts as numbers (BigInt).';
    // Explicit ids the check chooses; per group, how many entries it reads and which of them it
    // leaves pending. `floor` is the oldest entry some group still needs.
    // Two groups that read all four entries, one with `lower` pending, the other `higher`.
    const pendingEach = (ids: string[], lower: string, higher: string) => ({
      ids,
      groups: [
        { read: 4, pending: [lower] },
        { read: 4, pending: [higher] },
      ],
      floor: lower,
      why: asNumbers,
    });
    const cases = [
      pendingEach(["998-0", "999-0", "1000-0", "1001-0"], "999-0", "1000-0"),
      pendingEach(["1000-8", "1000-9", "1000-10", "1000-11"], "1000-9", "1000-10"),
      // The same with the higher floor first: XINFO GROUPS lists the groups by name, so the
      // first group's floor is the one the comparison must be able to reject.
      {
        ...pendingEach(["1000-8", "1000-9", "1000-10", "1000-11"], "1000-10", "1000-9"),
        floor: "1000-9",
        why: `Every group counts: trim at the lowest floor over all of them, not at the first group's (XINFO GROUPS lists the groups by name, and here the first one's floor, 1000-10, is the higher). ${asNumbers}`,
      },
      {
        ids: ["1-0", "2-0", "3-0", "4-0"],
        groups: [
          { read: 4, pending: ["3-0"] },
          { read: 1, pending: [] },
        ],
        floor: "2-0",
        why: "The second group has nothing pending, but it has read only 1-0 (its last-delivered-id): everything after that it has yet to read. Count every group's last-delivered-id, not only the groups with pending entries.",
      },
    ];
    const w = await worker("trimmer");
    for (const t of cases) {
      const stream = freshKey("trim-ids");
      for (const id of t.ids) await c.xAdd(stream, id, { doc: `d${id}` });
      const state: string[] = [];
      for (const [i, g] of t.groups.entries()) {
        const group = fresh(`g${i + 1}`);
        await c.xGroupCreate(stream, group, "0");
        await c.xReadGroup(group, "w", { key: stream, id: ">" }, { COUNT: g.read });
        const done = t.ids.slice(0, g.read).filter((id) => !g.pending.includes(id));
        if (done.length > 0) await c.xAck(stream, group, done);
        state.push(
          `a group that read up to ${t.ids[g.read - 1]} with ${g.pending.join(", ") || "nothing"} pending`,
        );
      }
      const removed = await call("trim()", () => exercise.trim(w.client, stream));
      const left = ((await c.xRange(stream, "-", "+")) ?? []).map((e) => e.id);
      const lost = t.ids.filter((id) => compareIds(id, t.floor) >= 0 && !left.includes(id));
      check(
        lost.length === 0,
        `With the entries ${t.ids.join(", ")} and ${state.join(" and ")}, trim() removed ${lost.join(", ")}, which a group still needs. ${t.why}`,
        4,
      );
      check(
        removed === t.ids.length - left.length,
        `trim() should return how many entries it removed (${t.ids.length - left.length}); it returned ${removed}.`,
        4,
      );
    }
    // A stream no group reads yet: no floor, nothing to trim, and nothing to fail on.
    const lone = freshKey("trim-lone");
    for (const id of ["1-0", "2-0"]) await c.xAdd(lone, id, { doc: `d${id}` });
    const outcome = await settled(within(exercise.trim(w.client, lone), 3000, "trim()"));
    if ("error" in outcome && outcome.error instanceof CheckFailure) throw outcome.error;
    const kept = ((await c.xRange(lone, "-", "+")) ?? []).length;
    check(
      !("error" in outcome) && outcome.value === 0 && kept === 2,
      `trim() on a stream with 2 entries and no group yet ${"error" in outcome ? `rejected (${String((outcome.error as Error)?.message ?? outcome.error)})` : `returned ${outcome.value} and left ${kept} of them`}. With no group there is no floor: trim nothing (a group created later from "0" needs every entry) and return 0 when XINFO GROUPS lists no group.`,
      4,
    );
  });
});
