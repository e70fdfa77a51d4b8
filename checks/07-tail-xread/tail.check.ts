import { test } from "vitest";
import {
  aclAccount,
  call,
  check,
  checkClient,
  ctx,
  fail,
  freshKey,
  learnerClient,
  learnerConnections,
  type Redis,
  restrictedLearnerClient,
  sameValue,
  settled,
  sleep,
  stopQuietly,
  until,
  untilWhileProgressing,
  within,
} from "../kit.ts";
import { failIfStarved } from "../starvation.ts";
import {
  blockedIn,
  blockOf,
  compareIds,
  isStreamId,
  overlong,
  stuckInRead,
  waitForBlocked,
} from "../streams-support.ts";
import { hearDropErrors, hearUnhandledRejections, recordDuplicates } from "../unheard-errors.ts";
import {
  before,
  connectionOpen,
  dropConnection,
  holdReply,
  nothingInFlight,
  type SentCommand,
  scope,
  sent,
} from "../wire.ts";
import {
  append,
  type Behaviour,
  exercise,
  firstDuplicate,
  inOrder,
  jumpedTo,
  type LogEntry,
  list,
  type Reader,
  readsPast,
  savedCheckpoint,
  sentMark,
  startReader,
  type Tail,
  wrongEvent,
} from "./reader.ts";

/** Short, so that reads time out often: a reader must stay correct across timeouts. */
const BLOCK_MS = 100;
/** How long stop() may take on a quiet stream: one BLOCK and slack for a busy machine. */
const QUIET_STOP_MS = BLOCK_MS + 1500;
/** How long any other stop() may take before the check gives up on it. */
const STOP_MS = BLOCK_MS + 2000;

/** Waits until `count` of the learner's connections wait in XREAD BLOCK, or fails. */
async function untilWaiting(observer: Redis, count = 1): Promise<void> {
  const mark = sent().at(-1)?.seq ?? 0;
  const most = await waitForBlocked(observer, "xread", count, 3000);
  if (most >= 1) return;
  // Reads that carry BLOCK and never wait: each found entries at once, from the same ID.
  const reads = sent((c) => c.seq > mark && c.name === "XREAD" && blockOf(c) !== undefined);
  const same =
    reads.length > 20 && reads.slice(-20).every((c) => c.args.at(-1) === reads.at(-1)?.args.at(-1));
  fail(
    same
      ? `Your reader sent ${reads.length} XREADs within 3 s, each with BLOCK and the last 20 all after the same ID, ${reads.at(-1)?.args.at(-1)}: each returned entries at once and the cursor never moved past them, so the loop asks for them again and again. Move the cursor to the ID of each entry you handed to onEntry() (IDs compare by their numbers: as strings "5-10" comes before "5-9").`
      : "Your reader never waited in a blocking XREAD within 3 s of startTail(). Read with BLOCK, so the reader waits for new entries instead of asking again and again.",
    2,
  );
}

/** Stops a reader; a stop() that fails is reported, one that hangs is the failure. */
async function stop(tail: Tail, ms = STOP_MS, blockMs = BLOCK_MS): Promise<void> {
  const mark = sent().at(-1)?.seq ?? 0;
  const started = Date.now();
  let returned = false;
  const stopping = call("tail.stop()", () => tail.stop(), ms).finally(() => {
    returned = true;
  });
  try {
    const stuck = await Promise.race([
      stopping.then(() => false),
      stuckInRead("XREAD", mark, blockMs, () => returned).then(() => true),
    ]);
    if (stuck) stopping.catch(() => {});
    else return;
  } catch (error) {
    if (!/Still waiting/.test((error as Error).message)) throw error;
  }
  const block = blockOf(sent((c) => c.name === "XREAD").at(-1));
  const asked =
    block === undefined
      ? ""
      : block === 0
        ? " Your last XREAD asked for BLOCK 0, which waits forever on a quiet stream."
        : block >= blockMs * 10
          ? ` Your last XREAD asked for BLOCK ${block}, though blockMs was ${blockMs}: BLOCK takes milliseconds, like blockMs, so pass it as it is.`
          : "";
  const waited = Math.round((Date.now() - started) / 100) / 10;
  fail(
    `tail.stop() did not return within ${waited} s.${asked} Use a finite BLOCK (blockMs), check after every read whether stop() was called, and leave the loop.`,
    2,
  );
}

/** A command that changes the checkpoint key (a SET, whatever command the learner chose). */
function writesCheckpoint(c: SentCommand, checkpoint: string): boolean {
  const reads = ["GET", "MGET", "EXISTS", "TYPE", "HGET", "HMGET", "HGETALL", "WATCH", "TTL"];
  return c.args.includes(checkpoint) && !reads.includes(c.name);
}

/** Fails when `reader` continued after an entry of `ids` that it never handed over. */
function checkNoJump(reader: Reader, stream: string, ids: string[]): void {
  const jumped = jumpedTo(reader, stream, ids);
  const last = [...reader.calls]
    .reverse()
    .find((e) => ids.includes(e.id) && compareIds(e.id, jumped ?? "0-0") < 0);
  check(
    jumped === undefined,
    `Your reader's XREAD asked for entries after ${jumped}, an entry it never handed to onEntry()${last ? ` (the last one it handed over was ${last.id})` : ""}: every entry in between was skipped. Continue each read from the ID of the last entry you handed over, not from the stream's newest entry.`,
    2,
  );
}

/** What to tell a learner whose reader read a stream other than `stream`, if it did. */
function readElsewhere(reader: Reader, stream: string): string | undefined {
  const read = sent(
    (c) => c.name === "XREAD" && c.scope === reader.scope.name && !c.args.includes(stream),
  )[0];
  if (!read) return undefined;
  return `Your reader read with ${read.args.join(" ")}, which does not name the stream it was given (${stream}). Use options.stream: the check gives every reader a fresh stream name.`;
}

/**
 * A crash here closes the reader's clients and leaves the process running: every command on them
 * then rejects at once. A loop that catches that and goes straight round again never awaits
 * anything that takes time, so nothing else in the process runs again; the watcher thread names
 * it within seconds instead of the run's time limit.
 */
function failIfSpinning(test: string, what: string): () => void {
  return failIfStarved(
    test,
    `${what}, and from then on nothing else in the process ran: your reader's loop caught an error and went straight round again, with no pause. A closed connection rejects every command at once (and an onEntry() that fails at once fails again at once), so such a loop never waits for anything and the event loop never turns again: no timer fires, no other reader runs, stop() is never even called. Let an error end the loop (stop() reports it), or pause before trying again (await a sleep of about blockMs).`,
    2,
  );
}

const RESOLVE_DOLLAR =
  'Resolve "$" to a real ID once, when the reader starts (the ID of the stream\'s newest entry, XREVRANGE <stream> + - COUNT 1, or "0-0" for an empty stream), save it as the checkpoint at once, and read from that ID.';

