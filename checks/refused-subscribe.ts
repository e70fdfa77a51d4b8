/**
 * A subscriber's start that Redis refuses (NOPERM on its SUBSCRIBE, from an account the ACL
 * keeps off the channel, as a cloud account kept to its own channels is). It must reject (a
 * listener that hears nothing must not look like one that works) and leave no connection of
 * its own open: the caller got no stop() to close it with. ACL SETUSER changes the server:
 * callers skip off the private one.
 */
import { check, fail, type Redis, restrictedLearnerClient, settled } from "./kit.ts";
import { learnerAddrs } from "./wire.ts";

export interface RefusedStart {
  /** The learner's function, e.g. "watchStatus()". */
  what: string;
  /** How Redis came to refuse it, the start of every message. */
  refusal: string;
  start: () => Promise<unknown>;
  /** Keeps what a wrong start resolved with (its stop()), for the test's cleanup. */
  keep: (value: unknown) => void;
  /** The connections the start left open, described; empty once they are closed. */
  leftOpen: () => Promise<string[]>;
  hint: number;
}

export async function expectRefusedStartCleanedUp(refused: RefusedStart): Promise<void> {
  const { what, refusal, hint } = refused;
  const outcome = await settled(Promise.resolve().then(refused.start));
  if ("value" in outcome) {
    refused.keep(outcome.value);
    fail(
      `${refusal}, and ${what} resolved anyway, as if it were listening: nothing published would ever reach it, and nobody would know. Let the subscribe() error reach the caller.`,
      hint,
    );
  }
  const left = await refused.leftOpen();
  check(
    left.length === 0,
    `${refusal} and ${what} rejected, as it should, but the connection it opened is still open (${left.join(", ")}): the caller got no stop() to close it with, so every refused start leaks a connection. Close (or destroy()) it before letting the error go.`,
    hint,
  );
}

/** The same, for a function handed a client whose account may use every key but no channel. */
export async function expectRefusedSubscribeCleanedUp(
  what: string,
  start: (client: Redis) => Promise<unknown>,
  keep: (value: unknown) => void,
  hint: number,
): Promise<void> {
  const client = await restrictedLearnerClient(["resetchannels"]);
  const given = learnerAddrs();
  await expectRefusedStartCleanedUp({
    what,
    refusal: `Redis refused the SUBSCRIBE of ${what} (NOPERM: this account may not use that channel)`,
    start: () => start(client),
    keep,
    // Looked at at once, on the client's side: a rejection after an awaited close() is closed.
    leftOpen: async () => [...learnerAddrs()].filter((addr) => !given.has(addr)),
    hint,
  });
}
