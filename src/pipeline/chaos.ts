/**
 * The chaos run's faults: worker processes killed with SIGKILL at random moments (at most one
 * down at a time; the supervisor starts a replacement; a document finished since the last kill),
 * and one Redis restart in the middle:
 * once half the uploads are accepted, so uploads are arriving and most accepted documents are
 * still waiting on the streams.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { PrivateServer } from "../redis/server.ts";
import type { Supervisor } from "./supervisor.ts";

export interface ChaosOptions {
  supervisor: Supervisor;
  /** Absent when running against someone else's server: then no restart. */
  redis?: Pick<PrivateServer, "restart">;
  /** Uploads accepted so far, how many there will be, and how many are finished (done or dead). */
  progress(): { accepted: number; total: number; finished: number };
  random?: () => number;
  log?: (line: string) => void;
  /** Told about the Redis restart as it begins and once it is done (the dashboard shows it). */
  onRestart?: (phase: "restarting" | "restarted") => void;
}

export interface Chaos {
  kills: number;
  restarts: number;
  stop(): Promise<void>;
}

export function startChaos(options: ChaosOptions): Chaos {
  const random = options.random ?? Math.random;
  const stopping = new AbortController();
  const state: Chaos = {
    kills: 0,
    restarts: 0,
    async stop() {
      stopping.abort();
      await running;
    },
  };
  // Ends early, without throwing, when stop() is called.
  const pause = (ms: number) => sleep(ms, undefined, { signal: stopping.signal }).catch(() => {});

  const restarting = (async () => {
    const redis = options.redis;
    if (!redis) return;
    while (!stopping.signal.aborted) {
      const { accepted, total } = options.progress();
      if (accepted >= total / 2) {
        options.log?.("chaos: restarting Redis");
        options.onRestart?.("restarting");
        await redis.restart();
        state.restarts++;
        options.onRestart?.("restarted");
        return;
      }
      await pause(50);
    }
  })();

  const killing = (async () => {
    let finishedAtLastKill: number | undefined;
    while (!stopping.signal.aborted) {
      await pause(500 + random() * 1000);
      if (stopping.signal.aborted) break;
      const workers = [...options.supervisor.workers.values()];
      const { finished } = options.progress();
      if (!mayKill(workers, finished, finishedAtLastKill)) continue;
      const victim = workers[Math.floor(random() * workers.length)];
      if (!victim) continue;
      options.log?.(`chaos: SIGKILL worker ${victim.slot}`);
      finishedAtLastKill = finished;
      await options.supervisor.kill(victim.slot);
      state.kills++;
    }
  })();
  const running = Promise.all([restarting, killing]);
  return state;
}

/**
 * Whether the next worker may be killed. Only once the last victim's replacement is up (one
 * worker down at a time), and only once a document has finished since the last kill: on a
 * machine so loaded that a replacement takes seconds to start, kills a second after each start
 * would take every batch from its worker before it could finish (a recovery claims it, the
 * next kill takes it again), and the run would end with nothing done. Faults at random
 * moments still, but never faster than the run can move.
 */
export function mayKill(
  workers: readonly { ended?: unknown; isReady: boolean }[],
  finished: number,
  finishedAtLastKill: number | undefined,
): boolean {
  if (workers.some((w) => w.ended !== undefined || !w.isReady)) return false;
  return finishedAtLastKill === undefined || finished > finishedAtLastKill;
}
