import { describe, test } from "vitest";
import { crashing, poisoned, sampleUpload, type Upload } from "../../src/pipeline/documents.ts";
import {
  pipelineKeys,
  STAGES,
  type StageKeys,
  type StatusEvent,
  stageKeys,
} from "../../src/pipeline/keys.ts";
import type { Parts, Work } from "../../src/pipeline/parts.ts";
import { DEFAULTS, type PipelineReport, runPipeline } from "../../src/pipeline/pipeline.ts";
import { expectedResults } from "../../src/pipeline/services.ts";
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
  key,
  LEARNER_CLIENT,
  learnerClient,
  loadExercise,
  type Redis,
  sameValue,
  settled,
  sleep,
  trackProcess,
  until,
  within,
} from "../kit.ts";
import { answerToNewWork, pendingCount, wrongEventTime } from "../streams-support.ts";
import { dropUnder } from "../unheard-errors.ts";
import {
  before as beforeCommand,
  crashPoints,
  holdReply,
  nothingInFlight,
  openLearnerConnections,
  type Scope,
  type SentCommand,
  scope,
  sent,
} from "../wire.ts";

const exercise = await loadExercise<Parts>("nextWork", "handOff", "deadLetter", "broadcast");

const RESULT = JSON.stringify({ text: "MUTUAL NON-DISCLOSURE AGREEMENT", pages: 1, words: 3 });
const DEAD_REASON = "gave up at ocr after 4 deliveries: OCR could not read the scan";

/** The OCR stage's names, with a fresh group: code that hard-codes "ocr" as the group fails. */
function keysFor(name: string): StageKeys {
  return { ...stageKeys(pipelineKeys(key(`${fresh(name)}:`)), "ocr"), group: fresh("ocr") };
}

/**
 * A document in the OCR stream, already delivered to `consumer`: the work it is doing. With
 * `queuedAgo`, on a stream of its own, the entry is that many ms old: an event's time taken
 * from the entry ID is then as old as the task, not the moment the stage finished.
 */
async function delivered(
  c: Redis,
  keys: StageKeys,
  doc: string,
  consumer: string,
  queuedAgo?: number,
): Promise<Work> {
  await c.xGroupCreate(keys.stream, keys.group, "0", { MKSTREAM: true }).catch(() => {});
  await c.hSet(keys.doc(doc), { name: `${doc}.pdf`, text: "MUTUAL NON-DISCLOSURE AGREEMENT" });
  const id = await c.xAdd(
    keys.stream,
    queuedAgo === undefined ? "*" : `${Date.now() - queuedAgo}-0`,
    { doc },
  );
  await c.xReadGroup(keys.group, consumer, { key: keys.stream, id: ">" }, { COUNT: 1 });
  return { id, doc, deliveries: 1 };
}

let checkConnections: Promise<[Redis, Redis]> | undefined;

/** The check's own connections, opened once: one for reading state, one subscribed. */
async function own(): Promise<[Redis, Redis]> {
  checkConnections ??= Promise.all([checkClient(), checkClient("events")]);
  return checkConnections;
}

async function observer(): Promise<Redis> {
  return (await own())[0];
}

/** Every status event on `channel` from now on. */
async function listen(channel: string): Promise<StatusEvent[]> {
  const events: StatusEvent[] = [];
  const [, subscriber] = await own();
  await subscriber.subscribe(channel, (message) => {
    try {
      events.push(JSON.parse(message) as StatusEvent);
    } catch {
      events.push({ doc: "?", stage: "intake", state: "queued", at: 0, reason: message });
    }
  });
  return events;
}

/** Waits for the first event, then a little more for any duplicate. */
async function settle(events: StatusEvent[]): Promise<void> {
  for (let i = 0; i < 50 && events.length === 0; i++) await sleep(20);
  await sleep(100);
}

const show = (e: Pick<StatusEvent, "stage" | "state">) => `${e.stage} ${e.state}`;

/** Waits until the learner's connections opened since `open` are closed again; false if not. */
async function closedAgain(open: number): Promise<boolean> {
  for (let i = 0; i < 50 && openLearnerConnections() > open; i++) await sleep(20);
  return openLearnerConnections() <= open;
}

async function handedOn(c: Redis, keys: StageKeys, doc: string): Promise<number> {
  const entries = (await c.xRange(keys.next ?? "", "-", "+")) ?? [];
  return entries.filter((e) => e.message.doc === doc).length;
}

/**
 * Sets how long `id` has been pending for `consumer`, as if it had waited that long, and how
 * many times it has been delivered so far.
 */
async function idleFor(
  c: Redis,
  keys: StageKeys,
  consumer: string,
  id: string,
  ms: number,
  deliveries = 1,
) {
  await c.sendCommand([
    "XCLAIM",
    keys.stream,
    keys.group,
    consumer,
    "0",
    id,
    "IDLE",
    String(ms),
    "RETRYCOUNT",
    String(deliveries),
  ]);
}

/** A simulated worker process: its own connection, which a crash takes down with the rest. */
async function worker(label: string): Promise<{ scope: Scope; client: Redis }> {
  const process = scope(label);
  return { scope: process, client: await process.run(() => learnerClient()) };
}

/** The last command the learner's connections sent so far: a crash counts from after it. */
function lastSeq(): number {
  return sent().at(-1)?.seq ?? 0;
}

/**
 * The moment a worker commits: EXEC, a script, or a stream write outside any transaction. A
 * competitor run there has done all its reads and is about to write, the widest window there is.
 */
function commits(c: SentCommand): boolean {
  if (["EXEC", "EVAL", "EVALSHA", "FCALL"].includes(c.name)) return true;
  return c.multi === undefined && ["XADD", "XACK", "HSET", "HSETNX"].includes(c.name);
}

