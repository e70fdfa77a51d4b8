import { randomBytes } from "node:crypto";
import { pathToFileURL } from "node:url";
import { beforeEach, test } from "vitest";
import {
  call,
  check,
  ctx,
  fail,
  fresh,
  key,
  parseJson,
  type Redis,
  sameValue,
  settled,
  until,
  within,
} from "../kit.ts";
import {
  allLearnerAddrs,
  before,
  clearSent,
  dropConnection,
  nothingInFlight,
  openedSince,
  scope,
  sent,
} from "../wire.ts";
import {
  allNodePorts,
  type Cluster,
  createGroups,
  exercise,
  keysFor,
  learnerCluster,
  nextStage,
  nodeClient,
  observer,
  type PartitionKeys,
  type Pipeline,
  pendingCount,
  primaries,
  primaryOf,
  replicaOf,
  STAGES,
  type Stage,
  slotOf,
  type Work,
} from "./cluster.ts";

/** What the cluster client sends by itself (a new connection, a new map of the slots). */
const CLIENT_OWN = new Set(["HELLO", "AUTH", "CLIENT", "SELECT", "CLUSTER", "READONLY", "PING"]);

/** Enough partitions that a tag per partition lands on every primary of three. */
const PARTITIONS = 8;

beforeEach(() => clearSent());

/** A document id with braces of its own (a file name may have them): only the first {...} counts. */
const BRACED = "brief{v2}.pdf";

function docIds(n: number): string[] {
  return Array.from({ length: n }, () => `doc-${randomBytes(4).toString("hex")}`);
}

async function partitionsOf(ids: string[], n = PARTITIONS): Promise<number[]> {
  return call(`partitionOf(<id>, ${n})`, () => ids.map((id) => exercise.partitionOf(id, n)));
}

/**
 * `perPartition` document ids in each partition (by the learner's partitionOf()), so a round that
 * skips any one partition leaves documents behind on every run; random ids when partitionOf()
 * does not reach every partition (its own test says so).
 */
async function idsOnEveryPartition(perPartition: number): Promise<string[]> {
  const pool = docIds(PARTITIONS * perPartition * 20);
  const partitions = await partitionsOf(pool);
  const picked = Array.from({ length: PARTITIONS }, (_, p) =>
    pool.filter((_, i) => partitions[i] === p).slice(0, perPartition),
  ).flat();
  return picked.length === PARTITIONS * perPartition
    ? picked
    : pool.slice(0, PARTITIONS * perPartition);
}

/**
 * The partitions of `ids` for a test that queues documents by them: a partition out of range
 * would be a stream the test cannot name, so it fails here and says what it depends on.
 */
async function partitionsToQueue(ids: string[]): Promise<number[]> {
  const partitions = await partitionsOf(ids);
  const bad = partitions.findIndex((p) => !Number.isInteger(p) || p < 0 || p >= PARTITIONS);
  if (bad >= 0) {
    fail(
      `This test queues each document on the partition partitionOf() gives it, and partitionOf("${ids[bad]}", ${PARTITIONS}) returned ${String(partitions[bad])}, not a partition from 0 to ${PARTITIONS - 1}. Fix partitionOf() first (the test "partitionOf() gives each document one partition ..."): this test depends on it.`,
      1,
    );
  }
  return partitions;
}

/** `n` fresh ids in each of `k` partitions, each partition's ids in a list of their own. */
async function inPartitions(k: number, n: number): Promise<string[][]> {
  // Four times n per partition on average: k partitions of eight surely hold n each.
  const ids = docIds(n * PARTITIONS * 4);
  const partitions = await partitionsToQueue(ids);
  const by = new Map<number, string[]>();
  for (const [i, id] of ids.entries()) {
    const p = partitions[i] as number;
    by.set(p, [...(by.get(p) ?? []), id]);
  }
  return [...by.values()]
    .filter((group) => group.length >= n)
    .slice(0, k)
    .map((group) => group.slice(0, n));
}

/** `n` fresh ids that partitionOf() puts in one partition, so they queue on one stream in order. */
async function samePartition(n: number): Promise<string[]> {
  return (await inPartitions(1, n))[0] ?? [];
}

/** A fresh pipeline: its names, the learner's keys for every partition, groups created. */
async function pipeline(): Promise<{ run: Pipeline; keys: PartitionKeys[] }> {
  const run: Pipeline = {
    base: key(fresh("pipeline")),
    partitions: PARTITIONS,
    group: fresh("stage"),
    consumer: fresh("worker"),
  };
  const keysOf = keysFor(run.base);
  const keys: PartitionKeys[] = [];
  for (let p = 0; p < PARTITIONS; p++) {
    const names = await keysOf(p);
    check(
      typeof names?.stream === "function" &&
        typeof names.doc === "function" &&
        typeof names.channel === "string",
      `partitionKeys("${run.base}", ${p}) returned ${JSON.stringify(names)}: this test needs an object with stream(stage) and doc(docId) functions and a channel string, as PartitionKeys says.`,
      1,
    );
    keys.push(names);
  }
  await createGroups((p) => keys[p] as PartitionKeys, PARTITIONS, run.group);
  return { run, keys };
}

/** A fresh pipeline of one partition: its names, the learner's keys for it, groups created. */
async function onePartition(): Promise<{ run: Pipeline; keys: PartitionKeys }> {
  const run: Pipeline = {
    base: key(fresh("pipeline")),
    partitions: 1,
    group: fresh("stage"),
    consumer: fresh("worker"),
  };
  const keys = await keysFor(run.base)(0);
  await createGroups(() => keys, 1, run.group);
  return { run, keys };
}

/** Queues documents on the first stage of their partition, in order, as the upload API does. */
async function upload(keys: PartitionKeys[], ids: string[]): Promise<number[]> {
  const partitions = await partitionsToQueue(ids);
  for (const [i, doc] of ids.entries()) {
    await observer.xAdd(keysAt(keys, partitions[i]).stream("ocr"), "*", { doc });
  }
  return partitions;
}

function keysAt(keys: PartitionKeys[], partition: number | undefined): PartitionKeys {
  return keys[partition ?? 0] as PartitionKeys;
}

/** The entries of `stream`, each with the document it names. */
async function entries(stream: string): Promise<{ id: string; doc: string }[]> {
  const all = await observer.xRange(stream, "-", "+");
  return (all ?? []).flatMap((e) => (e ? [{ id: e.id, doc: String(e.message.doc) }] : []));
}

/** Whether the entry of `doc` in `stream` is pending in `group` (delivered, not acknowledged). */
async function isPending(stream: string, group: string, doc: string): Promise<boolean> {
  const entry = (await entries(stream)).find((e) => e.doc === doc);
  if (!entry) return false;
  return (await observer.xPendingRange(stream, group, entry.id, entry.id, 1)).length === 1;
}

