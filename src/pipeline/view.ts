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
  /** Documents per second finished by this stage, recently. */
  rate: number;
}

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
}

function pad(value: string | number, width: number): string {
  return String(value).padStart(width);
}

/** The view as lines of text. Pure, so it is tested without a terminal. */
export function renderSnapshot(s: Snapshot): string[] {
  const lines = [
    `${"stage".padEnd(9)}${pad("queued", 8)}${pad("working", 9)}${pad("done", 7)}${pad("retried", 9)}${pad("dead", 6)}${pad("docs/s", 8)}`,
  ];
  for (const r of s.rows) {
    lines.push(
      `${r.stage.padEnd(9)}${pad(r.queued, 8)}${pad(r.inProgress, 9)}${pad(r.done, 7)}${pad(r.retried, 9)}${pad(r.dead, 6)}${pad(r.rate.toFixed(1), 8)}`,
    );
  }
  const completed = s.rows.find((r) => r.stage === "embed")?.done ?? 0;
  const dead = s.rows.reduce((sum, r) => sum + r.dead, 0);
  const faults =
    s.kills + s.restarts > 0 ? `  chaos: ${s.kills} kills, ${s.restarts} restarts` : "";
  lines.push(
    `${(s.elapsedMs / 1000).toFixed(1)}s  accepted ${s.accepted}/${s.submitted}  completed ${completed}  dead ${dead}  workers ${s.workersAlive}/${s.workersTotal}  redis ${s.redis}${faults}`,
  );
  return lines;
}

/** One line for logs and pipes. */
export function renderPlain(s: Snapshot): string {
  const stages = s.rows
    .map((r) => `${r.stage} q${r.queued} w${r.inProgress} d${r.done} r${r.retried} x${r.dead}`)
    .join(" | ");
  const completed = s.rows.find((r) => r.stage === "embed")?.done ?? 0;
  return `[${(s.elapsedMs / 1000).toFixed(1)}s] accepted ${s.accepted}/${s.submitted} completed ${completed} | ${stages} | workers ${s.workersAlive}/${s.workersTotal} redis ${s.redis}`;
}

interface Counts {
  rows: StageRow[];
  at: number;
}

/** Reads the counters; throws when Redis is unreachable. */
export async function readRows(client: Redis, keys: PipelineKeys, previous?: Counts) {
  const [stats, ...groups] = await Promise.all([
    client.hGetAll(keys.stats),
    ...STAGES.map((stage) => client.xInfoGroups(keys.stream(stage))),
  ]);
  const at = performance.now();
  const rows = STAGES.map((stage, i): StageRow => {
    const info = (groups[i] as unknown as Record<string, unknown>[]).find(
      (g) => String(g.name) === stage,
    );
    const done = Number(stats[`${stage}:done`] ?? 0);
    const before = previous?.rows[i];
    const seconds = previous ? (at - previous.at) / 1000 : 0;
    const instant = before && seconds > 0 ? (done - before.done) / seconds : 0;
    return {
      stage,
      queued: Number(info?.lag ?? 0),
      inProgress: Number(info?.pending ?? 0),
      done,
      retried: Number(stats[`${stage}:retried`] ?? 0),
      dead: Number(stats[`${stage}:dead`] ?? 0),
      rate: before ? 0.6 * instant + 0.4 * before.rate : 0,
    };
  });
  return { rows, at };
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
  let lastDraw = 0;
  const draw = () => {
    lastDraw = performance.now();
    const snapshot: Snapshot = {
      ...source.status(),
      rows: counts?.rows ?? [],
      redis,
      elapsedMs: performance.now() - started,
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
      clearInterval(timer);
      // One last picture of the end state (in a log: unless one was just printed).
      const recent = performance.now() - lastDraw < options.intervalMs / 2;
      if (!busy && (options.tty || !recent)) await tick();
    },
  };
}