test("a new reader hands over every new entry, in order, as written, and nothing older", async () => {
  const observer = await checkClient();
  const stream = freshKey("status");
  const old = await append(observer, stream, 3, "earlier");
  // The newest entry so far was stamped a minute ahead of this machine's clock (by a server or
  // a writer whose clock runs ahead): a reader that starts at Date.now() hands it over.
  const ahead = await observer.xAdd(stream, `${Date.now() + 60_000}-0`, {
    docId: "earlier-ahead",
    stage: "ocr",
    status: "done",
  });
  old.ids.push(ahead);
  // An entry appended at the reader's first look at the stream, if startTail() had already
  // resolved by then: a reader that settles where to start in the background skips it.
  let ready = false;
  let justReady: string[] = [];
  const firstLook = before(
    (c) => c.args.includes(stream),
    async () => {
      if (ready) justReady = (await append(observer, stream, 1, "just-ready")).ids;
    },
  );
  let reader: Reader;
  try {
    reader = await startReader(stream, freshKey("tail:dashboard"), BLOCK_MS);
    ready = true;
    await untilWaiting(observer);
  } finally {
    firstLook.cancel();
  }
  const reads = sent((c) => c.name === "XREAD" && c.scope === reader.scope.name);
  check(reads.length > 0, "Your reader never sent XREAD.", 2);
  const elsewhere = readElsewhere(reader, stream);
  if (elsewhere) {
    await stop(reader.tail);
    fail(elsewhere, 2);
  }
  // Four documents, five status changes each: a reader that passes over an entry whose document
  // it has seen before (mistaking the docId for the entry's identity) loses status changes.
  const added = await append(observer, stream, 20, "doc", false, 4);
  const seen = () => reader.calls.map((e) => e.id);

  const skipped = readsPast(reader, stream, added.ids, sentMark());
  await until(() => added.ids.every((id) => seen().includes(id)) || skipped(), 3000);
  const arrived = added.ids.every((id) => seen().includes(id));
  await stop(reader.tail);

  const missed = added.ids.filter((id) => !seen().includes(id));
  // Handed over: exactly each document's first entry; missed: its later status changes.
  const docOf = (id: string) => added.events.get(id)?.docId;
  const firsts = added.ids.filter(
    (id, n) => added.ids.findIndex((o) => docOf(o) === docOf(id)) === n,
  );
  const handedNew = seen().filter((id) => added.ids.includes(id));
  check(
    missed.length === 0 || !sameValue([...handedNew].sort(), [...firsts].sort()),
    `The check added 20 entries for 4 documents, each document's status changes in order (${docOf(firsts[0] ?? "")}: ${added.ids
      .filter((id) => docOf(id) === docOf(firsts[0] ?? ""))
      .map((id) => `${added.events.get(id)?.stage} ${added.events.get(id)?.status}`)
      .join(
        ", ",
      )}), and your reader handed over only the first entry of each document: ${list(missed)} never reached onEntry(). A document has one entry per status change, so a docId seen before does not make an entry a repeat: an entry is known by its ID. Hand every entry over (onEntry() copes with the rare repeat after a crash).`,
    2,
  );
  checkNoJump(reader, stream, added.ids);
  const laterDollar = sent((c) => c.name === "XREAD" && c.scope === reader.scope.name)
    .slice(1)
    .some((c) => c.args.at(-1) === "$");
  check(
    arrived,
    `Your reader handed over ${added.ids.length - missed.length} of the 20 entries added after it started; ${list(missed)} never reached onEntry(). ${
      laterDollar || missed.length === 0
        ? `After the first read, continue from the ID of the last entry you got: "$" means "only what arrives after this very command", so a reader that asks for "$" each time skips whatever arrived in between.`
        : `Your XREADs asked for what comes after IDs below them, so Redis returned them: pass every entry XREAD returns to onEntry(), in order. If your code compares IDs itself, compare their numbers: as strings "5-10" comes before "5-9".`
    }`,
    2,
  );
  const older = seen().filter((id) => old.ids.includes(id));
  check(
    older.length === 0,
    `Your reader handed over ${older.length} entries that were in the stream before it started (${list(older)}). A reader without a checkpoint starts after the newest entry: only entries added from now on.${older.includes(ahead) ? ` Entry ${ahead} is stamped a minute ahead of this machine's clock (the server's clock, or another writer's, may run ahead of yours): start from the newest entry's ID (XREVRANGE <stream> + - COUNT 1), not from Date.now().` : ""}`,
    1,
  );
  const lost = justReady.filter((id) => !seen().includes(id));
  check(
    lost.length === 0,
    `Your startTail() resolved before the reader had looked at the stream; the check appended ${list(lost)} right then, after startTail() said the reader was ready, and the reader never handed it over: it took it as the newest entry that was there before it started. Settle where to start (the checkpoint, or "$" resolved and saved) before startTail() resolves.`,
    2,
  );
  const handed = seen().filter((id) => added.ids.includes(id));
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
  const wrong = wrongEvent(reader.calls, added.events);
  check(
    wrong === undefined,
    `onEntry() received the event ${JSON.stringify(wrong?.got)} for an entry that holds ${JSON.stringify(wrong?.want)}. Pass { id, event: { docId, stage, status } } with the entry's fields.`,
    2,
  );
});

test("an entry added right after a read that timed out is not skipped", async () => {
  const observer = await checkClient();
  const stream = freshKey("status:quiet");
  let added: string | undefined;
  let heldArgs: string[] = [];
  // The first read finds nothing and times out; the entry lands just before the second read.
  const gap = before(
    (c) => c.name === "XREAD" && c.args.includes(stream),
    async (c) => {
      heldArgs = c.args;
      added = await observer.xAdd(stream, "*", { docId: "doc-gap", stage: "ocr", status: "done" });
    },
    { nth: 2 },
  );
  const reader = await startReader(stream, freshKey("tail:quiet"), BLOCK_MS);
  try {
    const since = Date.now();
    const stuck = () => {
      const first = sent((c) => c.name === "XREAD" && c.scope === reader.scope.name)[0];
      return overlong(blockOf(first), BLOCK_MS) && Date.now() - since > BLOCK_MS + 300;
    };
    const fired = await until(
      () => gap.hasFired() || readElsewhere(reader, stream) !== undefined || stuck(),
      BLOCK_MS + 3000,
    );
    const elsewhere = readElsewhere(reader, stream);
    if (elsewhere) fail(elsewhere, 2);
    if (!fired || stuck()) {
      const block = blockOf(sent((c) => c.name === "XREAD" && c.scope === reader.scope.name)[0]);
      check(
        !overlong(block, BLOCK_MS),
        `Your reader's first XREAD asked for BLOCK ${block}, though blockMs was ${BLOCK_MS}, and it still waits on a stream that stays quiet: it never reads again, and stop() could not end it. ${block === 0 ? "BLOCK 0 waits forever." : "BLOCK takes milliseconds, like blockMs, so pass it as it is."}`,
        2,
      );
    }
    check(
      fired,
      `Your reader did not read again after its first XREAD (BLOCK ${BLOCK_MS}) found nothing. Keep reading in a loop until stop() is called.`,
      2,
    );
    const skipped = readsPast(reader, stream, added ? [added] : [], sentMark());
    await until(() => reader.calls.some((e) => e.id === added) || skipped(), 3000);
    const handed = reader.calls.some((e) => e.id === added);
    const askedDollar = heldArgs.includes("$");
    check(
      handed,
      `An entry was added while your reader was between two reads, after one had timed out with nothing, and it never reached onEntry().${askedDollar ? ' Your next XREAD still asked for "$", which means "only what arrives after this command": the entry that arrived in between is skipped.' : ""} ${RESOLVE_DOLLAR}`,
      2,
    );
    // Caught up another way (an XRANGE from the cursor before each read, say), a "$" in the
    // read still loses entries: one appended just before it is not in its reply, and when a
    // later one is, the cursor moves past the first for good.
    const dollar = sent(
      (c) => c.name === "XREAD" && c.scope === reader.scope.name && c.args.includes("$"),
    )[0];
    check(
      dollar === undefined,
      `Your reader sent ${dollar?.args.join(" ")}. "$" means "only entries added after this command arrives": an entry appended just before it (after your last look at the stream) is not in its reply, and if a later entry is, your cursor moves past the first one, which is then never handed over. ${RESOLVE_DOLLAR}`,
      2,
    );
  } finally {
    gap.cancel();
    await stop(reader.tail);
  }
});

/**
 * Waits for the learner's next XREAD (after `mark`, from `scope`): undefined once it is sent,
 * or how many ms the learner went without sending anything or awaiting any reply, for at least
 * 100 turns of the event loop and 50 ms, which only a timer of its own explains. Turns while a
 * reply is awaited (the empty one still on its way, a checkpoint read) do not count.
 */
async function idleAfter(mark: number, scope: string): Promise<number | undefined> {
  const read = () => sent((c) => c.seq > mark && c.name === "XREAD" && c.scope === scope).length;
  let turns = 0;
  let idleSince = Date.now();
  const until = Date.now() + 3000;
  while (Date.now() < until) {
    await new Promise((resolve) => setImmediate(resolve));
    if (read() > 0) return undefined;
    if (!nothingInFlight()) {
      turns = 0;
      idleSince = Date.now();
      continue;
    }
    turns += 1;
    if (turns >= 100 && Date.now() - idleSince >= 50) return Date.now() - idleSince;
  }
  return undefined;
}

