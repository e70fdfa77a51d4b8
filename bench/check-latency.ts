/**
 * Where the wait for a verdict goes, phase by phase: starting node (with and without tsx), the
 * private server, type-checking the file (a new compiler, or the warm one watch mode keeps),
 * booting the check's process up to where it waits for the go (./src/check/standby.ts), and
 * whole checks of lesson 01's solution, cold (as `npm run check`) and warm (as after a save).
 *
 *   npm run bench -- check-latency          BENCH_RUNS=5 samples per phase
 */
import { spawnSync } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { loadLesson } from "../src/catalog.ts";
import { runCheck } from "../src/check/run.ts";
import { startStandby } from "../src/check/standby.ts";
import { typecheck } from "../src/check/typecheck.ts";
import { WarmChecks } from "../src/check/warm.ts";
import { startPrivateServer } from "../src/redis/server.ts";
import { openRedisTarget } from "../src/redis/target.ts";
import { percentile, printTable, timed } from "./table.ts";

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const lesson = loadLesson("01-connect");
const solution = { kind: "solution", file: lesson.solution, label: "solution" } as const;

async function sample(label: string, work: () => Promise<unknown>) {
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) times.push((await timed(work))[1]);
  times.sort((a, b) => a - b);
  return {
    phase: label,
    runs: RUNS,
    "min ms": times[0] ?? 0,
    "p50 ms": percentile(times, 50),
    "max ms": times[times.length - 1] ?? 0,
  };
}

const node = (args: string[]) => async () => {
  spawnSync(process.execPath, [...args, "-e", "0"]);
};

const rows = [
  await sample("start node", node([])),
  await sample("start node --import tsx", node(["--import", "tsx"])),
  await sample("start + stop private redis-server", async () =>
    (await startPrivateServer()).stop(),
  ),
  await sample("type-check one exercise (new tsc)", () => typecheck(lesson.solution)),
];
const redis = await openRedisTarget({});
const warm = new WarmChecks();
try {
  await warm.warmUp(lesson.solution);
  rows.push(
    await sample("type-check one exercise (warm)", () => warm.typecheck(lesson.solution)),
    await sample("boot a check's process until it waits", async () => {
      const standby = startStandby(lesson, lesson.solution, redis);
      while (!standby.waiting() && standby.usable()) await sleep(5);
      await standby.dispose();
    }),
    await sample("whole check, lesson 01 solution, cold", () => runCheck(lesson, solution, redis)),
  );
  // Warm: the next run's process has booted, as it has by the time a learner saves again.
  await runCheck(lesson, solution, redis, { warm });
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    while (!warm.waiting()) await sleep(5);
    times.push((await timed(() => runCheck(lesson, solution, redis, { warm })))[1]);
  }
  times.sort((a, b) => a - b);
  rows.push({
    phase: "whole check, lesson 01 solution, warm",
    runs: RUNS,
    "min ms": times[0] ?? 0,
    "p50 ms": percentile(times, 50),
    "max ms": times.at(-1) ?? 0,
  });
} finally {
  await warm.close();
  await redis.release();
}
printTable(`Check latency (${RUNS} runs each)`, rows);
