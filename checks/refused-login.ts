/**
 * A start whose login Redis refuses (WRONGPASS: a wrong secret, as a deployment with a stale or
 * mistyped one has). node-redis 6.3 hands a refused login to the reconnect strategy like a
 * dropped connection, so by default connect() retries for ever and never settles: the
 * deployment hangs instead of failing. The start must reject within seconds with an error that
 * says the login was refused (without the secret in it), and leave nothing trying again.
 */
import { CheckFailure, check, fail, type Redis, settled, sleep, until, within } from "./kit.ts";
import { allLearnerAddrs, learnerAddrs, openedSince, scope, scopeTimers } from "./wire.ts";

export interface RefusedLogin {
  /** The learner's function, e.g. "startStage()". */
  what: string;
  start: () => Promise<unknown>;
  /** Keeps what a wrong start resolved with (a client, a stop()), for the test's cleanup. */
  keep: (value: unknown) => void;
  /** Cuts what a start that never settled keeps trying, for the test's cleanup. */
  abandon: (crash: () => void) => void;
  /** The wrong password the start was given: it must not appear in the error. */
  password: string;
  hint: number;
  /**
   * Whether a fresh copy of the learner's module gives up on a refused login where the copy
   * that has already run does not: a "never ready" flag kept at module level, which an earlier
   * client set. Asked only once the start hung, to name that cause instead of the strategy.
   */
  flagKeptAcrossClients?: () => Promise<boolean>;
  /** How many connections the start may open before it rejects: one client, one login (01). */
  logins?: number;
}

const SETTLE_MS = 5000;
/** The longest reconnect delay the lessons allow (5 s), and a handshake. */
const LAST_WAIT_MS = 6000;

