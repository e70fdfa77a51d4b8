/**
 * The live terminal view: one row per stage, redrawn in place on a terminal, or a plain line
 * every few seconds when stdout is a pipe or a file. Counting is done by Redis: XINFO GROUPS
 * gives each stage's backlog (lag) and work in progress (pending); the stats hash the workers
 * increment gives done, retried and dead (best effort: a killed worker may miss one).
 */

import type { PipelineKeys } from "./keys.ts";
import { STAGES, type Stage } from "./keys.ts";
import type { Redis } from "./parts.ts";

export interface StageRow {
  stage: Stage;
  queued: number;
  inProgress: number;
  done: number;
  retried: number;
  dead: number;
  /** Documents per second finished by this stage over the last RATE_WINDOW_MS. */
  rate: number;
}

/**
 * The per-stage rate is over a short window so a stall shows at once; it falls to 0 once the
 * work is done, which is why the last picture also shows the whole run's rate.
 */
export const RATE_WINDOW_MS = 5000;

export interface Snapshot {
  elapsedMs: number;
  rows: StageRow[];
  submitted: number;
  accepted: number;
  workersAlive: number;
  workersTotal: number;
  redis: "up" | "unreachable";
  kills: number;
  restarts: number;
  /** Set on the last picture: documents finished (completed or dead) per second over the run. */
  overallRate?: number;
}

function pad(value: string | number, width: number): string {
  return String(value).padStart(width);
}

/** The view as lines of text. Pure, so it is tested without a terminal. */
export function renderSnapshot(s: Snapshot): string[] {
  const lines = [
    `${"stage".padEnd(9)}${pad("queued", 8)}${pad("working", 9)}${pad("done", 7)}${pad("retried", 9)}${pad("dead", 6)}${pad(`docs/s last ${RATE_WINDOW_MS / 1000} s`, 18)}`,
  ];
  for (const r of s.rows) {
    lines.push(
      `${r.stage.padEnd(9)}${pad(r.queued, 8)}${pad(r.inProgress, 9)}${pad(r.done, 7)}${pad(r.retried, 9)}${pad(r.dead, 6)}${pad(r.rate.toFixed(1), 18)}`,
    );
  }
  const completed = s.rows.find((r) => r.stage === "embed")?.done ?? 0;
  const dead = s.rows.reduce((sum, r) => sum + r.dead, 0);
  const faults =
    s.kills + s.restarts > 0 ? `  chaos: ${s.kills} kills, ${s.restarts} restarts` : "";
  lines.push(
    `${(s.elapsedMs / 1000).toFixed(1)}s  accepted ${s.accepted}/${s.submitted}  completed ${completed}  dead ${dead}  workers ${s.workersAlive}/${s.workersTotal}  redis ${s.redis}${faults}`,
  );
  if (s.overallRate !== undefined) lines.push(overallLine(s));
  return lines;
}

function overallLine(s: Snapshot): string {
  return `whole run: ${(s.overallRate ?? 0).toFixed(1)} docs/s over ${(s.elapsedMs / 1000).toFixed(1)} s`;
}

/** Documents finished per second over the run: completed by the last stage or dead-lettered. */
export function overallRate(rows: StageRow[], elapsedMs: number): number {
  const completed = rows.find((r) => r.stage === "embed")?.done ?? 0;
  const dead = rows.reduce((sum, r) => sum + r.dead, 0);
  return elapsedMs > 0 ? (completed + dead) / (elapsedMs / 1000) : 0;
}

/** One line for logs and pipes. */
export function renderPlain(s: Snapshot): string {
  const stages = s.rows
    .map((r) => `${r.stage} q${r.queued} w${r.inProgress} d${r.done} r${r.retried} x${r.dead}`)
    .join(" | ");
  const completed = s.rows.find((r) => r.stage === "embed")?.done ?? 0;
  const overall = s.overallRate !== undefined ? ` | ${overallLine(s)}` : "";
  return `[${(s.elapsedMs / 1000).toFixed(1)}s] accepted ${s.accepted}/${s.submitted} completed ${completed} | ${stages} | workers ${s.workersAlive}/${s.workersTotal} redis ${s.redis}${overall}`;
}