function result(stage: Stage, work: Work): string {
  return `${stage}(${work.doc})`;
}

function round(
  cluster: Cluster,
  run: Pipeline,
  stage: Stage,
  handle: (work: Work) => Promise<string>,
  ms = 10_000,
): Promise<number> {
  return call(
    `workRound(cluster, pipeline, "${stage}", ...)`,
    () => exercise.workRound(cluster, run, stage, nextStage(stage), handle),
    ms,
  );
}

test("partitionOf() gives each document one partition, the same in every process, spread evenly", async () => {
  const ids = docIds(200);
  const first = await partitionsOf(ids);
  const bad = first.findIndex((p) => !Number.isInteger(p) || p < 0 || p >= PARTITIONS);
  check(
    bad < 0,
    `partitionOf("${ids[bad]}", ${PARTITIONS}) returned ${first[bad]}: a partition is a whole number from 0 to ${PARTITIONS - 1}.`,
    1,
  );
  const again = await partitionsOf(ids);
  const moved = ids.findIndex((_, i) => first[i] !== again[i]);
  check(
    moved < 0,
    `partitionOf("${ids[moved]}", ${PARTITIONS}) returned ${first[moved]}, then ${again[moved]} for the same document. Its stage streams and hash would be looked for in another partition than they were written to: derive the partition from a hash of the id alone, never from Math.random().`,
    1,
  );
  // Another worker process: a fresh copy of the module that sees the documents in another order.
  const other = (await import(`${pathToFileURL(ctx.target).href}?other-process`)) as {
    partitionOf: typeof exercise.partitionOf;
  };
  const reversed = [...ids].reverse();
  const there = await call("partitionOf() in a second worker process", () =>
    reversed.map((id) => other.partitionOf(id, PARTITIONS)).reverse(),
  );
  const differs = ids.findIndex((_, i) => first[i] !== there[i]);
  check(
    differs < 0,
    `A second worker process (a fresh copy of your module, seeing the documents in the opposite order) put "${ids[differs]}" in partition ${there[differs]}, yours in ${first[differs]}. Every process must agree: compute the partition from the id alone, not from the order documents arrive in or anything a process remembers.`,
    1,
  );
  const used = new Set(first);
  check(
    used.size === PARTITIONS,
    `200 documents went to only ${used.size} of ${PARTITIONS} partitions (${[...used].sort().join(", ")}): the partitions left empty leave their primaries idle. Take the hash modulo the number of partitions you were given.`,
    1,
  );
  // Ids alike at both ends: a partition from the last character, the first or the length puts
  // them all in one partition.
  const alike = Array.from(
    { length: 200 },
    () => `contracts/${randomBytes(4).toString("hex")}/scan.pdf`,
  );
  const alikeUsed = new Set(await partitionsOf(alike));
  check(
    alikeUsed.size === PARTITIONS,
    `200 documents named like "${alike[0]}" (the same length, start and end) went to only ${alikeUsed.size} of ${PARTITIONS} partitions: partitionOf() looks at part of the id only. Hash the whole id (node:crypto's createHash), then take it modulo the number of partitions.`,
    1,
  );
  // Many partitions: a hash cut down to a few values (one hex digit: 16) leaves the rest empty.
  const many = 64;
  const manyUsed = new Set(await partitionsOf(docIds(2000), many));
  check(
    manyUsed.size === many,
    `With ${many} partitions, 2000 documents went to only ${manyUsed.size} of them: partitionOf() draws on too few values of the hash (one hex digit gives 16, one byte 256), so growing the cluster to more partitions than that leaves the rest empty. Take a whole 32-bit number from the digest (digest().readUInt32BE(0)), then the modulo.`,
    1,
  );
  // More partitions than a byte has values: one byte of the digest (256 values) fills at most
  // 256 of them, where a 32-bit number fills some 860 of 1000 with 2000 documents.
  const huge = 1000;
  const hugeUsed = new Set(await partitionsOf(docIds(2000), huge));
  check(
    hugeUsed.size > 256,
    `With ${huge} partitions, 2000 documents went to only ${hugeUsed.size} of them (a 32-bit number from the hash fills some 860): partitionOf() draws on at most ${hugeUsed.size <= 16 ? 16 : 256} values of the hash (${hugeUsed.size <= 16 ? "one hex digit" : "one byte, such as digest()[0]"}), so a cluster grown past that leaves the rest of its partitions empty. Take a whole 32-bit number from the digest (digest().readUInt32BE(0)), then the modulo.`,
    1,
  );
  const three = await partitionsOf(ids.slice(0, 30), 3);
  check(
    three.every((p) => p >= 0 && p < 3),
    `With 3 partitions, partitionOf() returned ${three.find((p) => p < 0 || p >= 3)}: use the count you were given, not a fixed one.`,
    1,
  );
});

test("every key of a partition hashes to one slot, and the partitions spread over the primaries", async () => {
  const base = key(fresh("pipeline"));
  const keysOf = keysFor(base);
  // Another pipeline's names first: a name of it in this one's is a cache that forgot the base.
  const earlier = key(fresh("pipeline"));
  for (let p = 0; p < PARTITIONS; p++) await keysFor(earlier)(p);
  const owners = new Map<number, number[]>();
  const seen = new Set<string>();
  for (let p = 0; p < PARTITIONS; p++) {
    const keys = await keysOf(p);
    const names = [
      ...STAGES.map((s) => keys.stream(s)),
      keys.doc("doc-1"),
      keys.doc("doc-2"),
      keys.doc(BRACED),
      keys.channel,
    ];
    for (const name of names) {
      check(
        typeof name === "string" && name.includes(base),
        `partitionKeys("${base}", ${p}) gave the name ${JSON.stringify(name)}, which does not contain the base "${base}" it was given: two pipelines (or two runs of the check) would share keys.${typeof name === "string" && name.includes(earlier) ? ` It is a name of partitionKeys("${earlier}", ${p}), called just before: names kept from an earlier call (a cache keyed by the partition alone?). Key a cache by the base and the partition, or build the names on every call.` : ""}`,
        1,
      );
      check(
        !seen.has(name),
        `partitionKeys() gave "${name}" twice: every stage, document and partition needs a name of its own.`,
        1,
      );
      seen.add(name);
    }
    const slots = await Promise.all(names.map(slotOf));
    const odd = slots.findIndex((s) => s !== slots[0]);
    check(
      odd < 0,
      `Partition ${p}'s keys are in different hash slots: "${names[0]}" in slot ${slots[0]}, "${names[odd]}" in slot ${slots[odd]}. A MULTI over them fails with CROSSSLOT on a cluster. Put the same hash tag in every name of a partition, e.g. "${base}:{p${p}}:stage:ocr": Redis hashes only the part between the first { and the next }.${String(names[odd]).includes(BRACED) ? ` The document id "${BRACED}" holds braces of its own: with the tag after the id, its braces come first and are what Redis hashes. Put the tag before the id.` : ""}`,
      1,
    );
    const primary = await primaryOf(slots[0] as number);
    owners.set(primary, [...(owners.get(primary) ?? []), p]);
  }
  check(
    owners.size >= 2,
    `All ${PARTITIONS} partitions' keys are served by one primary (port ${[...owners.keys()][0]}) of three: the hash tag is the same for every partition, so the cluster does the work of one server. Make the tag differ per partition ({p0}, {p1}, ...) and keep the part shared by all partitions outside the braces.`,
    1,
  );
});

