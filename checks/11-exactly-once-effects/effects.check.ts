import { test } from "vitest";
import {
  call,
  check,
  checkClient,
  fail,
  failIfNotWritten,
  fresh,
  freshKey,
  isNotWritten,
  learnerClient,
  loadExercise,
  type Redis,
  until,
  within,
} from "../kit.ts";
import { pendingCount } from "../streams-support.ts";
import {
  before as beforeCommand,
  crashPoints,
  dropConnection,
  holdIncoming,
  holdReply,
  nothingInFlight,
  openLearnerConnections,
  type Scope,
  type SentCommand,
  scope,
  sent,
} from "../wire.ts";

interface Delivery {
  id: string;
  docId: string;
  text: string;
}

interface StageOptions {
  stream: string;
  group: string;
  nextStream: string;
  resultPrefix: string;
  extractEntities(doc: Delivery): Promise<string>;
}

interface Exercise {
  entitiesOnce(client: Redis, options: StageOptions, doc: Delivery): Promise<string>;
  handOff(client: Redis, options: StageOptions, doc: Delivery, entities: string): Promise<void>;
  processDelivery(client: Redis, options: StageOptions, doc: Delivery): Promise<void>;
}

const exercise = await loadExercise<Exercise>("entitiesOnce", "handOff", "processDelivery");

/** The lesson's RESULT_TTL_S: how long a stored result must live. */
const RESULT_TTL_S = 7 * 24 * 3600;

/**
 * A stand-in for the NER service that records every call. Like a real model it does not answer
 * the same twice: each call's result carries its call number, so a repeated call shows.
 */
class NerService {
  calls: string[] = [];
  /** Documents whose next call fails, e.g. a timeout. */
  failNext = new Set<string>();
  /** Documents in which the model finds nothing: their result is the empty string. */
  findsNothing = new Set<string>();
  /** Runs inside the next call, before it answers: another worker racing this one. */
  duringNextCall: (() => Promise<unknown>) | undefined;

  extract = async (doc: Delivery): Promise<string> => {
    const call = this.calls.push(doc.docId);
    const during = this.duringNextCall;
    this.duringNextCall = undefined;
    await during?.();
    if (this.failNext.delete(doc.docId)) throw new Error("NER service timed out");
    if (this.findsNothing.has(doc.docId)) return "";
    return `PARTY:Acme Corp;DATE:2024-05-01 (${doc.docId}, call ${call})`;
  };

  callsFor(docId: string): number {
    return this.calls.filter((d) => d === docId).length;
  }
}

interface Stage {
  observer: Redis;
  client: Redis;
  options: StageOptions;
  service: NerService;
  /** The consumer the check reads deliveries as. */
  consumer: string;
}

let connections: Promise<[Redis, Redis]> | undefined;

/** Fresh stream, group and consumer names: code that hard-codes "ner" fails. */
async function setUp(name: string): Promise<Stage> {
  connections ??= Promise.all([checkClient(), learnerClient()]);
  const [observer, client] = await connections;
  const stream = freshKey(`${name}:ner`);
  const group = fresh("ner");
  await observer.xGroupCreate(stream, group, "0", { MKSTREAM: true });
  const service = new NerService();
  const options: StageOptions = {
    stream,
    group,
    nextStream: freshKey(`${name}:classify`),
    resultPrefix: `${freshKey(`${name}:ner:result`)}:`,
    extractEntities: service.extract,
  };
  return { observer, client, options, service, consumer: fresh("ner") };
}

async function submit({ observer, options }: Stage, ...docIds: string[]): Promise<void> {
  for (const docId of docIds) {
    await observer.xAdd(options.stream, "*", { docId, text: `Lease agreement ${docId} ...` });
  }
}

function toDeliveries(
  reply: { messages: { id: string; message: Record<string, string> }[] }[] | null,
): Delivery[] {
  return (reply?.[0]?.messages ?? []).map(({ id, message }) => ({
    id,
    docId: message.docId ?? "",
    text: message.text ?? "",
  }));
}

/** What the group delivers to this stage's worker: new entries (">") or its pending ones ("0"). */
async function deliver(stage: Stage, from: ">" | "0"): Promise<Delivery[]> {
  const { observer, options, consumer } = stage;
  return toDeliveries(
    await observer.xReadGroup(
      options.group,
      consumer,
      { key: options.stream, id: from },
      { COUNT: 100 },
    ),
  );
}

async function handedOn({ observer, options }: Stage, docId: string): Promise<string[]> {
  const entries = (await observer.xRange(options.nextStream, "-", "+")) ?? [];
  return entries.filter((e) => e.message.docId === docId).map((e) => e.message.entities ?? "");
}

