/**
 * Helpers the Streams checks share (lessons 06 onwards). Kept small and stable: several tracks
 * import it. Everything here observes the server; nothing changes it.
 */
import { type ConnectionInfo, checkClient, learnerConnections, type Redis, sleep } from "./kit.ts";
import { type SentCommand, sent } from "./wire.ts";

/** Orders two stream IDs ("<ms>-<seq>") as the server does: negative, zero or positive. */
export function compareIds(a: string, b: string): number {
  const [aMs = 0n, aSeq = 0n] = a.split("-").map((part) => BigInt(part));
  const [bMs = 0n, bSeq = 0n] = b.split("-").map((part) => BigInt(part));
  if (aMs !== bMs) return aMs < bMs ? -1 : 1;
  if (aSeq !== bSeq) return aSeq < bSeq ? -1 : 1;
  return 0;
}

/**
 * What is wrong with a status event's `at`, if anything: the pipeline's texts document it as the
 * event's time in milliseconds since 1970 (Date.now()), so it falls within the call that sent it
 * (`from`, `to`). Seconds, performance.now() or a string are far outside; a second either side
 * is clock slack.
 */
export function wrongEventTime(at: unknown, from: number, to: number): string | undefined {
  if (typeof at !== "number") return `its "at" is ${JSON.stringify(at)}, not a number`;
  if (at >= from - 1000 && at <= to + 1000) return undefined;
  return `its "at" is ${at}, but the call ran from ${from} to ${to} (Date.now(), milliseconds since 1970)`;
}

/** True for a well-formed stream ID such as "1718000000000-0". */
export function isStreamId(value: unknown): value is string {
  return typeof value === "string" && /^\d+-\d+$/.test(value);
}

/**
 * The learner's connections that are waiting inside a blocking `command` right now
 * ("xread", "xreadgroup"): CLIENT LIST shows the last command and the flag "b" while blocked.
 */
export async function blockedIn(via: Redis, command: string): Promise<ConnectionInfo[]> {
  const connections = await learnerConnections(via);
  return connections.filter((c) => c.cmd === command && c.flags.includes("b"));
}

/**
 * Waits up to `ms` until at least `count` learner connections are blocked in `command`, and
 * returns the most seen at once. It does not fail: the caller knows what a shortfall means.
 */
export async function waitForBlocked(
  via: Redis,
  command: string,
  count: number,
  ms: number,
): Promise<number> {
  const deadline = Date.now() + ms;
  let most = 0;
  for (;;) {
    most = Math.max(most, (await blockedIn(via, command)).length);
    if (most >= count || Date.now() > deadline) return most;
    await sleep(20);
  }
}

/** How many entries of `group` are delivered but not acknowledged (XPENDING's summary). */
export async function pendingCount(via: Redis, stream: string, group: string): Promise<number> {
  const summary = await via.xPending(stream, group);
  return Number(summary.pending);
}

/** The BLOCK of an XREAD as sent, or undefined without one. */
export function blockOf(read: SentCommand | undefined): number | undefined {
  const args = read?.args ?? [];
  const at = args.findIndex((a) => a.toUpperCase() === "BLOCK");
  return at < 0 ? undefined : Number(args[at + 1]);
}

/** A BLOCK that waits forever (0) or a thousand reads' worth: stop() cannot return in time. */
export function overlong(block: number | undefined, blockMs: number): block is number {
  return block !== undefined && (block === 0 || block >= blockMs * 10);
}

let observer: Promise<Redis> | undefined;

/**
 * Resolves once a stop(), called when the learner's newest command was `mark`, provably cannot
 * return soon: one BLOCK and slack later, the last `command` is one sent before stop() with an
 * overlong BLOCK, and a learner connection still waits in it. Such a read holds its loop until
 * an entry comes, so waiting out the whole stop limit would teach nothing more.
 */
export async function stuckInRead(
  command: "XREAD" | "XREADGROUP",
  mark: number,
  blockMs: number,
  done: () => boolean,
): Promise<void> {
  await sleep(blockMs + 300);
  for (; !done(); await sleep(50)) {
    const read = sent((c) => c.name === command).at(-1);
    if (!read || read.seq > mark || !overlong(blockOf(read), blockMs)) continue;
    observer ??= checkClient("blocked-reads");
    if ((await blockedIn(await observer, command.toLowerCase())).length > 0) return;
  }
  return new Promise(() => {});
}

/**
 * Runs `read`, a learner call that waits up to its blockMs for new work, and adds an entry
 * (`add`) once it has sent its first `command` and 300 ms more have passed. A read that blocks
 * in Redis answers at once; one that sleeps on a timer between reads answers only when the
 * timer fires. `early` when the call returned before the entry was added; `delay` in ms from
 * the add to the answer.
 */
export async function answerToNewWork<T>(
  read: () => Promise<T>,
  add: () => Promise<unknown>,
  command: "XREAD" | "XREADGROUP",
): Promise<{ value: T; early: boolean; delay: number }> {
  const mark = sent().at(-1)?.seq ?? 0;
  let settled = false;
  const running = read().finally(() => {
    settled = true;
  });
  running.catch(() => {});
  const reading = () => sent((c) => c.seq > mark && c.name === command).length > 0;
  for (let i = 0; i < 100 && !settled && !reading(); i++) await sleep(20);
  // Time for the read's bytes to reach Redis before the entry does, on a loaded machine too.
  await sleep(300);
  const early = settled;
  await add();
  const added = performance.now();
  const value = await running;
  return { value, early, delay: Math.round(performance.now() - added) };
}
