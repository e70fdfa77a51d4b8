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
  call,
  check,
  checkClient,
  ctx,
  eventually,
  fail,
  key,
  LEARNER_CLIENT,
  learnerClient,
  loadExercise,
  type Redis,
  sleep,
  trackProcess,
} from "../kit.ts";
import { pendingCount } from "../streams-support.ts";
import { crashingClient } from "./crash.ts";

const exercise = await loadExercise<Parts>("nextWork", "handOff", "deadLetter", "broadcast");

const RESULT = JSON.stringify({ text: "MUTUAL NON-DISCLOSURE AGREEMENT", pages: 1, words: 3 });

function keysFor(name: string): StageKeys {
  return stageKeys(pipelineKeys(key(`${name}:`)), "ocr");
}

/** A document in the OCR stream, already delivered to `consumer`: the work it is doing. */
async function delivered(c: Redis, keys: StageKeys, doc: string, consumer: string): Promise<Work> {
  await c.xGroupCreate(keys.stream, keys.group, "0", { MKSTREAM: true }).catch(() => {});
  await c.hSet(keys.doc(doc), { name: `${doc}.pdf`, text: "MUTUAL NON-DISCLOSURE AGREEMENT" });
  const id = await c.xAdd(keys.stream, "*", { doc });
  await c.xReadGroup(keys.group, consumer, { key: keys.stream, id: ">" }, { COUNT: 1 });
  return { id, doc, deliveries: 1 };
}

/** Every status event on `channel` from now on. */
async function listen(channel: string): Promise<StatusEvent[]> {
  const events: StatusEvent[] = [];
  const subscriber = await checkClient("events");
  await subscriber.subscribe(channel, (message) => {
    try {
      events.push(JSON.parse(message) as StatusEvent);
    } catch {
      events.push({ doc: "?", stage: "intake", state: "queued", at: 0, reason: message });
    }
  });
  return events;
}

const show = (e: Pick<StatusEvent, "stage" | "state">) => `${e.stage} ${e.state}`;

async function handedOn(c: Redis, keys: StageKeys, doc: string): Promise<number> {
  const entries = (await c.xRange(keys.next ?? "", "-", "+")) ?? [];
  return entries.filter((e) => e.message.doc === doc).length;
}