/** Submits a document and delivers it to the check's consumer, as a worker's read would. */
async function deliverNew(stage: Stage, docId: string): Promise<Delivery> {
  await submit(stage, docId);
  const [doc] = await deliver(stage, ">");
  if (!doc) throw new Error("no delivery");
  return doc;
}

/** The hand-off's last step: the EXEC of its MULTI, or a script. */
const handOffLastStep = (c: SentCommand) => ["EXEC", "EVAL", "EVALSHA", "FCALL"].includes(c.name);

function storedResult({ observer, options }: Stage, docId: string): Promise<string | null> {
  return observer.get(`${options.resultPrefix}${docId}`);
}

/**
 * Runs learner code that is meant to fail here (a crash, a failed AI call) and returns its
 * error; a TODO still in place or a hang fails the check as call() would.
 */
async function failing(what: string, run: () => Promise<void>): Promise<Error | undefined> {
  try {
    await within(run(), 10_000, `${what} to finish`);
    return undefined;
  } catch (error) {
    failIfNotWritten(error, what);
    const message = error instanceof Error ? error.message : String(error);
    if (error instanceof Error && error.name === "CheckFailure") throw error;
    return error instanceof Error ? error : new Error(message);
  }
}

async function processOne(
  stage: Stage,
  doc: Delivery,
  client: Redis = stage.client,
): Promise<void> {
  const from = sent().at(-1)?.seq ?? 0;
  try {
    await call(`processDelivery(${doc.docId})`, () =>
      exercise.processDelivery(client, stage.options, doc),
    );
  } catch (error) {
    await explainWrongAck(stage, doc, from);
    throw error;
  }
}

/**
 * Fails with the cause in the learner's terms when the XACK that went with a failed call named
 * something other than the delivery's entry ID (Redis answers "Invalid stream ID").
 */
async function explainWrongAck(stage: Stage, doc: Delivery, from: number): Promise<void> {
  const acked = sent(
    (c) => c.seq > from && c.name === "XACK" && c.args[1] === stage.options.stream,
  ).flatMap((c) => c.args.slice(3));
  // Redis refuses only what is no entry ID; another delivery's ID (a second worker's XACK) is not this call's mistake.
  const wrong = acked.filter((id) => id !== doc.id && !/^\d+-\d+$/.test(id));
  if (wrong.length === 0) return;
  const handed = (await handedOn(stage, doc.docId)).length;
  fail(
    `processDelivery(${doc.docId}) failed: its XACK named ${wrong.map((id) => JSON.stringify(id)).join(", ")}, and Redis refused it. XACK takes the stream entry's ID, doc.id (${JSON.stringify(doc.id)} here), not the document's ID (doc.docId, ${JSON.stringify(doc.docId)}).${handed > 0 ? ` The XADD went through all the same (a MULTI is no rollback): ${doc.docId} was handed on while its entry is still pending here, so its retry hands it on a second time.` : ""}`,
    2,
  );
}

/**
 * Holds the hand-off's last step (EXEC, a script, or a lone XACK) at the socket for a moment:
 * a processDelivery() that settles meanwhile did not wait for its hand-off, and its caller
 * would read the next entry while this one is still in flight, or lose it to a crash.
 */
async function handOffAwaited(stage: Stage, doc: Delivery): Promise<void> {
  const lastSteps = new Set(["EVAL", "EVALSHA", "FCALL", "XACK"]);
  let settled = false;
  // Whether the call had returned by the time the last step was about to reach Redis. The
  // hold runs once Redis has answered the commands before it, which may be after it matched.
  let returnedEarly!: (early: boolean) => void;
  const held = new Promise<boolean>((resolve) => {
    returnedEarly = resolve;
  });
  const hold = beforeCommand(
    (c) => c.name === "EXEC" || (lastSteps.has(c.name) && c.multi === undefined),
    async () => returnedEarly(await until(() => settled, 150)),
  );
  try {
    await processOne(stage, doc);
  } finally {
    settled = true;
  }
  // A hand-off nobody awaited may leave only after the call returned.
  if (!hold.hasFired()) await Promise.race([hold.fired, until(() => false, 100)]);
  if (!hold.hasFired()) {
    hold.cancel();
    return;
  }
  check(
    !(await within(held, 5000, "the held hand-off")),
    `processDelivery(${doc.docId}) returned while its hand-off (XADD + XACK) had not reached Redis yet: an await is missing (on exec(), or on handOff()). The caller goes on to the next entry, and a crash now loses this one.`,
    2,
  );
}

