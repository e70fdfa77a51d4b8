/**
 * A timeout of the learner's own, seen whatever its length. Code that races a Redis command
 * against `setTimeout(..., N)` and then carries on (as if the command had succeeded, or with a
 * default) is wrong whenever Redis takes longer than N, but a check that holds the command for a
 * fixed time only sees it when N is shorter than the hold. Here the command is held at the
 * socket while every timer the learner's file started fires at once (wire.ts `scopeTimers()`),
 * so a race is lost on every run whatever N is, and no test waits for N to pass. Code that
 * awaits the command itself is let through the moment the timers have run.
 */
import { ctx, failIfNotWritten, sleep, until } from "./kit.ts";
import { before, type SentCommand, scope, scopeTimers } from "./wire.ts";

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
  return { held: held.hasFired(), fired, whileHeld, after: outcome };
}

/** "a timer (5000 ms)" or "2 timers (1000, 5000 ms)", for a message. */
export function describeTimers(fired: number[]): string {
  return fired.length === 1
    ? `a timer (${fired[0]} ms)`
    : `${fired.length} timers (${fired.join(", ")} ms)`;
}
