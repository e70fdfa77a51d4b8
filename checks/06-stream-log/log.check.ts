import { test, vi } from "vitest";
import {
  CheckFailure,
  call,
  check,
  checkClient,
  fail,
  freshKey,
  learnerClient,
  loadExercise,
  type Redis,
  sameValue,
} from "../kit.ts";
import { compareIds, isStreamId } from "../streams-support.ts";
import { before as beforeCommand, type SentCommand, sent } from "../wire.ts";

interface DocEvent {
  docId: string;
  stage: string;
  status: string;
}

interface LogEntry {
  id: string;
  event: DocEvent;
}

interface Exercise {
  appendEvent(client: Redis, stream: string, event: DocEvent, maxLen: number): Promise<string>;
  readPage(client: Redis, stream: string, after: string | null, count: number): Promise<LogEntry[]>;
  latest(client: Redis, stream: string, count: number): Promise<LogEntry[]>;
  trimOlderThan(client: Redis, stream: string, maxAgeMs: number): Promise<number>;
}

const exercise = await loadExercise<Exercise>("appendEvent", "readPage", "latest", "trimOlderThan");

const STAGES = ["ocr", "ner", "classify", "embed"];

function eventFor(n: number): DocEvent {
  return { docId: `doc-${n}`, stage: STAGES[n % STAGES.length] ?? "ocr", status: "done" };
}

/**
 * Fills a stream with the check's own connection, so a test depends on one function only. Three
 * entries share each millisecond, as in a busy second, and a page of 40 ends inside one: a
 * reader that skips to the next millisecond loses some every time. Entries come in pairs with
 * the same fields (a stage logged twice): a reader that drops "repeats" by content loses them.
 */
async function seed(via: Redis, stream: string, count: number): Promise<string[]> {
  const base = Date.now() - count;
  // One connection runs them in the order sent, so the IDs only go up.
  return Promise.all(
    Array.from({ length: count }, (_, n) => {
      const { docId, stage, status } = eventFor(Math.floor(n / 2));
      // The second of each pair comes from another service that writes the fields in its own
      // order: fields are read by name, never by position.
      const fields = n % 2 === 0 ? { docId, stage, status } : { status, docId, stage };
      return via.xAdd(stream, `${base + Math.floor(n / 3)}-${n % 3}`, fields);
    }),
  );
}

/**
 * Fails when a read of `stream` went out without COUNT: it returns the whole log, however long,
 * to keep a page of it.
 */
async function checkBoundedReads(stream: string, what: string, count: number): Promise<void> {
  const reads = sent((c) => /^(XRANGE|XREVRANGE|XREAD)$/.test(c.name) && c.args.includes(stream));
  const countOf = (c: SentCommand) => {
    const at = c.args.findIndex((arg) => /^COUNT$/i.test(arg));
    return at < 0 ? undefined : Number(c.args[at + 1]);
  };
  const unbounded = reads.find((c) => countOf(c) === undefined);
  check(
    unbounded === undefined,
    `${what} sent ${unbounded?.args.join(" ")}: a read without COUNT returns the whole log (a million entries, for a log that has them) to keep a few. Pass COUNT to the read so Redis returns only what you need.`,
    2,
  );
  // A COUNT sized to the log (XLEN, or a huge number) reads all of it as surely as none: a
  // page a little larger than asked for is fine, the whole log is not.
  const limit = count + 100;
  const oversized = reads.find((c) => (countOf(c) ?? 0) > limit);
  check(
    oversized === undefined,
    `${what} asked for ${count} entries and sent ${oversized?.args.join(" ")}: a COUNT of ${oversized ? countOf(oversized) : 0} reads (nearly) the whole log to keep ${count}, which on a log of a million entries is a million entries over the wire. Ask Redis for what you keep: COUNT ${count}, and read from the end you need (XREVRANGE "+" "-" for the newest).`,
    2,
  );
}

function describeIds(ids: string[]): string {
  return ids.length <= 3 ? ids.join(", ") : `${ids.slice(0, 3).join(", ")}, ...`;
}

/** Appends through the learner's code, explaining the error Redis gives for a hand-made ID. */
async function append(client: Redis, stream: string, n: number, maxLen: number): Promise<string> {
  try {
    return await call("appendEvent()", () =>
      exercise.appendEvent(client, stream, eventFor(n), maxLen),
    );
  } catch (error) {
    if (error instanceof CheckFailure && /equal or smaller/i.test(error.message)) {
      fail(
        `Redis refused append number ${n + 1}: "The ID specified in XADD is equal or smaller than the target stream top item". An ID you build yourself (from Date.now(), say) repeats when two events arrive in the same millisecond. Pass "*" and let Redis choose: it always hands out a larger ID.`,
        2,
      );
    }
    throw error;
  }
}