test("documents go through all four stages on every partition, each hand-off acknowledged", async () => {
  const { run, keys } = await pipeline();
  const ids = await idsOnEveryPartition(3);
  const partitions = await upload(keys, ids);
  const cluster = await learnerCluster();
  const known = allLearnerAddrs();
  for (const stage of STAGES) {
    clearSent();
    let handedOff = 0;
    const handled = new Set<string>();
    for (let attempt = 0; attempt < 10 && handled.size < ids.length; attempt++) {
      const n = await round(cluster, run, stage, async (work) => {
        handled.add(work.doc);
        return result(stage, work);
      });
      handedOff += n;
    }
    const missing = ids.filter((id) => !handled.has(id));
    const read: string[] = [];
    for (const id of missing) {
      const stream = keysAt(keys, partitions[ids.indexOf(id)]).stream(stage);
      if (await isPending(stream, run.group, id)) read.push(id);
    }
    check(
      read.length === 0,
      `At stage ${stage}, ${read.length} documents were read (they are pending for your consumer) but never handed to handle(), e.g. ${read[0]}. Handle every entry a read returns, not only the first: an entry delivered and never acknowledged waits for ever.`,
      2,
    );
    if (missing.length > 0) {
      const where = [...new Set(missing.map((id) => partitions[ids.indexOf(id)]))].sort();
      fail(
        `At stage ${stage}, ${missing.length} of ${ids.length} documents were never handed to handle() in 10 rounds, nor even read; they are in partition(s) ${where.join(", ")}. workRound() must read the stage's stream of every partition, 0 to pipeline.partitions - 1.`,
        2,
      );
    }
    const blocking = sent().find(
      (c) => c.name === "XREADGROUP" && c.args.some((a) => a.toUpperCase() === "BLOCK"),
    );
    check(
      blocking === undefined,
      `workRound() read with \`${blocking?.args.join(" ")}\`. A round takes what is waiting now and returns: on an empty partition a blocking read waits (with BLOCK 0 for ever), and the cluster client shares one connection per primary, so every other command to that primary waits behind it. Read without BLOCK; the caller decides when the next round runs.`,
      2,
    );
    // After the last stage there is no stream to queue on: an XADD there makes a stray stream.
    const queuedAfterLast = sent().find((c) => stage === "embed" && c.name === "XADD");
    check(
      queuedAfterLast === undefined,
      `At the last stage (embed), your hand-off sent XADD ${queuedAfterLast?.args[1]}: after the last stage there is no next stage, so handOff() with next = null queues nothing.`,
      2,
    );
    check(
      handedOff === ids.length,
      `workRound() at stage ${stage} returned ${handedOff} hand-offs in total for ${ids.length} documents: return how many documents the round handed off.`,
      3,
    );
  }
  // The cluster client holds a connection to each primary and routes every command over it:
  // one of six nodes at most might be reached anew (a client that connects lazily).
  const opened = openedSince(known).length;
  check(
    opened <= 6,
    `During the four stages of ${ids.length} documents your code opened ${opened} new connections to the cluster: a client of its own per hand-off or per read (duplicate(), createCluster()) asks the cluster for its slots and connects to every primary again each time, on top of the cluster client it was given, which already holds one connection per primary and routes each command to its key's slot. Send everything through the cluster client you are passed.`,
    2,
  );
  const primaries = new Set<number>();
  for (const [i, doc] of ids.entries()) {
    const partition = keysAt(keys, partitions[i]);
    const stored = await observer.hGetAll(partition.doc(doc));
    const expected = Object.fromEntries(STAGES.map((s) => [s, result(s, { id: "", doc })]));
    check(
      sameValue({ ...stored }, expected),
      `The hash ${partition.doc(doc)} holds ${JSON.stringify(stored)}; after all four stages it should hold ${JSON.stringify(expected)}: handOff() records handle()'s result under the stage's name.`,
      2,
    );
    primaries.add(await primaryOf(await slotOf(partition.doc(doc))));
  }
  check(
    primaries.size >= 2,
    `All ${ids.length} documents live on one primary: the partitions do not spread the work.`,
    1,
  );
  for (const [p, partition] of keys.entries()) {
    const expected = ids.filter((_, i) => partitions[i] === p).sort();
    for (const stage of STAGES) {
      const stream = partition.stream(stage);
      const pending = await pendingCount(stream, run.group);
      check(
        pending === 0,
        `${pending} entries of ${stream} are still pending after their documents moved on: handOff() must XACK the work in the same transaction.`,
        2,
      );
      const queued = (await entries(stream)).map((e) => e.doc);
      check(
        sameValue(queued.sort(), expected),
        `${stream} holds the documents ${JSON.stringify(queued)}; it should hold each document of partition ${p} once: ${JSON.stringify(expected)}. handOff() queues the document on the next stage's stream of its own partition, and nothing after the last stage.`,
        2,
      );
    }
  }
});

