/**
 * How long a learner waits between saving and seeing a verdict, phase by phase: starting the
 * private server, type-checking their file, and the whole check run.
 */
import { loadLesson } from "../src/catalog.ts";
import { runCheck } from "../src/check/run.ts";
import { typecheck } from "../src/check/typecheck.ts";
import { startPrivateServer } from "../src/redis/server.ts";
import { openRedisTarget } from "../src/redis/target.ts";
import { percentile, printTable, timed } from "./table.ts";

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const lesson = loadLesson("01-connect");

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

const rows = [
  await sample("start + stop private redis-server", async () =>
    (await startPrivateServer()).stop(),
  ),
  await sample("type-check one exercise (tsc)", () => typecheck(lesson.solution)),
];
const redis = await openRedisTarget({});
try {
  rows.push(
    await sample("whole check, lesson 01 solution", () =>
      runCheck(lesson, { kind: "solution", file: lesson.solution, label: "solution" }, redis),
    ),
  );
} finally {
  await redis.release();
}
printTable(`Check latency (${RUNS} runs each)`, rows);