test("appendEvent() stores each event under an ID Redis chose, and the IDs strictly increase", async () => {
  const observer = await checkClient();
  const client = await learnerClient();
  const stream = freshKey("audit:append");
  const ids: string[] = [];
  // Twenty events at the same moment (a batch upload), then a steady flow.
  ids.push(
    ...(await Promise.all(Array.from({ length: 20 }, (_, n) => append(client, stream, n, 10_000)))),
  );
  for (let n = 20; n < 250; n++) ids.push(await append(client, stream, n, 10_000));

  const bad = ids.find((id) => !isStreamId(id));
  check(
    bad === undefined,
    `appendEvent() should return the new entry's ID, like "1718000000000-0"; it returned ${JSON.stringify(bad)}. Return what XADD gives back.`,
    2,
  );
  for (let i = 1; i < ids.length; i++) {
    const [before = "", now = ""] = [ids[i - 1], ids[i]];
    check(
      compareIds(before, now) < 0,
      `Entry IDs must strictly increase, but append ${i + 1} got ${now} after ${before}. Let Redis choose the ID with "*".`,
      2,
    );
  }
  const length = await observer.xLen(stream);
  check(length === 250, `After 250 appends XLEN should be 250; it is ${length}.`, 2);

  const stored = (await observer.xRange(stream, "-", "+", { COUNT: 1 })) ?? [];
  const fields = stored[0]?.message ?? {};
  const expected = eventFor(0);
  check(
    sameValue({ ...fields }, { ...expected }),
    `The first entry should have the fields docId, stage and status (${JSON.stringify(expected)}); the stream holds ${JSON.stringify(fields)}. Store each property as its own field, so every service (in any language) can read it.`,
    2,
  );
});

