/**
 * What a worker's loop does after the check dropped the connection under its blocking read:
 * carrying on after the error is fine with a pause; without one the loop goes straight round
 * again, for as long as Redis is away.
 *
 * Counting the commands such a loop sends over the network measures Redis's round trips, not the
 * loop: on a loaded machine a round trip takes as long as a short pause. So once the read's drop
 * was seen, the check drops every other connection the test's code opened too (as a Redis restart
 * would): from then on each command the loop sends rejects at once ("The client is closed"), with
 * no network in between, and each round of the loop is one such rejection. A loop that pauses
 * spends its pause with the event loop idle; one that goes straight round never lets it idle. So
 * the check weighs the event loop's idle time (performance.eventLoopUtilization(): time spent
 * waiting for something to happen, however long the process then waits for a CPU) against the
 * rounds: neither depends on how much CPU a loaded machine gives the process.
 */
import { tracingChannel } from "node:diagnostics_channel";
import { performance } from "node:perf_hooks";
import { ClientClosedError } from "redis";
import { beforeEach } from "vitest";
import { call, check, fail, sleep } from "./kit.ts";
import type { OwnTimers } from "./own-timers.ts";
import { failIfStarved } from "./starvation.ts";
import { hearUnheardErrors } from "./unheard-errors.ts";
import { allLearnerAddrs, dropConnection, openedSince } from "./wire.ts";

/** Idle time per round below which a loop counts as going straight round (a pause under this). */
const PAUSE_MS = 20;
/** Rounds that make the case, once the loop went round without idling. */
const ROUNDS = 40;
/** How long the check waits at most for either verdict (a loaded machine slows a spinner). */
const BOUND_MS = 10_000;

/** The learner connections opened before the current test, and its name (for the starvation watcher). */
let openBefore = new Set<string>();
let testName = "";
beforeEach((context) => {
  openBefore = allLearnerAddrs();
  testName = context.task.name;
});

/**
 * Commands sent on a closed client, counted as node-redis reports each command to
 * diagnostics_channel ("node-redis:command", its public tracing channel): a command on a closed
 * client rejects before it reaches a socket, so the wire kit never sees it.
 */
function countClosedClientCommands(): { count(): number; names(): string[]; stop(): void } {
  const channel = tracingChannel("node-redis:command");
  let count = 0;
  const names = new Set<string>();
  const handlers = {
    start() {},
    end() {},
    asyncStart() {},
    asyncEnd() {},
    error(context: unknown) {
      const { error, command } = context as { error?: unknown; command?: string };
      if (!(error instanceof ClientClosedError)) return;
      count++;
      if (command) names.add(command);
    },
  };
  channel.subscribe(handlers);
  return {
    count: () => count,
    names: () => [...names],
    stop: () => channel.unsubscribe(handlers),
  };
}

/**
 * Fails when the learner's loop goes straight round again after the drop of its blocking read:
 * call it once the drop was seen (and what the drop itself must not do was checked). Drops the
 * test's other learner connections, then watches the loop's rounds on closed clients against
 * the event loop's idle time. A loop that ended, or pauses, is let go after about 60 ms of
 * idle (one pausing 100 ms, after its first pause); one that goes round is named after 40
 * rounds without idling, however slowly a loaded machine lets them come. A loop that pauses
 * 10-20 ms per round is judged only after 10 s, and let go then.
 */
export async function expectPauseAfterDrop(_droppedAt: number, hint: number): Promise<void> {
  const straightRound = (rounds: string) =>
    `After the check dropped the connections of your worker (as a Redis restart or a network failure does, and the check's clients do not reconnect), your loop caught the error and went straight round again: ${rounds}, and it would go on like that for as long as Redis is away, using a whole CPU. A loop that catches an error and carries on must pause before the next round (await a sleep of a second or so), or let the error end the loop (its promise's catch logs it).`;
  // A loop whose every await settles at once (a closed client's rejection) never lets the event
  // loop turn again, nor this check: the watcher thread names it then.
  const disarm = failIfStarved(
    testName,
    straightRound("with no pause at all, so nothing else in the process ever ran again"),
    hint,
    2000,
  );
  const rounds = countClosedClientCommands();
  // What these drops do to a connection with no error listener is not this test's question.
  const unheard = hearUnheardErrors(() => true);
  try {
    for (const addr of openedSince(openBefore)) dropConnection(addr);
    const start = performance.eventLoopUtilization();
    const deadline = Date.now() + BOUND_MS;
    for (;;) {
      await sleep(20);
      const idle = performance.eventLoopUtilization(start).idle;
      const n = rounds.count();
      // A pause (or an end) shows as idle time: let a loop go at PAUSE_MS per round and more.
      if (idle >= PAUSE_MS * (n + 3)) return;
      const spins = idle < (PAUSE_MS / 2) * n;
      if ((n >= ROUNDS && spins) || (Date.now() > deadline && n >= 5 && spins)) {
        fail(
          straightRound(
            `${n} commands (${rounds.names().join(", ")}) on its closed clients, each rejected at once, with only ${Math.round(idle)} ms of waiting between them all`,
          ),
          hint,
        );
      }
      if (Date.now() > deadline) return;
    }
  } finally {
    unheard.stop();
    rounds.stop();
    disarm();
  }
}

/** A few turns of the event loop: what a loop resumed by a timer needs to reach its next command. */
async function turns(n = 3): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
}

/**
 * After expectPauseAfterDrop() (every connection of the test's code dropped, none reconnects):
 * whether the learner's loop is still going round, or has ended. Its own timers (`timers`, the
 * pause between rounds) are made to fire, round after round: a loop that goes on then tries its
 * next command on a closed client, which rejects at once; one that ended tries nothing, and no
 * timer of it is left. Decided by events, never by waiting a while for a command.
 */
export async function loopWentOn(timers: OwnTimers): Promise<boolean> {
  const tried = countClosedClientCommands();
  const unheard = hearUnheardErrors(() => true);
  try {
    for (let round = 0; round < 10 && tried.count() === 0; round++) {
      await turns();
      if (tried.count() > 0) break;
      if ((await timers.fire()).length === 0) break;
    }
    await turns();
    return tried.count() > 0;
  } finally {
    unheard.stop();
    tried.stop();
  }
}

/**
 * After expectPauseAfterDrop(): a loop that carries on is fine; one that ended must say so
 * through stop() (reject with its error), or the worker is gone and nobody knows: a
 * `while (running && reader.isReady)` that lets the drop end it, or a catch that breaks out.
 * Stops `worker` when its loop ended.
 */
export async function expectEndReported(
  worker: { stop(): Promise<void> },
  consumer: string,
  timers: OwnTimers,
  hint: number,
): Promise<void> {
  if (await loopWentOn(timers)) return;
  const outcome = await call("worker.stop()", () => worker.stop(), 5000).then(
    () => "resolved",
    (error: Error) => (/did not return|Still waiting/.test(error.message) ? "hung" : "rejected"),
  );
  check(
    outcome === "rejected",
    outcome === "hung"
      ? `After the drop your worker ${consumer}'s loop tried nothing more, and worker.stop() did not return within 5 s: stop() must return (or reject with the loop's error) also once the loop has ended.`
      : `The check dropped the connection under your worker ${consumer}'s blocking read (as a Redis restart does). Your loop ended there without an error (a loop condition such as reader.isReady, or a catch that breaks out), and stop() resolved as if all was well: the worker is gone, its stream goes unread, and nobody learns why. Either carry on after the error (pause, then read again: node-redis reconnects), or let the error end the loop and stop() reject with it.`,
    hint,
  );
}