/** Ends every learner XREAD waiting now as its timeout would: the reader gets a null reply. */
async function timeOutReads(observer: Redis): Promise<void> {
  for (const waiting of await blockedIn(observer, "xread")) {
    await observer.sendCommand(["CLIENT", "UNBLOCK", waiting.id, "TIMEOUT"]);
  }
}

// CLIENT UNBLOCK ends a read without waiting out its BLOCK: an admin command, which a managed
// Redis may refuse, so only on the workbook's own server.
test.skipIf(!ctx.privateServer)(
  "an entry added after a read timed out reaches onEntry() at once, not after a pause",
  async () => {
    const observer = await checkClient();
    const stream = freshKey("status:pause");
    // Long, so that a pause between reads cannot hide inside it; the check ends the read itself.
    const waitMs = 3000;
    const reader = await startReader(stream, freshKey("tail:pause"), waitMs);
    try {
      await untilWaiting(observer);
      const mark = sentMark();
      await timeOutReads(observer);
      const timedOut = Date.now();
      // A short pause (a quarter of a second, say) hides inside the bound below, so it is
      // looked for first, in turns of the event loop rather than in time: once the empty reply
      // has arrived, a loop that reads again sends its XREAD within a turn or two, or awaits a
      // reply of Redis meanwhile (a checkpoint read, say). One that sends nothing and awaits
      // nothing for 100 turns and 50 ms waits on a timer of its own.
      const paused = await idleAfter(mark, reader.scope.name);
      check(
        paused === undefined,
        `Your reader's XREAD timed out with nothing, and then your reader sent nothing to Redis for ${paused} ms or more after one timed out, with no reply awaited: it paused before reading again (a sleep or a timer after an empty read). Every entry appended meanwhile waits for that timer. Go straight back to XREAD BLOCK blockMs: the blocked read is the rest, and Redis answers the moment an entry arrives.`,
        2,
      );
      const added = await observer.xAdd(stream, "*", {
        docId: "doc-after-timeout",
        stage: "ocr",
        status: "done",
      });
      let readAgain: number | undefined;
      const next = () =>
        sent((c) => c.seq > mark && c.name === "XREAD" && c.scope === reader.scope.name)[0];
      const handed = await until(() => {
        if (next()) readAgain ??= Date.now() - timedOut;
        return reader.calls.some((e) => e.id === added);
      }, waitMs / 2);
      if (!handed && readAgain !== undefined && readAgain < waitMs / 6) {
        fail(
          `Your reader's XREAD timed out with nothing, an entry was added right then, and your reader read again at once (${next()?.args.join(" ")}), but the entry never reached onEntry(). ${RESOLVE_DOLLAR}`,
          2,
        );
      }
      check(
        handed,
        `Your reader's XREAD (BLOCK ${waitMs}) timed out with nothing, an entry was added right then, and it had not reached onEntry() ${waitMs / 2000} s later: ${readAgain === undefined ? `your reader sent no XREAD for ${waitMs / 2000} s after one timed out` : `your reader read again only ${readAgain} ms after one timed out`}. A pause between reads (a sleep or a timer after an empty read) keeps every new entry waiting for it, and stop() too. Go straight back to XREAD BLOCK blockMs: Redis does the waiting, and answers the moment an entry arrives.`,
        2,
      );
    } finally {
      await waitForBlocked(observer, "xread", 1, 1000);
      const stopping = stop(reader.tail, waitMs + 2000, waitMs);
      await timeOutReads(observer);
      await stopping;
    }
  },
);

test("entries added while onEntry() works are handed over next, none skipped", async () => {
  const observer = await checkClient();
  const stream = freshKey("status:meanwhile");
  let meanwhile: string[] = [];
  // While onEntry() works on the first entry, three more arrive: after the read that returned it.
  const reader = await startReader(stream, freshKey("tail:meanwhile"), BLOCK_MS, (n) =>
    n === 1
      ? async () => {
          meanwhile = (await append(observer, stream, 3, "meanwhile")).ids;
        }
      : "ok",
  );
  try {
    await untilWaiting(observer);
    const first = (await append(observer, stream, 1, "first")).ids;
    const skippedFirst = readsPast(reader, stream, first, sentMark());
    const ids = () => [...first, ...meanwhile];
    const seen = () => ids().filter((id) => reader.calls.some((e) => e.id === id));
    let skipped: (() => boolean) | undefined;
    await until(() => {
      if (meanwhile.length < 3) return skippedFirst();
      skipped ??= readsPast(reader, stream, meanwhile, sentMark());
      return seen().length === 4 || skipped();
    }, 3000);
    checkNoJump(reader, stream, ids());
    const missed = meanwhile.filter((id) => !seen().includes(id));
    check(
      meanwhile.length === 3 && missed.length === 0,
      `Three entries were added while onEntry() worked on ${first[0]}, and ${missed.length} of them never reached onEntry() (${list(missed)}). The next read must continue from the ID of the last entry handed over, so whatever arrived meanwhile comes next.`,
      2,
    );
  } finally {
    await stop(reader.tail);
  }
});

/** A checkpoint that expires sends the reader back to "$" one day, and what came meanwhile is lost. */
async function checkNoExpiry(observer: Redis, checkpoint: string): Promise<void> {
  const ttl = await observer.pTTL(checkpoint);
  check(
    ttl < 0,
    `Your checkpoint key ${checkpoint} expires (PTTL ${ttl} ms). Once it is gone the reader starts at "$" again, and every entry added while it was down is lost. The checkpoint must outlive any pause of the reader: SET it without EX or PX.`,
    2,
  );
}

test("a reader restarted before its first entry gets what arrived while it was down", async () => {
  const observer = await checkClient();
  // With earlier entries the first checkpoint is a real ID; on a stream that does not exist
  // yet it is "0-0", which is a checkpoint too, not "none".
  for (const earlier of [2, 0]) {
    const stream = freshKey("status:early-restart");
    const checkpoint = freshKey("tail:early-restart");
    if (earlier > 0) await append(observer, stream, earlier, "earlier");
    const first = await startReader(stream, checkpoint, BLOCK_MS);
    await untilWaiting(observer);
    await stop(first.tail, QUIET_STOP_MS);
    await checkNoExpiry(observer, checkpoint);
    const saved = await savedCheckpoint(observer, checkpoint);

    const whileDown = await append(observer, stream, 5, "while-down");
    const second = await startReader(stream, checkpoint, BLOCK_MS);
    const got = () => whileDown.ids.filter((id) => second.calls.some((e) => e.id === id));
    const skipped = readsPast(second, stream, whileDown.ids, sentMark());
    await until(() => got().length === whileDown.ids.length || skipped(), 3000);
    await stop(second.tail);
    const cause =
      saved === "0-0"
        ? `Its checkpoint was "0-0" (the stream was empty when it started), and after the restart it started at "$" anyway: "0-0" is a saved checkpoint like any other ID, meaning "from the very beginning". Treat only a missing checkpoint as "none".`
        : `It had saved no checkpoint, so it started at "$" again and lost them. ${RESOLVE_DOLLAR}`;
    check(
      got().length === whileDown.ids.length,
      `Your reader was stopped before its first entry arrived${earlier ? "" : " on a stream that did not exist yet"}; 5 entries were added while it was down, and after the restart it handed over ${got().length} of them. ${cause}`,
      2,
    );
    if (earlier === 0) continue;
    // Restarted once more on a quiet stream: until an entry arrives, the checkpoint must still
    // name where the reader stands, or a crash now restarts it at "$".
    const standing = await savedCheckpoint(observer, checkpoint);
    const third = await startReader(stream, checkpoint, BLOCK_MS);
    const kept = await savedCheckpoint(observer, checkpoint);
    await stop(third.tail, QUIET_STOP_MS);
    const again = third.calls.map((e) => e.id);
    check(
      again.length === 0,
      `Restarted once more, with nothing new in the stream, your reader handed over ${again.length} entries it had already handled before (${list(again)}). Continue after the checkpoint instead of reading the stream from the start ("0").`,
      2,
    );
    check(
      kept === standing,
      `The checkpoint said ${standing}; right after your reader started from it (and before any entry came), it ${kept === undefined ? "was gone" : `said ${kept}`}. A crash now would restart the reader at "$" and lose what comes in meanwhile. Read the checkpoint with GET and leave it in place: it changes only when an entry was handled.`,
      2,
    );
  }
});