/** An upload's own ID, as a client may choose it: spaces, a slash, a colon, a glob character. */
const ODD_DOC_ID = "Acme lease 2024/ü:*";

test("each document is analysed, stored under its ID and handed on", async () => {
  const stage = await setUp("docs");
  const docIds = ["doc-1", "doc-2", ODD_DOC_ID];
  await submit(stage, ...docIds);
  const open = openLearnerConnections();
  const [firstDoc, ...rest] = await deliver(stage, ">");
  if (!firstDoc) throw new Error("no delivery");
  await handOffAwaited(stage, firstDoc);
  for (const doc of rest) await processOne(stage, doc);
  if (!(await until(() => openLearnerConnections() <= open, 1000))) {
    fail(
      `After three calls of processDelivery(), ${openLearnerConnections() - open} more connections to Redis are open than before: each call opens one and leaves it open. Use the client you are given, or close (destroy) a connection of your own when the call is done.`,
      2,
    );
  }

  for (const docId of docIds) {
    const calls = stage.service.callsFor(docId);
    check(calls === 1, `extractEntities() ran ${calls} times for ${docId}; expected once.`, 2);
    const stored = await storedResult(stage, docId);
    check(
      stored?.includes(docId),
      `The result for ${docId} should be stored at ${stage.options.resultPrefix}${docId}; that key holds ${JSON.stringify(stored)}.${docId === ODD_DOC_ID && stored === null ? " Put the document's ID into the key as it is: a Redis key may hold any characters, and a key changed on the way (encoded, cleaned up) is one the next reader of that result does not find." : ""}`,
      2,
    );
    const ttl = await stage.observer.ttl(`${stage.options.resultPrefix}${docId}`);
    check(
      ttl > RESULT_TTL_S - 60 && ttl <= RESULT_TTL_S,
      ttl < 0
        ? `The result for ${docId} never expires: give it a lifetime (SET ... EX RESULT_TTL_S), or results pile up forever.`
        : `The result for ${docId} expires in ${ttl} s; it should live RESULT_TTL_S = ${RESULT_TTL_S} s (a week: SET ... EX, in seconds), long enough for any redelivery or duplicate upload.`,
      2,
    );
    const sent = await handedOn(stage, docId);
    check(
      sent.length === 1 && sent[0] === stored,
      sent.length === 1 && sent[0] !== "" && stored !== null
        ? `${docId} was handed on with entities ${JSON.stringify(sent[0])}, but Redis stores ${JSON.stringify(stored)} as its result: a redelivery would hand on the stored value, so the two must be the same. Store the entities string as it is (not JSON.stringify of it), and hand on that same string.`
        : `${docId} should be handed on to ${stage.options.nextStream} once, with its entities as the "entities" field; found ${JSON.stringify(sent)}.`,
      2,
    );
  }
  const left = await pendingCount(stage.observer, stage.options.stream, stage.options.group);
  check(
    left === 0,
    `${left} entries are still pending in group ${stage.options.group}: the hand-off must XACK them (in options.group, on options.stream).`,
    2,
  );
});

test("a crash between the work and the hand-off: the redelivery hands on the same result", async () => {
  const stage = await setUp("crash");
  await submit(stage, "doc-a");
  const [first] = await deliver(stage, ">");
  if (!first) throw new Error("no delivery");
  // The worker did the work and stored its result, then died before its hand-off.
  const entities = await call("entitiesOnce(doc-a)", () =>
    exercise.entitiesOnce(stage.client, stage.options, first),
  );
  const stored = await storedResult(stage, "doc-a");
  check(
    entities === stored,
    `entitiesOnce() should return the result it stored (${JSON.stringify(stored)}); it returned ${JSON.stringify(entities)}.`,
    2,
  );
  check(
    (await handedOn(stage, "doc-a")).length === 0 &&
      (await pendingCount(stage.observer, stage.options.stream, stage.options.group)) === 1,
    "entitiesOnce() should only compute and store the result: handing on and acknowledging is handOff()'s job.",
  );

  const [again] = await deliver(stage, "0");
  check(again?.id === first.id, "The entry should still be pending after the crash.");
  await processOne(stage, again);

  const calls = stage.service.callsFor("doc-a");
  check(
    calls === 1,
    `extractEntities() ran ${calls} times for doc-a: the redelivery after the crash called the service again, although the result was already stored. Look for the stored result (keyed by document ID) first, and only call the service when there is none.`,
    1,
  );
  const sent = await handedOn(stage, "doc-a");
  check(
    sent.length === 1 && sent[0] === entities,
    `After the redelivery, doc-a should be handed on once with the result computed before the crash (${JSON.stringify(entities)}); found ${JSON.stringify(sent)}.`,
    2,
  );
  const left = await pendingCount(stage.observer, stage.options.stream, stage.options.group);
  check(left === 0, "doc-a is still pending after the redelivery: hand it off with XACK.", 2);
});