test("a handle() that throws, rejects or is slow: nothing is handed off before it finished, failures stay pending", async () => {
  const { run, keys } = await pipeline();
  // thrown, rejected and fine queue in that order on one partition's stream: a failure that
  // ends the partition's batch (a break, a try around the loop) leaves fine unhandled.
  // slow is in another partition, so a failure there cannot keep it from being handled.
  const [thrown = "", rejected = "", fine = "", later = ""] = await samePartition(4);
  const [theirs] = await partitionsToQueue([thrown]);
  const others = docIds(4 * PARTITIONS);
  const where = await partitionsToQueue(others);
  const slow = others.find((_, i) => where[i] !== theirs) ?? "";
  const ids = [thrown, rejected, fine, slow];
  const partitions = await upload(keys, ids);
  const cluster = await learnerCluster();
  let release = () => {};
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  let slowStarted = false;
  const called = new Set<string>();
  const running = round(cluster, run, "ocr", (work) => {
    called.add(work.doc);
    if (work.doc === thrown) throw new Error("OCR service crashed");
    if (work.doc === rejected) return Promise.reject(new Error("OCR service timed out"));
    if (work.doc === slow) {
      slowStarted = true;
      return gate.then(() => result("ocr", work));
    }
    return Promise.resolve(result("ocr", work));
  });
  let ended = false;
  const finished = running.then(
    (n) => n,
    (error: Error) =>
      fail(
        /OCR service/.test(error.message)
          ? `${error.message}: one document's failure ended the whole round. Catch handle()'s error (a throw or a rejection) for that document, leave it pending, and go on with the next.`
          : error.message,
        2,
      ),
  );
  finished
    .catch(() => {})
    .finally(() => {
      ended = true;
    });
  const slowKeys = keysAt(keys, partitions[ids.indexOf(slow)]);
  await until(() => slowStarted || ended, 5000);
  if (!slowStarted) {
    await finished;
    fail(`workRound() never called handle() for ${slow}, queued on its partition's ocr stream.`, 2);
  }
  const early = await observer.hGet(slowKeys.doc(slow), "ocr");
  const earlyNext = (await entries(slowKeys.stream("ner"))).some((e) => e.doc === slow);
  const earlyAck = !(await isPending(slowKeys.stream("ocr"), run.group, slow));
  release();
  const handedOff = await finished;
  const ahead = [
    ...(early === null ? [] : ["its result was stored"]),
    ...(earlyNext ? ["it was queued for ner"] : []),
    ...(earlyAck ? ["its entry was acknowledged"] : []),
  ];
  check(
    ahead.length === 0,
    `While handle() for ${slow} was still running, ${listed(ahead)}. Await handle() and hand off its result only after it finished.`,
    2,
  );
  for (const [i, doc] of [thrown, rejected].entries()) {
    const partition = keysAt(keys, partitions[i]);
    const how = i === 0 ? "threw" : "returned a rejected promise";
    const stored = await observer.hGet(partition.doc(doc), "ocr");
    const pending = await isPending(partition.stream("ocr"), run.group, doc);
    check(
      stored === null && pending,
      `handle() ${how} for ${doc}, yet ${stored === null ? "its entry was acknowledged" : "its result was stored"}. A failed document must not be acknowledged or passed on: leave it pending so it is retried.`,
      2,
    );
  }
  for (const doc of [slow, fine]) {
    const partition = keysAt(keys, partitions[ids.indexOf(doc)]);
    const skipped =
      !called.has(doc) && (await isPending(partition.stream("ocr"), run.group, doc))
        ? ` It was read in the same batch as ${thrown} and ${rejected} (it is pending) but handle() was never called for it: a failure ended the batch.`
        : "";
    check(
      (await observer.hGet(partition.doc(doc), "ocr")) === result("ocr", { id: "", doc }),
      `${doc} was not handed off in the round where another document's handle() failed.${skipped} Catch handle()'s error (a throw or a rejection) around that one document, leave it pending, and go on with the next.`,
      2,
    );
  }
  check(
    handedOff === 2,
    `workRound() handed off 2 documents (2 failed) but returned ${handedOff}.`,
    3,
  );
  // The next round: the two still fail (poison), and a new document waits behind them on their
  // partition. A round takes new entries; the failed ones wait for a claim, not for this worker.
  await upload(keys, [later]);
  const retried = new Set<string>();
  await round(cluster, run, "ocr", (work) => {
    if (work.doc !== thrown && work.doc !== rejected) return Promise.resolve(result("ocr", work));
    retried.add(work.doc);
    return Promise.reject(new Error("OCR service crashed again"));
  }).catch(() => 0);
  const laterKeys = keysAt(keys, theirs);
  check(
    (await observer.hGet(laterKeys.doc(later), "ocr")) === result("ocr", { id: "", doc: later }),
    `In the round after ${thrown} and ${rejected} failed, ${later} (new on their partition) was not handed off${retried.size > 0 ? `, and handle() was called for ${[...retried].join(" and ")} again: the round re-read what this consumer holds instead of new work, so a document that fails every time holds this worker's partition for ever` : ""}. workRound() takes new entries (">"); the failed ones stay pending for a claim after an idle time (lessons 09, 10).`,
    2,
  );
});

/** How many entries of `stream` were delivered to `group`: those up to its last-delivered-id. */
async function delivered(stream: string, group: string): Promise<number> {
  const groups = (await observer.xInfoGroups(stream)) as { name: unknown; [k: string]: unknown }[];
  const last = String(groups.find((g) => String(g.name) === group)?.["last-delivered-id"]);
  const [lastMs = 0n, lastSeq = 0n] = last.split("-").map(BigInt);
  return (await entries(stream)).filter(({ id }) => {
    const [ms = 0n, seq = 0n] = id.split("-").map(BigInt);
    return ms < lastMs || (ms === lastMs && seq <= lastSeq);
  }).length;
}

test("workRound() takes count new entries from each partition in one round, no more", async () => {
  const { run, keys } = await pipeline();
  // More waiting in all than count, in several partitions: a count per round in total (not per
  // partition) takes them from the first partition only.
  const groups = await inPartitions(3, 3);
  const waiting = groups.flat();
  const partitions = await upload(keys, waiting);
  const streams = [...new Set(partitions)].map((p) => keysAt(keys, p).stream("ocr"));
  const cluster = await learnerCluster();
  const handedOff = await call(
    `workRound(cluster, pipeline, "ocr", "ner", handle, 2)`,
    () => exercise.workRound(cluster, run, "ocr", "ner", async (work) => result("ocr", work), 2),
    10_000,
  );
  const taken = await Promise.all(streams.map((stream) => delivered(stream, run.group)));
  const described = streams.map((stream, i) => `${taken[i]} of 3 on ${stream}`).join(", ");
  check(
    taken.every((n) => n <= 2),
    `With 3 documents waiting on each of ${streams.length} partitions, workRound(..., count = 2) took ${described} in one round. Read with COUNT count: a round takes at most count new entries of each partition, so a backlog is worked off over several rounds and a crash leaves at most count entries of a partition in hand.`,
    2,
  );
  check(
    taken.every((n) => n === 2),
    `With 3 documents waiting on each of ${streams.length} partitions, workRound(..., count = 2) took ${described} in one round. count is per partition: a round reads every partition with COUNT count and takes count entries from each that has that many waiting, so no partition waits behind the others.`,
    2,
  );
  const total = taken.reduce((sum, n) => sum + n, 0);
  check(
    handedOff >= 1 && handedOff <= total,
    `With 3 documents waiting on each of ${streams.length} partitions, workRound(..., count = 2) took ${total} and returned ${handedOff}: it returns how many documents it handed off.`,
    3,
  );
});

/** Subscribes on a replica of the channel's slot: a node the worker's writes never go to. */
async function shardedListener(channel: string): Promise<{ events: unknown[]; port: number }> {
  const port = await replicaOf(await slotOf(channel));
  const subscriber: Redis = await nodeClient(port, "status");
  const events: unknown[] = [];
  await subscriber.sSubscribe(channel, (message) => events.push(parseJson(message)));
  return { events, port };
}