interface Counts {
  rows: StageRow[];
  at: number;
  /** Earlier readings of each stage's done count, as far back as the rate window. */
  history: { at: number; done: number[] }[];
}

/** Per-stage rate from the oldest reading still inside the window to the newest. */
export function windowRates(history: Counts["history"]): number[] {
  const first = history[0];
  const last = history.at(-1);
  if (!first || !last || last.at <= first.at) return last?.done.map(() => 0) ?? [];
  const seconds = (last.at - first.at) / 1000;
  return last.done.map((done, i) => (done - (first.done[i] ?? 0)) / seconds);
}

/** The readings to keep: the newest, and the older ones that still reach into the window. */
export function trimHistory(history: Counts["history"], windowMs = RATE_WINDOW_MS) {
  const now = history.at(-1)?.at ?? 0;
  // Keep one reading at or before the window's start, so the rate spans the whole window.
  let from = 0;
  while (from + 1 < history.length && (history[from + 1]?.at ?? now) <= now - windowMs) from++;
  return history.slice(from);
}

/** Reads the counters; throws when Redis is unreachable. */
export async function readRows(
  client: Redis,
  keys: PipelineKeys,
  previous?: Counts,
): Promise<Counts> {
  const [stats, ...groups] = await Promise.all([
    client.hGetAll(keys.stats),
    ...STAGES.map((stage) => client.xInfoGroups(keys.stream(stage))),
  ]);
  const at = performance.now();
  const done = STAGES.map((stage) => Number(stats[`${stage}:done`] ?? 0));
  const history = trimHistory([...(previous?.history ?? []), { at, done }]);
  const rates = windowRates(history);
  const rows = STAGES.map((stage, i): StageRow => {
    const info = (groups[i] as unknown as Record<string, unknown>[]).find(
      (g) => String(g.name) === stage,
    );
    return {
      stage,
      queued: Number(info?.lag ?? 0),
      inProgress: Number(info?.pending ?? 0),
      done: done[i] ?? 0,
      retried: Number(stats[`${stage}:retried`] ?? 0),
      dead: Number(stats[`${stage}:dead`] ?? 0),
      rate: rates[i] ?? 0,
    };
  });
  return { rows, at, history };
}

export interface ViewSource {
  client: Redis;
  keys: PipelineKeys;
  /** Everything the view shows besides the stage rows. */
  status(): Omit<Snapshot, "rows" | "redis" | "elapsedMs">;
}

/** Draws the view until stop(); `write` is process.stdout.write unless testing. */
export function startView(
  source: ViewSource,
  options: { tty: boolean; intervalMs: number; write: (text: string) => void },
) {
  const started = performance.now();
  let counts: Counts | undefined;
  let drawn = 0;
  let redis: Snapshot["redis"] = "up";
  let busy = false;
  let final = false;
  const draw = () => {
    const rows = counts?.rows ?? [];
    const elapsedMs = performance.now() - started;
    const snapshot: Snapshot = {
      ...source.status(),
      rows,
      redis,
      elapsedMs,
      overallRate: final ? overallRate(rows, elapsedMs) : undefined,
    };
    if (options.tty) {
      const lines = renderSnapshot(snapshot);
      const up = drawn > 0 ? `\x1b[${drawn}A\r\x1b[0J` : "";
      options.write(`${up}${lines.join("\n")}\n`);
      drawn = lines.length;
    } else {
      options.write(`${renderPlain(snapshot)}\n`);
    }
  };
  const tick = async () => {
    if (busy) {
      // The last read is still waiting: node-redis holds commands while it reconnects.
      redis = "unreachable";
      draw();
      return;
    }
    busy = true;
    try {
      counts = await readRows(source.client, source.keys, counts);
      redis = "up";
    } catch {
      redis = "unreachable";
    } finally {
      busy = false;
    }
    draw();
  };
  const timer = setInterval(() => void tick(), options.intervalMs);
  return {
    async stop() {
      // The pipeline stops it when the run ends and again in its cleanup.
      if (final) return;
      clearInterval(timer);
      final = true;
      // One last picture of the end state, with the whole run's rate.
      if (busy) draw();
      else await tick();
    },
  };
}