test("a document submitted twice yields one result", async () => {
  const stage = await setUp("dupes");
  // doc-n is a document the model finds no entities in: its stored result is "".
  stage.service.findsNothing.add("doc-n");
  await submit(stage, "doc-b", "doc-c", "doc-b", "doc-n", "doc-n");
  for (const doc of await deliver(stage, ">")) await processOne(stage, doc);

  const calls = stage.service.callsFor("doc-b");
  check(
    calls === 1,
    `extractEntities() ran ${calls} times for doc-b, which was uploaded twice: a duplicate must find the stored result and reuse it.`,
    1,
  );
  const stored = await storedResult(stage, "doc-b");
  const sent = await handedOn(stage, "doc-b");
  check(
    sent.length > 0 && sent.every((entities) => entities === stored),
    `Every hand-off of doc-b should carry the one stored result ${JSON.stringify(stored)}; found ${JSON.stringify(sent)}.`,
    2,
  );
  const nothing = stage.service.callsFor("doc-n");
  check(
    nothing === 1,
    `extractEntities() ran ${nothing} times for doc-n, uploaded twice; the model found no entities in it the first time, and the stored result "" was there for the second upload. An empty result is a result: test the GET's reply against null, not for truthiness.`,
    2,
  );
  const emptyOnes = ((await stage.observer.xRange(stage.options.nextStream, "-", "+")) ?? [])
    .filter((e) => e.message.docId === "doc-n")
    .map((e) => e.message);
  check(
    emptyOnes.length > 0 && emptyOnes.every((fields) => fields.entities === ""),
    `doc-n, in which the model found no entities, was handed on as ${JSON.stringify(emptyOnes)}: each hand-off should carry its stored result, entities: "". Without the field the next stage cannot tell "nothing found" from "never analysed". Put entities in the XADD whatever its value, the empty string included.`,
    2,
  );

  // Its TTL over, doc-b's result is gone: an upload now is new work for the model.
  await stage.observer.del(`${stage.options.resultPrefix}doc-b`);
  await submit(stage, "doc-b");
  for (const doc of await deliver(stage, ">")) await processOne(stage, doc);
  const again = stage.service.callsFor("doc-b");
  const renewed = await storedResult(stage, "doc-b");
  check(
    again === 2 && renewed !== null && renewed !== stored,
    `doc-b's stored result expired (the check deleted it, as its TTL would), then doc-b was uploaded once more: nothing was stored, so extractEntities() should run again and its answer be stored. extractEntities() ran ${again} time(s) for doc-b in all, and the result key now holds ${JSON.stringify(renewed)}${again === 1 ? ": your code answered from a copy in the process's memory (a map of model calls per document that is never emptied keeps every answer, and grows with every document for as long as the worker runs). Redis is where results live: remove a shared call from such a map once it has settled" : ""}.`,
    2,
  );
});

/**
 * A condition for until(): `moved` came true, or learner code has been waiting on something in
 * its own process (nothing on its way to or from Redis) for 5 polls and 100 ms running. A
 * command node-redis writes on a later tick is written between two polls, so it is never missed.
 */
function waitsInProcess(moved: () => boolean): () => boolean {
  let quietPolls = 0;
  let quietSince = 0;
  return () => {
    if (moved()) return true;
    if (!nothingInFlight()) {
      quietPolls = 0;
      return false;
    }
    if (quietPolls++ === 0) quietSince = Date.now();
    return quietPolls >= 5 && Date.now() - quietSince >= 100;
  };
}