test("readPage() returns each of 250 entries exactly once, in order, page by page", async () => {
  const observer = await checkClient();
  const client = await learnerClient();
  const stream = freshKey("audit:pages");
  const ids = await seed(observer, stream, 250);
  const pageSize = 40;

  const seenOnPage = new Map<string, number>();
  const order: string[] = [];
  let after: string | null = null;
  let emptyPageSeen = false;
  /** The `after` each page was asked with: the last ID of the page before. */
  const starts: string[] = [];
  // 250 entries in pages of 40 take 7 pages and an empty one; the rest is a safety margin.
  for (let page = 1; page <= 12 && !emptyPageSeen; page++) {
    const from: string | null = after;
    const entries: LogEntry[] = await call(`readPage(after = ${from ?? "null"})`, () =>
      exercise.readPage(client, stream, from, pageSize),
    );
    check(Array.isArray(entries), "readPage() should return an array of entries.", 2);
    check(
      entries.length <= pageSize,
      `readPage() was asked for ${pageSize} entries and returned ${entries.length}. Pass COUNT to XRANGE.`,
      2,
    );
    if (entries.length === 0) emptyPageSeen = true;
    // Judged by the log itself, so a page that skipped entries is reported as a skip below.
    const startAt = from === null ? 0 : ids.indexOf(from) + 1;
    const remaining = ids.length - startAt;
    // Left out from the middle of the page (not cut short): dropped by what they hold.
    const lastAt = ids.indexOf(entries.at(-1)?.id ?? "");
    const returned = new Set(entries.map((e) => e.id));
    const leftOut = ids.slice(startAt, lastAt).filter((id) => !returned.has(id));
    check(
      entries.length >= Math.min(pageSize, remaining),
      `readPage() was asked for ${pageSize} entries with ${remaining} still after its start, and returned ${entries.length}. ${leftOut.length ? `It left out ${describeIds(leftOut)} from the middle of the page${leftOut.every((id) => ids.indexOf(id) % 2 === 1) ? ": each has the same fields as the entry before it (a stage logged twice), and each is its own entry. Keep every entry XRANGE returns." : `, between its first and last entries. Start the page just after the last ID ("(" + id); an ID's two parts are numbers (after ${ids[startAt - 1] ?? "-"} comes ${ids[startAt] ?? "the next"}).`}` : "A page holds count entries until the log runs out: pass count itself as XRANGE's COUNT."}`,
      2,
    );
    for (const entry of entries) {
      const earlier = seenOnPage.get(entry.id);
      if (earlier !== undefined) {
        fail(
          `Entry ${entry.id} came back twice: on page ${earlier} and again on page ${page}. XRANGE includes its start ID, so starting a page at the last ID of the previous page repeats that entry. Start after it: "(" + id.`,
          2,
        );
      }
      seenOnPage.set(entry.id, page);
      order.push(entry.id);
    }
    after = entries.at(-1)?.id ?? after;
    if (after !== null) starts.push(after);
  }

  const missing = ids.filter((id) => !seenOnPage.has(id));
  const millisecond = (id: string) => id.split("-")[0];
  const pageEnds = new Set(starts.map(millisecond));
  const skippedRest = missing.length > 0 && missing.every((id) => pageEnds.has(millisecond(id)));
  // Seeded in pairs with the same fields: only second halves missing means dropped as repeats.
  const secondOfPairs = missing.length > 0 && missing.every((id) => ids.indexOf(id) % 2 === 1);
  check(
    missing.length === 0,
    `Paging through the log missed ${missing.length} of the 250 entries (${describeIds(missing)}). ${skippedRest ? "Each shares its millisecond with the last entry of the page before: the next page started at a later millisecond and skipped them. " : ""}${secondOfPairs ? "This log holds pairs of entries with the same fields (a stage logged twice): each is its own entry, so keep every one, and tell entries apart by ID only. " : ""}Start each page just after the last ID of the previous one ("(" + id), and the first page at "-".`,
    2,
  );
  check(
    order.every((id, i) => id === ids[i]),
    "readPage() should return entries oldest first, in stream order: use XRANGE, not XREVRANGE.",
    2,
  );
  check(
    emptyPageSeen,
    "After the last entry readPage() should return an empty page, so a reader knows it is done.",
    2,
  );
  // The reader's last entry may be trimmed away before it asks for the next page.
  const gone = ids[100] ?? "";
  await observer.xDel(stream, gone);
  const resumed = (
    await call(`readPage(after = ${gone})`, () => exercise.readPage(client, stream, gone, 5))
  ).map((e) => e.id);
  const next = ids.slice(101, 106);
  check(
    sameValue(resumed, next),
    `The check deleted entry ${gone} (as trimming would) and then asked readPage(after = ${gone}, 5): it should return the 5 entries after it, ${describeIds(next)}; it returned ${describeIds(resumed)}.${resumed[0] === ids[102] ? ' Your code dropped the first entry of the range without looking: it is the entry after, not the repeat, when the one you start from is gone. Drop it only when its ID equals after, or start the range after it: "(" + id.' : ""}`,
    2,
  );
  const sample = await call("readPage(after = null)", () =>
    exercise.readPage(client, stream, null, 2),
  );
  const expected = eventFor(0);
  check(
    sameValue(sample[0]?.event, expected),
    `Each entry's event should carry the stream fields: expected ${JSON.stringify(expected)}, got ${JSON.stringify(sample[0]?.event)}.`,
    2,
  );
  check(
    sameValue(sample[1]?.event, expected),
    `Entry ${ids[1]} holds ${JSON.stringify(expected)}, written by another service with its fields in the order status, docId, stage; readPage() turned it into ${JSON.stringify(sample[1]?.event)}. A stream entry's fields are named: read message.docId, message.stage and message.status by name, not by their position.`,
    2,
  );
  await checkBoundedReads(stream, "readPage()", 40);

  // Twelve entries in one millisecond: only their sequence numbers, as numbers, order them.
  const busy = freshKey("audit:busy-ms");
  const at = Date.now() - 1000;
  const busyIds = await Promise.all(
    Array.from({ length: 12 }, (_, n) => observer.xAdd(busy, `${at}-${n}`, { ...eventFor(n) })),
  );
  const busyPage = (
    await call("readPage(after = null)", () => exercise.readPage(client, busy, null, 12))
  ).map((e) => e.id);
  const busyWrongAt = busyPage.findIndex((id, i) => id !== busyIds[i]);
  check(
    sameValue(busyPage, busyIds),
    `Twelve entries share one millisecond (${at}-0 to ${at}-11), and readPage(after = null, 12) returned ${busyPage.length} of them${busyWrongAt < 0 ? "" : `, with ${busyPage[busyWrongAt]} where ${busyIds[busyWrongAt]} belongs (place ${busyWrongAt + 1})`}. XRANGE returns them in the stream's order; sorting IDs as strings puts "-10" before "-2". Return them in the order XRANGE gives.`,
    2,
  );
  // A page that ends at -9 goes on with -10: "-10" is below "-9" as a string, not as a number.
  const afterNine = (
    await call(`readPage(after = ${at}-9)`, () => exercise.readPage(client, busy, `${at}-9`, 5))
  ).map((e) => e.id);
  check(
    sameValue(afterNine, busyIds.slice(10)),
    `readPage(after = ${at}-9, 5) should return the two entries after it in the same millisecond, ${at}-10 and ${at}-11; it returned ${describeIds(afterNine) || "none"}. An ID's sequence number is a number: -10 comes after -9, although "-10" < "-9" as strings. Let XRANGE pick the entries after it ("(" + id) rather than comparing IDs as strings.`,
    2,
  );
});