test("status events go out on the partition's sharded channel and reach a subscriber on another node", async () => {
  const { run, keys } = await pipeline();
  const ids = docIds(6);
  const partitions = await upload(keys, ids);
  const listeners = new Map<string, { events: unknown[]; port: number }>();
  for (const p of new Set(partitions)) {
    const channel = keysAt(keys, p).channel;
    listeners.set(channel, await shardedListener(channel));
  }
  const cluster = await learnerCluster();
  await round(cluster, run, "ocr", async (work) => result("ocr", work));
  for (const [i, doc] of ids.entries()) {
    const channel = keysAt(keys, partitions[i]).channel;
    const listener = listeners.get(channel) as { events: unknown[]; port: number };
    const expected = { doc, stage: "ocr", state: "done" };
    const arrived = await until(() => listener.events.some((e) => sameValue(e, expected)), 3000);
    if (arrived) continue;
    const published = sent((c) => c.name === "PUBLISH" || c.name === "SPUBLISH");
    if (published.some((c) => c.name === "PUBLISH")) {
      fail(
        `Your code sent PUBLISH for the status of ${doc}. On a cluster a classic PUBLISH is copied to every node, and a subscriber that used SSUBSCRIBE (on a replica of the channel's shard, port ${listener.port}) never sees it. Send it with SPUBLISH (cluster.sPublish()) on the partition's channel: only that shard carries it.`,
        2,
      );
    }
    const seen = listener.events.map((e) => JSON.stringify(e)).join(", ") || "nothing";
    fail(
      `A subscriber with SSUBSCRIBE ${channel} on a replica of its shard (port ${listener.port}) expected ${JSON.stringify(expected)} for ${doc} and got ${seen}. handOff() sends the StatusEvent, as JSON, with SPUBLISH on keys.channel of the document's partition.`,
      2,
    );
  }
  // The last stage hands on to no stream, but its "done" is the one that says the document is
  // complete: it goes out all the same.
  for (const [i, doc] of ids.entries()) {
    await observer.xAdd(keysAt(keys, partitions[i]).stream("embed"), "*", { doc });
  }
  await round(cluster, run, "embed", async (work) => result("embed", work));
  for (const [i, doc] of ids.entries()) {
    const channel = keysAt(keys, partitions[i]).channel;
    const listener = listeners.get(channel) as { events: unknown[]; port: number };
    const expected = { doc, stage: "embed", state: "done" };
    check(
      await until(() => listener.events.some((e) => sameValue(e, expected)), 3000),
      `After the last stage (embed, next = null) handed ${doc} off, a subscriber with SSUBSCRIBE ${channel} expected ${JSON.stringify(expected)} and got none: the last stage leaves out only the XADD (there is no next stream); its result, XACK and status event are in its transaction as at every other stage, and its "done" is what tells the dashboards the document is complete.`,
      2,
    );
  }
});

/** "a, b and c" */
function listed(items: string[]): string {
  return items.length < 2 ? items.join("") : `${items.slice(0, -1).join(", ")} and ${items.at(-1)}`;
}

/** The commands a hand-off may be cut before, and which one the learner's code sent. */
const CUTS = ["HSET", "XADD", "XACK", "SPUBLISH", "EXEC"];

/** Kills a worker just before it sends `cut` in a hand-off; says what of the hand-off survived. */
async function crashBefore(cut: string): Promise<string | undefined> {
  const { run, keys } = await pipeline();
  const [doc = ""] = docIds(1);
  const [p] = await upload(keys, [doc]);
  const partition = keysAt(keys, p);
  const listener = await shardedListener(partition.channel);
  const worker = scope("worker");
  const cluster = await learnerCluster(worker);
  const rule = before((c) => c.scope === worker.name && c.name === cut, "crash");
  await round(cluster, run, "ocr", async (work) => result("ocr", work), 5000).catch(() => {});
  rule.cancel();
  cluster.destroy();
  if (!rule.hasFired()) return undefined;
  const stored = (await observer.hGet(partition.doc(doc), "ocr")) !== null;
  const queued = (await observer.xLen(partition.stream("ner"))) > 0;
  const acked = !(await isPending(partition.stream("ocr"), run.group, doc));
  // Pub/sub is not stored: give a published event the time to arrive before judging.
  const told = await until(() => listener.events.length > 0, stored ? 1000 : 200);
  const parts = { "the result": stored, "the ner task": queued, "the XACK": acked };
  const done = Object.entries(parts).filter(([, happened]) => happened);
  if ((done.length === 0 && !told) || (done.length === 3 && told)) return undefined;
  const happened = [...done.map(([what]) => what), ...(told ? ["the status event"] : [])];
  const missing = [
    ...Object.entries(parts)
      .filter(([, h]) => !h)
      .map(([what]) => what),
    ...(told ? [] : ["the status event"]),
  ];
  return `The worker died just before sending ${cut} in the hand-off of ${doc}: ${listed(happened)} reached Redis, ${listed(missing)} did not. A retry would then run the stage twice, lose the document or leave the dashboard wrong. Send all four as one transaction (cluster.multi() ... exec()): all keys share the partition's slot, so one MULTI on its primary is allowed.`;
}

test("a worker that dies anywhere in a hand-off leaves all of it or none of it", async () => {
  // Each cut has its own pipeline and its own crashable worker, so they run side by side.
  const outcomes = await Promise.all(CUTS.map(crashBefore));
  const first = outcomes.find((outcome) => outcome !== undefined);
  if (first) fail(first, 2);
});

test("handOff() returns only once Redis has answered its EXEC", async () => {
  const { run, keys } = await pipeline();
  const [doc = ""] = docIds(1);
  const [p] = await upload(keys, [doc]);
  const partition = keysAt(keys, p);
  const [entry] = await entries(partition.stream("ocr"));
  const worker = scope("worker");
  const cluster = await learnerCluster(worker);
  // The EXEC is held on its connection until the check has seen whether handOff() returned.
  let release!: () => void;
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });
  const rule = before(
    (c) => c.scope === worker.name && c.name === "EXEC",
    () => held,
  );
  let returned = false;
  const work = { id: entry?.id ?? "0-1", doc };
  const handOff = call(
    `handOff(cluster, keys, group, "ocr", "ner", ${JSON.stringify(work)}, result)`,
    () => exercise.handOff(cluster, partition, run.group, "ocr", "ner", work, result("ocr", work)),
    5000,
  ).finally(() => {
    returned = true;
  });
  await Promise.race([rule.fired, handOff.then(() => until(() => rule.hasFired(), 1000))]);
  // A held EXEC cannot be answered: a handOff() awaiting it cannot return in this window.
  const early = rule.hasFired() && (await until(() => returned, 300));
  release();
  rule.cancel();
  await handOff.finally(() => cluster.destroy());
  check(
    !early,
    `handOff() returned while its EXEC was still on its way to Redis, so a caller would count ${doc} as handed off before Redis applied (or refused) the transaction, and never hear of an error. Return the promise of exec(), or await it.`,
    2,
  );
});