test("two workers with the same document at once hand on one result", async () => {
  const stage = await setUp("race");
  await submit(stage, "doc-d", "doc-d");
  const [mine, theirs] = await deliver(stage, ">");
  if (!mine || !theirs) throw new Error("no deliveries");
  // Two deliveries in one process share its client: WATCH there is per connection, so one
  // delivery's EXEC ends the other's WATCH, and only SET ... NX keeps the first result.
  // While this worker's model call is in flight, the other one does the whole job. Code that
  // shares one in-flight call per document within the process (a single-flight map) makes the
  // other one wait for this call instead: once it has neither called the model nor finished,
  // and nothing of it is on its way to or from Redis (it waits on this call, in the process),
  // this call answers, and both hand on its result. However slow Redis is, a GET still on its
  // way is never taken for that.
  let theirsRun: Promise<void> | undefined;
  let theirsDone = false;
  stage.service.duringNextCall = async () => {
    theirsRun = processOne(stage, theirs).finally(() => {
      theirsDone = true;
    });
    theirsRun.catch(() => {});
    const moved = () => theirsDone || stage.service.callsFor("doc-d") >= 2;
    await until(waitsInProcess(moved), 10_000);
    if (moved()) await theirsRun;
  };
  const from = sent().at(-1)?.seq ?? 0;
  await processOne(stage, mine);
  await theirsRun;
  const watched = sent((c) => c.seq > from && c.name === "WATCH").length > 0;
  const calls = stage.service.callsFor("doc-d");

  const stored = await storedResult(stage, "doc-d");
  const handed = await handedOn(stage, "doc-d");
  check(
    calls === 2 || calls === 1,
    `Both workers should have called the model (neither found a result when it looked), or the second one waited for the first one's call; it was called ${calls} times.`,
  );
  check(
    handed.length === 2 && handed.every((entities) => entities === stored),
    `Two workers processed doc-d at the same moment and handed on different results: ${JSON.stringify(handed)} (stored: ${JSON.stringify(stored)}).${watched ? " They shared one client, as deliveries in one process do, and WATCH belongs to the connection: the first EXEC ended the WATCH of both, so the second write went through." : ""} Store the result with SET ... NX, and when it was already set (the reply is null), hand on the stored one instead of your own.`,
    2,
  );
  // A later delivery in the same process must hand on what is stored, not a copy it kept.
  await submit(stage, "doc-d");
  for (const doc of await deliver(stage, ">")) await processOne(stage, doc);
  const later = (await handedOn(stage, "doc-d")).at(-1);
  check(
    later === stored,
    `A third upload of doc-d, processed after the race, was handed on with ${JSON.stringify(later)}, not the stored result ${JSON.stringify(stored)}: a result kept in the process's memory (kept before SET ... NX said whose result won) outlived the decision. Hand on what Redis holds.`,
    2,
  );
  check(
    (stored ?? "").includes(`call ${calls}`),
    `The worker that stored its result first (its model call finished first) should win; the stored result is ${JSON.stringify(stored)}. With SET ... NX a later result never replaces it.`,
    2,
  );
});