test("appendEvent() appends after an entry stamped ahead of this machine's clock", async () => {
  const observer = await checkClient();
  const client = await learnerClient();
  const stream = freshKey("audit:skew");
  // Another writer's entry a minute ahead: what a server whose clock runs ahead of the
  // learner's machine, or a server clock that stepped back, leaves at the top.
  const ahead = await observer.xAdd(stream, `${Date.now() + 60_000}-0`, { ...eventFor(0) });
  let id: string;
  try {
    id = await call("appendEvent()", () =>
      exercise.appendEvent(client, stream, eventFor(1), 10_000),
    );
  } catch (error) {
    if (!(error instanceof CheckFailure && /equal or smaller/i.test(error.message))) throw error;
    fail(
      `The stream's last entry, ${ahead}, carries a time a minute ahead of this machine's clock (a server whose clock runs ahead, or one that stepped back), and Redis refused your appendEvent(): "${error.message.replace(/^appendEvent\(\) threw an error: /, "")}". An ID built from this machine's Date.now(), even "<ms>-*", is then below the top. Pass "*" alone: Redis always hands out an ID above the last one.`,
      2,
    );
  }
  check(
    isStreamId(id) && compareIds(ahead, id) < 0,
    `appendEvent() after ${ahead} should return a larger ID; it returned ${JSON.stringify(id)}.`,
    2,
  );
});

test("latest() shows the newest entries, newest first", async () => {
  const observer = await checkClient();
  const client = await learnerClient();
  const stream = freshKey("audit:latest");
  // All in one millisecond, sequence 0 to 29: IDs ordered as strings would put "-9" above "-29".
  const base = Date.now() - 1000;
  // 300 older entries below them: a read sized to the whole log (COUNT from XLEN) shows.
  await Promise.all(
    Array.from({ length: 300 }, (_, n) =>
      observer.xAdd(stream, `${base - 300 + n}-0`, {
        docId: `old-${n}`,
        stage: "ocr",
        status: "done",
      }),
    ),
  );
  const ids = await Promise.all(
    Array.from({ length: 30 }, (_, n) => {
      const { docId, stage, status } = eventFor(n);
      return observer.xAdd(stream, `${base}-${n}`, { docId, stage, status });
    }),
  );
  // 25 of them reach down to sequence 5, across the step from "-10" to "-9".
  const entries = await call("latest(25)", () => exercise.latest(client, stream, 25));
  const got = (entries ?? []).map((e) => e.id);
  const expected = ids.slice(-25).reverse();
  const wrongAt = got.findIndex((id, i) => id !== expected[i]);
  check(
    got.length === 25 && wrongAt < 0,
    `latest(25) should return the 25 newest entries, newest first: ${describeIds(expected)}; it returned ${got.length}${wrongAt < 0 ? "" : `, with ${got[wrongAt]} where ${expected[wrongAt]} belongs (place ${wrongAt + 1})`} (${describeIds(got)}). Here all 30 entries share one millisecond, so their sequence numbers (0 to 29, numbers, not strings) order them. XREVRANGE reads from "+" down to "-" in the stream's own order.`,
    2,
  );
  await checkBoundedReads(stream, "latest(25)", 25);
});

