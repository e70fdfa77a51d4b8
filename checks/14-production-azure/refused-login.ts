/**
 * A start whose every login Redis refuses (WRONGPASS: a wrong secret, as a deployment with a
 * stale or mistyped one has). node-redis's default is to retry a refused login for ever, so
 * connect() never settles and the deployment hangs instead of failing. The start must reject
 * within seconds with an error that names authentication, and leave no connection open and no
 * retry timer pending.
 */
import { AsyncLocalStorage, createHook } from "node:async_hooks";
import { CheckFailure, check, fail, settled, sleep, within } from "../kit.ts";
import { allLearnerAddrs, learnerAddrs, scope } from "../wire.ts";

export interface RefusedLogin {
  /** The learner's function, e.g. "startStage()". */
  what: string;
  start: () => Promise<unknown>;
  /** Keeps what a wrong start resolved with (its stop()), for the test's cleanup. */
  keep: (value: unknown) => void;
  /** Cuts what a start that never settled keeps trying, for the test's cleanup. */
  abandon: (crash: () => void) => void;
  hint: number;
}

const SETTLE_MS = 4000;

export async function expectRefusedLoginFails(refused: RefusedLogin): Promise<void> {
  const { what, hint } = refused;
  const before = allLearnerAddrs();
  const attempts = () => [...allLearnerAddrs()].filter((addr) => !before.has(addr));
  // In a scope of its own: a start that never settles keeps retrying, which the cleanup cuts.
  const worker = scope("refused-login");
  const timers = timersOf(() => worker.run(() => Promise.resolve().then(refused.start)));
  try {
    const outcome = await settled(within(timers.result, SETTLE_MS, what));
    if ("value" in outcome) {
      refused.keep(outcome.value);
      fail(
        `Redis refused every login of ${what} (WRONGPASS: the check gave it a wrong password), and ${what} resolved anyway: the caller believes it runs while it can do nothing. Let connect()'s error reach the caller.`,
        hint,
      );
    }
    const error = outcome.error;
    const reason = error instanceof Error ? error.message : String(error);
    if (/^TODO/.test(reason)) fail(`${what} is not written yet (${reason}).`, 1);
    if (error instanceof CheckFailure) {
      refused.abandon(() => worker.crash());
      fail(
        `Redis refused every login of ${what} (WRONGPASS: the check gave it a wrong password), and ${SETTLE_MS / 1000} s and ${attempts().length} attempts later ${what} had neither resolved nor rejected: node-redis retries a refused login for ever by default, so connect() never settles, and a deployment with a wrong secret hangs instead of failing. Give the client a reconnectStrategy that returns an Error for an authentication error (WRONGPASS, NOAUTH) before the client was first ready: connect() then rejects with it.`,
        hint,
      );
    }
    const cause = error instanceof Error && error.cause instanceof Error ? error.cause.message : "";
    check(
      /WRONGPASS|NOAUTH|auth|password|credential|login/i.test(`${reason} ${cause}`),
      `Redis refused the login of ${what} (WRONGPASS), and ${what} rejected, as it should, but with "${reason}", which does not say so: whoever reads the deployment's log must see that the secret was refused. Give up with an Error that carries the refusal (its message, or it as the cause).`,
      hint,
    );
    // Destroy hooks run after the current turn: a timer cleared just now is counted until then.
    await sleep(50);
    const open = [...learnerAddrs()].filter((addr) => !before.has(addr));
    check(
      open.length === 0,
      `${what} rejected after Redis refused its login, as it should, but left its connection open (${open.join(", ")}): the caller got no stop() to close it with. Destroy the client before letting the error go.`,
      hint,
    );
    check(
      timers.pending() === 0,
      `${what} rejected after Redis refused its login, as it should, but left ${timers.pending()} timer(s) pending: its client is still waiting to try again (node-redis's reconnect timer), so it will keep knocking with the wrong secret and keep the process alive. Let the reconnectStrategy give up (then connect() rejects and nothing retries), or destroy the client before you reject.`,
      hint,
    );
  } finally {
    timers.stop();
  }
}

/**
 * Runs `start` and counts the timers it, or anything it set going, set and that have neither
 * fired nor been cleared: between its attempts a retrying client has one.
 */
function timersOf<T>(start: () => Promise<T>): {
  result: Promise<T>;
  pending(): number;
  stop(): void;
} {
  const store = new AsyncLocalStorage<object>();
  const mine = {};
  const live = new Set<number>();
  const hook = createHook({
    init(id, type) {
      if (type === "Timeout" && store.getStore() === mine) live.add(id);
    },
    destroy(id) {
      live.delete(id);
    },
  }).enable();
  return {
    result: store.run(mine, start),
    pending: () => live.size,
    stop: () => hook.disable(),
  };
}