export async function expectRefusedLoginFails(refused: RefusedLogin): Promise<void> {
  const { what, hint } = refused;
  const before = allLearnerAddrs();
  const attempts = () => openedSince(before);
  // In a scope of its own: a start that never settles keeps retrying, which the cleanup cuts,
  // and a client's reconnect waits are timers of that scope.
  const worker = scope("refused-login");
  const timers = scopeTimers(worker);
  try {
    const outcome = await settled(
      within(
        worker.run(() => Promise.resolve().then(refused.start)),
        SETTLE_MS,
        what,
      ),
    );
    if ("value" in outcome) {
      refused.keep(outcome.value);
      fail(
        `Redis refused every login of ${what} (WRONGPASS: the check gave it a wrong password), and ${what} resolved anyway: the caller believes it runs while it can do nothing. Log in with the credentials you are given, and let connect()'s error reach the caller.`,
        hint,
      );
    }
    const error = outcome.error;
    const tried = attempts().length;
    const reasons: string[] = [];
    for (let e: unknown = error; e !== undefined && reasons.length < 5; ) {
      reasons.push(e instanceof Error ? e.message : String(e));
      e = e instanceof Error ? e.cause : undefined;
    }
    if (error instanceof CheckFailure) {
      refused.abandon(() => worker.crash());
      if (await refused.flagKeptAcrossClients?.().catch(() => false)) {
        fail(
          `Redis refused every login of ${what} (WRONGPASS: the check gave it a wrong password), and ${SETTLE_MS / 1000} s and ${attempts().length} attempts later ${what} had neither resolved nor rejected. Your reconnectStrategy does give up on a refused login, but only in a fresh copy of your module: in the one that has already run, an earlier client was ready, and your "never ready" flag, kept at module level (outside the function that calls createClient()), is true for every client made after it. Make the flag per client: declare it inside the function, next to createClient(), and set it on that client's "ready".`,
          hint,
        );
      }
      fail(
        `Redis refused every login of ${what} (WRONGPASS: the check gave it a wrong password), and ${SETTLE_MS / 1000} s and ${attempts().length} attempts later ${what} had neither resolved nor rejected. node-redis 6.3 hands a refused login to your reconnectStrategy like a dropped connection, so connect() retries for ever and never settles: a service deployed with a wrong secret hangs at startup instead of failing with the reason. In the strategy, give up (return the error) when the cause is an authentication error (WRONGPASS, NOAUTH) and the client has never been ready; keep answering a delay for every other cause. If yours does that already: return the error, do not throw it (node-redis catches a throw and retries with its own delays), and keep the "never ready" flag per client, made next to createClient() (one at module level is already true from an earlier client) and set on "ready", not "connect" (which comes before the login).`,
        hint,
      );
    }
    check(
      !reasons.some((r) => r.includes(refused.password)),
      `${what} rejected with an error whose message carries the password it tried ("${reasons.join(" <- ").replaceAll(refused.password, "***")}"): error messages end up in logs and on dashboards. Say which user or host failed, never the secret.`,
      hint,
    );
    check(
      /WRONGPASS|NOAUTH|auth|password|credential|login/i.test(reasons.join(" ")),
      `Redis refused the login of ${what} (WRONGPASS), and ${what} rejected, as it should, but with "${reasons.join(" <- ")}", which does not say so: whoever reads the logs of a failed deploy looks for the reason there. Reject with the error node-redis reported (the cause your reconnectStrategy was given), as it is or as the cause of yours.`,
      hint,
    );
    // A rejection from a timeout of your own can leave the client retrying behind it. Its next
    // attempt waits on a timer of the scope: once every such timer has fired (a destroyed
    // client's last wait ends with nothing, as node-redis does not cancel it), a client still
    // trying has opened a new connection.
    const seen = attempts().length;
    await until(() => attempts().length > seen || timers.live() === 0, LAST_WAIT_MS);
    await sleep(20);
    const open = attempts().filter((addr) => learnerAddrs().has(addr));
    const retried = attempts().length - seen;
    if (retried > 0) refused.abandon(() => worker.crash());
    check(
      open.length === 0 && retried === 0,
      `${what} rejected after Redis refused its login, as it should, but ${retried > 0 ? "its client logged in again with the same wrong password afterwards: it was still retrying" : `left its connection open (${open.join(", ")})`}. A client whose start failed must not keep knocking with the wrong secret (Redis logs each refused login, and the retries keep the process alive): let the reconnectStrategy give up, or destroy() the client before you reject.`,
      hint,
    );
    check(
      refused.logins === undefined || tried <= refused.logins,
      `Redis refused the login of ${what} (WRONGPASS), and ${what} tried the same wrong password ${tried} times (${tried} connections, each refused) before it rejected. A refused login is not a blip to retry: the secret is wrong, and only a new one mends it. Each try costs a TLS handshake, shows in Redis's log as another failed login, and delays the failure the deploy is waiting for. Give up at the first WRONGPASS or NOAUTH, in the reconnect strategy (return the error) and in any retry of your own around connect() (retry only what the network did).`,
      refused.hint,
    );
  } finally {
    timers.stop();
  }
}

/** Every string in a reply, however RESP3 nested it (arrays, maps, objects). */
function wordsOf(reply: unknown): string[] {
  if (typeof reply === "string") return [reply];
  if (Buffer.isBuffer(reply)) return [reply.toString()];
  if (reply instanceof Map) return [...reply.entries()].flat().flatMap(wordsOf);
  if (Array.isArray(reply)) return reply.flatMap(wordsOf);
  if (reply && typeof reply === "object") return Object.entries(reply).flat().flatMap(wordsOf);
  return [];
}

/**
 * Whether Redis logged a refused login of `username` (ACL LOG) within `ms`. Redis logs it before
 * it answers WRONGPASS: once it is there, the client's reconnect strategy has been, or is being,
 * asked what to do about it. For the tests that a client once ready keeps retrying.
 */
export function loginRefusalLogged(admin: Redis, username: string, ms = 6000): Promise<boolean> {
  return until(
    async () => wordsOf(await admin.sendCommand(["ACL", "LOG", "20"])).includes(username),
    ms,
  );
}
