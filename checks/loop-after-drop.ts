/**
 * What a worker's loop does after the check dropped the connection under its blocking read:
 * carrying on after the error is fine with a pause; without one the loop goes round as fast as
 * Redis answers its other commands, for as long as the reader is closed.
 */
import { fail, until } from "./kit.ts";
import { sent } from "./wire.ts";

/**
 * Fails when the learner's code sent 40 commands within a second of the drop at `droppedAt` (a
 * sent() seq). Counted only once a few commands followed the drop, so a loop that ended, or
 * pauses, costs no wait here.
 */
export async function expectPauseAfterDrop(droppedAt: number, hint: number): Promise<void> {
  const since = () => sent((c) => c.seq > droppedAt).length;
  if (since() > 5 && (await until(() => since() >= 40, 1000))) {
    const names = [...new Set(sent((c) => c.seq > droppedAt).map((c) => c.name))].join(", ");
    fail(
      `After the check dropped the connection under your worker's blocking read, your loop caught the error and went straight round again: ${since()} commands (${names}) within a second, and it would go on like that, as fast as Redis answers, for as long as the reader is closed. A loop that catches an error and carries on must pause before the next round (await a sleep of a second or so), or let the error end the loop (its promise's catch logs it).`,
      hint,
    );
  }
}