describe("the parts, one at a time", () => {
  test("broadcast() queues the latest status and the event on the transaction it is given", async () => {
    const keys = keysFor("broadcast");
    const events = await listen(keys.channel);
    const client = await learnerClient();
    const c = await observer();
    // doc-1 has come this far: its latest status is the one before, which this event replaces.
    const earlier = JSON.stringify({
      doc: "doc-1",
      stage: "ocr",
      state: "done",
      at: Date.now() - 1000,
    });
    await c.hSet(keys.status, "doc-1", earlier);
    const event: StatusEvent = { doc: "doc-1", stage: "ner", state: "done", at: Date.now() };
    const tx = client.multi();
    await call("broadcast()", () => exercise.broadcast(tx, keys, event));
    check(
      (await c.hGet(keys.status, "doc-1")) === earlier && events.length === 0,
      "broadcast() changed Redis before the transaction ran. Only add commands to `tx` (tx.hSet, tx.publish): the caller runs EXEC, so the status goes out together with the work it reports.",
      1,
    );
    await tx.exec();
    const latest = await c.hGet(keys.status, "doc-1");
    check(
      latest !== null,
      `After the transaction ran, the latest-status hash ${keys.status} has no field "doc-1". broadcast() must HSET the status hash, field = the document id, value = the event as JSON, so a dashboard that joins late still finds it.`,
      2,
    );
    check(
      latest !== earlier,
      `After the transaction ran, the latest-status hash ${keys.status} still holds doc-1's earlier status (${earlier}), not the new event: each event must replace the one before (HSET), or GET /documents/<id> and late dashboards show the document stuck at its first step. HSETNX keeps only the first status a document ever had.`,
      2,
    );
    let parsed: Partial<StatusEvent> = {};
    try {
      parsed = JSON.parse(latest) as StatusEvent;
    } catch {
      fail(`The latest-status hash holds ${JSON.stringify(latest)}, which is not JSON.`, 2);
    }
    // Only the time differs: say so, in the words of the protocol (milliseconds since 1970).
    const differs = Object.keys({ ...event, ...parsed }).filter(
      (k) => !sameValue(parsed[k as keyof StatusEvent], event[k as keyof StatusEvent]),
    );
    const time =
      differs.length === 1 && differs[0] === "at"
        ? `: ${wrongEventTime(parsed.at, event.at, event.at)}. broadcast() rewrote the time of the event it was given; store and publish the event as it is (JSON.stringify(event)): at is Date.now(), milliseconds since 1970, as the lesson's protocol says, so dashboards and the audit can order and age events by it`
        : "";
    check(
      sameValue(parsed, event),
      `The latest-status hash should hold the event itself as JSON (${JSON.stringify(event)}); it holds ${latest}${time}.`,
      2,
    );
    await eventually(
      () => events.length > 0,
      2000,
      `No event arrived on the channel ${keys.channel}: broadcast() must PUBLISH the event (as JSON) there, so dashboards hear about it at once.`,
      2,
    );
    check(
      sameValue(events[0], event),
      `The channel carried ${JSON.stringify(events[0])}; it should carry the event as JSON: ${JSON.stringify(event)}.`,
      2,
    );
  });

  test("nextWork() returns new work, and undefined when there is none", async () => {
    const keys = keysFor("next");
    const c = await observer();
    const client = await learnerClient();
    await c.xGroupCreate(keys.stream, keys.group, "0", { MKSTREAM: true });
    const consumer = fresh("ocr");
    const options = { consumer, claimIdleMs: 1500, blockMs: 100 };
    const open = openLearnerConnections();
    const started = Date.now();
    const none = await call("nextWork() on an empty stream", () =>
      exercise.nextWork(client, keys, options),
    );
    const waited = Date.now() - started;
    // Looked at the moment nextWork() has returned: a read still blocked in Redis then takes the
    // next entry to arrive, for a call that is already over.
    const stillReading = !nothingInFlight();
    // blockMs is how long a worker is deaf to a stop request: a BLOCK of its own makes it longer.
    check(
      waited < options.blockMs + 1400,
      `With no work at all and blockMs = ${options.blockMs}, nextWork() took ${waited} ms to return. Block for options.blockMs (XREADGROUP ... BLOCK <blockMs>), not a time of your own.`,
      2,
    );
    check(
      none === undefined,
      `With no work at all, nextWork() should return undefined after blockMs; it returned ${JSON.stringify(none)}.`,
      2,
    );
    check(
      !stillReading,
      `With no work at all, nextWork() returned ${JSON.stringify(none)} while a command it sent (its XREADGROUP ... BLOCK) was still waiting for Redis's answer. That read still takes the next entry to arrive and leaves it pending under ${consumer}, with nobody working on it until claimIdleMs has passed. A timeout of your own around the read (Promise.race) does not take the entry back, nor does a read left unawaited: wait for the read's answer; BLOCK <blockMs> already bounds the wait.`,
      2,
    );
    const id = await c.xAdd(keys.stream, "*", { doc: "doc-new" });
    const behind = await c.xAdd(keys.stream, "*", { doc: "doc-behind" });
    const work = await call("nextWork()", () => exercise.nextWork(client, keys, options));
    check(
      work?.id === id && work.doc === "doc-new",
      `nextWork() should return the new entry { id: "${id}", doc: "doc-new", deliveries: 1 }; it returned ${JSON.stringify(work)}. Read it with XREADGROUP ... STREAMS <stream> > and take the doc field.`,
      2,
    );
    check(
      work.deliveries === 1,
      `A first delivery has deliveries = 1; nextWork() said ${work.deliveries}.`,
      2,
    );
    const [pending] = await c.xPendingRange(keys.stream, keys.group, "-", "+", 10);
    check(
      pending?.consumer === consumer,
      `The entry should now be pending for consumer "${consumer}" in group "${keys.group}" (the names in options and keys); XPENDING shows ${JSON.stringify(pending ?? "nothing")}.`,
      2,
    );
    // The entry behind it stays unread: a read of several hides the rest from every worker.
    const [early] = await c.xPendingRange(keys.stream, keys.group, behind, behind, 1);
    check(
      early === undefined,
      `nextWork() returned doc-new, but it also read doc-behind, the entry after it (now pending for ${early?.consumer}), and did not return it: no worker sees doc-behind until it has been idle for claimIdleMs, and then it counts as a second delivery. Read one entry per call: XREADGROUP ... COUNT 1.`,
      2,
    );
    const then = await call("nextWork() with doc-behind waiting", () =>
      exercise.nextWork(client, keys, options),
    );
    check(
      then?.id === behind && then.deliveries === 1,
      `Called again with doc-behind waiting, nextWork() should return it (deliveries 1); it returned ${JSON.stringify(then)}.${then?.id === id ? ` That is doc-new again, claimed back from the consumer it had just been given to, idle for far less than claimIdleMs (${options.claimIdleMs} ms): claim only entries idle longer than that.` : ""}`,
      2,
    );
    // New work arriving while nextWork() waits: BLOCK answers at once, a timer only when it fires.
    const waitMs = 3000;
    let arrived = "";
    const answer = await answerToNewWork(
      () =>
        call("nextWork() while a new entry arrives", () =>
          exercise.nextWork(client, keys, { ...options, blockMs: waitMs }),
        ),
      async () => {
        arrived = await c.xAdd(keys.stream, "*", { doc: "doc-arriving" });
      },
      "XREADGROUP",
    );
    check(
      !answer.early && answer.value?.id === arrived && answer.delay < 1000,
      answer.early
        ? `With blockMs = ${waitMs} and no work, nextWork() returned ${JSON.stringify(answer.value)} before the wait was over. Wait for new work with XREADGROUP ... BLOCK <blockMs>.`
        : `With blockMs = ${waitMs}, a new entry (doc-arriving) was added while nextWork() waited; it returned ${JSON.stringify(answer.value)} ${answer.delay} ms after the entry came. Wait in Redis (XREADGROUP ... BLOCK <blockMs>), which answers the moment an entry arrives; a timer that sleeps between reads leaves new work waiting until it fires.`,
      2,
    );
    check(
      await closedAgain(open),
      `After four calls of nextWork(), ${openLearnerConnections() - open} more connections to Redis are open than before: each call opens one and leaves it open, and a worker calls nextWork() in a loop. Read with the client you are given (each worker has its own), or close a connection of your own before returning.`,
      2,
    );
    // A read whose answer is late has taken its entry all the same: Redis handed it over when
    // it answered. A timeout of the learner's own around the read leaves it pending, unworked.
    const slow = keysFor("late");
    await c.xGroupCreate(slow.stream, slow.group, "0", { MKSTREAM: true });
    const handed = await c.xAdd(slow.stream, "*", { doc: "doc-late-answer" });
    const lateMs = 1500;
    const held = holdReply(
      (x) => x.name === "XREADGROUP" && x.args.includes(slow.stream),
      async () => {
        // Until nextWork() is over, or the time is up (the read it waits for is this one).
        await Promise.race([reading, sleep(lateMs)]);
      },
    );
    const reading = settled(
      Promise.resolve().then(() => exercise.nextWork(client, slow, { ...options, blockMs: 50 })),
    );
    const lateAnswer = await within(
      reading,
      lateMs + 5000,
      "nextWork() with its read's answer late",
    );
    held.cancel();
    const took = "value" in lateAnswer ? lateAnswer.value : undefined;
    check(
      !held.hasFired() || (took as { id?: unknown } | undefined)?.id === handed,
      `nextWork()'s XREADGROUP took ${handed} (doc-late-answer): Redis handed it to ${consumer}, and the check held the answer back for ${lateMs / 1000} s, as a busy Redis or a slow network can. nextWork() ${"value" in lateAnswer ? `returned ${JSON.stringify(took)}` : "rejected"} meanwhile, so the entry sits pending under ${consumer} with nobody working on it until claimIdleMs has passed. A timeout of your own around the read (Promise.race) does not take the entry back: wait for the read's answer; BLOCK <blockMs> already bounds the wait.`,
      2,
    );
    // An error is not "no work": undefined would send the worker's loop round again at once,
    // hammering a broken stage with nobody told.
    await c.xAdd(keys.stream, "*", { doc: "doc-orphaned" });
    await c.xGroupDestroy(keys.stream, keys.group);
    const refused = await within(
      settled(exercise.nextWork(client, keys, options)),
      options.blockMs + 5000,
      "nextWork() with its group gone",
    );
    check(
      "error" in refused,
      `With the stage's group gone (XGROUP DESTROY, so Redis answers NOGROUP) and an entry waiting, nextWork() returned ${JSON.stringify("value" in refused ? refused.value : undefined)}. An error from Redis is not "no work": a worker that hears undefined asks again at once, round and round, and nobody learns the stage is broken. Catch nothing in nextWork(): let the error reject it.`,
      2,
    );
    // The group goes just before the read itself (the claims before it found nothing stale):
    // what nextWork() opened for the read is closed all the same.
    const late = keysFor("refused");
    await c.xGroupCreate(late.stream, late.group, "0", { MKSTREAM: true });
    await c.xAdd(late.stream, "*", { doc: "doc-refused" });
    const destroy = beforeCommand(
      (x) => x.name === "XREADGROUP" && x.args.includes(late.stream),
      async () => {
        await c.xGroupDestroy(late.stream, late.group);
      },
    );
    await within(
      settled(Promise.resolve().then(() => exercise.nextWork(client, late, options))),
      options.blockMs + 5000,
      "nextWork() with its group gone before the read",
    );
    destroy.cancel();
    check(
      !destroy.hasFired() || (await closedAgain(open)),
      `When Redis refused nextWork()'s read (NOGROUP: the group went just before the XREADGROUP), ${openLearnerConnections() - open} more connection(s) of your code stayed open: what it opens for the read is closed after a read that succeeded only. Close it in a finally (or read with the client you are given), or a stage whose group is gone leaks one per call.`,
      2,
    );
  });

  test("nextWork() takes over what a crashed worker left pending, but not what a live one is working on", async () => {
    const c = await observer();
    const client = await learnerClient();
    const claimIdleMs = 2500;
    const crashed = fresh("ocr-crashed");
    const busy = fresh("ocr-busy");
    const options = { consumer: fresh("ocr"), claimIdleMs, blockMs: 100 };

    /**
     * `live` entries a live worker took a moment ago, then one a crashed worker left behind, and
     * with `waiting` a second one it left and a new entry no one has read yet.
     */
    async function scenario(live: number, waiting = false) {
      const keys = keysFor("claim");
      await c.xGroupCreate(keys.stream, keys.group, "0", { MKSTREAM: true });
      // Issued in one tick: one round trip, in order.
      const busyIds = await Promise.all(
        Array.from({ length: live }, (_, i) => c.xAdd(keys.stream, "*", { doc: `doc-busy-${i}` })),
      );
      const orphan = await c.xAdd(keys.stream, "*", { doc: "doc-orphan" });
      const second = waiting ? await c.xAdd(keys.stream, "*", { doc: "doc-orphan-2" }) : "";
      await c.xReadGroup(keys.group, crashed, { key: keys.stream, id: ">" }, { COUNT: live + 2 });
      await idleFor(c, keys, crashed, orphan, claimIdleMs + 1000);
      // Taken over once before already: its next delivery is its third.
      if (second) await idleFor(c, keys, crashed, second, claimIdleMs + 1000, 2);
      // Busy, yet idle for most of claimIdleMs: a claim with a lower threshold than the one
      // given takes them, with a second of slack for a loaded machine.
      await Promise.all(busyIds.map((id) => idleFor(c, keys, busy, id, claimIdleMs - 1000)));
      const unread = waiting ? await c.xAdd(keys.stream, "*", { doc: "doc-new" }) : undefined;
      const work = await call("nextWork()", () => exercise.nextWork(client, keys, options));
      return { keys, busyIds, orphan, second, unread, work };
    }

    const one = await scenario(1, true);
    if (one.work && one.busyIds.includes(one.work.id)) {
      fail(
        `nextWork() took ${one.work.doc} from ${busy}, which is still working on it (idle ${claimIdleMs - 1000} ms, less than claimIdleMs). Only claim entries idle longer than claimIdleMs (${claimIdleMs} ms): XAUTOCLAIM's min-idle-time.`,
        2,
      );
    }
    const thresholds = sent((cmd) => ["XAUTOCLAIM", "XCLAIM"].includes(cmd.name))
      .map((cmd) => Number(cmd.args[4]))
      .filter((idle) => idle > claimIdleMs + 1000);
    check(
      one.work?.id === one.orphan,
      `nextWork() returned ${JSON.stringify(one.work)}, but doc-orphan (entry ${one.orphan}) has been pending for ${crashed}, a crashed worker, for over ${claimIdleMs} ms.${thresholds.length > 0 ? ` Your claim asked for entries idle at least ${thresholds[0]} ms, though options.claimIdleMs was ${claimIdleMs}: use the threshold you are given.` : ""} Take such entries over before reading new ones: XAUTOCLAIM <stream> <group> <consumer> <claimIdleMs> 0-0 COUNT 1.`,
      1,
    );
    // JUSTID claims without counting a delivery: XPENDING then still says 1.
    const justId = sent(
      (cmd) =>
        ["XAUTOCLAIM", "XCLAIM"].includes(cmd.name) &&
        cmd.args.some((a) => a.toUpperCase() === "JUSTID"),
    );
    check(
      one.work.deliveries === 2,
      `doc-orphan has now been delivered twice (once to the crashed worker, once to you), so deliveries should be 2; nextWork() said ${one.work.deliveries}. ${justId.length > 0 ? `Your ${justId[0]?.name} asked for JUSTID, which claims an entry without counting a delivery: its count stays where the crashed worker left it, and a document that fails every time is never dead-lettered. Claim without JUSTID (the entry's fields come with it), then` : ""} XPENDING <stream> <group> <id> <id> 1 reports the count.`,
      2,
    );
    // doc-new waits unread: a read sent alongside the claim takes it, and the caller never sees
    // it until it is claimed back after claimIdleMs, as a second delivery.
    const newPending = await c.xPendingRange(one.keys.stream, one.keys.group, "-", "+", 10);
    const readToo = newPending.find((p) => p.id === one.unread);
    check(
      readToo === undefined,
      `nextWork() returned doc-orphan, but it also read the new entry doc-new (now pending for ${readToo?.consumer}) and did not return it: doc-new waits for claimIdleMs before anyone works on it, and then counts as a second delivery. Read new work only when there is nothing to recover, and return what you read.`,
      1,
    );
    // doc-orphan-2 stays with the crashed worker until a call returns it: a claim of several
    // hides the rest for another claimIdleMs and counts a delivery no one worked on.
    const [left] = await c.xPendingRange(
      one.keys.stream,
      one.keys.group,
      one.second,
      one.second,
      1,
    );
    check(
      left?.consumer === crashed && left.deliveriesCounter === 2,
      `nextWork() returned doc-orphan, but it also claimed doc-orphan-2 (now pending for ${left?.consumer}, delivered ${left?.deliveriesCounter} times) without returning it: no one works on doc-orphan-2 until it has been idle for claimIdleMs again, and each such claim counts as a delivery, so enough of them dead-letter a document no worker ever tried. Claim one entry per call (COUNT 1) and return it.`,
      2,
    );
    const second = await call("nextWork() a second time", () =>
      exercise.nextWork(client, one.keys, options),
    );
    check(
      second?.id === one.second && second.deliveries === 3,
      `Called again with doc-orphan taken, nextWork() should take over doc-orphan-2, the crashed worker's other entry, which had been taken over once before: this is its third delivery (deliveries 3); it returned ${JSON.stringify(second)}.${second?.id === one.second ? " Report the count XPENDING gives for the entry after your claim, not a number of your own: the delivery count is what ends a poison document." : ""}`,
      2,
    );
    const next = await call("nextWork() a third time", () =>
      exercise.nextWork(client, one.keys, options),
    );
    check(
      next !== undefined && next.id === one.unread && next.deliveries === 1,
      `Called again with both stale entries taken and the new entry doc-new waiting, nextWork() should return doc-new (deliveries 1); it returned ${JSON.stringify(next)}.`,
      2,
    );
    const again = await call("nextWork() a fourth time", () =>
      exercise.nextWork(client, one.keys, options),
    );
    check(
      again === undefined,
      `Called again, nextWork() returned ${JSON.stringify(again)}: there was nothing to take (doc-orphan, doc-orphan-2 and doc-new are yours now, doc-busy-0 belongs to the live worker ${busy}, nothing is new).`,
      2,
    );

    // Eleven XAUTOCLAIM pages at COUNT 1, more than 100 pending: a scan that stops after a page
    // or a few, or after ten "to bound it", never gets there.
    const ahead = 105;
    const many = await scenario(ahead);
    check(
      many.work?.id === many.orphan,
      `With ${ahead} entries that live workers are busy with ahead of it in the pending list, doc-orphan (pending for a crashed worker for over ${claimIdleMs} ms) was not taken over: nextWork() returned ${JSON.stringify(many.work)}. One XAUTOCLAIM looks at no more than COUNT*10 pending entries and returns the cursor where it stopped: call it again from that cursor until the cursor is 0-0, however many calls that takes.`,
      2,
    );

    // A worker restarted under its old name (the supervisor names consumers <stage>-<n>): what
    // it held before the crash is pending under its own name, and only a claim brings it back.
    const restarted = keysFor("restart");
    await c.xGroupCreate(restarted.stream, restarted.group, "0", { MKSTREAM: true });
    const held = await c.xAdd(restarted.stream, "*", { doc: "doc-held" });
    await c.xReadGroup(
      restarted.group,
      options.consumer,
      { key: restarted.stream, id: ">" },
      { COUNT: 1 },
    );
    await idleFor(c, restarted, options.consumer, held, claimIdleMs + 1000);
    const back = await call("nextWork() after a restart", () =>
      exercise.nextWork(client, restarted, options),
    );
    check(
      back?.id === held,
      `doc-held is pending for ${options.consumer} itself, idle for over claimIdleMs: the worker crashed holding it and was restarted under the same name, as the pipeline's supervisor does (<stage>-<n>). nextWork() should take it back; it returned ${JSON.stringify(back)}. Claim every entry idle longer than claimIdleMs, whichever consumer holds it, your own name included (XAUTOCLAIM does): skipping your own leaves what you held before a crash pending for ever.`,
      2,
    );

    // Another worker claims a stale entry between this worker's look and its claim: the claim
    // itself must re-check the idle time (XAUTOCLAIM does; XCLAIM's min-idle-time, if given
    // claimIdleMs), or both workers take the same document and the steal counts a delivery.
    const raced = keysFor("claim-race");
    await c.xGroupCreate(raced.stream, raced.group, "0", { MKSTREAM: true });
    const stale = await c.xAdd(raced.stream, "*", { doc: "doc-stale" });
    await c.xReadGroup(raced.group, crashed, { key: raced.stream, id: ">" }, { COUNT: 1 });
    await idleFor(c, raced, crashed, stale, claimIdleMs + 1000);
    const rival = fresh("ocr-rival");
    const from = lastSeq();
    const rivalClaims = beforeCommand(
      (cmd) =>
        cmd.seq > from &&
        ["XAUTOCLAIM", "XCLAIM"].includes(cmd.name) &&
        cmd.args[1] === raced.stream,
      () => c.sendCommand(["XCLAIM", raced.stream, raced.group, rival, String(claimIdleMs), stale]),
    );
    const won = await call("nextWork() with another worker claiming first", () =>
      exercise.nextWork(client, raced, options),
    );
    rivalClaims.cancel();
    const [holder] = await c.xPendingRange(raced.stream, raced.group, stale, stale, 1);
    check(
      won?.id !== stale && holder?.consumer === rival,
      `doc-stale had been idle for over claimIdleMs, but another worker (${rival}) claimed it just before your claim reached Redis; nextWork() still returned ${JSON.stringify(won)}, and the entry is now pending for ${holder?.consumer}: two workers work on the same document, and the steal counts as one more delivery. Let the claim itself check the idle time at the moment it runs: XAUTOCLAIM with claimIdleMs, or XCLAIM with min-idle-time claimIdleMs (not 0), so an entry someone took since you looked stays with them.`,
      2,
    );
  });

  /**
   * Runs `part` in a simulated worker process, killed just before its `crashBefore`th command
   * if given (counted from the start of the call). If the entry is still pending then, another
   * worker runs `part` again, as after claimIdleMs in the real pipeline.
   */
  async function crashThenTakeOver(
    keys: StageKeys,
    first: { scope: Scope; client: Redis },
    crashBefore: number | undefined,
    part: (client: Redis, takenOver: boolean) => Promise<unknown>,
  ) {
    const from = lastSeq();
    const crash =
      crashBefore === undefined
        ? undefined
        : beforeCommand((cmd) => cmd.scope === first.scope.name && cmd.seq > from, "crash", {
            nth: crashBefore,
          });
    let returned: unknown;
    try {
      returned = await first.scope.run(() => part(first.client, false));
    } catch (error) {
      if (!first.scope.crashed()) throw error;
    }
    crash?.cancel();
    const commands = sent((cmd) => cmd.scope === first.scope.name && cmd.seq > from);
    if (
      first.scope.crashed() &&
      (await pendingCount(await observer(), keys.stream, keys.group)) > 0
    ) {
      await part(await learnerClient(), true);
    }
    return { commands, returned };
  }

  /**
   * One worker runs handOff(); `crash` (if given) kills it just before that command of its own,
   * counted from the start of the call. If the entry is still pending then, another worker
   * takes it over and runs handOff() again, as after claimIdleMs in the real pipeline.
   */
  async function handOffScenario(name: string, crashBefore?: number) {
    const keys = keysFor(name);
    const c = await observer();
    const work = await delivered(c, keys, "doc-1", fresh("ocr"), 60_000);
    // Another document was handed on since doc-1's entry was queued (a minute ago): the next
    // stream already ends after that entry's ID, so reusing it for the XADD is refused.
    if (keys.next) await c.xAdd(keys.next, "*", { doc: "doc-other" });
    const events = await listen(keys.channel);
    const first = await worker("worker");
    const open = openLearnerConnections();
    const startedAt = Date.now();
    const { commands, returned } = await crashThenTakeOver(
      keys,
      first,
      crashBefore,
      (client, takenOver) =>
        takenOver
          ? call("handOff() in the worker that took over", () =>
              exercise.handOff(client, keys, { ...work, deliveries: 2 }, RESULT),
            )
          : call("handOff()", () => exercise.handOff(client, keys, work, RESULT)),
    );
    const endedAt = Date.now();
    await settle(events);
    return {
      keys,
      commands,
      returned,
      open,
      event: events.find((e) => e.doc === "doc-1" && show(e) === "ocr done"),
      startedAt,
      endedAt,
      queuedAt: Number(work.id.split("-")[0]),
      stored: await c.hGet(keys.doc("doc-1"), "ocr"),
      handedOn: await handedOn(c, keys, "doc-1"),
      pending: await pendingCount(c, keys.stream, keys.group),
      done: events.filter((e) => e.doc === "doc-1" && show(e) === "ocr done").length,
      latest: await c.hGet(keys.status, "doc-1"),
    };
  }

  test("handOff() stores the result, hands the document on, acknowledges and broadcasts", async () => {
    const from = lastSeq();
    const r = await handOffScenario("hand").catch((error: unknown) => {
      const own = sent(
        (x) => x.seq > from && x.name === "XADD" && /^\d+-\d+$/.test(x.args[2] ?? ""),
      );
      if (own.length === 0) throw error;
      return fail(
        `handOff() failed: its XADD to the next stage's stream gave the entry an ID of its own (${own[0]?.args[2]}, the original entry's), and Redis refused it: that stream already ends with a later entry (another document handed on since), and a stream's IDs only rise. Inside EXEC the other commands still ran, so doc-1 has its result and is acknowledged, but is never handed on. Let Redis choose the ID: XADD <next> * doc <id>.`,
        2,
      );
    });
    check(
      r.stored === RESULT,
      `After handOff(), the document's hash (keys.doc("doc-1")) should hold the OCR result under the field "ocr"; it holds ${JSON.stringify(r.stored)}.`,
      2,
    );
    check(
      r.handedOn === 1,
      `handOff() should add { doc: "doc-1" } to the next stage's stream (keys.next) once; it is there ${r.handedOn} times.`,
      2,
    );
    check(
      r.pending === 0,
      `The OCR entry is still pending after handOff(): acknowledge it (XACK) so no one does it again.${ackCause(r.commands, r.keys)}`,
      2,
    );
    check(
      r.done === 1,
      `handOff() should broadcast one "ocr done" status event for doc-1; ${r.done} arrived.`,
      2,
    );
    check(
      r.latest !== null && show(JSON.parse(r.latest) as StatusEvent) === "ocr done",
      `The latest-status hash should say "ocr done" for doc-1; it says ${r.latest}.`,
      2,
    );
    const late = wrongEventTime(r.event?.at, r.startedAt, r.endedAt);
    check(
      late === undefined,
      `The "ocr done" event ${JSON.stringify(r.event)} has the wrong time: ${late}${r.event?.at === r.queuedAt ? ", the time in the entry's ID: when the task was queued (a minute ago here), not when the stage finished" : ""}. A status event is { doc, stage, state, at }, with at = Date.now() when the stage finished: dashboards and the audit order and age events by it.`,
      2,
    );
    check(
      await closedAgain(r.open),
      `handOff() left ${openLearnerConnections() - r.open} more connections to Redis open than before: a connection it opens for itself must be closed before it returns, or every hand-off leaks one.`,
      2,
    );
    check(
      r.returned === true,
      `handOff() should return true when it handed the document on; it returned ${JSON.stringify(r.returned)}.`,
      2,
    );
    // The last stage: keys.next is null, and there is no stream to hand the document on to.
    const last: StageKeys = { ...keysFor("last"), next: null };
    const c = await observer();
    const lastWork = await delivered(c, last, "doc-2", fresh("ocr"));
    const lastEvents = await listen(last.channel);
    const lastClient = await learnerClient();
    const beforeLast = lastSeq();
    const outcome = await within(
      settled(Promise.resolve().then(() => exercise.handOff(lastClient, last, lastWork, RESULT))),
      5000,
      "handOff() at the last stage",
    );
    const stored = await c.hGet(last.doc("doc-2"), "ocr");
    check(
      "value" in outcome && outcome.value === true && stored === RESULT,
      `At the last stage (keys.next is null) handOff() should store the result, acknowledge the entry, broadcast and return true; it ${"error" in outcome ? `threw "${outcome.error instanceof Error ? outcome.error.message : String(outcome.error)}"` : `returned ${JSON.stringify(outcome.value)}`}, and the hash holds ${JSON.stringify(stored)}. There is no next stream: queue the XADD only when keys.next is a name (it is null at the last stage, not undefined).`,
      2,
    );
    const added = sent((x) => x.seq > beforeLast && x.name === "XADD");
    check(
      added.length === 0,
      `At the last stage (keys.next is null) handOff() still sent XADD ${added[0]?.args[1]} ...: after the last stage the document is complete and goes to no stream, and a stream nobody reads only grows. Queue the XADD only when keys.next is a name.`,
      2,
    );
    // Everything else a hand-off does, the last stage does too: only the XADD is left out.
    const lastPending = await pendingCount(c, last.stream, last.group);
    await settle(lastEvents);
    const lastDone = lastEvents.filter((e) => e.doc === "doc-2" && show(e) === "ocr done").length;
    check(
      lastPending === 0 && lastDone === 1,
      `At the last stage (keys.next is null) handOff() stored the result and returned true, but ${lastPending === 0 ? "" : "the entry is still pending (no XACK), so it is taken over and done again after claimIdleMs"}${lastPending !== 0 && lastDone !== 1 ? ", and " : ""}${lastDone === 1 ? "" : `${lastDone} "ocr done" events went out instead of one, so the document never shows as completed`}. The last stage leaves out only the XADD: the result, the XACK and the broadcast are in its transaction as at every other stage.`,
      2,
    );
    // A second worker finishing the same entry at the last stage: the same guard applies there.
    const lastAgain = await call("handOff() of the same entry again at the last stage", () =>
      exercise.handOff(lastClient, last, { ...lastWork, deliveries: 2 }, RESULT),
    );
    await settle(lastEvents);
    const lastTold = lastEvents.filter((e) => e.doc === "doc-2" && show(e) === "ocr done").length;
    check(
      lastAgain === false || lastTold !== 1,
      `At the last stage (keys.next is null), a second handOff() of the same entry (a worker that had taken it over) found doc-2 done and sent nothing twice, yet returned ${JSON.stringify(lastAgain)}: true means "I handed it on", false "it was done already" (the pipeline counts retries by it). When the result or the "dead" mark is there, UNWATCH, XACK and return false.`,
      2,
    );
    check(
      lastAgain === false && lastTold === 1,
      `At the last stage (keys.next is null), a second handOff() of the same entry (a worker that had taken it over) returned ${JSON.stringify(lastAgain)} and "ocr done" went out ${lastTold} times: the last stage committed the same document twice. The last stage has no next stream, but it needs the same guard as the others (WATCH the document, look for the stage's result or the "dead" mark, UNWATCH and XACK if either is there): a second "embed done" is a duplicate in the audit.`,
      2,
    );
  });

  test("handOff() leaves nothing half done, whatever moment its worker dies", async () => {
    const clean = await handOffScenario("crash-none");
    const steps = crashPoints(clean.commands);
    const label = (cmd: SentCommand) => (cmd.name === "EXEC" ? "EXEC (the whole MULTI)" : cmd.name);
    for (const { command: cmd, nth } of steps) {
      const r = await handOffScenario("crash", nth);
      const done = clean.commands
        .slice(0, nth - 1)
        .filter((c) => steps.some((step) => step.command === c))
        .map(label);
      const at = `If the worker dies just before its ${label(cmd)} (${done.join(", ") || "nothing"} done before) and another worker takes over`;
      const advice =
        "A crash can land between any two commands: queue the result, the XADD, the XACK and the broadcast in ONE transaction (MULTI ... EXEC), so they all happen or none does.";
      check(
        r.handedOn === 1,
        `${at}, the next stage receives doc-1 ${r.handedOn} times instead of once. ${advice}`,
        3,
      );
      check(r.stored === RESULT, `${at}, the OCR result is lost. ${advice}`, 3);
      check(r.pending === 0, `${at}, the entry stays pending for ever. ${advice}`, 3);
      check(
        r.done === 1,
        r.done === 0
          ? `${at}, the "ocr done" status event is never published: dashboards wait for ever, and a status sent after EXEC can arrive after the next stage's. Broadcast inside the hand-off's transaction. ${advice}`
          : `${at}, "ocr done" is published ${r.done} times: dashboards see the stage finish twice. Broadcast inside the hand-off's transaction. ${advice}`,
        3,
      );
    }
  });

  test("handOff() and deadLetter() return only once Redis has answered what they sent", async () => {
    const c = await observer();
    const calls: {
      what: string;
      finished: boolean;
      run: (client: Redis, keys: StageKeys, work: Work) => Promise<unknown>;
    }[] = [
      { what: "handOff()", finished: false, run: (r, k, w) => exercise.handOff(r, k, w, RESULT) },
      {
        what: "deadLetter()",
        finished: false,
        run: (r, k, w) => exercise.deadLetter(r, k, w, DEAD_REASON),
      },
      {
        what: "handOff() of an entry already done at this stage",
        finished: true,
        run: (r, k, w) => exercise.handOff(r, k, w, RESULT),
      },
      {
        what: "deadLetter() of an entry already done at this stage",
        finished: true,
        run: (r, k, w) => exercise.deadLetter(r, k, w, DEAD_REASON),
      },
    ];
    for (const { what, finished, run } of calls) {
      const keys = keysFor("answered");
      const work = { ...(await delivered(c, keys, "doc-1", fresh("ocr"))), deliveries: 4 };
      if (finished) await c.hSet(keys.doc("doc-1"), "ocr", RESULT);
      const client = await learnerClient();
      await call(what, () => run(client, keys, work));
      const returned = lastSeq();
      // A command of the check's own on the same client: node-redis sends a connection's
      // commands in order, so whatever the call left queued there goes out before it, and
      // Redis has answered all of it once this one is answered.
      const marker = fresh("sent-by-the-check");
      await client.sendCommand(["ECHO", marker]).catch(() => undefined);
      const echo = sent((x) => x.seq > returned && x.name === "ECHO" && x.args[1] === marker)[0];
      const late = sent(
        (x) =>
          x.seq > returned && (echo === undefined || (x.conn === echo.conn && x.seq < echo.seq)),
      ).filter((x) => x !== echo);
      // On a connection of its own, a command still waiting for its answer.
      const waiting = !nothingInFlight();
      check(
        late.length === 0 && !waiting,
        `${what} returned while ${late.length > 0 ? `its ${late.some((x) => x.name === "EXEC") ? "transaction (MULTI ... EXEC)" : late.map((x) => x.name).join(", ")} was still on its way to Redis (sent after it returned)` : "a command it sent was still waiting for Redis's answer"}. Its caller takes the work for ${finished ? "cleaned up" : what.startsWith("deadLetter") ? "parked" : "handed on"} before Redis has applied (or refused) it, and a failure of it reaches nobody: a rejection nobody handles ends the worker's process, and one caught there vanishes. Await every command, the transaction's exec() included (await tx.exec(), await the helper that commits), before returning: node-redis sends them in order either way, but only an awaited answer tells you what Redis did.`,
        3,
      );
    }
  });

  /**
   * Two workers finish the same entry (one took it over from the other): the late one runs its
   * handOff() and, at the moment it commits, the other one's whole handOff() runs first.
   */
  async function racingFinishers(name: string, at: (c: SentCommand) => boolean = commits) {
    const keys = keysFor(name);
    const c = await observer();
    const work = await delivered(c, keys, "doc-1", fresh("ocr"));
    const events = await listen(keys.channel);
    const late = await worker("late");
    const fast = await learnerClient();
    let fastReturned: unknown;
    const competitor = beforeCommand(
      (cmd) => cmd.scope === late.scope.name && at(cmd),
      async () => {
        fastReturned = await call("handOff() in the worker that took the entry over", () =>
          exercise.handOff(fast, keys, { ...work, deliveries: 2 }, RESULT),
        );
      },
    );
    const lateReturned = await late.scope.run(() =>
      call("handOff() in the worker finishing late", () =>
        exercise.handOff(late.client, keys, work, RESULT),
      ),
    );
    competitor.cancel();
    await settle(events);
    return {
      raced: competitor.hasFired(),
      lateReturned,
      fastReturned,
      handedOn: await handedOn(c, keys, "doc-1"),
      done: events.filter((e) => e.doc === "doc-1" && show(e) === "ocr done").length,
      pending: await pendingCount(c, keys.stream, keys.group),
      c,
      keys,
      work,
    };
  }

  /**
   * A worker runs handOff() of doc-1 while `write` (another client's write) lands just before
   * its EXEC, between its WATCH and the commit.
   */
  async function handOffWhile(
    c: Redis,
    name: string,
    what: string,
    write: (keys: StageKeys) => Promise<unknown>,
  ): Promise<{ keys: StageKeys; returned: boolean; scope: string }> {
    const keys = keysFor(name);
    const work = await delivered(c, keys, "doc-1", fresh("ocr"));
    const busy = await worker(name);
    const rule = beforeCommand(
      (cmd) => cmd.scope === busy.scope.name && commits(cmd),
      async () => {
        await write(keys);
      },
    );
    const returned = await busy.scope.run(() =>
      call(what, () => exercise.handOff(busy.client, keys, work, RESULT)),
    );
    rule.cancel();
    return { keys, returned, scope: busy.scope.name };
  }

  test("handOff() does nothing twice when two workers finish the same entry", async () => {
    // First in turn: the late worker arrives when the other has long finished.
    const keys = keysFor("twice");
    const c = await observer();
    const work = await delivered(c, keys, "doc-1", fresh("ocr"));
    const events = await listen(keys.channel);
    const first = await call("handOff() in the worker that took the entry over", async () =>
      exercise.handOff(await learnerClient(), keys, { ...work, deliveries: 2 }, RESULT),
    );
    const second = await call("handOff() in the worker finishing late", async () =>
      exercise.handOff(await learnerClient(), keys, work, RESULT),
    );
    const count = await handedOn(c, keys, "doc-1");
    check(
      count === 1,
      `handOff() handed doc-1 on twice when two workers finished the same entry one after the other (one had claimed it from the other): the next stage now does the work twice. Before committing, check whether the document's hash already has this stage's result, and WATCH the hash so that check still holds at EXEC.`,
      3,
    );
    check(
      first === true && second === false,
      `The first handOff() should return true and the late one false (nothing to do but XACK); they returned ${first} and ${second}.`,
      3,
    );
    check(
      (await pendingCount(c, keys.stream, keys.group)) === 0,
      "The entry is still pending after both finished: the late handOff() must XACK it too.",
      3,
    );
    // The same document queued twice (a takeover upstream): the second entry finds the result.
    const duplicate = await delivered(c, keys, "doc-1", fresh("ocr"));
    // doc-1 has moved on since: its latest status is the next stage's.
    const later = JSON.stringify({ doc: "doc-1", stage: "ner", state: "done", at: Date.now() });
    await c.hSet(keys.status, "doc-1", later);
    const same = await learnerClient();
    const again = await call("handOff() of a second entry for a finished document", () =>
      exercise.handOff(same, keys, duplicate, RESULT),
    );
    const left = await pendingCount(c, keys.stream, keys.group);
    check(
      again === false && left === 0 && (await handedOn(c, keys, "doc-1")) === 1,
      `doc-1 was queued for this stage a second time, as a new entry, after its result was stored. handOff() of that entry should return false, hand nothing on and acknowledge it; it returned ${again}, ${left} entr${left === 1 ? "y is" : "ies are"} still pending, and doc-1 was handed on ${await handedOn(c, keys, "doc-1")} times. When the result (or the "dead" mark) is already there, XACK the entry: otherwise it is taken over again and again.`,
      3,
    );
    await settle(events);
    const told = events.filter((e) => e.doc === "doc-1" && show(e) === "ocr done").length;
    const status = await c.hGet(keys.status, "doc-1");
    check(
      told === 1 && status === later,
      `Two workers finished doc-1's entry and a second entry came for it: "ocr done" should go out once, from the hand-off that committed; it went out ${told} times${status === later ? "" : `, and doc-1's latest status, which said "ner done", now says ${status}`}. When the result is already there, only UNWATCH and XACK: a second event counts as a duplicate in the audit, and an old one sent late sets a dashboard back.`,
      3,
    );
    // Meanwhile the next stage finishes doc-1; then the same worker hands on its next document.
    await c.hSet(keys.doc("doc-1"), "ner", "{}");
    const next = await delivered(c, keys, "doc-2", fresh("ocr"));
    const nextReturned = await call("handOff() of the next document on the same connection", () =>
      exercise.handOff(same, keys, next, RESULT),
    );
    const nextOn = await handedOn(c, keys, "doc-2");
    check(
      nextReturned === true && nextOn === 1,
      `After handOff() found doc-1 done and returned false, the same worker's next handOff(), for doc-2, returned ${nextReturned} and handed doc-2 on ${nextOn} times. Between the two, the next stage wrote its result into doc-1's hash: the WATCH on doc-1 was still in force on that connection and refused doc-2's EXEC. A WATCH lasts until EXEC, DISCARD or UNWATCH: UNWATCH when you return without running the transaction.`,
      3,
    );

    // The other worker commits just before the late one's WATCH: a look taken before the WATCH
    // is stale by then, and the WATCH no longer sees the change.
    const beforeWatch = await racingFinishers("race-watch", (cmd) => cmd.name === "WATCH");
    check(
      beforeWatch.handedOn === 1,
      `handOff() handed doc-1 on ${beforeWatch.handedOn} times when another worker committed the same document just before this worker's WATCH: the look at the hash came before the WATCH, so the WATCH missed the change it was meant to guard. WATCH the document's hash first, then read it, then MULTI ... EXEC.`,
      3,
    );
    // Then at the same moment: the other worker commits between the late one's check and its EXEC.
    const r = await racingFinishers("race");
    check(
      r.handedOn === 1,
      `handOff() handed doc-1 on ${r.handedOn} times when another worker committed the same document between this worker's check and its EXEC: the check alone is not enough. WATCH the document's hash before reading it and commit with MULTI ... EXEC, so that EXEC fails (WatchError: return false) when someone else changed it in between. A pipeline has no EXEC: WATCH guards nothing there.`,
      3,
    );
    check(
      r.done === 1,
      `"ocr done" was published ${r.done} times for one piece of work when two workers finished it at the same moment.`,
      3,
    );
    check(
      r.fastReturned === true && r.lateReturned === false,
      `The worker that committed first should get true and the one whose EXEC came too late false; they returned ${r.fastReturned} and ${r.lateReturned}.${r.lateReturned === true && r.handedOn === 1 ? " The late one's EXEC was refused (WATCH), so nothing of its transaction ran, yet it reported a hand-off: look at what EXEC answers (node-redis's exec() throws WatchError; a raw EXEC answers null) before returning true." : ""}`,
      3,
    );
    check(r.pending === 0, "The entry is still pending after both finished.", 3);

    // A change to the document that finishes nothing refuses the EXEC just the same: the work
    // is not done then, and the entry must wait for its retry.
    const { keys: touched, returned } = await handOffWhile(
      c,
      "touched",
      "handOff() while the document is being edited",
      (keys) => c.hSet(keys.doc("doc-1"), "reviewedBy", "paralegal-3"),
    );
    const passed = await handedOn(c, touched, "doc-1");
    const waiting = await pendingCount(c, touched.stream, touched.group);
    check(
      returned === true ? passed === 1 && waiting === 0 : passed === 0 && waiting === 1,
      `Another client changed doc-1's hash (a field that finishes nothing) between handOff()'s WATCH and its EXEC, so the EXEC was refused. handOff() returned ${returned}; doc-1 was handed on ${passed} times and ${waiting} entr${waiting === 1 ? "y is" : "ies are"} pending${returned === false && waiting === 0 && passed === 0 ? ": the entry was acknowledged although nothing was done, and doc-1 is lost" : ""}. When EXEC is refused (WatchError), return false without XACK: the entry comes back after claimIdleMs, and the look before MULTI decides.`,
      3,
    );

    // Other documents' hand-offs write the shared status hash all the time: a WATCH on it
    // refuses this EXEC for work that is nobody else's.
    const {
      keys: shared,
      returned: went,
      scope: neighbour,
    } = await handOffWhile(c, "shared", "handOff() while another document is handed off", (keys) =>
      c.hSet(
        keys.status,
        "doc-2",
        JSON.stringify({ doc: "doc-2", stage: "ocr", state: "done", at: Date.now() }),
      ),
    );
    const watched = sent((cmd) => cmd.scope === neighbour && cmd.name === "WATCH")
      .flatMap((cmd) => cmd.args.slice(1))
      .filter((name) => name !== shared.doc("doc-1"));
    check(
      went === true && (await handedOn(c, shared, "doc-1")) === 1,
      `Another worker handed doc-2 off (it wrote doc-2's status into ${shared.status}) between your handOff()'s WATCH and its EXEC, and your handOff() of doc-1 ${went === true ? "returned true but did not hand doc-1 on" : `returned ${JSON.stringify(went)}`}${watched.length > 0 ? `: it WATCHed ${watched.join(", ")} as well as the document's hash` : ""}. Every hand-off writes the shared status hash (and the streams), so a WATCH on them refuses nearly every EXEC once several workers run: documents wait claimIdleMs over and over, and healthy ones reach maxDeliveries and are dead-lettered. WATCH only the document's own hash.`,
      3,
    );
  });

  test("handOff() reports a commit that failed, rather than passing it off as a duplicate", async () => {
    const keys = keysFor("broken");
    const c = await observer();
    const work = await delivered(c, keys, "doc-1", fresh("ocr"));
    // The next stage's stream is broken (a plain string under its name): the XADD that hands
    // doc-1 on fails with WRONGTYPE, whatever form the commit takes.
    await c.set(keys.next ?? "", "not a stream");
    const client = await learnerClient();
    const from = lastSeq();
    const open = openLearnerConnections();
    let outcome: unknown;
    let rejected = false;
    try {
      outcome = await within(
        Promise.resolve().then(() => exercise.handOff(client, keys, work, RESULT)),
        10_000,
        "handOff() to finish",
      );
    } catch (error) {
      if (error instanceof CheckFailure) throw error;
      failIfNotWritten(error);
      rejected = true;
    }
    const tried = sent((cmd) => cmd.seq > from && cmd.args.includes(keys.next ?? ""));
    check(
      rejected || tried.length === 0,
      `The check had put a plain string where the next stage's stream (keys.next) should be, so your hand-off's ${tried.map((cmd) => cmd.name).join(", ")} on it failed with WRONGTYPE: doc-1 was not handed on. Yet handOff() resolved to ${JSON.stringify(outcome)}${outcome === false ? ', the answer for "another worker already committed this document": the caller moves on and doc-1 never reaches the next stage' : ""}${outcome === true ? ", as if doc-1 had been handed on: a command refused inside EXEC fails alone while the others run, and only the reply to EXEC says so. node-redis's exec() throws for it; a raw EXEC (sendCommand) answers an array holding the error, so look at every reply" : ""}. Catch only WatchError (a refused EXEC) and let every other error reach the caller.`,
      3,
    );
    // The unhappy path closes what the happy one does: a worker whose commits keep failing
    // would otherwise leak a connection per try.
    check(
      await closedAgain(open),
      `handOff() rejected (the next stage's stream was broken) and left ${openLearnerConnections() - open} more connection(s) to Redis open than before: a connection it opens for itself must be closed on every way out, the error included (try ... finally).`,
      3,
    );
  });

  test("handOff() lets a dropped connection's failure reach its caller", async () => {
    const c = await observer();
    // Each of handOff()'s own commands outside the transaction, on the path that sends it: the
    // WATCH of a first hand-off, the UNWATCH and XACK of one that finds the document done.
    const steps: { name: string; finished: boolean; advice: string }[] = [
      { name: "WATCH", finished: false, advice: "await client.watch(...)" },
      { name: "UNWATCH", finished: true, advice: "await client.unwatch()" },
      { name: "XACK", finished: true, advice: "await client.xAck(...)" },
    ];
    for (const step of steps) {
      const keys = keysFor(`drop-${step.name.toLowerCase()}`);
      const work = await delivered(c, keys, "doc-1", fresh("ocr"));
      if (step.finished) await c.hSet(keys.doc("doc-1"), "ocr", RESULT);
      const client = await learnerClient();
      const from = lastSeq();
      // Redis restarts (or fails over) just as that command leaves: its promise rejects.
      const target = (cmd: SentCommand) =>
        cmd.seq > from &&
        cmd.name === step.name &&
        cmd.multi === undefined &&
        (step.name === "UNWATCH" ||
          cmd.args.includes(keys.doc("doc-1")) ||
          cmd.args.includes(work.id));
      let outcome: { value: unknown } | { error: unknown } | undefined;
      const { dropped, unhandled } = await dropUnder(target, async (hasDropped) => {
        outcome = await within(
          settled(Promise.resolve().then(() => exercise.handOff(client, keys, work, RESULT))),
          5000,
          `handOff() with the connection dropped under its ${step.name}`,
        );
        // Sent without await, the command may still be on its way when handOff() returns: let
        // node-redis write it, then wait for the drop under it.
        await new Promise((resolve) => setImmediate(resolve));
        for (let i = 0; i < 100 && !hasDropped() && sent(target).length > 0; i++) await sleep(10);
      });
      // A hand-off that never sends this command on this path is judged by the other tests.
      if (!dropped) continue;
      check(
        unhandled.length === 0,
        `${step.finished ? "doc-1 was already done at this stage, so handOff() had only to clean up" : "handOff() was handing doc-1 on"}, and the check dropped the connection under its ${step.name} (as a Redis restart or a failover does). That ${step.name}'s rejection (${String(unhandled[0])}) was handled by nobody: it was sent without await. Node ends a process on an unhandled rejection, so the worker dies over one dropped connection. Await every command (${step.advice}): node-redis sends them in order either way, and an awaited failure reaches handOff()'s caller, whose loop can try again.`,
        3,
      );
      // A hand-off that fails before its commit must not answer false ("done by another
      // worker"): resolved, its answer must be true of Redis, as for one that tried again after
      // the drop (node-redis reconnects) and got there. On the path that only cleans up, false
      // is true of the document whatever became of the XACK: the entry comes back, is found done
      // and acknowledged then.
      if (step.finished || outcome === undefined || "error" in outcome) continue;
      const pending = await pendingCount(c, keys.stream, keys.group);
      const passed = await handedOn(c, keys, "doc-1");
      check(
        outcome.value === true && pending === 0 && passed === 1,
        `handOff() was handing doc-1 on, and the check dropped the connection under its ${step.name} (as a Redis restart or a failover does): that ${step.name} never reached Redis, doc-1 was handed on ${passed} times and its entry is ${pending === 0 ? "acknowledged" : "still pending"}. Yet handOff() resolved to ${JSON.stringify(outcome.value)}: the failure never reached the caller${outcome.value === false ? ', who takes false for "another worker already committed doc-1"' : ""}. Let the error reject handOff() (${step.advice}, no catch around it): the caller's loop sees Redis is in trouble, and the entry comes back after claimIdleMs. Only a refused EXEC (WatchError) means false.`,
        3,
      );
    }
  });

  test("deadLetter() parks the document with its reason and acknowledges it", async () => {
    const keys = keysFor("dead");
    const c = await observer();
    const client = await learnerClient();
    const work = { ...(await delivered(c, keys, "doc-9", fresh("ocr"), 60_000)), deliveries: 3 };
    // Another stage parked a document since doc-9's entry was queued (a minute ago): the
    // dead-letter stream already ends after doc-9's entry ID.
    const other = await c.xAdd(keys.dead, "*", {
      doc: "doc-3",
      stage: "ner",
      reason: "gave up at ner after 4 deliveries",
      entry: "0-1",
      deliveries: "4",
    });
    const events = await listen(keys.channel);
    const reason = "gave up at ocr after 3 deliveries: OCR could not read the scan";
    const startedAt = Date.now();
    const from = lastSeq();
    await call("deadLetter()", () => exercise.deadLetter(client, keys, work, reason)).catch(
      (error: unknown) => {
        const own = sent(
          (x) =>
            x.seq > from &&
            x.name === "XADD" &&
            x.args[1] === keys.dead &&
            x.args.slice(2).some((a) => /^\d+-\d+$/.test(a)),
        );
        if (own.length === 0) throw error;
        return fail(
          `deadLetter() failed: its XADD to ${keys.dead} gave the dead letter an ID of its own (${own[0]?.args.slice(2).find((a) => /^\d+-\d+$/.test(a))}, the original entry's), and Redis refused it: the dead-letter stream already ends with a later letter (${other}, another document parked since), and a stream's IDs only rise. Inside EXEC the other commands still ran, so doc-9 is now acknowledged and marked dead with no dead letter. Let Redis choose the letter's ID (XADD ... *) and keep the original entry's ID in the field "entry".`,
          2,
        );
      },
    );
    // Read before any await of the check's own: what the learner's code sends from here on, it
    // sent after deadLetter() resolved.
    const returned = lastSeq();
    const endedAt = Date.now();
    const dead = ((await c.xRange(keys.dead, "-", "+")) ?? []).filter((e) => e.id !== other);
    // None yet, and an EXEC after it returned: its commit was not awaited. Waited for (bounded)
    // only when wrong: a right answer has its letter already.
    const execAfter = () => sent((x) => x.seq > returned && x.name === "EXEC").length > 0;
    check(
      dead.length > 0 || !(await until(execAfter, 1000)),
      `deadLetter() resolved before its dead letter was written: ${keys.dead} held nothing for doc-9 when it returned, and its EXEC went out only after. Its transaction (WATCH, the check, MULTI/EXEC) was still on its way: await it (await the helper that commits it, then return), or the caller moves on as if doc-9 were parked, and a worker stopped right then leaves it half done. Node also ends a process whose unawaited commit fails.`,
      2,
    );
    check(
      dead.length === 1,
      `The dead-letter stream ${keys.dead} should hold one entry for doc-9; it holds ${dead.length}. XADD it there with the document, the stage, the reason, the original entry id and the delivery count.`,
      2,
    );
    const fields = dead[0]?.message ?? {};
    check(
      fields.doc === "doc-9" && fields.stage === "ocr" && String(fields.reason).includes(reason),
      `The dead letter should have the fields doc "doc-9", stage "ocr" and the reason; it has ${JSON.stringify(fields)}.`,
      2,
    );
    check(
      fields.entry === work.id,
      `The dead letter should name the original entry (field "entry": "${work.id}") so it can be traced and replayed; it has ${JSON.stringify(fields.entry)}.`,
      2,
    );
    check(
      fields.deliveries === "3",
      `The dead letter should say how often the document was delivered (field "deliveries": "3", from work.deliveries); it has ${JSON.stringify(fields.deliveries)}.`,
      2,
    );
    check(
      (await pendingCount(c, keys.stream, keys.group)) === 0,
      `doc-9's entry is still pending after deadLetter(): XACK it in the same transaction, or it is delivered (and dead-lettered) again and again.${ackCause(
        sent((x) => x.seq > from),
        keys,
      )}`,
      2,
    );
    check(
      (await handedOn(c, keys, "doc-9")) === 0,
      "deadLetter() handed doc-9 on to the next stage: a poison document goes nowhere further.",
      2,
    );
    // The protocol's mark names the stage: whoever reads the hash (a person, a worker in another
    // language) learns where the document stopped.
    const mark = await c.hGet(keys.doc("doc-9"), "dead");
    check(
      mark === "ocr",
      `doc-9's hash should carry the field "dead" with the stage it died at ("ocr"); it holds ${JSON.stringify(mark)}. HSET <doc> dead <stage> in the same transaction: the guard looks for the field, and whoever reads the document learns where it stopped (the lesson's table of names).`,
      2,
    );
    await eventually(
      () => events.some((e) => e.doc === "doc-9" && e.state === "dead"),
      2000,
      'No "dead" status event arrived for doc-9: broadcast { stage: "ocr", state: "dead", reason } in the same transaction, so dashboards show why.',
      2,
    );
    const heard = events.find((e) => e.state === "dead");
    check(
      heard?.reason === reason,
      `The "dead" event should carry the reason deadLetter() was given ("${reason}"); it carried ${JSON.stringify(heard?.reason)}. Put the reason in the StatusEvent deadLetter() broadcasts too ({ doc, stage, state: "dead", at, reason }), not only in the dead letter: dashboards show why from the event alone.`,
      2,
    );
    const late = wrongEventTime(heard?.at, startedAt, endedAt);
    check(
      late === undefined && heard?.stage === "ocr",
      `The "dead" event ${JSON.stringify(heard)} should be { doc, stage: "ocr", state: "dead", at, reason }${late ? `, but ${late}` : ""}. Set at = Date.now() when the document is parked.`,
      2,
    );
  });

  /**
   * One worker runs deadLetter(), killed just before its `crashBefore`th command if given; if the
   * entry is still pending then, another worker takes it over and gives up on it again.
   */
  async function deadLetterScenario(name: string, crashBefore?: number) {
    const keys = keysFor(name);
    const c = await observer();
    const work = { ...(await delivered(c, keys, "doc-9", fresh("ocr"))), deliveries: 4 };
    const events = await listen(keys.channel);
    const first = await worker("giving-up");
    const { commands } = await crashThenTakeOver(keys, first, crashBefore, (client, takenOver) =>
      takenOver
        ? call("deadLetter() in the worker that took over", () =>
            exercise.deadLetter(client, keys, { ...work, deliveries: 5 }, DEAD_REASON),
          )
        : call("deadLetter()", () => exercise.deadLetter(client, keys, work, DEAD_REASON)),
    );
    await settle(events);
    return {
      commands,
      letters: ((await c.xRange(keys.dead, "-", "+")) ?? []).length,
      mark: await c.hGet(keys.doc("doc-9"), "dead"),
      pending: await pendingCount(c, keys.stream, keys.group),
      told: events.filter((e) => e.doc === "doc-9" && e.state === "dead").length,
    };
  }

  test("deadLetter() leaves nothing half done, whatever moment its worker dies", async () => {
    const clean = await deadLetterScenario("dead-crash-none");
    const steps = crashPoints(clean.commands);
    for (const { command: cmd, nth } of steps) {
      const r = await deadLetterScenario("dead-crash", nth);
      const at = `If the worker giving up on doc-9 dies just before its ${cmd.name === "EXEC" ? "EXEC (the whole MULTI)" : cmd.name} and another worker takes the entry over and gives up too`;
      check(
        r.letters === 1 && r.mark === "ocr" && r.pending === 0 && r.told === 1,
        `${at}, doc-9 ends with ${r.letters} dead letter(s), "dead" mark ${JSON.stringify(r.mark)}, ${r.pending} entr${r.pending === 1 ? "y" : "ies"} pending and ${r.told} "dead" event(s); expected 1, "ocr", 0 and 1. The mark is part of the dead letter: a mark written before the transaction (HSETNX as a lock) tells the next worker "done" about a letter that was never written. Put the mark, the XADD, the XACK and the status in ONE MULTI ... EXEC, guarded by WATCH.`,
        3,
      );
    }
  });

  test("deadLetter() lets a dropped connection's failure reach its caller", async () => {
    const c = await observer();
    const keys = keysFor("dead-drop");
    const work = { ...(await delivered(c, keys, "doc-9", fresh("ocr"))), deliveries: 3 };
    const client = await learnerClient();
    const from = lastSeq();
    // Redis restarts (or fails over) just as the commit leaves: none of it is applied.
    const commit = (cmd: SentCommand) =>
      cmd.seq > from && (cmd.name === "EXEC" || /^(EVAL|EVALSHA|FCALL)$/.test(cmd.name));
    let outcome: { value: unknown } | { error: unknown } | undefined;
    const { dropped } = await dropUnder(commit, async (hasDropped) => {
      outcome = await within(
        settled(Promise.resolve().then(() => exercise.deadLetter(client, keys, work, "bad PDF"))),
        5000,
        "deadLetter() with the connection dropped under its commit",
      );
      // A commit sent without await may still be on its way when deadLetter() returns.
      await new Promise((resolve) => setImmediate(resolve));
      for (let i = 0; i < 100 && !hasDropped() && sent(commit).length > 0; i++) await sleep(10);
    });
    if (!dropped || outcome === undefined || "error" in outcome) return;
    // Resolved, deadLetter() says doc-9 is parked: right only for one that tried again after
    // the drop (node-redis reconnects) and got there.
    const letters = await c.xLen(keys.dead);
    const pending = await pendingCount(c, keys.stream, keys.group);
    check(
      letters === 1 && pending === 0,
      `The check dropped the connection under deadLetter()'s ${sent(commit)[0]?.name ?? "commit"} (as a Redis restart or a failover does), so doc-9 was not parked (${letters} dead letter(s), ${pending} entr${pending === 1 ? "y" : "ies"} still pending), yet deadLetter() resolved: the failure never reached the caller, who takes doc-9 for parked. Await the commit and let its error reject deadLetter(), no catch around it: the caller's loop sees Redis is in trouble, and the entry comes back after claimIdleMs.`,
      3,
    );
  });

  test("deadLetter() writes one dead letter when two workers give up on the same entry", async () => {
    const keys = keysFor("dead-twice");
    const c = await observer();
    const work = { ...(await delivered(c, keys, "doc-9", fresh("ocr"))), deliveries: 4 };
    const events = await listen(keys.channel);
    const reason = "gave up at ocr after 4 deliveries: OCR could not read the scan";
    const late = await worker("late");
    const other = await learnerClient();
    // The other worker (it claimed the entry meanwhile) gives up at the moment this one commits.
    const competitor = beforeCommand(
      (cmd) => cmd.scope === late.scope.name && commits(cmd),
      () =>
        call("deadLetter() in the other worker", () =>
          exercise.deadLetter(other, keys, work, reason),
        ),
    );
    await late.scope.run(() =>
      call("deadLetter()", () => exercise.deadLetter(late.client, keys, work, reason)),
    );
    competitor.cancel();
    await settle(events);
    const deadLetters = async () =>
      ((await c.xRange(keys.dead, "-", "+")) ?? []).filter((e) => e.message.doc === "doc-9").length;
    const guard =
      "Guard the dead letter as you guard the hand-off: mark the document in its hash in the same transaction (e.g. HSET <doc> dead <stage>), check the mark before writing, and WATCH the hash.";
    const raced = await deadLetters();
    check(
      raced === 1,
      `doc-9 was dead-lettered ${raced} times when two workers gave up on the same entry at the same moment: someone now replays it ${raced} times. ${guard}`,
      3,
    );
    const deadEvents = events.filter((e) => e.doc === "doc-9" && e.state === "dead").length;
    check(
      deadEvents === 1,
      `doc-9 has one dead letter, but its "dead" event was published ${deadEvents} times when two workers gave up on it at the same moment: dashboards and the audit count a duplicate. Only the transaction that writes the letter broadcasts; a worker that finds the "dead" mark, or whose EXEC is refused, sends no event of its own (UNWATCH, XACK at most).`,
      3,
    );
    check(
      (await pendingCount(c, keys.stream, keys.group)) === 0,
      "doc-9's entry is still pending after the workers gave up on it.",
      3,
    );
    const done = await call("handOff() in a worker that still had the entry", async () =>
      exercise.handOff(await learnerClient(), keys, work, RESULT),
    );
    check(
      done === false && (await handedOn(c, keys, "doc-9")) === 0,
      `After doc-9 was dead-lettered, a worker that still had the entry handed it on (handOff() returned ${done}): the document is now both dead and on its way. handOff() must treat a dead-lettered document as finished, like one with a result.`,
      3,
    );
    await call("deadLetter() in a worker arriving late", async () =>
      exercise.deadLetter(await learnerClient(), keys, work, reason),
    );
    const afterwards = await deadLetters();
    check(
      afterwards === 1,
      `doc-9 was dead-lettered again by a worker that gave up on it later (${afterwards} dead letters now). ${guard}`,
      3,
    );
    // doc-9 queued for this stage a second time (a takeover upstream), and that entry fails too.
    const copy = { ...(await delivered(c, keys, "doc-9", fresh("ocr"))), deliveries: 4 };
    await call("deadLetter() of a second entry for a dead document", async () =>
      exercise.deadLetter(await learnerClient(), keys, copy, reason),
    );
    const copyLeft = await pendingCount(c, keys.stream, keys.group);
    check(
      copyLeft === 0 && (await deadLetters()) === 1,
      `doc-9, dead-lettered already, came to this stage a second time as a new entry, and deadLetter() was called for it: it should write no second dead letter and acknowledge the entry; ${await deadLetters()} dead letters exist and ${copyLeft} entr${copyLeft === 1 ? "y is" : "ies are"} still pending, so it is claimed and given up on again and again. When the "dead" mark (or the result) is there, UNWATCH and XACK, in deadLetter() as in handOff().`,
      3,
    );
    // One worker handed the document on; another, which took the entry over and saw it fail
    // too often, gives up on it afterwards: the document is done, there is nothing to park.
    const doneKeys = keysFor("dead-done");
    const doneWork = await delivered(c, doneKeys, "doc-5", fresh("ocr"));
    await call("handOff()", async () =>
      exercise.handOff(await learnerClient(), doneKeys, doneWork, RESULT),
    );
    await call("deadLetter() of a document already handed on", async () =>
      exercise.deadLetter(await learnerClient(), doneKeys, { ...doneWork, deliveries: 4 }, reason),
    );
    const parked = ((await c.xRange(doneKeys.dead, "-", "+")) ?? []).length;
    const marked = await c.hGet(doneKeys.doc("doc-5"), "dead");
    check(
      parked === 0 && marked === null,
      `doc-5 had already been handed on at this stage (its hash holds the "ocr" result), yet deadLetter() of the same entry by a worker that gave up on it wrote ${parked} dead letter(s)${marked === null ? "" : ` and marked it dead (${marked})`}: the document is now both done and dead. deadLetter()'s guard is handOff()'s: the stage's result or the "dead" mark means finished, so only acknowledge.`,
      3,
    );
  });
});

function expectedSequence(poisonAt?: string): string[] {
  const sequence = ["intake queued"];
  for (const stage of STAGES) {
    if (stage === poisonAt) return [...sequence, `${stage} dead`];
    sequence.push(`${stage} done`);
  }
  return sequence;
}

async function whereStuck(c: Redis, report: PipelineReport, id: string): Promise<string> {
  const keys = pipelineKeys(key("pipeline:"));
  const doc = report.docs[id] ?? {};
  const stage = STAGES.find((s) => doc[s] === undefined) ?? "embed";
  const entries = (await c.xRange(keys.stream(stage), "-", "+")) ?? [];
  const entry = entries.find((e) => e.message.doc === id);
  if (!entry) return `it never reached the ${stage} stream`;
  const [pending] = await c.xPendingRange(keys.stream(stage), stage, entry.id, entry.id, 1);
  if (!pending) return `its ${stage} entry was acknowledged, yet there is no ${stage} result`;
  const died = report.workerExits.some((w) => pending.consumer.endsWith(`-${w.slot}`));
  return `its ${stage} entry is still pending for ${pending.consumer}${died ? ", a worker that crashed" : ""} (delivered ${pending.deliveriesCounter} ${pending.deliveriesCounter === 1 ? "time" : "times"})`;
}

describe("the whole pipeline", () => {
  test("50 documents, a worker crash and a poison document: 49 complete, 1 dead-lettered, events in stage order", async () => {
    const CRASH = 17;
    const POISON = 31;
    const uploads: Upload[] = Array.from({ length: 50 }, (_, i) => {
      if (i === CRASH) return crashing(sampleUpload(i), "ner");
      if (i === POISON) return poisoned(sampleUpload(i), "classify");
      return sampleUpload(i);
    });
    const report = await runPipeline({
      ...DEFAULTS,
      uploads,
      workers: 2,
      latencyMs: 5,
      failureRate: 0,
      maxDeliveries: 3,
      claimIdleMs: 1000,
      blockMs: 200,
      concurrency: 8,
      badRequests: false,
      stallMs: 8000,
      replaceWorkers: false,
      redisUrl: ctx.redisUrl,
      prefix: key("pipeline:"),
      parts: ctx.target,
      names: { system: `wb:check:pipeline:${ctx.runId}:`, worker: `${LEARNER_CLIENT}:` },
      onSpawn: trackProcess,
    });
    const c = await observer();
    const learnerErrors = report.workerLog.filter(
      (line) => !/ECONNREFUSED|Socket closed/.test(line),
    );
    const firstError = learnerErrors[0] ? ` The workers reported: ${learnerErrors[0]}` : "";
    const refusal = report.feed.failed[0]?.reason ?? "";
    // The API answers 500 with the error's message: the starter's TODO is "not written yet".
    failIfNotWritten(refusal.replace(/^\d+\s+/, ""));
    check(
      report.accepted.length === 50,
      `The intake API accepted ${report.accepted.length} of 50 uploads (it calls your broadcast() for the "queued" event): ${refusal}`,
      2,
    );
    const label = (index: number) =>
      index === CRASH
        ? `doc #${CRASH} (its NER crashed the worker that first took it)`
        : index === POISON
          ? `doc #${POISON} (poison at classify)`
          : `doc #${index}`;
    for (const { index, id, upload } of report.accepted) {
      const doc = report.docs[id] ?? {};
      const dead = report.audit.deadLetters.filter((d) => d.doc === id);
      if (index === POISON) {
        check(
          dead.length === 1 && dead[0]?.stage === "classify" && dead[0].reason.length > 0,
          dead.length === 0
            ? `${label(index)} was not dead-lettered: ${await whereStuck(c, report, id)}.${firstError}`
            : `${label(index)} should be dead-lettered once, at classify, with a reason; the dead-letter stream has ${JSON.stringify(dead)}.`,
          2,
        );
        continue;
      }
      if (doc.embed === undefined) {
        fail(
          `${label(index)} never finished: ${await whereStuck(c, report, id)}. Entries a crashed worker left pending must be taken over (nextWork(): XAUTOCLAIM).${firstError}`,
          1,
        );
      }
      const expected = expectedResults(upload.text);
      for (const stage of STAGES) {
        check(
          doc[stage] === expected[stage],
          `${label(index)} has the wrong ${stage} result: ${doc[stage]}; expected ${expected[stage]}. handOff() must store exactly the result it is given.`,
          2,
        );
      }
      check(dead.length === 0, `${label(index)} completed but was also dead-lettered.`, 2);
    }
    check(
      report.audit.duplicated === 0,
      `Something happened twice: ${report.audit.problems.join("; ")}.`,
      3,
    );
    check(
      report.workerExits.some((w) => w.how === "SIGKILL"),
      `doc #${CRASH} should have crashed the worker that first took it to NER, but no worker died; workers ended: ${JSON.stringify(report.workerExits)}. A worker dies on it when nextWork() returns it as a first delivery (deliveries 1): either nextWork() reported another count (report Redis's: 1 for a new entry, XPENDING's after a claim), or Redis's first delivery of it went to a read whose answer your code did not use, and it came back only as a redelivery after claimIdleMs. A timeout of your own around the read (Promise.race) does that, as does a read left unawaited: wait for the read's answer; BLOCK <blockMs> already bounds the wait.`,
    );
    for (const { index, id } of report.accepted) {
      const seen = report.events.filter((e) => e.doc === id).map(show);
      const expected = expectedSequence(index === POISON ? "classify" : undefined);
      check(
        seen.join(" > ") === expected.join(" > "),
        `The status events for ${label(index)} arrived as ${seen.join(" > ") || "nothing"}; expected ${expected.join(" > ")}: each stage once, in stage order.`,
        2,
      );
    }
    for (const stage of STAGES) {
      const keys = pipelineKeys(key("pipeline:"));
      const pending = Number((await c.xPending(keys.stream(stage), stage)).pending);
      check(pending === 0, `${pending} ${stage} entries are still pending after the run.`, 2);
    }
  }, 60_000);
});

/**
 * Why an entry is still pending although the code sent an XACK: it named another stream or
 * group. Redis answers such an XACK with 0, not an error, so inside MULTI nothing fails.
 */
function ackCause(commands: SentCommand[], keys: StageKeys): string {
  const acks = commands.filter((c) => c.name === "XACK");
  const wrong = acks.find((c) => c.args[1] !== keys.stream || c.args[2] !== keys.group);
  if (acks.length === 0) return " Your code sent no XACK.";
  if (wrong === undefined) return "";
  const [, stream, group] = wrong.args;
  return ` Your code sent XACK ${stream} ${group}, but the entry is on ${keys.stream} in the group ${keys.group}: an XACK for a stream or group that holds no such entry answers 0, not an error, so nothing fails and nothing is acknowledged. Take both from keys (keys.stream, keys.group): the check gives the group a name of its own, not the stage's.`;
}
