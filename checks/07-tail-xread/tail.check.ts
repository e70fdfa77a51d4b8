import { test } from "vitest";
import {
  call,
  check,
  checkClient,
  fail,
  key,
  learnerClient,
  loadExercise,
  type Redis,
  sleep,
  until,
} from "../kit.ts";
import { blockedIn, compareIds, waitForBlocked } from "../streams-support.ts";

interface LogEntry {
  id: string;
  event: { docId: string; stage: string; status: string };
}

interface TailOptions {
  stream: string;
  checkpoint: string;
  onEntry(entry: LogEntry): void | Promise<void>;
  blockMs: number;
}

interface Tail {
  stop(): Promise<void>;
}

interface Exercise {
  startTail(client: Redis, options: TailOptions): Promise<Tail>;
}

const exercise = await loadExercise<Exercise>("startTail");

/** Long enough that a reader's first XREAD does not time out before the check writes. */
const BLOCK_MS = 2000;

/** Starts the learner's reader; the IDs it hands over are collected in `seen`. */
async function start(
  client: Redis,
  stream: string,
  checkpoint: string,
  seen: string[],
  blockMs = BLOCK_MS,
): Promise<Tail> {
  const tail = await call("startTail()", () =>
    exercise.startTail(client, {
      stream,
      checkpoint,
      blockMs,
      onEntry: (entry) => {
        seen.push(entry.id);
      },
    }),
  );
  check(
    tail && typeof tail.stop === "function",
    "startTail() should resolve to an object with a stop() method.",
    2,
  );
  return tail;
}

/** Waits until `count` of the learner's connections wait in XREAD BLOCK, or fails. */
async function untilWaiting(observer: Redis, count = 1): Promise<void> {
  const most = await waitForBlocked(observer, "xread", count, 3000);
  check(
    most >= 1,
    "Your reader never waited in a blocking XREAD within 3 s of startTail(). Read with BLOCK, so the reader waits for new entries instead of asking again and again.",
    2,
  );
}

/** Appends `count` status events in one burst, as a busy OCR stage does. */
function burst(observer: Redis, stream: string, count: number, label: string): Promise<string[]> {
  return Promise.all(
    Array.from({ length: count }, (_, n) =>
      observer.xAdd(stream, "*", { docId: `${label}-${n}`, stage: "ocr", status: "done" }),
    ),
  );
}

/**
 * Stops readers. The check adds one more entry so that a read blocked for BLOCK_MS returns at
 * once: the stop stays quick without asking the learner's code for anything special.
 */
async function stopAll(observer: Redis, stream: string, tails: Tail[]): Promise<void> {
  const stopped = tails.map((tail) => call("tail.stop()", () => tail.stop(), BLOCK_MS + 5000));
  await sleep(20);
  await observer.xAdd(stream, "*", { docId: "wake-up", stage: "check", status: "stop" });
  await Promise.all(stopped);
}

function list(ids: string[]): string {
  return ids.length <= 3 ? ids.join(", ") : `${ids.slice(0, 3).join(", ")}, ...`;
}

function firstDuplicate(ids: string[]): string | undefined {
  return ids.find((id, i) => ids.indexOf(id) !== i);
}

function inOrder(ids: string[]): boolean {
  return ids.every((id, i) => i === 0 || compareIds(ids[i - 1] ?? "", id) < 0);
}

test("a new reader hands over every new entry, in order, and nothing older", async () => {
  const observer = await checkClient();
  const client = await learnerClient();
  const stream = key("status");
  const before = await burst(observer, stream, 3, "earlier");
  const seen: string[] = [];
  const tail = await start(client, stream, key("tail:dashboard"), seen);
  await untilWaiting(observer);
  const fresh = await burst(observer, stream, 20, "doc");

  const arrived = await until(() => fresh.every((id) => seen.includes(id)), 5000);
  await stopAll(observer, stream, [tail]);

  check(
    arrived,
    `Your reader handed over ${fresh.filter((id) => seen.includes(id)).length} of the 20 entries added after it started and then waited. After the first read, continue from the ID of the last entry you got: "$" means "only what arrives after this very command", so a reader that asks for "$" each time skips whatever arrived in between.`,
    2,
  );
  const old = seen.filter((id) => before.includes(id));
  check(
    old.length === 0,
    `Your reader handed over ${old.length} entries that were in the stream before it started (${list(old)}). A reader without a checkpoint starts at "$": only entries added from now on.`,
    1,
  );
  const handed = seen.filter((id) => fresh.includes(id));
  const duplicate = firstDuplicate(handed);
  check(
    duplicate === undefined,
    `Entry ${duplicate} was handed to onEntry() twice. Each XREAD must start after the last entry already handled.`,
    2,
  );
  check(
    inOrder(handed),
    `The entries reached onEntry() out of order: ${list(handed)}. Hand them over in the order XREAD returns them, one at a time.`,
    2,
  );
});