test("workRound() awaits each hand-off, and a read or hand-off Redis refused rejects the round", async () => {
  // One partition: whatever the round sends after the first EXEC goes to the connection the
  // check holds, so a round that does not await its hand-offs returns in the window.
  const { run, keys } = await onePartition();
  const [first = "", second = ""] = docIds(2);
  for (const doc of [first, second]) await observer.xAdd(keys.stream("ocr"), "*", { doc });
  const worker = scope("worker");
  const cluster = await learnerCluster(worker);
  // A read Redis refuses (NOGROUP: this group was never made) is no empty partition either.
  const missing = { ...run, group: fresh("missing") };
  const unread = await within(
    settled(
      exercise.workRound(cluster, missing, "ocr", "ner", async (work) => result("ocr", work)),
    ),
    10_000,
    "workRound() with a group that does not exist",
  );
  check(
    "error" in unread,
    `With no group ${missing.group} on the partition's stream (Redis answers NOGROUP), workRound() returned ${"value" in unread ? unread.value : ""}. An error from Redis is not an empty partition: a caller that hears a count runs the next round as if all were well, and nobody learns the stage is broken. Let the read's error reject workRound().`,
    2,
  );
  let returned = false;
  let early = false;
  // The first EXEC is held while the check looks whether workRound() returned, then its
  // connection drops: Redis discards a MULTI whose connection ends before EXEC.
  const rule = before(
    (c) => c.scope === worker.name && c.name === "EXEC",
    async (c) => {
      early = await until(() => returned, 300);
      dropConnection(c.conn);
      dropped();
    },
  );
  let dropped!: () => void;
  const drop = new Promise<void>((resolve) => {
    dropped = resolve;
  });
  // Inside the worker's scope: a connection the round opens for itself is the worker's too.
  const outcome = settled(
    worker.run(() =>
      exercise.workRound(cluster, run, "ocr", "ner", async (work) => result("ocr", work)),
    ),
  ).finally(() => {
    returned = true;
  });
  // A round that does not await its hand-offs may send the EXEC after it returned.
  const sentExec = Promise.race([
    rule.fired,
    outcome.then(() => until(() => rule.hasFired(), 1000)),
  ]);
  const ended = await within(
    sentExec.then(async () => {
      if (rule.hasFired()) await drop;
      return outcome;
    }),
    10_000,
    "workRound() to end after its connection dropped",
  ).finally(() => {
    rule.cancel();
    cluster.destroy();
  });
  check(rule.hasFired(), `workRound() sent no EXEC for ${first}.`, 2);
  check(
    !early,
    `workRound() returned while the EXEC of ${first}'s hand-off was still on its way to Redis: it counted documents as handed off before Redis applied (or refused) them, and an error of the hand-off reaches nobody. Await handOff() for each document.`,
    2,
  );
  check(
    "error" in ended,
    `The connection to ${first}'s primary dropped before its EXEC reached Redis, so none of the hand-off was applied, and workRound() went on and returned ${"value" in ended ? ended.value : ""}. A failed hand-off is not the document's fault, and the next one would meet the same trouble: catch only handle()'s error, and let the hand-off's error reject workRound(), so the caller sees that Redis is in trouble (it reconnects, waits and runs the next round). The document stays pending and comes back.`,
    2,
  );
  check(
    (await observer.hGet(keys.doc(first), "ocr")) === null &&
      (await isPending(keys.stream("ocr"), run.group, first)),
    `The EXEC of ${first}'s hand-off never reached Redis, yet its result was stored or its entry acknowledged: send the hand-off as one MULTI ... EXEC.`,
    2,
  );
});

test("a round that rejects has ended: no partition goes on handling or handing off after it", async () => {
  const { run, keys } = await pipeline();
  // Two documents on every partition, the failing one first on partition 0: a round that hands
  // off a partition's documents side by side (Promise.all over them) still has the second one
  // in hand when the first one's hand-off fails.
  const ids = await idsOnEveryPartition(2);
  const partitions = await upload(keys, ids);
  const failing = ids[Math.max(0, partitions.indexOf(0))] as string;
  const worker = scope("worker");
  const cluster = await learnerCluster(worker);
  let returnedAt: number | undefined;
  // The EXEC of partition 0's hand-off never reaches Redis: its connection drops just before.
  const rule = before(
    (c) =>
      c.scope === worker.name &&
      c.name === "EXEC" &&
      sent((x) => x.conn === c.conn && x.multi === c.multi).some((x) =>
        x.args.includes(keysAt(keys, 0).doc(failing)),
      ),
    (c) => dropConnection(c.conn),
  );
  // Any other document's handle() is held until the round has ended, or until the round waits
  // on held handle() calls alone. A round that works the partitions (or a partition's documents)
  // in parallel has partition 0's read and hand-off on their way meanwhile, so its handle() calls
  // are still held when that hand-off fails; a round that works them one at a time (in any
  // order) is waiting on this call alone, and it goes on. Events, not a time: nothing is on its
  // way for 100 ms running.
  let waiting = 0;
  let releasedAfter = 0;
  const handle = async (work: Work) => {
    if (work.doc !== failing) {
      waiting++;
      const idle = waitsOnCheckAlone();
      await until(() => returnedAt !== undefined || idle(), 10_000);
      if (returnedAt !== undefined) releasedAfter++;
      waiting--;
    }
    return result("ocr", work);
  };
  const outcome = settled(
    worker.run(() => exercise.workRound(cluster, run, "ocr", "ner", handle)),
  ).finally(() => {
    returnedAt = sent().at(-1)?.seq ?? 0;
  });
  try {
    const ended = await within(outcome, 15_000, "workRound() to end after a hand-off failed");
    check(rule.hasFired(), `workRound() sent no EXEC for ${failing}'s hand-off (partition 0).`, 2);
    check(
      "error" in ended,
      `The connection dropped before the EXEC of ${failing}'s hand-off (partition 0) reached Redis, and workRound() returned ${"value" in ended ? ended.value : ""}: let the hand-off's error reject workRound().`,
      2,
    );
    // A handle() released after the rejection: whatever its partition sends next is sent after it.
    const after = () =>
      sent((c) => c.scope === worker.name && c.seq > (returnedAt ?? 0) && !CLIENT_OWN.has(c.name));
    if (waiting > 0) await until(() => waiting === 0, 3000);
    if (releasedAfter > 0) await until(() => after().length > 0, 300);
    const late = after();
    check(
      late.length === 0,
      `When the hand-off of ${failing} (partition 0) failed, workRound() rejected, and afterwards ${releasedAfter} handle() call(s) of other documents (of partition 0 or of other partitions) were still running, and your code went on: it sent ${late
        .slice(0, 4)
        .map((c) => c.args.slice(0, 2).join(" "))
        .join(
          ", ",
        )}${late.length > 4 ? ", ..." : ""} after it had rejected. The caller takes the rejection for the end of the round (it backs off, or shuts down and closes the client), while your partitions go on handling and handing off behind its back: Promise.all() (over the partitions, or over a partition's documents) rejects at the first failure and leaves the others running. Let the round end first: work the partitions and their documents one after another, or wait for all of them (Promise.allSettled(), then throw the first error).`,
      2,
    );
  } finally {
    rule.cancel();
    cluster.destroy();
  }
});

