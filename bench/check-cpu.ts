/**
 * Where one self-verification run's CPU goes, phase by phase, as test/lessons.test.ts runs it:
 * a private server, the check's process booted until it waits for its go, the tests, the
 * cleanup and the "nothing left" proof, then the server's stop. CPU seconds (user + system of
 * this process and of every child it reaped in that phase), not wall time: other work on the
 * machine changes wall time, not the CPU a run costs. The server's own CPU is counted when it
 * is reaped, at its stop.
 *
 *   npm run bench -- check-cpu              BENCH_CPU_RUNS="01:solution,13:solution" BENCH_RUNS=3
 *
 * A run is `<lesson number>:<solution|starter|mistake name>`.
 */
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { type Lesson, loadCatalog } from "../src/catalog.ts";
import { runCheck } from "../src/check/run.ts";
import { startStandby } from "../src/check/standby.ts";
import type { CheckTarget } from "../src/check/verdict.ts";
import { openRedisTarget } from "../src/redis/target.ts";
import { expectNothingLeft } from "../test/support/leftovers.ts";
import { printTable } from "./table.ts";

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const WANTED = (process.env.BENCH_CPU_RUNS ?? "01:solution,01:starter").split(",");
/**
 * Where this process's CPU time is counted whole: its cpuacct cgroup (v1) when it has one of its
 * own, since a check's test process is SIGKILLed with its group and never reaped by its parent,
 * so its CPU reaches no rusage. Run as
 *   mkdir /sys/fs/cgroup/cpuacct/bench; sh -c 'echo $$ > /sys/fs/cgroup/cpuacct/bench/cgroup.procs;
 *   exec node --import tsx bench/check-cpu.ts'
 */
function cgroupUsage(): string | undefined {
  const line = readFileSync("/proc/self/cgroup", "utf8")
    .split("\n")
    .find((l) => /:cpuacct(,|:)|:cpu,cpuacct:/.test(l));
  const path = line?.slice(line.lastIndexOf(":") + 1);
  return path && path !== "/" ? `/sys/fs/cgroup/cpuacct${path}/cpuacct.usage` : undefined;
}
const USAGE = cgroupUsage();
if (!USAGE) console.warn("No cpuacct cgroup of our own: the test processes' CPU is not counted.");

/** CPU seconds of this process and every process it started, so far. */
function cpu(): number {
  if (USAGE) return Number(readFileSync(USAGE, "utf8")) / 1e9;
  const own = process.cpuUsage();
  const stat = readFileSync("/proc/self/stat", "latin1");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // cutime and cstime (fields 16 and 17), in ticks of 1/100 s.
  return (own.user + own.system) / 1e6 + (Number(fields[13]) + Number(fields[14])) / 100;
}

/** This process's own CPU seconds: the harness's share (polling, tracing, cleanup). */
function ownCpu(): number {
  const own = process.cpuUsage();
  return (own.user + own.system) / 1e6;
}

type Phases = Map<string, { all: number[]; own: number[] }>;

async function phase<T>(into: Phases, name: string, work: () => Promise<T>) {
  const [before, ownBefore] = [cpu(), ownCpu()];
  const result = await work();
  const entry = into.get(name) ?? { all: [], own: [] };
  entry.all.push(cpu() - before);
  entry.own.push(ownCpu() - ownBefore);
  into.set(name, entry);
  return result;
}

const median = (values: number[]) =>
  Math.round(([...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0) * 1000);

function targetOf(lesson: Lesson, which: string): CheckTarget {
  if (which === "solution" || which === "starter") {
    return { kind: which, file: lesson[which], label: which };
  }
  const mistake = lesson.mistakes.find((m) => m.name === which);
  if (!mistake) throw new Error(`lesson ${lesson.number} has no mistake "${which}"`);
  return { kind: "mistake", file: mistake.file, label: which };
}

const catalog = loadCatalog();
const rows: Record<string, string | number>[] = [];
for (const wanted of WANTED) {
  const [number, which = "solution"] = wanted.split(":");
  const lesson = catalog.find((l) => l.number === number);
  if (!lesson) throw new Error(`no lesson ${number}`);
  const target = targetOf(lesson, which);
  const phases: Phases = new Map();
  let status = "";
  for (let i = 0; i < RUNS; i++) {
    const redis = await phase(phases, "server start", () => openRedisTarget({}));
    try {
      await phase(phases, "check process boot", async () => {
        const standby = startStandby(lesson, lesson.solution, redis);
        while (!standby.waiting() && standby.usable()) await sleep(5);
        await standby.dispose();
      });
      // The file's compile errors are the suite's (one compiler run per lesson): not this run's.
      const verdict = await phase(phases, "whole runCheck", () =>
        runCheck(lesson, target, redis, { typecheck: async () => [] }),
      );
      status = verdict.status;
      await phase(phases, "expectNothingLeft", () => expectNothingLeft(redis.url));
    } finally {
      await phase(phases, "server stop (its whole CPU)", () => redis.release());
    }
  }
  for (const [name, { all, own }] of phases) {
    rows.push({
      run: `${lesson.number} ${which}`,
      verdict: status,
      phase: name,
      "CPU ms": median(all),
      "harness's own ms": median(own),
    });
  }
}
printTable(`CPU per self-verification run (median of ${RUNS})`, rows);