test("after a restart the reader gets exactly the entries it missed", async () => {
  const observer = await checkClient();
  const client = await learnerClient();
  const stream = key("status:restart");
  const checkpoint = key("tail:indexer");

  const first: string[] = [];
  let tail = await start(client, stream, checkpoint, first);
  await untilWaiting(observer);
  const early = await burst(observer, stream, 5, "early");
  const before = await until(() => early.every((id) => first.includes(id)), 5000);
  await stopAll(observer, stream, [tail]);
  check(
    before,
    `Before the restart your reader handed over only ${first.filter((id) => early.includes(id)).length} of 5 new entries.`,
    2,
  );
  const lastHandled = first.at(-1) ?? "0-0";
  const savedAs = await observer.get(checkpoint);
  check(
    savedAs !== null,
    `After stop() the checkpoint key is empty: save the ID of each entry you handled (SET ${checkpoint} <id>), so a restart knows where to continue.`,
    2,
  );

  // The indexer is down (a deploy, a crash) while the platform keeps working.
  await burst(observer, stream, 7, "while-down");

  const second: string[] = [];
  tail = await start(client, stream, checkpoint, second);
  await untilWaiting(observer);
  const late = await burst(observer, stream, 3, "late");
  const arrived = await until(() => late.every((id) => second.includes(id)), 5000);
  await stopAll(observer, stream, [tail]);

  const lastLate = late.at(-1) ?? "+";
  const expected = ((await observer.xRange(stream, `(${lastHandled}`, lastLate)) ?? []).map(
    (m) => m.id,
  );
  const repeated = second.filter((id) => first.includes(id));
  check(
    repeated.length === 0,
    `After the restart your reader handed over ${repeated.length} entries it had already handled before (${list(repeated)}). Continue after the checkpoint instead of reading the stream from the start ("0").`,
    2,
  );
  const missed = expected.filter((id) => !second.includes(id));
  check(
    missed.length === 0,
    `After the restart your reader missed ${missed.length} entries that were added while it was stopped (${list(missed)}). Start from the ID saved in the checkpoint; "$" is only for a reader that has never run.`,
    2,
  );
  check(arrived, "After the restart your reader did not hand over the new entries.", 2);
  const handed = second.filter((id) => compareIds(id, lastLate) <= 0);
  check(
    handed.length === expected.length && inOrder(handed),
    `After the restart the reader should hand over ${expected.length} entries once each, in order; it handed over ${handed.length}: ${list(handed)}.`,
    2,
  );
});

test("independent readers each see every entry (fan-out with history)", async () => {
  const observer = await checkClient();
  const client = await learnerClient();
  const stream = key("status:fanout");
  const dashboard: string[] = [];
  const billing: string[] = [];
  const tails = [
    await start(client, stream, key("tail:fanout:dashboard"), dashboard),
    await start(client, stream, key("tail:fanout:billing"), billing),
  ];
  const waiting = await waitForBlocked(observer, "xread", 2, 3000);
  const ids = await burst(observer, stream, 10, "doc");
  const both = () => ids.every((id) => dashboard.includes(id) && billing.includes(id));
  const done = await until(both, 5000);
  await stopAll(observer, stream, tails);
  for (const [name, seen] of [
    ["dashboard", dashboard],
    ["billing", billing],
  ] as const) {
    const got = seen.filter((id) => ids.includes(id));
    check(
      done && got.length === ids.length && inOrder(got),
      `Two readers followed the same stream, and the ${name} reader got ${got.length} of the 10 new entries${inOrder(got) ? "" : ", out of order"}. Unlike a consumer group, plain XREAD readers do not share entries: each should see all of them.${waiting < 2 ? " Only one of the two readers was ever waiting at a time: do they share one connection? Give each reader its own (client.duplicate())." : ""}`,
      2,
    );
  }
});

test("the main client answers at once while the reader waits for entries", async () => {
  const observer = await checkClient();
  const client = await learnerClient();
  const stream = key("status:busy");
  const mainId = String(await client.clientId());
  const tail = await start(client, stream, key("tail:busy"), [], 4000);
  try {
    await untilWaiting(observer);
    const blocked = await blockedIn(observer, "xread");
    if (blocked.some((c) => c.id === mainId)) {
      fail(
        "Your blocking XREAD runs on the client you were given, so every other command of the service (the API's, saving a checkpoint) waits until the read returns. A blocking reader needs its own connection: const reader = client.duplicate(); await reader.connect().",
        2,
      );
    }
    const answered = await Promise.race([
      client.ping().then(() => true),
      sleep(1000).then(() => false),
    ]);
    check(
      answered,
      "While your reader waited in XREAD BLOCK, PING on the main client got no answer within 1 s: it queued behind the blocking read. A blocking reader needs its own connection (client.duplicate()).",
      2,
    );
  } finally {
    await stopAll(observer, stream, [tail]);
  }
});
