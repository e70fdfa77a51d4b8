/**
 * Whether learner code waits for a command's reply before it resolves ("resolve once
 * subscribed"), decided by holding the command at the socket rather than by racing it: code
 * that awaits the reply cannot resolve while its command is held; code that does not resolves
 * within a few ticks of sending it.
 */
import { sleep, until } from "./kit.ts";
import { before, nothingInFlight, type SentCommand } from "./wire.ts";

export type ReplyWait =
  /** Resolved only after the held command went through. */
  | "waited"
  /** Resolved before the command went through (held, or not sent yet): it never waited. */
  | "resolved-first"
  /** Resolved, and sent no matching command within the grace time either. */
  | "not-sent";

/**
 * Runs `start`, holding the first command that matches `match` until `start` has had
 * `graceMs` to resolve without it. `start` calls `resolved()` as soon as the learner's function
 * has resolved, before any looking around of the check's own.
 */
export async function waitsForReply<T>(
  match: (command: SentCommand) => boolean,
  start: (resolved: () => void) => Promise<T>,
  graceMs = 100,
): Promise<{ verdict: ReplyWait; value: T }> {
  let release = () => {};
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  let heldOn: number | undefined;
  const held = before(match, (command) => {
    heldOn = command.conn;
    return gate;
  });
  let resolved = false;
  const running = start(() => {
    resolved = true;
  });
  try {
    const first = await Promise.race([
      held.fired.then(() => "held" as const),
      running.then(() => "done" as const),
    ]);
    if (first === "done") {
      // Resolved before sending: the command may still follow, from a callback or a timer.
      await Promise.race([held.fired, sleep(graceMs)]);
      return { verdict: held.hasFired() ? "resolved-first" : "not-sent", value: await running };
    }
    await sleep(graceMs);
    // Code that does not await the held reply may still wait on something else of its own
    // before it resolves (another connection's reply, slow on a loaded machine): judged only
    // once nothing but the held connection is on its way, and a few turns after that.
    await until(() => resolved || nothingInFlight(undefined, heldOn), 3000);
    for (let turn = 0; turn < 3 && !resolved; turn++) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    const verdict = resolved ? "resolved-first" : "waited";
    release();
    return { verdict, value: await running };
  } finally {
    held.cancel();
    release();
  }
}
