/**
 * `npm run mutate -- NN [NN ...] [--operators await,delete,swap,condition] [--jobs 2] [--json]`
 *
 * Mutation testing of the lessons' checks: each mutant of a lesson's reference solution
 * (./mutants.ts) is written into a scratch workspace and the lesson's check is run on it, the
 * way test/lessons.test.ts runs it (runCheck, a private server per run, the lesson's files
 * type-checked in one compiler run). A mutant the check passes is a survivor: a wrong answer the
 * check accepts, unless checks/NN-slug/mutants-equivalent.json lists it as a change that changes
 * nothing, with why. Exits 1 when a survivor is not in that list. Slow (seconds per mutant): not
 * part of `npm test`.
 */
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { setPriority } from "node:os";
import { basename, dirname, join, relative } from "node:path";
import { parseArgs } from "node:util";
import { describeLessons, findLesson, type Lesson, loadCatalog } from "../catalog.ts";
import { removeOnExit } from "../check/cleanup.ts";
import { runCheck } from "../check/run.ts";
import { type Diagnostic, typecheckMany } from "../check/typecheck.ts";
import type { Verdict } from "../check/verdict.ts";
import { CHECKS_DIR, ROOT } from "../paths.ts";
import { openRedisTarget } from "../redis/target.ts";
import { type Mutant, mutants, OPERATORS, type Operator } from "./mutants.ts";

/** One entry of checks/NN-slug/mutants-equivalent.json. */
export interface Equivalent {
  /** The mutant's key, as this tool prints it ("swap: swap `a` with the next statement `b`"). */
  mutant: string;
  /** Why no learner or production system would notice the change. */
  reason: string;
}

type Outcome = "killed" | "killed (compile)" | "survived" | "equivalent" | "error";

interface Result {
  operator: Operator;
  line: number;
  description: string;
  key: string;
  outcome: Outcome;
  /** The failed test and its message (killed), the compile error, or why it could not run. */
  detail?: string;
  /** Why it is known-equivalent. */
  reason?: string;
  durationMs?: number;
}

const USAGE = `usage: npm run mutate -- NN [NN ...] [--operators ${OPERATORS.join(",")}] [--jobs 2] [--json]
       [--match TEXT] only the mutants whose key contains TEXT; [--list] list them, run nothing`;

export function equivalentFile(lesson: Lesson): string {
  return join(CHECKS_DIR, lesson.id, "mutants-equivalent.json");
}

function readEquivalents(lesson: Lesson): Equivalent[] {
  const file = equivalentFile(lesson);
  if (!existsSync(file)) return [];
  return JSON.parse(readFileSync(file, "utf8")) as Equivalent[];
}

/** Runs `work` on every item, at most `jobs` at once. */
async function pool<T>(items: T[], jobs: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await work(item);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, jobs) }, worker));
}

function firstFailure(verdict: Verdict): string {
  const failed = verdict.tests.find((t) => t.status === "failed");
  const text = failed ? `${failed.name}: ${failed.message ?? ""}` : (verdict.reason ?? "");
  return text.replace(/\s+/g, " ").slice(0, 240);
}

async function judge(lesson: Lesson, file: string, mutant: Mutant): Promise<Partial<Result>> {
  const redis = await openRedisTarget({});
  try {
    const verdict = await runCheck(
      lesson,
      { kind: "mistake", file, label: `mutant: ${mutant.key}` },
      redis,
      {
        // Type-checked already, all of the lesson's mutants in one compiler run.
        typecheck: async () => [],
        // The first failed test kills the mutant: the rest cannot take that back.
        enough: (soFar) => soFar.status === "failed",
      },
    );
    const outcome: Outcome =
      verdict.status === "passed" ? "survived" : verdict.status === "failed" ? "killed" : "error";
    return {
      outcome,
      detail: outcome === "survived" ? undefined : firstFailure(verdict),
      durationMs: verdict.durationMs,
    };
  } finally {
    await redis.release();
  }
}

function compileErrors(diagnostics: Diagnostic[]): string {
  return diagnostics
    .slice(0, 2)
    .map((d) => `${d.line}:${d.column} ${d.message.split("\n")[0]}`)
    .join("; ");
}

interface LessonReport {
  lesson: string;
  file: string;
  results: Result[];
  /** Entries of the equivalent list that no mutant of the operators run matches any more. */
  stale: string[];
}