// An account that may not write (ACL SETUSER): only on the workbook's own server.
test.skipIf(!ctx.privateServer)(
  "startTail() rejects when Redis refuses to save its starting checkpoint",
  async () => {
    const observer = await checkClient();
    const stream = freshKey("status:refused-checkpoint");
    await append(observer, stream, 2, "earlier");
    // Reads are allowed, writes refused: the SET of the starting checkpoint fails (NOPERM).
    const client = await restrictedLearnerClient(["-@write"]);
    const outcome = await within(
      settled(
        exercise.startTail(client, {
          stream,
          checkpoint: freshKey("tail:refused-checkpoint"),
          blockMs: BLOCK_MS,
          onEntry: () => {},
        }),
      ),
      5000,
      "startTail() as an account Redis refuses every write",
    );
    if ("value" in outcome) await stopQuietly(outcome.value);
    check(
      "error" in outcome,
      `Redis refused the SET of your reader's starting checkpoint (this account may not write), and startTail() resolved anyway: no checkpoint is saved, so a reader restarted before its first entry starts at "$" again and loses what arrived meanwhile, and nobody was told. Await that SET and let its error reach the caller (no catch around it, no .catch(() => {})).`,
      2,
    );
  },
);

test("after a restart the reader gets exactly the entries it missed, more than one read's worth", async () => {
  const observer = await checkClient();
  const stream = freshKey("status:restart");
  const checkpoint = freshKey("tail:indexer");

  const first = await startReader(stream, checkpoint, BLOCK_MS);
  await untilWaiting(observer);
  // All five in one millisecond, and the burst below in the same one: the checkpoint ends at
  // sequence 4 and the stream's newest at 154. A restart that picks the smaller of the two as
  // strings ("<ms>-154" < "<ms>-4") starts at the newest and skips the whole burst.
  const earlyBatch = observer.multi();
  const earlyMs = Date.now();
  for (let n = 0; n < 5; n++) {
    earlyBatch.xAdd(stream, `${earlyMs}-*`, { docId: `early-${n}`, stage: "ocr", status: "done" });
  }
  const early = { ids: (await earlyBatch.exec()).map(String) };
  const seenFirst = () => first.calls.map((e) => e.id);
  const skippedEarly = readsPast(first, stream, early.ids, sentMark());
  await until(() => early.ids.every((id) => seenFirst().includes(id)) || skippedEarly(), 3000);
  const handledEarly = early.ids.every((id) => seenFirst().includes(id));
  await stop(first.tail);
  checkNoJump(first, stream, early.ids);
  check(
    handledEarly,
    `Before the restart your reader handed over only ${early.ids.filter((id) => seenFirst().includes(id)).length} of 5 new entries.`,
    2,
  );
  check(
    (await savedCheckpoint(observer, checkpoint)) !== undefined,
    `After stop() the checkpoint key is empty: save the ID of each entry you handled (SET ${checkpoint} <id>), so a restart knows where to continue.`,
    2,
  );
  const lastHandled = seenFirst().at(-1) ?? "0-0";

  // The indexer is down (a deploy, a crash) while the platform keeps working: more entries
  // than one XREAD COUNT returns, so the catch-up takes several reads.
  // All in one millisecond ("<ms>-*"), as a burst can be: sequence numbers from 0 past 99.
  const burst = observer.multi();
  // The millisecond of the stream's top (the last early entry), whatever the clock says now.
  const [top] = (await observer.xRevRange(stream, "+", "-", { COUNT: 1 })) ?? [];
  const ms = Number(top?.id.split("-")[0] ?? earlyMs);
  for (let n = 0; n < 150; n++) {
    burst.xAdd(stream, `${ms}-*`, { docId: `while-down-${n}`, stage: "ocr", status: "done" });
  }
  const down = (await burst.exec()).map(String);
  // Meanwhile the log is trimmed past the checkpoint: the entries handled and the first five of
  // the burst are gone. The rest still exists and must be handed over: a reader that notices
  // the gap may log it, but jumping to the newest entry would skip 145 entries still there.
  await observer.xTrim(stream, "MINID", `${ms}-10`);

  const second = await startReader(stream, checkpoint, BLOCK_MS);
  const seenSecond = () => second.calls.map((e) => e.id);
  const lastDown = down.at(-1) ?? "";
  // A reader taking one entry a read (a right style) catches up in 145 round trips or more: on a
  // loaded machine that outlasts any fixed window, so the wait lasts while entries keep coming.
  const handedDown = await untilWhileProgressing(
    () => seenSecond().includes(lastDown),
    () => second.calls.length,
    3000,
  );
  await untilWaiting(observer);
  if (handedDown) {
    const saved = () => savedCheckpoint(observer, checkpoint);
    const caughtUp = await until(async () => (await saved()) === lastDown, 1000);
    const at = await saved();
    check(
      caughtUp,
      `Your reader handed over all 150 entries that came in while it was down, the last one ${lastDown}, and its checkpoint still says ${at}: a restart now would hand over again everything after ${at}. Save the ID of each entry onEntry() finished as the checkpoint. If your code compares IDs before saving, compare their numbers: as strings "5-100" comes before "5-99".`,
      2,
    );
  }
  const late = await append(observer, stream, 3, "late");
  const skippedLate = readsPast(second, stream, late.ids, sentMark());
  await until(() => late.ids.every((id) => seenSecond().includes(id)) || skippedLate(), 3000);
  const arrived = late.ids.every((id) => seenSecond().includes(id));
  await stop(second.tail);

  const lastLate = late.ids.at(-1) ?? "+";
  const expected = ((await observer.xRange(stream, `(${lastHandled}`, lastLate)) ?? []).map(
    (m) => m.id,
  );
  const repeated = seenSecond().filter((id) => seenFirst().includes(id));
  check(
    repeated.length === 0,
    `After the restart your reader handed over ${repeated.length} entries it had already handled before (${list(repeated)}). Continue after the checkpoint instead of reading the stream from the start ("0").`,
    2,
  );
  const missed = expected.filter((id) => !seenSecond().includes(id));
  check(
    missed.length === 0,
    `After the restart your reader missed ${missed.length} of the ${expected.length} entries that were added while it was stopped or since (${list(missed)}). Start from the ID saved in the checkpoint and keep reading from the last ID you got until the stream has no more; "$" is only for a reader that has never run. If your code compares the checkpoint with another ID, compare their numbers (milliseconds, then sequence): as strings "5-154" comes before "5-4". The log was trimmed past the checkpoint while the reader was down: XREAD from the checkpoint continues with the oldest entry left; log the gap if you notice it, but do not jump to the newest entry.`,
    2,
  );
  check(arrived, "After the restart your reader did not hand over the new entries.", 2);
  const handed = seenSecond().filter((id) => compareIds(id, lastLate) <= 0);
  check(
    handed.length === expected.length && inOrder(handed),
    `After the restart the reader should hand over ${expected.length} entries once each, in order; it handed over ${handed.length}: ${list(handed)}.`,
    2,
  );
  checkBoundedReads(stream);
});

/** The most entries one read may ask for: a reader far behind must not take its whole backlog in one reply. */
const MAX_COUNT = 1000;