test("appendEvent() keeps the log bounded to about maxLen entries", async () => {
  const observer = await checkClient();
  const client = await learnerClient();
  const stream = freshKey("audit:capped");
  // Not a multiple of the 100 entries of a stream node, and not the 100 of the lesson's text:
  // a threshold other than maxLen shows, and so does a hard-coded one.
  const maxLen = 150;
  const ids: string[] = [];
  for (let n = 0; n < 1000; n++) {
    ids.push(await append(client, stream, n, maxLen));
    // "Never fewer" holds after every append, not only at the end: a smaller threshold with
    // "~" drops a whole node at some append and climbs back before the last one.
    if (n + 1 < maxLen) continue;
    const now = await observer.xLen(stream);
    check(
      now >= maxLen,
      `After ${n + 1} appends with maxLen ${maxLen} the log held only ${now} entries: it should keep at least the newest ${maxLen} at every moment. Pass maxLen itself as the MAXLEN threshold; "~" then keeps a few more, never fewer.`,
      2,
    );
  }

  // Exact trimming keeps the length right too, so only the commands tell it apart.
  const exact = sent((c) => c.args[1] === stream).find((c) => {
    const at = c.args.findIndex((arg) => /^MAXLEN$/i.test(arg));
    return at >= 0 && c.args[at + 1] !== "~";
  });
  if (exact) {
    const at = exact.args.findIndex((arg) => /^MAXLEN$/i.test(arg));
    const modifier = exact.args[at + 1] === "=" ? "= " : "";
    fail(
      `Your appendEvent() trims with ${exact.name} ... MAXLEN ${modifier}${exact.args[at + (modifier ? 2 : 1)]}: exact trimming. The length is right, but exact trimming may cut a stream node in half, extra work on every append, for a number that is only a cap. Use approximate trimming: MAXLEN ~ maxLen (strategyModifier: "~"), which drops whole nodes only and never keeps fewer than maxLen.`,
      2,
    );
  }
  const length = await observer.xLen(stream);
  // Trims sent with a threshold other than this call's maxLen: one remembered from an earlier
  // call (the first test's), or a number of the learner's own.
  const thresholds = () =>
    new Set(
      sent((c) => c.args[1] === stream && (c.name === "XADD" || c.name === "XTRIM")).flatMap(
        (c) => {
          const at = c.args.findIndex((arg) => /^MAXLEN$/i.test(arg));
          return at < 0
            ? []
            : [c.args[/^[~=]$/.test(c.args[at + 1] ?? "") ? at + 2 : at + 1] ?? ""];
        },
      ),
    );
  const otherThan = (limit: number) => [...thresholds()].filter((t) => Number(t) !== limit);
  const tooHigh = otherThan(maxLen).filter((t) => Number(t) > maxLen + 250);
  check(
    length <= maxLen + 250 || tooHigh.length === 0,
    `After 1000 appends with maxLen ${maxLen} the log holds ${length} entries: your appendEvent() trims, but with MAXLEN ~ ${tooHigh.join(", ")}, not the ${maxLen} it was given. A threshold kept from an earlier call (a variable outside the function, set once) or a number of your own caps the log somewhere else: pass this call's maxLen every time.`,
    2,
  );
  check(
    length <= maxLen + 250,
    `After 1000 appends with maxLen ${maxLen} the log holds ${length} entries: it grows without bound. Trim while you append: XADD ... MAXLEN ~ ${maxLen}.`,
    2,
  );
  const newest = ((await observer.xRevRange(stream, "+", "-", { COUNT: maxLen })) ?? []).map(
    (m) => m.id,
  );
  const expected = ids.slice(-maxLen).reverse();
  check(
    newest.every((id, i) => id === expected[i]),
    `The newest ${maxLen} entries should all still be in the log: trimming removes the oldest ones.`,
    2,
  );

  // The length at the end is bounded by a trim every 50th append too. Every append must trim:
  // with other writers' entries piled up before it, one that does not leaves them all there.
  // Three appends in a row, so that a trim every second or third call shows as well.
  const others = 400;
  for (let round = 1; round <= 3; round++) {
    const pile = observer.multi();
    for (let n = 0; n < others; n++) pile.xAdd(stream, "*", { ...eventFor(2000 + n) });
    await pile.exec();
    await append(client, stream, 1000 + round, maxLen);
    const after = await observer.xLen(stream);
    // LIMIT caps how many entries one trim may remove: the append trims, but not the pile.
    const limited = sent(
      (c) => c.args[1] === stream && (c.name === "XADD" || c.name === "XTRIM"),
    ).find((c) => c.args.some((arg) => /^LIMIT$/i.test(arg)));
    if (limited && after > maxLen + 250) {
      const limit = limited.args[limited.args.findIndex((arg) => /^LIMIT$/i.test(arg)) + 1];
      fail(
        `The check appended ${others} entries of its own (as another service writing to the log would), then called your appendEvent() with maxLen ${maxLen}: the log still held ${after} entries afterwards. Your ${limited.name} carries LIMIT ${limit}, which caps how many entries one trim may remove (and with "~" it only ever drops whole nodes of 100), so what piled up stays. Leave LIMIT out: MAXLEN ~ ${maxLen} alone is already cheap, and cuts whatever piled up, whoever wrote it.`,
        2,
      );
    }
    check(
      after <= maxLen + 250,
      `The check appended ${others} entries of its own (untrimmed, as another service writing to the log would), then called your appendEvent() with maxLen ${maxLen}: the log still held ${after} entries afterwards, so that append did not trim (call ${round} of 3 in a row). Trim on every append, not every so often: XADD ... MAXLEN ~ ${maxLen} each time, which cuts whatever piled up, whoever wrote it.`,
      2,
    );
  }

  // A trim only once the log is well over maxLen (XLEN first, XTRIM when it exceeds maxLen + 100)
  // cuts the piles above and stays within the bound, so only the commands show it: each call
  // must send a trim. A script is opaque here and counts as one.
  const calls = 1000 + 3;
  const trims = sent(
    (c) =>
      (/^(EVAL|EVALSHA|EVAL_RO|EVALSHA_RO|FCALL)$/.test(c.name) && c.args.includes(stream)) ||
      (c.args[1] === stream &&
        (c.name === "XTRIM" ||
          (c.name === "XADD" && c.args.some((arg) => /^(MAXLEN|MINID)$/i.test(arg))))),
  ).length;
  check(
    trims >= calls,
    `Your appendEvent() was called ${calls} times and sent a trim (XADD ... MAXLEN ~, or XTRIM) in only ${trims} of them: the others appended without trimming. Trimming only once the log is well over maxLen costs an XLEN on every append to save a trim that "~" already makes nearly free, and lets the log run past its cap between trims. Trim on every append: XADD ... MAXLEN ~ ${maxLen} * ..., in the same command.`,
    2,
  );

  // "~" keeps a few more than the threshold already: a threshold above maxLen ("some headroom")
  // stays within the bounds above, so only the commands show it.
  const other = otherThan(maxLen);
  check(
    other.length === 0,
    `Your appendEvent() was given maxLen ${maxLen} and trimmed with MAXLEN ~ ${other.join(", ")}. "~" already keeps a few more entries than its threshold (up to a stream node's worth, 100 by default), so a threshold above maxLen adds to that, and one below it may keep fewer than maxLen. Pass maxLen itself: MAXLEN ~ ${maxLen}.`,
    2,
  );
});

