/**
 * A subscriber's start that Redis refuses. The learner's function is handed a client whose
 * account may use every key and command but no channel, so its SUBSCRIBE gets NOPERM, as a
 * cloud account kept to its own channels would. It must reject (a listener that hears nothing
 * must not look like one that works) and leave no connection of its own open: the caller got
 * no stop() to close it with. ACL SETUSER changes the server: callers skip off the private one.
 */
import { check, fail, type Redis, restrictedLearnerClient, settled } from "./kit.ts";
import { learnerAddrs } from "./wire.ts";

export async function expectRefusedSubscribeCleanedUp(
  what: string,
  start: (client: Redis) => Promise<unknown>,
  /** Keeps what a wrong start resolved with (its stop()), for the test's cleanup. */
  keep: (value: unknown) => void,
  hint: number,
): Promise<void> {
  const client = await restrictedLearnerClient(["resetchannels"]);
  const given = learnerAddrs();
  const outcome = await settled(Promise.resolve().then(() => start(client)));
  if ("value" in outcome) {
    keep(outcome.value);
    fail(
      `Redis refused the SUBSCRIBE of ${what} (NOPERM: this account may not use that channel), and ${what} resolved anyway, as if it were listening: nothing published would ever reach it, and nobody would know. Let the subscribe() error reach the caller.`,
      hint,
    );
  }
  const reason = outcome.error instanceof Error ? outcome.error.message : String(outcome.error);
  if (/^TODO/.test(reason)) fail(`${what} is not written yet (${reason}).`, 1);
  const stillOpen = [...learnerAddrs()].filter((addr) => !given.has(addr));
  check(
    stillOpen.length === 0,
    `Redis refused the SUBSCRIBE of ${what} (NOPERM) and it rejected, as it should, but the connection it opened is still open (${stillOpen.join(", ")}): the caller got no stop() to close it with, so every refused start leaks a connection. Close (or destroy()) it before letting the error go.`,
    hint,
  );
}