/** Every XREAD, XRANGE and XREVRANGE the learner sent on `stream` has a COUNT of 1 to MAX_COUNT. */
function checkBoundedReads(stream: string): void {
  const reads = sent(
    (c) => ["XREAD", "XRANGE", "XREVRANGE"].includes(c.name) && c.args.includes(stream),
  );
  for (const read of reads) {
    const at = read.args.findIndex((a) => a.toUpperCase() === "COUNT");
    const count = at < 0 ? undefined : Number(read.args[at + 1]);
    check(
      count !== undefined && count >= 1 && count <= MAX_COUNT,
      `Your reader sent ${read.args.join(" ")}: ${count === undefined ? "without COUNT it returns every entry it finds" : `COUNT ${count} lets one reply carry that many entries`}. After a long downtime (here 150 entries; in production it may be millions) one reply would carry the whole backlog, all in memory at once. Give every read a COUNT of at most ${MAX_COUNT}: XREVRANGE <stream> + - COUNT 1 for the newest entry, XREAD BLOCK ... COUNT 100 for the tail.`,
      2,
    );
  }
}

/** Restarts after `crashed` died and collects until every one of `ids` was handled by one of them. */
async function recover(
  crashed: Reader,
  ids: string[],
  stream: string,
  checkpoint: string,
): Promise<{ missing: string[]; repeated: string[] }> {
  const mark = sentMark();
  const again = await startReader(stream, checkpoint, BLOCK_MS);
  const handled = () => [...crashed.done, ...again.done];
  const lost = ids.filter((id) => !crashed.done.includes(id));
  const skipped = readsPast(again, stream, lost, mark);
  await until(() => ids.every((id) => handled().includes(id)) || skipped(), 3000);
  await stop(again.tail);
  return {
    missing: ids.filter((id) => !handled().includes(id)),
    repeated: again.done.filter((id) => crashed.done.includes(id)),
  };
}

test("a crash between onEntry() and saving the checkpoint repeats that one entry, and skips none", async (test) => {
  const observer = await checkClient();
  const stream = freshKey("status:crash");
  const checkpoint = freshKey("tail:billing");
  const reader = await startReader(stream, checkpoint, BLOCK_MS);
  await untilWaiting(observer);
  // The process dies as it is about to save the checkpoint after its third entry.
  // What the checkpoint write cut here saves, and how many entries onEntry() had finished then.
  let cut: { saves: string | undefined; done: number } | undefined;
  const crash = before((c) => {
    const hit = writesCheckpoint(c, checkpoint) && reader.done.length >= 3;
    if (hit)
      cut ??= { saves: c.args.find((a) => reader.done.includes(a)), done: reader.done.length };
    return hit;
  }, "crash");
  const disarm = failIfSpinning(
    test.task.name,
    "The check crashed your reader just before it saved its checkpoint (it closed the reader's connections, as a dying process loses them)",
  );
  const { ids } = await append(observer, stream, 10, "doc", true);
  const skipped = readsPast(reader, stream, ids, sentMark());
  await until(() => crash.hasFired() || reader.done.length === ids.length || skipped(), 3000);
  if (!crash.hasFired()) {
    // No checkpoint written since the third entry: the process dies after its work anyway.
    crash.cancel();
    reader.scope.crash();
  }
  const { missing, repeated } = await recover(reader, ids, stream, checkpoint).finally(disarm);
  check(
    missing.length === 0,
    `Your reader crashed after handling ${reader.done.length} entries, and after the restart ${missing.length} entries were never handed over (${list(missing)}). Save the checkpoint only after onEntry() finished with that entry.`,
    2,
  );
  // The write cut saves an entry onEntry() finished several entries ago: the loop went on
  // without waiting for its checkpoint writes, so the crash lost all of them at once.
  const ranAhead = cut?.saves === undefined ? 0 : cut.done - reader.done.indexOf(cut.saves) - 1;
  check(
    repeated.length <= 1 || ranAhead < 2,
    `Your reader crashed as its checkpoint write for entry ${cut?.saves} went out, and by then onEntry() had already finished ${ranAhead} more entries: your loop does not wait for the checkpoint to be saved before it hands over the next entry, so every write still on its way was lost with the process, and after the restart ${repeated.length} entries came a second time (${list(repeated)}). Await the checkpoint write (await client.set(checkpoint, id)) before the next onEntry().`,
    2,
  );
  check(
    repeated.length <= 1,
    `Your reader crashed just after onEntry() finished its entry ${reader.done.at(-1)}, and after the restart it handed over ${repeated.length} entries a second time (${list(repeated)}). At most the one entry whose checkpoint was not saved yet may come again: save the checkpoint after every entry, not once per batch or at stop().`,
    2,
  );
});

test("while onEntry() works on an entry, the checkpoint does not name it yet; a crash then repeats it", async (test) => {
  const observer = await checkClient();
  const stream = freshKey("status:slow");
  const checkpoint = freshKey("tail:search");
  // The third entry takes "forever": the process dies while onEntry() works on it.
  const reader = await startReader(stream, checkpoint, BLOCK_MS, (n) =>
    n === 3 ? () => new Promise<void>(() => {}) : "ok",
  );
  await untilWaiting(observer);
  // Every checkpoint write is looked at as it leaves: one that names an entry whose onEntry()
  // has not finished yet (the batch's last entry saved on arrival, say) is a gap a crash at that
  // moment would skip, even when a later write moves the checkpoint back.
  let ahead: { written: string; finished: number } | undefined;
  const start = await savedCheckpoint(observer, checkpoint);
  const watch = before((c) => {
    if (ahead || !writesCheckpoint(c, checkpoint)) return false;
    const written = c.args.find(
      (arg) => isStreamId(arg) && arg !== start && !reader.done.includes(arg),
    );
    if (written) ahead = { written, finished: reader.done.length };
    return false;
  }, "crash");
  const { ids } = await append(observer, stream, 5, "doc", true);
  const third = ids[2] ?? "";
  const skipped = readsPast(reader, stream, ids.slice(0, 3), sentMark());
  await until(() => reader.calls.length >= 3 || skipped(), 3000);
  watch.cancel();
  check(
    reader.calls.length >= 3,
    `Your reader handed over ${reader.calls.length} of 5 new entries to onEntry().`,
    2,
  );
  const saved = await savedCheckpoint(observer, checkpoint);
  const disarm = failIfSpinning(
    test.task.name,
    "The check crashed your reader while onEntry() worked on an entry (it closed the reader's connections, as a dying process loses them)",
  );
  reader.scope.crash();
  check(
    saved === undefined || compareIds(saved, third) < 0,
    `While onEntry() was still working on entry ${third}, your checkpoint already said ${saved}. Had the process died then, a restart would have skipped that entry for good. Call onEntry() first, await it, and save the checkpoint after it finished.`,
    2,
  );
  check(
    ahead === undefined,
    `Your reader saved the checkpoint ${ahead?.written} before onEntry() finished with that entry (onEntry() had finished ${ahead?.finished} of the 5 new entries then). Had the process died at that moment, a restart would have started after ${ahead?.written} and skipped every entry up to it, even if a later write moved the checkpoint back. Save an entry's ID only after its onEntry() finished, never a batch's last ID on arrival.`,
    2,
  );
  const { missing, repeated } = await recover(reader, ids, stream, checkpoint).finally(disarm);
  check(
    missing.length === 0,
    `Your reader died while onEntry() was working on entry ${third}, and after the restart ${missing.length} entries were never handed over (${list(missing)}). The checkpoint must name only entries whose onEntry() finished.`,
    2,
  );
  check(
    repeated.length === 0,
    `After the restart your reader handed over again ${list(repeated)}, whose onEntry() had already finished before the crash. Save the checkpoint after every entry.`,
    2,
  );
});

/** One reader's story when onEntry() fails once for its second entry ("doc-1"). */
interface FailingCase {
  observer: Redis;
  failure: "throw" | "reject";
  stream: string;
  checkpoint: string;
  ids: string[];
  attempts: Map<string, number>;
  /** Entries whose onEntry() succeeded, over all runs. */
  done: string[];
}

function failingBehaviour(c: FailingCase) {
  return (_: number, entry: LogEntry): Behaviour => {
    const n = (c.attempts.get(entry.id) ?? 0) + 1;
    c.attempts.set(entry.id, n);
    return n === 1 && entry.event.docId === "doc-1" ? c.failure : "ok";
  };
}