describe("the parts, one at a time", () => {
  test("broadcast() queues the latest status and the event on the transaction it is given", async () => {
    const keys = keysFor("broadcast");
    const events = await listen(keys.channel);
    const client = await learnerClient();
    const c = await checkClient();
    const event: StatusEvent = { doc: "doc-1", stage: "ner", state: "done", at: Date.now() };
    const tx = client.multi();
    await call("broadcast()", () => exercise.broadcast(tx, keys, event));
    check(
      (await c.hGet(keys.status, "doc-1")) === null && events.length === 0,
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
    let parsed: Partial<StatusEvent> = {};
    try {
      parsed = JSON.parse(latest) as StatusEvent;
    } catch {
      fail(`The latest-status hash holds ${JSON.stringify(latest)}, which is not JSON.`, 2);
    }
    check(
      parsed.stage === "ner" && parsed.state === "done" && parsed.doc === "doc-1",
      `The latest-status hash should hold the event itself as JSON; it holds ${latest}.`,
      2,
    );
    await eventually(
      () => events.length > 0,
      2000,
      `No event arrived on the channel ${keys.channel}: broadcast() must PUBLISH the event (as JSON) there, so dashboards hear about it at once.`,
      2,
    );
    const heard = events[0];
    check(
      heard?.doc === "doc-1" && heard.stage === "ner" && heard.state === "done",
      `The channel carried ${JSON.stringify(heard)}; it should carry the event as JSON: ${JSON.stringify(event)}.`,
      2,
    );
  });

  test("nextWork() returns new work, and undefined when there is none", async () => {
    const keys = keysFor("next");
    const c = await checkClient();
    const client = await learnerClient();
    await c.xGroupCreate(keys.stream, keys.group, "0", { MKSTREAM: true });
    const options = { consumer: "ocr-1", claimIdleMs: 1500, blockMs: 100 };
    const none = await call("nextWork() on an empty stream", () =>
      exercise.nextWork(client, keys, options),
    );
    check(
      none === undefined,
      `With no work at all, nextWork() should return undefined after blockMs; it returned ${JSON.stringify(none)}.`,
      2,
    );
    const id = await c.xAdd(keys.stream, "*", { doc: "doc-new" });
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
      pending?.consumer === "ocr-1",
      `The entry should now be pending for consumer "ocr-1" (XREADGROUP GROUP ${keys.group} ocr-1); XPENDING shows ${JSON.stringify(pending ?? "nothing")}.`,
      2,
    );
  });

  test("nextWork() takes over what a crashed worker left pending, but not what a live one is working on", async () => {
    const keys = keysFor("claim");
    const c = await checkClient();
    const client = await learnerClient();
    const claimIdleMs = 2500;
    await c.xGroupCreate(keys.stream, keys.group, "0", { MKSTREAM: true });
    const busy = { id: await c.xAdd(keys.stream, "*", { doc: "doc-busy" }) };
    const orphan = { id: await c.xAdd(keys.stream, "*", { doc: "doc-orphan" }) };
    await c.xReadGroup(keys.group, "ocr-crashed", { key: keys.stream, id: ">" }, { COUNT: 2 });
    await sleep(claimIdleMs + 150);
    // ocr-busy took doc-busy over a moment ago and is working on it: it is first in the PEL.
    await c.xClaim(keys.stream, keys.group, "ocr-busy", 0, busy.id);
    const options = { consumer: "ocr-2", claimIdleMs, blockMs: 100 };
    const work = await call("nextWork()", () => exercise.nextWork(client, keys, options));
    if (work?.id === busy.id) {
      fail(
        `nextWork() took doc-busy from ocr-busy, which received it only moments ago and is still working on it. Only claim entries idle longer than claimIdleMs (${claimIdleMs} ms): XAUTOCLAIM's min-idle-time.`,
        2,
      );
    }
    check(
      work?.id === orphan.id,
      `nextWork() returned ${JSON.stringify(work)}, but doc-orphan (entry ${orphan.id}) has been pending for ocr-crashed, a crashed worker, for over ${claimIdleMs} ms. Take such entries over before reading new ones: XAUTOCLAIM <stream> <group> <consumer> <claimIdleMs> 0-0 COUNT 1.`,
      1,
    );
    check(
      work.deliveries === 2,
      `doc-orphan has now been delivered twice (once to the crashed worker, once to you), so deliveries should be 2; nextWork() said ${work.deliveries}. XPENDING <stream> <group> <id> <id> 1 reports the count.`,
      2,
    );
    const again = await call("nextWork() a second time", () =>
      exercise.nextWork(client, keys, options),
    );
    check(
      again === undefined,
      `Called again, nextWork() returned ${JSON.stringify(again)}: there was nothing to take (doc-orphan is yours now, doc-busy belongs to the live worker ocr-busy, nothing is new).`,
      2,
    );
  });

  async function handOffScenario(name: string, crashAfter: number) {
    const keys = keysFor(name);
    const c = await checkClient();
    const work = await delivered(c, keys, "doc-1", "ocr-1");
    const events = await listen(keys.channel);
    const spy = crashingClient(await learnerClient(), crashAfter);
    let returned: unknown;
    try {
      returned = await call("handOff()", () => exercise.handOff(spy.client, keys, work, RESULT));
    } catch (error) {
      if (!spy.crashed()) throw error;
    }
    if (spy.crashed() && (await pendingCount(c, keys.stream, keys.group)) > 0) {
      // The entry is still pending: after claimIdleMs another worker claims it and does it again.
      const other = await learnerClient();
      await call("handOff() in the worker that took over", () =>
        exercise.handOff(other, keys, { ...work, deliveries: 2 }, RESULT),
      );
    }
    // Events take a moment to arrive; then wait a little more for any duplicate.
    for (let i = 0; i < 50 && events.length === 0; i++) await sleep(20);
    await sleep(100);
    return {
      writes: spy.writes,
      returned,
      stored: await c.hGet(keys.doc("doc-1"), "ocr"),
      handedOn: await handedOn(c, keys, "doc-1"),
      pending: await pendingCount(c, keys.stream, keys.group),
      done: events.filter((e) => e.doc === "doc-1" && show(e) === "ocr done").length,
      latest: await c.hGet(keys.status, "doc-1"),
    };
  }

  test("handOff() stores the result, hands the document on, acknowledges and broadcasts", async () => {
    const r = await handOffScenario("hand", Number.POSITIVE_INFINITY);
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
      "The OCR entry is still pending after handOff(): acknowledge it (XACK) so no one does it again.",
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
    check(
      r.returned === true,
      `handOff() should return true when it handed the document on; it returned ${JSON.stringify(r.returned)}.`,
      2,
    );
  });

  test("handOff() leaves nothing half done, whatever moment its worker dies", async () => {
    const clean = await handOffScenario("crash-none", Number.POSITIVE_INFINITY);
    // "EXEC", or "EXEC #1" and "EXEC #2" when there are two transactions.
    const writes = clean.writes.map((name, i, all) =>
      all.filter((n) => n === name).length > 1
        ? `${name} #${all.slice(0, i + 1).filter((n) => n === name).length}`
        : name,
    );
    for (let k = 1; k <= writes.length; k++) {
      const r = await handOffScenario(`crash-${k}`, k);
      const at = `If the worker dies right after its write number ${k} (${writes.slice(0, k).join(", ")} done; ${writes.slice(k).join(", ") || "nothing"} not yet) and another worker takes over`;
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

  test("handOff() does nothing twice when two workers finish the same entry", async () => {
    const keys = keysFor("twice");
    const c = await checkClient();
    const work = await delivered(c, keys, "doc-1", "ocr-1");
    const events = await listen(keys.channel);
    const slow = await learnerClient();
    const fast = await learnerClient();
    // ocr-1 was slow; after claimIdleMs ocr-2 claimed the entry and finished first.
    await c.xClaim(keys.stream, keys.group, "ocr-2", 0, work.id);
    const first = await call("handOff() in ocr-2", () =>
      exercise.handOff(fast, keys, { ...work, deliveries: 2 }, RESULT),
    );
    const second = await call("handOff() in ocr-1, finishing late", () =>
      exercise.handOff(slow, keys, work, RESULT),
    );
    await sleep(150);
    const count = await handedOn(c, keys, "doc-1");
    check(
      count === 1,
      `handOff() handed doc-1 on twice when two workers finished the same entry (one had claimed it from the other): the next stage now does the work twice. Before committing, check whether the document's hash already has this stage's result, and WATCH the hash so that check still holds at EXEC.`,
      3,
    );
    check(
      first === true && second === false,
      `The first handOff() should return true and the late one false (nothing to do but XACK); they returned ${first} and ${second}.`,
      3,
    );
    const done = events.filter((e) => e.doc === "doc-1" && show(e) === "ocr done").length;
    check(done === 1, `"ocr done" was published ${done} times for one piece of work.`, 3);
    check(
      (await pendingCount(c, keys.stream, keys.group)) === 0,
      "The entry is still pending after both finished.",
      3,
    );
  });

  test("deadLetter() parks the document with its reason and acknowledges it", async () => {
    const keys = keysFor("dead");
    const c = await checkClient();
    const client = await learnerClient();
    const work = { ...(await delivered(c, keys, "doc-9", "ocr-1")), deliveries: 3 };
    const events = await listen(keys.channel);
    const reason = "gave up at ocr after 3 deliveries: OCR could not read the scan";
    await call("deadLetter()", () => exercise.deadLetter(client, keys, work, reason));
    const dead = (await c.xRange(keys.dead, "-", "+")) ?? [];
    check(
      dead.length === 1,
      `The dead-letter stream ${keys.dead} should hold one entry for doc-9; it holds ${dead.length}. XADD it there with the document, the stage, the reason and the original entry id.`,
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
      (await pendingCount(c, keys.stream, keys.group)) === 0,
      "doc-9's entry is still pending after deadLetter(): XACK it in the same transaction, or it is delivered (and dead-lettered) again and again.",
      2,
    );
    check(
      (await handedOn(c, keys, "doc-9")) === 0,
      "deadLetter() handed doc-9 on to the next stage: a poison document goes nowhere further.",
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
      `The "dead" event should carry the reason; it carried ${JSON.stringify(heard?.reason)}.`,
      2,
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
    const c = await checkClient();
    const learnerErrors = report.workerLog.filter(
      (line) => !/ECONNREFUSED|Socket closed/.test(line),
    );
    const firstError = learnerErrors[0] ? ` The workers reported: ${learnerErrors[0]}` : "";
    check(
      report.accepted.length === 50,
      `The intake API accepted ${report.accepted.length} of 50 uploads (it calls your broadcast() for the "queued" event): ${report.feed.failed[0]?.reason ?? ""}`,
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
      `doc #${CRASH} should have crashed the worker that first took it to NER, but no worker died; workers ended: ${JSON.stringify(report.workerExits)}.`,
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
