/**
 * How long each lesson's check takes on its reference solution, the way a learner whose code is
 * right waits for "all checks passed". The budget: a median of at most 3 s over lessons 01-12,
 * none over 8 s, the capstone (13) at most 15 s. One shared private server, as watch mode has.
 *
 *   npm run bench -- check-per-lesson          BENCH_RUNS=5 for more samples per lesson
 */
import { loadCatalog } from "../src/catalog.ts";
import { runCheck } from "../src/check/run.ts";
import { openRedisTarget } from "../src/redis/target.ts";
import { percentile, printTable, timed } from "./table.ts";

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const CAPSTONE_BUDGET_MS = 15_000;
const LESSON_BUDGET_MS = 8_000;
const MEDIAN_BUDGET_MS = 3_000;

const redis = await openRedisTarget({});
const rows: Record<string, string | number>[] = [];
const medians: number[] = [];
try {
  for (const lesson of loadCatalog()) {
    const times: number[] = [];
    let status = "passed";
    for (let i = 0; i < RUNS; i++) {
      const [verdict, ms] = await timed(() =>
        runCheck(lesson, { kind: "solution", file: lesson.solution, label: "solution" }, redis),
      );
      if (verdict.status !== "passed") status = verdict.status;
      times.push(ms);
    }
    times.sort((a, b) => a - b);
    const p50 = percentile(times, 50);
    const budget = lesson.number === "13" ? CAPSTONE_BUDGET_MS : LESSON_BUDGET_MS;
    if (lesson.number !== "13") medians.push(p50);
    rows.push({
      lesson: lesson.id,
      verdict: status,
      "p50 ms": p50,
      "max ms": times.at(-1) ?? 0,
      "within budget": (times.at(-1) ?? 0) <= budget ? "yes" : `no (${budget} ms)`,
    });
  }
} finally {
  await redis.release();
}
medians.sort((a, b) => a - b);
const overall = percentile(medians, 50);
rows.push({
  lesson: "median of 01-12",
  verdict: "",
  "p50 ms": overall,
  "max ms": "",
  "within budget": overall <= MEDIAN_BUDGET_MS ? "yes" : `no (${MEDIAN_BUDGET_MS} ms)`,
});
printTable(`Check time on the reference solution (${RUNS} runs per lesson)`, rows);