/** The most tries of an entry that always fails a reader may make within a second. */
const RETRIES_MOST = 15;

/**
 * Lets `reader` run until `enough()` or until it went two reads without an onEntry() call
 * (stopped at a failed entry, or waiting), then stops it; stop() may report onEntry()'s error.
 */
async function stopOnceQuiet(reader: Reader, enough: () => boolean): Promise<unknown> {
  let calls = -1;
  let since = Date.now();
  await until(() => {
    if (enough()) return true;
    if (reader.calls.length !== calls) {
      calls = reader.calls.length;
      since = Date.now();
      return false;
    }
    return Date.now() - since >= BLOCK_MS * 2;
  }, 5000);
  return stop(reader.tail).then(
    () => undefined,
    (error: Error) => {
      if (/did not return/.test(error.message)) throw error;
      return error;
    },
  );
}

/**
 * A reader whose loop ended on an error (`ended`, seen before stop() was called) is dead: stop()
 * is the one place its caller can learn why, so it must reject. One that went on (retrying) may
 * resolve.
 */
function expectStopReported(ended: boolean, stopError: unknown, what: string): void {
  check(
    !ended || stopError !== undefined,
    `${what}, your reader's loop ended there (its connection closed), and stop() resolved as if all was well: nobody learns that the reader died, nor why. Let stop() await the loop and pass its error on (no try/catch around it, no .catch() that drops it).`,
    2,
  );
}

/**
 * Whether `reader`'s loop ended: it read, and every connection it read on is closed (a reader
 * that stops at a failed entry ends its loop there).
 */
function loopEnded(reader: Reader): boolean {
  const conns = new Set(
    sent((c) => c.name === "XREAD" && c.scope === reader.scope.name).map((c) => c.conn),
  );
  return conns.size > 0 && ![...conns].some(connectionOpen);
}

/**
 * Lets a reader run until every entry is done, its loop ended, or nothing happened for two
 * reads, then stops it.
 * Whether a reader tries the failed entry again or stops at it is the learner's choice; stop()
 * may report the error. Either way the checkpoint must not have moved past it.
 */
async function settle(c: FailingCase, reader: Reader): Promise<void> {
  await stopOnceQuiet(
    reader,
    () => c.ids.every((id) => [...c.done, ...reader.done].includes(id)) || loopEnded(reader),
  );
  c.done.push(...reader.done);
  const saved = await savedCheckpoint(c.observer, c.checkpoint);
  const failed = c.ids.find((id) => (c.attempts.get(id) ?? 0) > 0 && !c.done.includes(id));
  check(
    !(failed && saved && compareIds(saved, failed) >= 0),
    `onEntry() ${c.failure === "throw" ? "threw" : "returned a rejected promise"} for entry ${failed}, and your reader saved the checkpoint ${saved}, past it, anyway: a restart never hands that entry over again. When onEntry() throws or rejects, leave the checkpoint where it was: try the same entry again, or stop there (stop() may report the error).`,
    2,
  );
}

test("an entry whose onEntry() throws or rejects is not checkpointed and is handed over again", async () => {
  const observer = await checkClient();
  const cases: FailingCase[] = (["throw", "reject"] as const).map((failure) => ({
    observer,
    failure,
    stream: freshKey(`status:${failure}`),
    checkpoint: freshKey(`tail:${failure}`),
    ids: [],
    attempts: new Map(),
    done: [],
  }));
  const complete = (c: FailingCase) => c.ids.every((id) => c.done.includes(id));

  const first = await Promise.all(
    cases.map((c) => startReader(c.stream, c.checkpoint, BLOCK_MS, failingBehaviour(c))),
  );
  await untilWaiting(observer, 2);
  for (const c of cases) c.ids = (await append(observer, c.stream, 3, "doc", true)).ids;
  await Promise.all(cases.map((c, i) => settle(c, first[i] as Reader)));
  for (let restart = 1; restart <= 2; restart++) {
    await Promise.all(
      cases
        .filter((c) => !complete(c))
        .map(async (c) =>
          settle(c, await startReader(c.stream, c.checkpoint, BLOCK_MS, failingBehaviour(c))),
        ),
    );
  }
  for (const c of cases) {
    const never = c.ids.filter((id) => !c.done.includes(id));
    check(
      never.length === 0,
      `After onEntry() ${c.failure === "throw" ? "threw" : "rejected"} once, ${never.length} of 3 entries were never handled successfully (${list(never)}), even after restarts. Do not move the checkpoint past an entry whose onEntry() failed.`,
      2,
    );
    const twice = firstDuplicate(c.done);
    check(
      twice === undefined,
      `Entry ${twice} was handed over again after onEntry() had finished it. Save the checkpoint after each entry that succeeded.`,
      2,
    );
  }
});

/** The connections a reader opened (not in `earlier`, not its client's own) still open after a second. */
async function leftOpen(observer: Redis, earlier: Set<string>, own: string | undefined) {
  const opened = async () =>
    (await learnerConnections(observer)).filter((c) => !earlier.has(c.id) && c.id !== own);
  await until(async () => (await opened()).length === 0, 1000);
  return opened();
}

test("an entry whose onEntry() fails every time is never checkpointed past", async (test) => {
  const observer = await checkClient();
  const stream = freshKey("status:poison");
  const checkpoint = freshKey("tail:poison");
  let attempts = 0;
  const tries: number[] = [];
  const earlier = new Set((await learnerConnections(observer)).map((c) => c.id));
  const reader = await startReader(stream, checkpoint, BLOCK_MS, (_, entry) => {
    if (entry.event.docId !== "doc-1") return "ok";
    attempts++;
    tries.push(Date.now());
    return attempts % 2 ? "throw" : "reject";
  });
  const own = reader.clientId;
  await untilWaiting(observer);
  const { ids } = await append(observer, stream, 3, "doc", true);
  const poison = ids[1] ?? "";
  // A later entry, appended once the poison entry has failed: a reader that read on from the
  // end of the batch, past the failure, hands it over and saves its checkpoint.
  const disarm = failIfSpinning(
    test.task.name,
    `onEntry() failed at once for entry ${poison}, every time`,
  );
  await until(() => attempts > 0, 3000);
  await observer.xAdd(stream, "*", { docId: "doc-after", stage: "ocr", status: "done" });
  // More tries than a retry limit would allow, or quiet: stopped at it, or moved on. A reader
  // that tries again is watched for a second from its first try: one that pauses about blockMs
  // between tries makes about ten, one that reads again at once many more (a loop that reads
  // again at once is slowed to about a hundred a second on a loaded machine, never to fifteen).
  let ended = false;
  const stopError = await stopOnceQuiet(reader, () => {
    ended = loopEnded(reader);
    return (
      ended || attempts > RETRIES_MOST || (attempts >= 6 && Date.now() - (tries[0] ?? 0) >= 1000)
    );
  }).finally(disarm);
  // Tried again or stopped there, a reader that failed still closes what it opened.
  const left = await leftOpen(observer, earlier, own);
  check(
    left.length === 0,
    `onEntry() failed for entry ${poison} every time (${attempts} tries), and after stop() ${left.length} connection(s) your reader opened are still open${left.length > 1 ? `: a reader needs one connection for its reads, and yours left ${left.length} open` : ` (last command ${left[0]?.cmd}): the loop ended on the error without closing its reader connection`}. Keep one reader connection, and close it whichever way the loop ends (in a finally).`,
    2,
  );
  const saved = await savedCheckpoint(observer, checkpoint);
  const later = reader.done.filter((id) => compareIds(id, poison) > 0);
  check(
    !(saved && compareIds(saved, poison) >= 0),
    `onEntry() failed for entry ${poison} every time (${attempts} tries), and your reader moved on: it saved the checkpoint ${saved}${later.length ? ` after handing over ${list(later)}` : ""}. Nothing will ever hand ${poison} over again. Keep the checkpoint before an entry that has not succeeded: try it again (a pause between tries is fine), or stop there and let stop() report the error.`,
    2,
  );
  const inFirstSecond = tries.filter((at) => at - (tries[0] ?? 0) < 1000).length;
  check(
    inFirstSecond <= RETRIES_MOST,
    `onEntry() failed for entry ${poison} every time, and your reader tried it ${inFirstSecond} times within a second: it read again at once after each failure. For as long as the entry keeps failing (a bug, a service down for an hour), such a loop keeps the CPU, Redis and your log busy. Pause before trying again (about blockMs), or stop there and let stop() report the error.`,
    2,
  );
  expectStopReported(ended, stopError, `onEntry() failed for entry ${poison}`);
});

