/**
 * The learner's own timers, made to fire while the check holds something (a reply, a task in
 * hand): a race against a timeout of any length is then seen at once, with no wait for it.
 * Lessons 09, 10, 12 and 16 use it, with `scopeTimers(scope, { createdIn: ctx.target })`.
 */
import { until } from "./kit.ts";
import { nothingInFlight, type scopeTimers, sent } from "./wire.ts";

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

/** "a timer (30000 ms)", "3 timers (1000 ms each)" or "2 timers (1000, 5000 ms)": for a message. */
export function timersFired(fired: number[]): string {
  if (fired.length === 1) return `a timer (${fired[0]} ms)`;
  const delays = [...new Set(fired)];
  return delays.length === 1
    ? `${fired.length} timers (${delays[0]} ms each)`
    : `${fired.length} timers (${delays.join(", ")} ms)`;
}