test("two documents on one client at once: each is handed on with its own entities", async () => {
  const stage = await setUp("pair");
  await submit(stage, "doc-p", "doc-q");
  const docs = await deliver(stage, ">");
  // Both model calls wait at one gate, and answer in the same tick; then everything the two
  // deliveries sent is answered by Redis before node-redis reads any of it, in one go. Whatever
  // one delivery keeps where the other can write it is overwritten between its write and its read.
  let open = () => {};
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  let waiting = 0;
  const options: StageOptions = {
    ...stage.options,
    async extractEntities(doc) {
      waiting++;
      await gate;
      return stage.service.extract(doc);
    },
  };
  const from = sent().at(-1)?.seq ?? 0;
  const runs = docs.map((doc) =>
    call(`processDelivery(${doc.docId})`, () =>
      exercise.processDelivery(stage.client, options, doc),
    ),
  );
  let refused: unknown;
  for (const run of runs) {
    run.catch((error: unknown) => {
      refused ??= error;
    });
  }
  let release = () => {};
  try {
    const began = await until(() => waiting === docs.length || isNotWritten(refused), 5000);
    // The starter's TODO is "not written yet", not a count of calls after 5 s.
    failIfNotWritten(refused);
    check(
      began,
      `Two deliveries (doc-p and doc-q) were started on one client at once; after 5 s, ${waiting} of them had called extractEntities().`,
      2,
    );
    const conns = new Set(sent((c) => c.seq > from).map((c) => c.conn));
    const holds = [...conns].map((conn) => holdIncoming(conn));
    release = () => {
      for (const hold of holds.splice(0)) hold.release();
    };
    open();
    // Until each delivery waits for a reply that is held: Redis has answered all it was sent.
    await until(
      waitsInProcess(() => false),
      5000,
    );
    release();
    await Promise.all(runs);
  } finally {
    open();
    release();
  }
  for (const doc of docs) {
    const stored = await storedResult(stage, doc.docId);
    const handed = await handedOn(stage, doc.docId);
    const other = docs.find((d) => d !== doc)?.docId ?? "";
    check(
      handed.length === 1 && handed[0] === stored,
      `${doc.docId} and ${other} were processed at the same time on one client, and their model calls answered in the same tick: ${doc.docId} was handed on with ${JSON.stringify(handed)}, and its stored result is ${JSON.stringify(stored)}.${handed.some((e) => e.includes(`${other},`)) ? ` That is ${other}'s result: a variable outside the call (at module level, or on an object both deliveries share) held "the current entities" or "the current document", and the other delivery overwrote it between your write and your read.` : ""} Keep what belongs to one delivery in that call's own variables: return the entities from entitiesOnce() and pass them to handOff().`,
      2,
    );
  }
});

test("another worker's result, stored just before yours, is the one handed on, even an empty one", async () => {
  const stage = await setUp("beaten");
  await submit(stage, "doc-x", "doc-x");
  const docs = await deliver(stage, ">");
  const key = `${stage.options.resultPrefix}doc-x`;
  // Just before this process stores its result, another worker (its model found nothing in
  // doc-x) stores "": both deliveries here must hand on that one.
  const writes = ["SET", "EVAL", "EVALSHA", "FCALL"];
  // The rival stores with NX too: when the two deliveries write on connections of their own (a
  // WATCH per call, say), the other one's store can overtake the one held here and win, and then
  // the rival's is refused. The stored result is then the other delivery's, and both must carry it.
  let rivalStored = false;
  const rival = beforeCommand(
    (c) => writes.includes(c.name) && c.args.includes(key),
    async () => {
      const reply = await stage.observer.set(key, "", {
        condition: "NX",
        expiration: { type: "EX", value: RESULT_TTL_S },
      });
      rivalStored = reply !== null;
    },
  );
  try {
    await Promise.all(docs.map((doc) => processOne(stage, doc)));
  } finally {
    rival.cancel();
  }
  const handed = await handedOn(stage, "doc-x");
  const stored = await storedResult(stage, "doc-x");
  check(
    !rival.hasFired() ||
      (handed.length === docs.length && handed.every((e) => e === (rivalStored ? "" : stored))),
    `Two deliveries of doc-x ran at once in this process; just before your code stored its result, another worker ${rivalStored ? 'stored its own: "" (its model found no entities)' : 'tried to store its own ("") with SET ... NX, too late: one of your deliveries had stored first'}. Redis holds ${JSON.stringify(stored)}, and your code handed doc-x on with ${JSON.stringify(handed)}. Every hand-off must carry the stored result: when SET ... NX is refused, read the stored one and test it against null, not for truthiness ("" || entities hands on your own). A delivery that waited for another one's model call must also hand on what that one's SET ... NX decided, not the model's answer.`,
    2,
  );
});

test("a failed analysis is retried, not lost", async () => {
  const stage = await setUp("failure");
  await submit(stage, "doc-e");
  stage.service.failNext.add("doc-e");
  const [first] = await deliver(stage, ">");
  if (!first) throw new Error("no delivery");
  const open = openLearnerConnections();
  const error = await failing("processDelivery(doc-e)", () =>
    exercise.processDelivery(stage.client, stage.options, first),
  );
  check(
    error !== undefined,
    "processDelivery() should reject when extractEntities() throws, so the entry stays pending and is retried.",
    2,
  );
  check(
    await until(() => openLearnerConnections() <= open, 1000),
    `processDelivery(doc-e) rejected because extractEntities() threw, and left ${openLearnerConnections() - open} more connection(s) to Redis open than before the call: a connection of your own is closed on the success path only. Close it in a finally (or use the client you are given), so every failed call does not leak one.`,
    2,
  );
  check(
    (await pendingCount(stage.observer, stage.options.stream, stage.options.group)) === 1 &&
      (await handedOn(stage, "doc-e")).length === 0,
    "After the failed call, doc-e should still be pending here and not handed on.",
    2,
  );

  const [again] = await deliver(stage, "0");
  if (!again) fail("doc-e should still be pending after the failure.", 2);
  const callsBefore = stage.service.callsFor("doc-e");
  try {
    await processOne(stage, again);
  } catch (retryError) {
    // The service failed only once: a retry that rejects without calling it again was handed
    // the first call's failure, kept in memory.
    if (stage.service.callsFor("doc-e") > callsBefore) throw retryError;
    fail(
      `The retry of doc-e rejected with the first call's error (${error?.message}) without calling extractEntities() again: the failed call was kept in memory and handed to the next delivery. If you share one call per document between deliveries in flight, drop it from your map as soon as it settles, failed or not (e.g. call.finally(() => calls.delete(docId))), so a retry calls the service again.`,
      2,
    );
  }
  const sent = await handedOn(stage, "doc-e");
  const calls = stage.service.callsFor("doc-e");
  check(
    calls === 2,
    `The first call for doc-e failed, and the retry ${calls < 2 ? "never called the service again" : `called it ${calls - 1} times`}; it handed on ${JSON.stringify(sent)}. ${calls < 2 ? "The marker was set before the work succeeded, so the retry took the document for done and its result is lost. Store the result only after extractEntities() returned." : "Call the service once per delivery that finds no stored result."}`,
    1,
  );
  check(
    sent.length === 1 && (sent[0] ?? "").includes("doc-e, call 2"),
    `After the retry, doc-e should be handed on once with the entities of the successful call; found ${JSON.stringify(sent)}.`,
    2,
  );
});

/** A simulated worker process: its own connection, which a crash takes down with the rest. */
async function worker(): Promise<{ scope: Scope; client: Redis }> {
  const process = scope("worker");
  return { scope: process, client: await process.run(() => learnerClient()) };
}

/**
 * One worker processes doc-f and, if `crashBefore` is given, dies just before that command of
 * its own (counted from the start of the call). Then a restarted worker finishes whatever is
 * still pending, as after a real crash.
 */
async function crashScenario(crashBefore?: number) {
  const stage = await setUp("handoff");
  await submit(stage, "doc-f");
  const [first] = await deliver(stage, ">");
  if (!first) throw new Error("no delivery");
  const doomed = await worker();
  const from = sent().at(-1)?.seq ?? 0;
  const mine = (cmd: SentCommand) => cmd.scope === doomed.scope.name && cmd.seq > from;
  const crash =
    crashBefore === undefined ? undefined : beforeCommand(mine, "crash", { nth: crashBefore });
  const error = await doomed.scope.run(() =>
    failing("processDelivery(doc-f)", () =>
      exercise.processDelivery(doomed.client, stage.options, first),
    ),
  );
  crash?.cancel();
  if (error && !doomed.scope.crashed())
    fail(`processDelivery(doc-f) threw an error: ${error.message}`);
  const commands = sent(mine);
  const storedAtCrash = await storedResult(stage, "doc-f");
  for (const doc of await deliver(stage, "0")) await processOne(stage, doc);
  return {
    commands,
    storedAtCrash,
    sent: await handedOn(stage, "doc-f"),
    stored: await storedResult(stage, "doc-f"),
    ttl: await stage.observer.ttl(`${stage.options.resultPrefix}doc-f`),
    pending: await pendingCount(stage.observer, stage.options.stream, stage.options.group),
  };
}

/**
 * A crash before the second of two commands that one socket write carries (a pipeline) drops
 * the first one too, so crashes alone cannot tell execAsPipeline() from MULTI: read how the
 * XADD and the XACK went. Inside one MULTI, or not visible at all (a script ran them), is one unit.
 */
function handOffUnit(commands: SentCommand[]): string | undefined {
  const add = commands.find((c) => c.name === "XADD");
  const ack = commands.find((c) => c.name === "XACK");
  if (!add || !ack) return undefined;
  const exec = (c: SentCommand) =>
    commands.some((e) => e.name === "EXEC" && e.multi !== undefined && e.multi === c.multi);
  if (add.multi !== undefined && add.multi === ack.multi && exec(add)) return undefined;
  return `handOff() sent its XADD and its XACK ${add.multi === undefined && ack.multi === undefined ? "as separate commands" : "in different transactions"}, not inside one MULTI ... EXEC. A crash between them hands the document on twice or loses it; a pipeline (execAsPipeline) only batches the writes, it is no transaction. Use client.multi() ... .exec(), or one script.`;
}

test("the hand-off is atomic: a crash at any step loses nothing and repeats nothing", async () => {
  const clean = await crashScenario();
  const steps = crashPoints(clean.commands);
  const label = (cmd: SentCommand) => (cmd.name === "EXEC" ? "EXEC (the whole MULTI)" : cmd.name);
  for (const { command: cmd, nth } of steps) {
    const r = await crashScenario(nth);
    const before = clean.commands
      .slice(0, nth - 1)
      .filter((c) => steps.some((step) => step.command === c))
      .map(label);
    const at = `The worker died just before its ${label(cmd)} (after ${before.join(", ") || "nothing"}) and restarted`;
    if (r.sent.length === 0) {
      // The hand-off was one unit, and the result was stored before the crash: the restart
      // took the stored result for a finished document and only acknowledged it.
      if (r.storedAtCrash !== null && handOffUnit(clean.commands) === undefined) {
        fail(
          `${at}: the result was stored (${JSON.stringify(r.storedAtCrash)}), but doc-f never reached the next stage: the restarted delivery acknowledged it without handing it on. A stored result says the model call is done, not the hand-off: whenever you find one, hand it on (XADD + XACK in one MULTI) as if you had just computed it.`,
          2,
        );
      }
      fail(
        `${at}: doc-f was acknowledged but never reached the next stage, and with the entry acknowledged nothing brings it back. Put the XADD and the XACK in one MULTI.`,
        2,
      );
    }
    check(
      r.sent.length === 1,
      `${at}: doc-f was handed on twice (${r.sent.length} entries in the next stream): the entry was redelivered after its XADD had gone through. Put the XADD and the XACK in one MULTI.`,
      2,
    );
    check(r.pending === 0, `${at}: doc-f is still pending after the restart finished it.`, 2);
    check(
      r.ttl !== -2,
      `${at}: after the restart handed doc-f on, no result for doc-f is stored under resultPrefix: the restarted worker handed on ${JSON.stringify(r.sent[0])} without storing it. A result kept in the process's memory does not survive a real restart and marks nothing for the other workers: store it in Redis (SET ... NX EX) and hand on what is stored.`,
      2,
    );
    check(
      r.ttl > RESULT_TTL_S - 60 && r.ttl <= RESULT_TTL_S,
      `${at}: the stored result ${r.ttl === -1 ? "never expires" : `expires in ${r.ttl} s`}. The expiry was a command of its own after the write, and the crash came between them. Store the result and its lifetime in one command: SET key value NX EX RESULT_TTL_S.`,
      2,
    );
    check(
      r.storedAtCrash === null || r.sent[0] === r.storedAtCrash,
      `${at}: the result was already stored (${JSON.stringify(r.storedAtCrash)}), yet the next stage got ${JSON.stringify(r.sent[0])}. The restart must hand on the stored result.`,
      1,
    );
  }
  // Crashes cannot split a batch that one socket write carries: read how it went.
  const split = handOffUnit(clean.commands);
  if (split) fail(split, 2);
});

test("a hand-off that never reached Redis makes processDelivery() reject", async () => {
  const stage = await setUp("lost-handoff");
  // A client of its own: the check drops its connection.
  const client = await learnerClient();
  const doc = await deliverNew(stage, "doc-x");
  // The connection goes away just before the hand-off's last step (the EXEC, or a script) is
  // sent: Redis runs none of it, and the document is still pending here.
  const drop = beforeCommand(handOffLastStep, (c) => dropConnection(c.conn));
  let error: Error | undefined;
  try {
    error = await failing(`processDelivery(${doc.docId}) with its connection dropped`, () =>
      exercise.processDelivery(client, stage.options, doc),
    );
  } finally {
    drop.cancel();
  }
  if (!drop.hasFired()) return;
  // Resolving is right only when the document was handed on after all (sent again, say).
  check(
    error !== undefined || (await handedOn(stage, doc.docId)).length === 1,
    `The check dropped the connection just before your hand-off of ${doc.docId} reached Redis (as a Redis restart does): nothing was handed on and the entry is still pending here, yet processDelivery() resolved as if the document were handed on, and its caller goes on to the next one. Let the hand-off's failure reach the caller (no try/catch around the exec() or handOff(), no .catch(() => {})): the entry stays pending and is redelivered.`,
    2,
  );
});

test("a hand-off whose reply a dropped connection lost is not sent again", async () => {
  const stage = await setUp("lost-reply");
  // A client that reconnects, as node-redis does by default: a retry would get through.
  const client = await learnerClient(undefined, { reconnect: true });
  const doc = await deliverNew(stage, "doc-l");
  // Redis runs the hand-off (the EXEC, or a script), then the connection drops before its
  // reply arrives: the worker cannot know whether it happened.
  const drop = holdReply(handOffLastStep, (c) => dropConnection(c.conn));
  try {
    await failing(`processDelivery(${doc.docId}) with its reply lost`, () =>
      exercise.processDelivery(client, stage.options, doc),
    );
  } finally {
    drop.cancel();
  }
  if (!drop.hasFired()) return;
  const handed = await handedOn(stage, doc.docId);
  check(
    handed.length <= 1,
    `${doc.docId} was handed on ${handed.length} times: the check dropped the connection while the reply to your hand-off was on its way back (Redis had run it, XADD and XACK), and your code sent the hand-off again once the client had reconnected. A retry after a lost reply repeats what Redis already did, and the next stage gets the document twice. Let the error through instead: if the hand-off did not happen, the entry is still pending and its redelivery hands on the stored result, once.`,
    2,
  );
});