test.skipIf(!ctx.privateServer)(
  "a checkpoint Redis refuses to save stops the reader there (stop() reports it) or is tried again",
  async () => {
    const observer = await checkClient();
    const stream = freshKey("status:refused");
    const checkpoint = freshKey("tail:refused");
    const account = await aclAccount();
    const reader = await startReader(stream, checkpoint, BLOCK_MS, () => "ok", undefined, account);
    await untilWaiting(observer);
    // From now on the account may read the checkpoint but not write it (a full disk, an
    // account that lost its rights): every save after the start is refused with NOPERM.
    await observer.sendCommand([
      "ACL",
      "SETUSER",
      account.username,
      "resetkeys",
      `~${stream}`,
      `%R~${checkpoint}`,
    ]);
    const { ids } = await append(observer, stream, 3, "doc", true);
    const saves = () =>
      sent((c) => c.scope === reader.scope.name && writesCheckpoint(c, checkpoint)).length;
    let ended = false;
    await until(() => {
      ended = loopEnded(reader);
      return ended || reader.calls.length > 1 || saves() > 2;
    }, 3000);
    const past = reader.calls.slice(1).map((entry) => entry.id);
    const stopError = await stop(reader.tail).then(
      () => undefined,
      (error: Error) => error,
    );
    check(
      past.length === 0,
      `Redis refused to save the checkpoint after entry ${ids[0]} (NOPERM), and your reader handed over ${list(past)} all the same, with nothing saved: a restart hands every one of them over again, and while the saves keep failing nobody hears of it. A failed checkpoint save is a failure like onEntry()'s: let it end the loop (stop() reports it), or try the save again, but do not read on past it.`,
      2,
    );
    expectStopReported(
      ended,
      stopError,
      `Redis refused to save the checkpoint after entry ${ids[0]}`,
    );
  },
);

test("Redis dropping the reader's connection does not end the process", async () => {
  const stream = freshKey("status:dropped");
  const drops = hearDropErrors();
  const rejections = hearUnhandledRejections();
  let reader: Reader | undefined;
  // The read a reader spends its time in: its connection goes away before it reaches Redis (a
  // restart, a failover), so that read's promise rejects, and node-redis reports the drop as an
  // "error" event on the connection.
  const blockingRead = (c: SentCommand) =>
    c.name === "XREAD" && c.args.includes(stream) && c.args.some((a) => /^BLOCK$/i.test(a));
  const drop = before(blockingRead, (c) => dropConnection(c.conn));
  // A loop that goes on after the drop (it pauses and reads again: fine) reads again once
  // node-redis has reconnected; that read is cut too, for an error listener added with once()
  // heard only the first drop. The connections the reader duplicate()s tell a loop that ended
  // (its connection closed) from one still going, so an ended one is not waited for.
  let again: ReturnType<typeof before> | undefined;
  const process = scope("reader");
  // Reconnecting, as a real client does: otherwise the drop closes the reader for good.
  const client = await process.run(() => learnerClient(undefined, { reconnect: true }));
  const allClosed = recordDuplicates(client);
  try {
    reader = await startReader(stream, freshKey("tail:dropped"), BLOCK_MS, undefined, {
      scope: process,
      client,
    } as Reader);
    check(
      await until(() => drop.hasFired(), 3000),
      `Your reader sent no XREAD ... BLOCK within 3 s on a quiet stream: wait for new entries with BLOCK blockMs.`,
      2,
    );
    const next = before(blockingRead, (c) => dropConnection(c.conn));
    again = next;
    await until(() => next.hasFired() || allClosed(), 2000);
  } finally {
    drop.cancel();
    again?.cancel();
    // stop() may report the loop's failure: ending on a lost connection is fine here.
    await stopQuietly(reader?.tail);
    // One more turn of the event loop lets Node report a rejection nobody handled.
    await new Promise((resolve) => setImmediate(resolve));
    drops.stop();
    rejections.stop();
  }
  drops.expectHeard(
    again?.hasFired() ? 2 : 1,
    again?.hasFired()
      ? "the connection of your reader's blocking XREAD, then again under the read your loop sent after reconnecting"
      : "the connection of your reader's blocking XREAD",
    "reader",
    'Give the connection you duplicate() an error listener (reader.on("error", ...)) that logs the error.',
    2,
  );
  check(
    rejections.heard.length === 0,
    `The check dropped the connection of your reader's blocking XREAD (as a Redis restart does), and the rejection that followed (${String(rejections.heard[0])}) was handled by nobody: Node ends a process on an unhandled rejection. The reader's loop runs as a promise nobody awaits until stop(): give it a catch (running.catch(() => {}), and let stop() await it and report the error).`,
    2,
  );
});

test("stop() on a quiet stream returns within one read and closes the reader's connection", async () => {
  const observer = await checkClient();
  const stream = freshKey("status:idle");
  const earlier = new Set((await learnerConnections(observer)).map((c) => c.id));
  const reader = await startReader(stream, freshKey("tail:idle"), BLOCK_MS);
  const own = reader.clientId;
  await untilWaiting(observer);
  // BLOCK in whole seconds (blockMs / 1000) asks Redis for a millisecond or two: a reader that
  // polls. An idle Redis 7.0 answered BLOCK 1 only every ~100 ms, so counting reads hides it.
  const short = sent(
    (c) => c.name === "XREAD" && c.scope === reader.scope.name && (blockOf(c) ?? 0) < BLOCK_MS / 10,
  ).find((c) => blockOf(c) !== undefined && blockOf(c) !== 0);
  check(
    short === undefined,
    `Your reader's XREAD asked for BLOCK ${blockOf(short)}, though blockMs was ${BLOCK_MS}: a read that gives up after ${blockOf(short)} ms makes a quiet stream cost a round trip every few milliseconds (an idle Redis may answer it only at its next timer tick, which hides the cost here). BLOCK takes milliseconds, like blockMs: pass blockMs as it is.`,
    2,
  );
  // The answer to a read that timed out is slow to arrive (a busy network): the reader waits
  // for it. One that stops waiting after a timer of its own and reads again piles reads up on
  // its connection, each behind the last, and drops what the abandoned one brings.
  let overtaken: SentCommand[] | undefined;
  const slowAnswer = holdReply(
    (c) => c.name === "XREAD" && c.scope === reader.scope.name,
    async (read) => {
      await sleep(BLOCK_MS * 4);
      overtaken = sent((c) => c.seq > read.seq && c.name === "XREAD" && c.conn === read.conn);
    },
  );
  await until(() => overtaken !== undefined, BLOCK_MS * 15);
  slowAnswer.cancel();
  check(
    (overtaken ?? []).length === 0,
    `While the answer to your reader's XREAD was on its way (the check held it back for ${BLOCK_MS * 4} ms), your reader sent ${overtaken?.length} more XREAD(s) on the same connection: it stopped waiting for the read after a timer of its own (a Promise.race with a timeout?). The abandoned reads still run on the connection, one behind the other, and what they bring is thrown away. BLOCK is the timeout: await each read until it answers.`,
    2,
  );
  await stop(reader.tail, QUIET_STOP_MS);
  const left = await leftOpen(observer, earlier, own);
  check(
    left.length === 0,
    `After stop() ${left.length} connection(s) your reader opened are still open (${left.map((c) => `last command ${c.cmd}`).join(", ")}). Close the reader's connection when the loop ends (reader.close()).`,
    2,
  );
});