/**
 * A condition for until(): the learner's code has had nothing on its way to or from Redis for
 * three polls and 100 ms running, so it waits on something in the check's own hands. Between a
 * reply and the next command it sends there is no such pause.
 */
function waitsOnCheckAlone(): () => boolean {
  let since: number | undefined;
  let polls = 0;
  return () => {
    if (!nothingInFlight()) {
      since = undefined;
      polls = 0;
      return false;
    }
    since ??= Date.now();
    polls++;
    return polls >= 3 && Date.now() - since >= 100;
  };
}

test("a hand-off Redis answers with CLUSTERDOWN rejects the round, and is not retried for ever", async () => {
  const { run, keys } = await onePartition();
  const [doc = ""] = docIds(1);
  await observer.xAdd(keys.stream("ocr"), "*", { doc });
  const slot = await slotOf(keys.stream("ocr"));
  // Just before the EXEC goes out, the partition's primary forgets it serves the slot: it
  // answers that EXEC, and whatever follows on any of its slots, with CLUSTERDOWN, as a cluster
  // that has lost a shard does, until the check gives the slot back (ADDSLOTS on that primary
  // alone: the other nodes never stopped routing it there).
  const owner = await nodeClient(await primaryOf(slot), "slot-taken");
  const whole = async () =>
    /cluster_state:ok/.test(String(await owner.sendCommand(["CLUSTER", "INFO"])));
  let taken = false;
  const worker = scope("worker");
  const cluster = await learnerCluster(worker);
  const rule = before(
    (c) => c.scope === worker.name && c.name === "EXEC",
    async () => {
      await owner.sendCommand(["CLUSTER", "DELSLOTS", String(slot)]);
      taken = true;
    },
  );
  const waitMs = 5000;
  let ended: { value: number } | { error: unknown } | undefined;
  try {
    const outcome = settled(
      worker.run(() =>
        exercise.workRound(cluster, run, "ocr", "ner", async (work) => result("ocr", work)),
      ),
    ).then((o) => {
      ended = o;
    });
    await Promise.race([outcome, rule.fired.then(() => until(() => ended !== undefined, waitMs))]);
  } finally {
    rule.cancel();
    if (taken) {
      await owner.sendCommand(["CLUSTER", "ADDSLOTS", String(slot)]);
      const back = await until(whole, 10_000);
      check(
        back,
        `The check gave slot ${slot} back to its primary, and the cluster did not come back whole within 10 s: not your code's fault.`,
      );
    }
  }
  const execs = sent((c) => c.scope === worker.name && c.name === "EXEC").length;
  cluster.destroy();
  check(rule.hasFired(), `workRound() sent no EXEC for ${doc}'s hand-off.`, 2);
  check(
    ended !== undefined,
    `Redis answered the EXEC of ${doc}'s hand-off with CLUSTERDOWN (the check had taken the partition's slot away from its primary), and ${waitMs / 1000} s later workRound() had neither returned nor rejected: your code sent EXEC ${execs} time${execs === 1 ? "" : "s"}, retrying the hand-off while the cluster is down. A cluster can stay down for minutes (a shard lost with no replica to take over), and a worker stuck in a retry loop tells nobody: no error reaches the caller, no log, the stage just stops. Let the error reject workRound() (a short retry or two is fine, never an endless one): the caller sees the cluster is down, and the document stays pending for the next round.`,
    2,
  );
  check(
    "error" in (ended ?? {}),
    `Redis answered the EXEC of ${doc}'s hand-off with CLUSTERDOWN, so none of it was applied, and workRound() returned ${"value" in (ended ?? {}) ? (ended as { value: number }).value : ""}. Let the hand-off's error reject workRound().`,
    2,
  );
});
/** `n` fresh ids, the first of them in partition 0, the partition a round reads first. */
async function firstInPartitionZero(n: number): Promise<string[]> {
  const ids = docIds(n * PARTITIONS * 4);
  const first = Math.max(0, (await partitionsToQueue(ids)).indexOf(0));
  return [ids[first] as string, ...ids.filter((_, i) => i !== first).slice(0, n - 1)];
}

/**
 * A slot of the documents' partitions (of any partition if none fits) whose primary does not
 * serve partition 0: after its failover, a round's first hand-off (partition 0's) goes to a
 * primary that did not change, before any command of the round meets a moved slot, so the
 * client's map of the slots is still the old one.
 */
async function slotAwayFromPartitionZero(
  keys: PartitionKeys[],
  ids: string[],
  partitions: number[],
) {
  const zero = await primaryOf(await slotOf(keysAt(keys, 0).stream("ner")));
  const candidates = [...partitions, ...keys.keys()];
  for (const p of candidates) {
    const slot = await slotOf(keysAt(keys, p).stream("ner"));
    if ((await primaryOf(slot)) !== zero) return slot;
  }
  return slotOf(keysAt(keys, partitions[0]).doc(ids[0] as string));
}