async function mutateLesson(
  lesson: Lesson,
  operators: Operator[],
  options: { jobs: number; match?: string; list: boolean; progress: (line: string) => void },
): Promise<LessonReport> {
  const source = readFileSync(lesson.solution, "utf8");
  const all = mutants(source, operators, basename(lesson.solution)).filter(
    (m) => !options.match || m.key.includes(options.match),
  );
  const equivalents = readEquivalents(lesson);
  const reasons = new Map(equivalents.map((e) => [e.mutant, e.reason]));
  const stale = equivalents
    .filter((e) => operators.some((op) => e.mutant.startsWith(`${op}:`)))
    .filter((e) => !options.match && !all.some((m) => m.key === e.mutant))
    .map((e) => e.mutant);
  const report: LessonReport = {
    lesson: lesson.id,
    file: relative(ROOT, lesson.solution),
    results: [],
    stale,
  };
  if (options.list) {
    report.results = all.map(({ text: _, ...m }) => ({ ...m, outcome: "survived" }));
    return report;
  }

  // Inside the repository, so that the mutant's `redis` import resolves as the learner's does;
  // beside a copy of the lesson's other solution files.
  const scratch = join(ROOT, ".tmp", "mutants", `${lesson.id}-${process.pid}`);
  const forget = removeOnExit(scratch);
  try {
    const files = all.map((mutant, i) => {
      const dir = join(scratch, String(i));
      mkdirSync(dir, { recursive: true });
      const solutions = dirname(lesson.solution);
      for (const other of readdirSync(solutions))
        copyFileSync(join(solutions, other), join(dir, other));
      const file = join(dir, basename(lesson.solution));
      writeFileSync(file, mutant.text);
      return file;
    });
    options.progress(`${lesson.id}: type-checking ${all.length} mutants`);
    const diagnostics =
      all.length > 0 ? await typecheckMany(files) : new Map<string, Diagnostic[]>();
    const unplaced = diagnostics.get("") ?? [];
    if (unplaced.length > 0) {
      throw new Error(`type errors outside the mutants: ${compileErrors(unplaced)}`);
    }
    const results: Result[] = all.map(({ text: _, ...m }) => ({ ...m, outcome: "killed" }));
    const toRun: number[] = [];
    for (const [i, result] of results.entries()) {
      const errors = diagnostics.get(files[i] as string) ?? [];
      if (errors.length > 0) {
        result.outcome = "killed (compile)";
        result.detail = compileErrors(errors);
      } else {
        toRun.push(i);
      }
    }
    let done = 0;
    await pool(toRun, options.jobs, async (i) => {
      const result = results[i] as Result;
      Object.assign(result, await judge(lesson, files[i] as string, all[i] as Mutant));
      const reason = reasons.get(result.key);
      if (result.outcome === "survived" && reason !== undefined) {
        result.outcome = "equivalent";
        result.reason = reason;
      }
      done++;
      options.progress(
        `${lesson.id} ${done}/${toRun.length} ${result.outcome.padEnd(10)} :${result.line} ${result.key}`,
      );
    });
    report.results = results;
    return report;
  } finally {
    rmSync(scratch, { recursive: true, force: true });
    forget();
  }
}

const COLUMNS = ["killed", "killed (compile)", "survived", "equivalent", "error"] as const;

function table(report: LessonReport, operators: Operator[]): string {
  const head = ["operator", "mutants", "killed", "compile", "survived", "equivalent", "error"];
  const rows = operators.map((op) => {
    const mine = report.results.filter((r) => r.operator === op);
    const count = (o: Outcome) => mine.filter((r) => r.outcome === o).length;
    const [killed, compile, survived, equivalent, error] = COLUMNS.map(count);
    return [op, mine.length, (killed ?? 0) + (compile ?? 0), compile, survived, equivalent, error];
  });
  const lines = [head, ...rows].map((row) =>
    row.map((cell, i) => (i === 0 ? String(cell).padEnd(10) : String(cell).padStart(11))).join(""),
  );
  return lines.map((line) => `  ${line}`).join("\n");
}

function printReport(report: LessonReport, operators: Operator[], list: boolean): void {
  console.log(`\n${report.lesson} (${report.file})`);
  if (list) {
    for (const r of report.results) console.log(`  ${report.file}:${r.line}  ${r.key}`);
    return;
  }
  console.log(table(report, operators));
  const survivors = report.results.filter((r) => r.outcome === "survived");
  const errors = report.results.filter((r) => r.outcome === "error");
  for (const r of survivors) console.log(`  SURVIVED ${report.file}:${r.line}  ${r.key}`);
  for (const r of errors)
    console.log(`  ERROR    ${report.file}:${r.line}  ${r.key}\n           ${r.detail}`);
  for (const key of report.stale)
    console.log(`  stale entry in ${report.lesson}/mutants-equivalent.json: ${key}`);
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      operators: { type: "string", default: OPERATORS.join(",") },
      jobs: { type: "string", default: "2" },
      json: { type: "boolean", default: false },
      list: { type: "boolean", default: false },
      match: { type: "string" },
    },
  });
  const operators = values.operators.split(",").map((s) => s.trim()) as Operator[];
  const unknown = operators.filter((op) => !OPERATORS.includes(op));
  const jobs = Number(values.jobs);
  if (positionals.length === 0 || unknown.length > 0 || !(jobs >= 1)) {
    console.error(unknown.length > 0 ? `unknown operator: ${unknown.join(", ")}\n${USAGE}` : USAGE);
    return 2;
  }
  const catalog = loadCatalog();
  const lessons = positionals.map((q) => {
    const lesson = findLesson(catalog, q);
    if (!lesson) throw new Error(`no lesson "${q}": ${describeLessons(catalog)}`);
    return lesson;
  });
  // Every run, its check process, the learner's workers and its redis-server inherit this: the
  // machine stays usable while mutants run.
  try {
    setPriority(10);
  } catch {
    // Not allowed here: run at the normal priority.
  }
  const progress = (line: string) => {
    if (!values.json) process.stderr.write(`${line}\n`);
  };
  const reports: LessonReport[] = [];
  for (const lesson of lessons) {
    const report = await mutateLesson(lesson, operators, {
      jobs,
      match: values.match,
      list: values.list,
      progress,
    });
    reports.push(report);
    if (!values.json) printReport(report, operators, values.list);
  }
  if (values.json) console.log(JSON.stringify({ operators, lessons: reports }, null, 2));
  if (values.list) return 0;
  const failing = reports.some((r) =>
    r.results.some((m) => m.outcome === "survived" || m.outcome === "error"),
  );
  return failing ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: Error) => {
    console.error(error.message);
    process.exitCode = 2;
  },
);