test("stop() while onEntry() works waits for it, checkpoints that entry and closes the reader", async () => {
  const observer = await checkClient();
  const stream = freshKey("status:deploy");
  const checkpoint = freshKey("tail:deploy");
  const earlier = new Set((await learnerConnections(observer)).map((c) => c.id));
  let release = () => {};
  const work = new Promise<void>((resolve) => {
    release = resolve;
  });
  let started = false;
  const reader = await startReader(stream, checkpoint, BLOCK_MS, () => async () => {
    started = true;
    await work;
  });
  try {
    const own = reader.clientId;
    await untilWaiting(observer);
    const [id = ""] = (await append(observer, stream, 1, "deploy")).ids;
    const skipped = readsPast(reader, stream, [id], sentMark());
    await until(() => started || skipped(), 3000);
    check(started, `The entry ${id} never reached onEntry().`, 2);
    let stopped = false;
    const stopping = stop(reader.tail).finally(() => {
      stopped = true;
    });
    stopping.catch(() => {});
    // Held for several reads: a stop() that sleeps about one BLOCK instead of awaiting the loop
    // would slip through a hold of one read.
    await sleep(BLOCK_MS * 4);
    check(
      !stopped,
      "stop() returned while onEntry() was still working on an entry. A deploy would then end the process in the middle of it: stop() should end the loop and resolve only once the entry in hand is finished and checkpointed (await the loop).",
      2,
    );
    release();
    await stopping;
    const saved = await savedCheckpoint(observer, checkpoint);
    check(
      saved === id,
      `stop() was called while onEntry() worked on ${id}; onEntry() finished, but the checkpoint says ${saved ?? "nothing"}. Let the loop save the checkpoint of the entry in hand before it ends.`,
      2,
    );
    const opened = async () =>
      (await learnerConnections(observer)).filter((c) => !earlier.has(c.id) && c.id !== own);
    check(
      await until(async () => (await opened()).length === 0, 1000),
      `After stop() ${(await opened()).length} connection(s) your reader opened are still open. Close the reader's connection when the loop ends (reader.close()).`,
      2,
    );
  } finally {
    release();
  }
});

test("independent readers each see every entry (fan-out with history)", async () => {
  const observer = await checkClient();
  const stream = freshKey("status:fanout");
  // One service runs both feeds, on the one client it was given.
  const dashboard = await startReader(stream, freshKey("tail:fanout:dashboard"), BLOCK_MS);
  const billing = await startReader(
    stream,
    freshKey("tail:fanout:billing"),
    BLOCK_MS,
    undefined,
    dashboard,
  );
  const readers = { dashboard, billing };
  const waiting = await waitForBlocked(observer, "xread", 2, 3000);
  const { ids } = await append(observer, stream, 10, "doc");
  const got = (reader: Reader) => reader.calls.map((e) => e.id).filter((id) => ids.includes(id));
  const mark = sentMark();
  const skipped = Object.values(readers).map((r) => readsPast(r, stream, ids, mark));
  await until(
    () =>
      Object.values(readers).every((r) => got(r).length >= ids.length) || skipped.some((s) => s()),
    5000,
  );
  const done = Object.values(readers).every((r) => got(r).length >= ids.length);
  // The dashboard is stopped (a feature switched off) and billing goes on: a stop flag shared
  // by every reader of the module ends billing too, once its next read returns. Two entries,
  // one after the other: the first ends billing's blocked read, the second needs another read.
  await stop(dashboard.tail);
  const after: string[] = [];
  for (const n of [1, 2]) {
    if (!done) break;
    const id = await observer.xAdd(stream, "*", {
      docId: `later-${n}`,
      stage: "ocr",
      status: "done",
    });
    after.push(id);
    if (!(await until(() => billing.calls.some((e) => e.id === id), 2000))) break;
  }
  const missed = after.filter((id) => !billing.calls.some((e) => e.id === id));
  await stop(billing.tail);
  check(
    missed.length === 0,
    `Two readers followed the same stream on one client; the check stopped the dashboard reader, and the billing reader did not hand over ${missed.join(" and ")}, added after that stop${missed.length < after.length ? " (it handed over the entry before, then stopped reading)" : ""}. Stopping one reader stopped the other too: a stop flag (or a connection) shared by every startTail() call. Keep the flag inside startTail(), one per reader.`,
    2,
  );
  for (const [name, reader] of Object.entries(readers)) {
    checkNoJump(reader, stream, ids);
    const mine = got(reader);
    check(
      done && mine.length === ids.length && inOrder(mine),
      `Two readers followed the same stream, and the ${name} reader got ${mine.length} of the 10 new entries${inOrder(mine) ? "" : ", out of order"}. Unlike a consumer group, plain XREAD readers do not share entries: each should see all of them.${waiting < 2 ? " Only one of the two readers was ever waiting at a time: do they share one connection? Give each reader its own (client.duplicate())." : ""}`,
      2,
    );
  }
  check(
    waiting >= 2,
    "Two readers started on one client followed the same stream, and only one XREAD BLOCK was ever waiting at a time: the two readers share one connection, so each read waits behind the other's BLOCK, and an entry can wait up to blockMs per reader before anyone sees it. Give every startTail() a connection of its own (client.duplicate()), never one shared between calls.",
    2,
  );
});

test("two readers of one process, on two streams, each keep a cursor of their own", async () => {
  const observer = await checkClient();
  const audit = freshKey("status:audit");
  const billing = freshKey("status:billing");
  // The billing stream's newest entry was stamped a minute ahead (another machine's clock): the
  // billing reader starts after it, and the audit reader must not.
  const ahead = await observer.xAdd(billing, `${Date.now() + 60_000}-0`, { docId: "ahead" });
  const first = await startReader(audit, freshKey("tail:audit"), BLOCK_MS);
  await untilWaiting(observer);
  const second = await startReader(billing, freshKey("tail:billing"), BLOCK_MS, undefined, first);
  // The audit reader's next read is sent once the second reader has settled its start.
  const mark = sentMark();
  await until(
    () => sent((c) => c.name === "XREAD" && c.seq > mark && c.args.includes(audit)).length > 0,
    3000,
  );
  const added = await append(observer, audit, 3, "audit");
  const got = () => first.calls.map((e) => e.id).filter((id) => added.ids.includes(id));
  const skipped = readsPast(first, audit, added.ids, mark);
  await until(() => got().length === added.ids.length || skipped(), 3000);
  await Promise.all([stop(first.tail), stop(second.tail)]);
  const foreign = sent(
    (c) => c.name === "XREAD" && c.seq > mark && c.args.includes(audit) && c.args.at(-1) === ahead,
  )[0];
  check(
    foreign === undefined,
    `Two readers run in one process: one follows ${audit}, the other ${billing}, whose newest entry is ${ahead}. After the second startTail(), the first reader asked for entries of ${audit} after ${ahead}, the second reader's cursor: the two share one cursor (a variable outside startTail(), or an object shared between calls). Keep each reader's cursor inside its own startTail() call.`,
    2,
  );
  check(
    got().length === added.ids.length,
    `The first of two readers in one process got ${got().length} of the 3 entries added to its stream after the second reader started on another stream. Each startTail() call keeps its own cursor, connection and loop.`,
    2,
  );
});

test("the main client answers at once while the reader waits for entries", async () => {
  const observer = await checkClient();
  const stream = freshKey("status:busy");
  const reader = await startReader(stream, freshKey("tail:busy"), 4000);
  const mainId = reader.clientId;
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
      reader.client.ping().then(() => true),
      sleep(1000).then(() => false),
    ]);
    check(
      answered,
      "While your reader waited in XREAD BLOCK, PING on the main client got no answer within 1 s: it queued behind the blocking read. A blocking reader needs its own connection (client.duplicate()).",
      2,
    );
  } finally {
    // A read blocked for 4 s returns at once when an entry arrives: the stop stays quick.
    const stopped = stop(reader.tail, 4000 + STOP_MS, 4000);
    await sleep(20);
    await observer.xAdd(stream, "*", { docId: "wake-up", stage: "check", status: "stop" });
    await stopped;
  }
});
