/**
 * The learner's own timers, made to fire while the check holds something (a reply, a task in
 * hand): a race against a timeout of any length is then seen at once, with no wait for it.
 * Lessons 09, 10, 12 and 16 use fireUntilQuiet() with `scopeTimers(scope, { createdIn:
 * ctx.target })`; 03, 04 and 05 use heldWithTimers(), which holds one command at the socket
 * while the timers fire.
 */
import { check, ctx, failIfNotWritten, sleep, until } from "./kit.ts";
import { before, nothingInFlight, type SentCommand, scope, scopeTimers, sent } from "./wire.ts";

export type OwnTimers = ReturnType<typeof scopeTimers>;

/**
 * Makes the learner's timers (`timers`) fire, then those they start, until its code is quiet:
 * nothing on its way to Redis, no timer of its own left unfired, and nothing new sent over a
 * whole turn of the event loop (node-redis writes a command on the turn after it was called).
 * Returns the delays (ms) of the timers fired.
 */
export async function fireUntilQuiet(timers: OwnTimers, ended: () => boolean): Promise<number[]> {
  const fired: number[] = [];
  const last = () => sent().at(-1)?.seq ?? 0;
  for (let round = 0; round < 20 && !ended(); round++) {
    const now = await timers.fire();
    fired.push(...now);
    await until(() => ended() || nothingInFlight(), 3000);
    const before = last();
    await new Promise((resolve) => setImmediate(() => setImmediate(resolve)));
    if (now.length === 0 && nothingInFlight() && last() === before) break;
  }
  return fired;
}

/**
 * Makes the learner's timers fire, round after round (a timer that fires may start another),
 * until `happened()` or none is left, with a few turns of the event loop after each round:
 * code that gives up on its timer acts within a few turns of it (node-redis writes a command
 * on the turn after it was called), whatever the machine's load. For work held by the check
 * (a task in handle()) while the question is whether the code acts without it. Returns the
 * delays (ms) of the timers fired.
 */
export async function fireWhileHeld(timers: OwnTimers, happened: () => boolean): Promise<number[]> {
  const fired: number[] = [];
  for (let round = 0; round < 10 && !happened(); round++) {
    const now = await timers.fire();
    fired.push(...now);
    for (let turn = 0; turn < 5 && !happened(); turn++) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    if (now.length === 0) break;
  }
  return fired;
}

/**
 * With a task held in the learner's handle() (09, 10): fails when the worker acknowledges it
 * anyway once its own timers have fired (a handle() raced against a timeout of any length).
 */
export async function expectNoAckWhileHandling(
  timers: OwnTimers,
  acked: () => boolean,
  docId: string,
  hint: number,
): Promise<void> {
  const fired = await fireWhileHeld(timers, acked);
  check(
    !acked(),
    `While handle() was still working on ${docId} (the check held it${fired.length > 0 ? `, and made ${timersFired(fired)} your code had started fire at once` : ""}), your worker acknowledged it (XACK). If handle() then fails, or the worker dies, the document is lost: nothing is pending any more to be claimed. A timeout raced against handle() (Promise.race) does not stop the work, it only stops waiting for it; acknowledge only after handle() has resolved, and let a deadline of yours reject, so the entry stays pending.`,
    hint,
  );
}

/** "a timer (30000 ms)", "3 timers (1000 ms each)" or "2 timers (1000, 5000 ms)": for a message. */
export function timersFired(fired: number[]): string {
  if (fired.length === 1) return `a timer (${fired[0]} ms)`;
  const delays = [...new Set(fired)];
  return delays.length === 1
    ? `${fired.length} timers (${delays[0]} ms each)`
    : `${fired.length} timers (${delays.join(", ")} ms)`;
}

// heldWithTimers(): a timeout of the learner's own, seen whatever its length. Code that races a
// Redis command against `setTimeout(..., N)` and then carries on (as if the command had
// succeeded, or with a default) is wrong whenever Redis takes longer than N, but a check that
// holds the command for a fixed time only sees it when N is shorter than the hold. Here the
// command is held at the socket while every timer the learner's file started fires at once, so
// a race is lost on every run whatever N is, and no test waits for N to pass. Code that awaits
// the command itself is let through the moment the timers have run.

/** How learner code had ended: with a value, with an error, or not yet (undefined). */
export type Ended<T> = { value: T } | { error: unknown } | undefined;

export interface HeldWithTimers<T> {
  /** Whether the code sent a command that `match` selects (and it was held). */
  held: boolean;
  /** The delays (ms) of the learner's timers made to fire while the command was held. */
  fired: number[];
  /** How the code had ended while the command was still held. */
  whileHeld: Ended<T>;
  /** How it ended once the command went through (undefined: still running 3 s later). */
  after: Ended<T>;
  /** Whether it resolved while its command was held and after a timer of its own fired: the race lost. */
  answeredEarly: boolean;
}

/**
 * Runs `start` (a call of the learner's code) in a scope of its own and holds the first command
 * that `match` selects before it reaches Redis; meanwhile makes each timer the learner's file
 * started fire now, then those they start, until none is left. Then lets the command through
 * and waits (up to 3 s) for the code to end. The starter's TODO throw fails as "not written
 * yet"; any other error is the caller's to judge (a deadline that rejects loudly is right).
 */
export async function heldWithTimers<T>(
  match: (command: SentCommand) => boolean,
  start: () => Promise<T>,
): Promise<HeldWithTimers<T>> {
  const s = scope("own-timeout");
  const timers = scopeTimers(s, { createdIn: ctx.target });
  let release = () => {};
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const held = before(match, () => gate);
  let ended: Ended<T>;
  const running = s.run(() => Promise.resolve().then(start));
  running.then(
    (value) => {
      ended = { value };
    },
    (error: unknown) => {
      ended = { error };
    },
  );
  const done = () => ended !== undefined;
  const fired: number[] = [];
  let whileHeld: Ended<T>;
  try {
    // Ends as soon as the command is held (or the code ended): a slow connect costs no more.
    await Promise.race([held.fired, running.catch(() => {}), sleep(10_000)]);
    // Up to ten rounds: a timer that fires may start another (a retry with its own timeout).
    for (let round = 0; round < 10 && held.hasFired() && !done(); round++) {
      const now = await timers.fire();
      if (now.length === 0) break;
      fired.push(...now);
      // Code that gives up on its timer ends within a few turns of it; code that awaits the
      // held command cannot end before it is let through, so this wait is all it costs.
      await until(done, 100);
    }
    whileHeld = ended;
  } finally {
    release();
    held.cancel();
    timers.stop();
  }
  await until(done, 3000);
  const outcome = ended as Ended<T>;
  if (outcome && "error" in outcome) failIfNotWritten(outcome.error);
  const answeredEarly =
    held.hasFired() && fired.length > 0 && whileHeld !== undefined && "value" in whileHeld;
  return { held: held.hasFired(), fired, whileHeld, after: outcome, answeredEarly };
}