const OLD_ENTRIES = 150;

test("trimOlderThan() deletes every entry past the retention age, and nothing newer", async () => {
  const observer = await checkClient();
  const client = await learnerClient();
  const stream = freshKey("audit:retention");
  const day = 86_400_000;
  // The learner's code runs with Date frozen at `now`, the start of a second a moment ahead, so
  // the cutoff it computes from Date.now() is exactly cutoffMs, however slow the machine. The
  // cutoff lies 1 ms past a whole second and the age limit 1 ms short of one: a cutoff rounded
  // up to seconds, or an age limit rounded down to seconds, lands 999 ms late; a cutoff rounded
  // down (or an age limit rounded up) lands early and keeps the entry written 1 ms before it.
  const now = Math.ceil((Date.now() + 100) / 1000) * 1000;
  const maxAge = 30 * day + 999;
  const cutoffMs = now - maxAge;
  // Entry IDs carry their time, so the check can write a month of history in one go: more old
  // entries than one page of a learner's XRANGE ... COUNT 100, and a log that has been quiet for
  // eleven days, so a cutoff counted from the newest entry instead of from now shows.
  const history = observer.multi();
  for (let i = 0; i < OLD_ENTRIES; i++) {
    history.xAdd(stream, `${now - 40 * day + i * 3_600_000}-0`, {
      docId: `old-${i}`,
      status: "done",
    });
  }
  history.xAdd(stream, `${cutoffMs - 1}-0`, { docId: "just-too-old", status: "done" });
  // Exactly maxAgeMs old is not older than the limit: MINID keeps the cutoff itself, and a cutoff
  // one millisecond later (or an XRANGE end that includes it, for XDEL) deletes this entry.
  const atLimit = `${cutoffMs}-0`;
  history.xAdd(stream, atLimit, { docId: "exactly-at-the-limit", status: "done" });
  // Young by Date.now(), which is frozen at `now`, but at least 50 ms too old by the server's
  // clock once its TIME is read (held until 100 ms past `now`): a cutoff from TIME deletes it,
  // unless it drops the microseconds and lands on the whole second.
  const oldByServer = `${cutoffMs + 50}-0`;
  history.xAdd(stream, oldByServer, { docId: "old-by-the-server-clock", status: "done" });
  // Young enough by 900 ms: a cutoff that lands later than now minus maxAgeMs (rounded up, or
  // a server TIME read with its microseconds taken for milliseconds) deletes it.
  const justYoung = `${cutoffMs + 900}-0`;
  history.xAdd(stream, justYoung, { docId: "just-young-enough", status: "done" });
  for (let i = 0; i < 10; i++) {
    history.xAdd(stream, `${now - (20 - i) * day}-0`, { docId: `kept-${i}`, status: "done" });
  }
  await history.exec();

  const before = sent().length;
  // The log is live: another service appends just before the learner's XTRIM reaches Redis.
  const append = beforeCommand(
    (c) => c.name === "XTRIM" && c.args[1] === stream,
    async () => {
      await observer.xAdd(stream, "*", { docId: "live-1", status: "queued" });
    },
  );
  // A cutoff read from the server's TIME is sent once the real clock has reached `now` and is
  // past the first 100 ms of a second, so microseconds taken for milliseconds always put it far
  // too late (minutes). Date is frozen meanwhile: the real clock is performance's.
  const realNow = () => performance.timeOrigin + performance.now();
  let timeLateMs = 0;
  let readTime = false;
  const serverTime = beforeCommand(
    (c) => c.name === "TIME",
    async () => {
      while (realNow() < now + 100 || realNow() % 1000 < 100 || realNow() % 1000 > 900) {
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      timeLateMs = realNow() - now;
      readTime = true;
    },
  );
  let removed: number;
  vi.useFakeTimers({ toFake: ["Date"], now });
  try {
    removed = await call("trimOlderThan(30 days)", () =>
      exercise.trimOlderThan(client, stream, maxAge),
    );
  } finally {
    vi.useRealTimers();
    append.cancel();
    serverTime.cancel();
  }
  // A cutoff from the server's TIME is later than `now` by at least 100 ms: it deletes the two
  // entries at the limit and 50 ms past it, which Date.now() keeps.
  const byServer = readTime ? 2 : 0;
  const young = (append.hasFired() ? 14 : 13) - byServer;
  const trims = sent()
    .slice(before)
    .filter((c) => c.args[1] === stream);
  const left = ((await observer.xRange(stream, "-", "+")) ?? []).map((m) => m.id);
  const cutoff = `${cutoffMs}-0`;
  const tooOld = left.filter((id) => compareIds(id, cutoff) < 0);
  if (tooOld.length > 0) {
    fail(
      `${tooOld.length} entries older than 30 days are still in the log after trimOlderThan(). ${retentionCause(trims, cutoffMs)}`,
      2,
    );
  }
  check(
    !readTime || !left.includes(oldByServer),
    `Your code read the server's clock (TIME) and still kept entry ${oldByServer}, which was more than maxAgeMs old by that clock: the cutoff came out earlier than TIME minus maxAgeMs, earlier than the server's clock says. TIME answers seconds and MICROseconds; the time in milliseconds is seconds * 1000 + Math.floor(microseconds / 1000), not the seconds alone.${sentTrim(trims)}`,
    2,
  );
  // A cutoff from the server's TIME is as late as the server's clock was past `now` (under
  // 800 ms unless this machine stalled): judged only when that lateness cannot explain it.
  check(
    left.includes(justYoung) || timeLateMs > 800,
    `trimOlderThan() deleted entry ${justYoung}, which is 0.9 s younger than the limit: the cutoff your code used is later than now minus maxAgeMs. ${lateCutoffCause(trims, cutoffMs)}`,
    2,
  );
  check(
    readTime || left.includes(atLimit),
    `trimOlderThan() deleted entry ${atLimit}, which is exactly maxAgeMs old: that is not older than the limit, so it stays. MINID keeps every ID at or above the cutoff, the cutoff included: pass Date.now() - maxAgeMs as it is, not one millisecond more (and when you delete by XRANGE and XDEL, end the range at "(" + cutoff, exclusive).${sentTrim(trims)}`,
    2,
  );
  check(
    left.length === young,
    `trimOlderThan(30 days) should keep the ${young} entries younger than 30 days; ${left.length} are left. ${retentionCause(trims, cutoffMs)}`,
    2,
  );
  check(
    removed === OLD_ENTRIES + 1 + byServer,
    `trimOlderThan() should return how many entries it deleted (${OLD_ENTRIES + 1 + byServer}); it returned ${JSON.stringify(removed)}.${append.hasFired() ? " Meanwhile another service appended an entry (the check added one just before your XTRIM): a count worked out from the length before and after includes it. Return what XTRIM reports." : ""}`,
    2,
  );
});

/** The learner's XTRIM for the failure message, with the cutoff the check had in mind. */
function sentTrim(commands: SentCommand[]): string {
  const trim = commands.find((c) => c.name === "XTRIM");
  return trim ? ` Your code sent XTRIM ${trim.args.slice(1).join(" ")}.` : "";
}

/** What the learner's trim sent that explains a cutoff later than now minus maxAgeMs. */
function lateCutoffCause(commands: SentCommand[], cutoffMs: number): string {
  const trim = commands.find((c) => c.name === "XTRIM");
  const at = trim?.args.findIndex((arg) => /^MINID$/i.test(arg)) ?? -1;
  const threshold = trim?.args[trim.args[at + 1] === "=" ? at + 2 : at + 1] ?? "";
  const ms = Number(threshold.split("-")[0]);
  const by =
    Number.isFinite(ms) && at >= 0
      ? ` (MINID ${threshold}, ${ms - cutoffMs < 10_000 ? `${ms - cutoffMs} ms` : `${Math.round((ms - cutoffMs) / 1000)} s`} too late)`
      : "";
  return `The cutoff is Date.now() - maxAgeMs, in milliseconds: not rounded up, not from an age limit rounded to whole seconds, not taken from somewhere later${by}. If you read the server's clock with TIME, it answers seconds and MICROseconds: milliseconds are seconds * 1000 + Math.floor(microseconds / 1000).`;
}

/** What the learner's trim sent that explains old entries left behind, as far as it shows. */
function retentionCause(commands: SentCommand[], cutoffMs: number): string {
  const trim = commands.find((c) => c.name === "XTRIM" || c.name === "XADD");
  const at = trim?.args.findIndex((arg) => /^(MINID|MAXLEN)$/i.test(arg)) ?? -1;
  if (!trim || at < 0) {
    return `Your code sent no XTRIM ... MINID for this stream. Trim by ID: XTRIM key MINID <now minus maxAgeMs>, exactly (no "~").`;
  }
  const strategy = (trim.args[at] ?? "").toUpperCase();
  const approximate = trim.args[at + 1] === "~";
  const threshold = trim.args[approximate || trim.args[at + 1] === "=" ? at + 2 : at + 1] ?? "";
  if (strategy === "MAXLEN") {
    return `Your code trimmed with ${trim.name} ... MAXLEN ${threshold}: that keeps a number of entries, whatever their age. A retention age is a cutoff ID: XTRIM key MINID <now minus maxAgeMs>.`;
  }
  if (approximate) {
    return `Your code sent ${trim.name} ... MINID ~ ${threshold}. Approximate trimming ("~") removes only whole internal nodes and may keep old entries; a retention promise needs exact trimming: MINID without "~".`;
  }
  const ms = Number(threshold.split("-")[0]);
  const days = (value: number) => `${Math.round((Date.now() - value) / 86_400_000)} days ago`;
  if (Number.isFinite(ms) && Math.abs(ms * 1000 - cutoffMs) < 86_400_000) {
    return `Your code sent MINID ${threshold}: that is the cutoff in seconds. Stream IDs start with milliseconds, so every ID is above it and nothing older goes. Use Date.now() - maxAgeMs as it is, in milliseconds.`;
  }
  if (Number.isFinite(ms) && ms < cutoffMs && cutoffMs - ms < 2000) {
    return `Your code sent MINID ${threshold}, ${Math.round(cutoffMs - ms)} ms or so below now minus maxAgeMs: the cutoff was rounded (to whole seconds?), and the entries in between stay. Use Date.now() - maxAgeMs as it is, to the millisecond.`;
  }
  return `Your code sent MINID ${threshold}, which is ${Number.isFinite(ms) ? days(ms) : "not a time"}; the cutoff is now minus maxAgeMs (${days(cutoffMs)}), in milliseconds.`;
}