test("the worker carries on when a replica takes over from its primary", async () => {
  const { run, keys } = await pipeline();
  const ids = await firstInPartitionZero(8);
  const partitions = await upload(keys, ids);
  const cluster = await learnerCluster();
  await round(cluster, run, "ocr", async (work) => result("ocr", work));
  // A planned failover (CLUSTER FAILOVER on the replica): the roles swap with no write lost.
  const slot = await slotAwayFromPartitionZero(keys, ids, partitions);
  const replica = await nodeClient(await replicaOf(slot), "failover");
  const former = await nodeClient(await primaryOf(slot), "former-primary");
  const role = async (node: Redis) => String(await node.sendCommand(["INFO", "replication"]));
  // Both sides of the swap: until the former primary has stepped down, a command it holds (a
  // WAIT after EXEC, as the lesson suggests) is cut off with UNBLOCKED, which no code can avoid.
  // And until both see the cluster whole again: a node answers CLUSTERDOWN while its own view
  // of the cluster is still failing, however right the code is.
  const whole = async (node: Redis) =>
    /cluster_state:ok/.test(String(await node.sendCommand(["CLUSTER", "INFO"])));
  const swapped = async () =>
    /role:master/.test(await role(replica)) &&
    /role:slave/.test(await role(former)) &&
    (await whole(replica)) &&
    (await whole(former));
  // Redis abandons a manual failover that has not completed in 5 s (CLUSTER_MF_TIMEOUT), which
  // a loaded machine can exceed: ask again while the replica has not taken over.
  let promoted = false;
  for (let attempt = 0; attempt < 3 && !promoted; attempt++) {
    if (!/role:master/.test(await role(replica))) {
      await replica.sendCommand(["CLUSTER", "FAILOVER"]);
    }
    promoted = await until(swapped, 10_000);
  }
  check(
    promoted,
    "The check could not promote a replica (CLUSTER FAILOVER): not your code's fault.",
  );
  const handled = new Set<string>();
  const advice =
    "Let the cluster client route every command: do not keep a connection to one node for the keys of a slot, since the slot's primary can change.";
  let downs = 0;
  for (let attempt = 0; attempt < 10 && handled.size < ids.length; attempt++) {
    const from = sent().at(-1)?.seq ?? 0;
    const down = await round(cluster, run, "ner", async (work) => {
      handled.add(work.doc);
      return result("ner", work);
    })
      .then(
        () => false,
        (error: Error) => {
          // A third node whose own view of the cluster still fails (gossip is slow on a loaded
          // machine) answers CLUSTERDOWN, however right the code: wait until every node sees the
          // cluster whole, then go on with the round.
          if (/\bCLUSTERDOWN\b/.test(error.message) && downs++ < 3) return true;
          throw error;
        },
      )
      .catch((error: Error) => {
        const waited = sent((c) => c.seq > from && c.name === "WAIT").length > 0;
        return fail(
          /\bWAIT\b/.test(error.message) || waited
            ? `After a replica took over from its primary, your code sent WAIT after EXEC and the round failed: ${error.message}. The client's map of the slots is stale for a moment after a failover, so the WAIT can reach the node that just became a replica, or no replica confirms in time. The hand-off itself was applied by then: treat a failed or unconfirmed WAIT as "not confirmed on a replica" (log it), never as a failed hand-off.`
            : `After a replica took over from its primary: ${error.message}. ${advice}`,
          2,
        );
      });
    if (down) {
      const every = await Promise.all(
        (await allNodePorts()).map((port) => nodeClient(port, "whole")),
      );
      const wholeAgain = await until(
        async () => (await Promise.all(every.map(whole))).every(Boolean),
        10_000,
      );
      for (const node of every) node.destroy();
      check(
        wholeAgain,
        "After the failover the cluster did not come back whole within 10 s (a node still answers CLUSTERDOWN): not your code's fault.",
      );
    }
  }
  for (const [i, doc] of ids.entries()) {
    const stored = await observer.hGet(keysAt(keys, partitions[i]).doc(doc), "ner");
    check(
      stored === result("ner", { id: "", doc }),
      `After a replica took over from its primary, ${doc} was not handed off at stage ner (its result is ${JSON.stringify(stored)}). ${advice}`,
      2,
    );
  }
});

/**
 * A slot half-way through a resharding: the target IMPORTING it, the source MIGRATING it, and
 * every key of the slot already moved (MIGRATE). The source still owns the slot, and answers a
 * command on a key it no longer has with ASK <target>: ask the target once (ASKING first), and
 * keep the map as it is. `finish()` hands the slot over for good (SETSLOT ... NODE), after which
 * the source answers MOVED.
 */
async function migrating(slot: number): Promise<{ finish: () => Promise<void>; to: number }> {
  const all = await primaries();
  const fromPort = await primaryOf(slot);
  const from = all.find((n) => n.port === fromPort);
  const to = all.find((n) => n.port !== fromPort);
  if (!from || !to)
    return fail("The check found no second primary to migrate a slot to: not your code's fault.");
  const source = await nodeClient(from.port, "migrating");
  const target = await nodeClient(to.port, "importing");
  const at = String(slot);
  await target.sendCommand(["CLUSTER", "SETSLOT", at, "IMPORTING", from.id]);
  await source.sendCommand(["CLUSTER", "SETSLOT", at, "MIGRATING", to.id]);
  for (;;) {
    const names = (await source.sendCommand(["CLUSTER", "GETKEYSINSLOT", at, "100"])) as string[];
    if (names.length === 0) break;
    await source.sendCommand([
      "MIGRATE",
      "127.0.0.1",
      String(to.port),
      "",
      "0",
      "5000",
      "KEYS",
      ...names,
    ]);
  }
  let finished = false;
  const finish = async () => {
    if (finished) return;
    finished = true;
    await target.sendCommand(["CLUSTER", "SETSLOT", at, "NODE", to.id]);
    await source.sendCommand(["CLUSTER", "SETSLOT", at, "NODE", to.id]);
    for (const other of all.filter((n) => n !== from && n !== to)) {
      const node = await nodeClient(other.port, "resharded");
      await node.sendCommand(["CLUSTER", "SETSLOT", at, "NODE", to.id]);
    }
  };
  return { finish, to: to.port };
}

test("the worker carries on while a slot is being moved to another primary (ASK)", async () => {
  const { run, keys } = await pipeline();
  const ids = await samePartition(3);
  const partitions = await upload(keys, ids);
  const partition = partitions[0] ?? 0;
  // Another partition's slot is half-way to another primary: the round's read there meets ASK.
  // No document waits on it, so no hand-off goes to a slot whose move the check completes after
  // the round (code that looks up a slot's node for its MULTI meets that only once).
  const moving = (partition + 1) % PARTITIONS;
  const stream = keysAt(keys, moving).stream("ocr");
  const slot = await slotOf(stream);
  const cluster = await learnerCluster();
  const move = await migrating(slot);
  const from = sent().at(-1)?.seq ?? 0;
  let failure: Error | undefined;
  try {
    await round(cluster, run, "ocr", async (work) => result("ocr", work)).catch((error: Error) => {
      failure = error;
    });
  } finally {
    await move.finish();
  }
  const asked = sent((c) => c.seq > from && c.name === "ASKING").length > 0;
  const advice = `A slot being moved (resharding: CLUSTER SETSLOT ... MIGRATING/IMPORTING, then MIGRATE of its keys) answers ASK <node> for a key that has left: send ASKING and the command to that node once, and keep the map as it is. createCluster() does this and MOVED for you: let the cluster client you are given route every command, rather than connecting to one node and following errors by hand.`;
  if (failure) {
    fail(
      `While the slot of ${stream} (slot ${slot}) was being moved to another primary, workRound() failed: ${failure.message}${!asked && /\bASK\b/.test(failure.message) ? ". That ASK was not followed" : ""}. ${advice}`,
      2,
    );
  }
  for (const doc of ids) {
    const stored = await observer.hGet(keysAt(keys, partition).doc(doc), "ocr");
    check(
      stored === result("ocr", { id: "", doc }),
      `While the slot of another partition's stream (${stream}, slot ${slot}) was being moved to another primary, ${doc} was not handed off at stage ocr (its result is ${JSON.stringify(stored)}). ${advice}`,
      2,
    );
  }
});
