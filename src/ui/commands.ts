/**
 * The plain commands, for scripts, CI and people who prefer them: every action of the guided
 * runner, with --json wherever the output is data.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { relative } from "node:path";
import { pathToFileURL } from "node:url";
import kleur from "kleur";
import { type ParsedArgs, UsageError } from "../args.ts";
import { describeLessons, findLesson, type Lesson } from "../catalog.ts";
import { renderVerdict } from "../check/render.ts";
import { runCheck } from "../check/run.ts";
import { type CheckTarget, exitCode, type Verdict } from "../check/verdict.ts";
import { WarmChecks } from "../check/warm.ts";
import { ROOT } from "../paths.ts";
import { loadProgress, markHintSeen, markPassed, markPeeked, setCurrent } from "../progress.ts";
import { deletePrefixedKeys, openRedisTarget, type RedisTarget } from "../redis/target.ts";
import { ensureLearnerCopy, learnerFile, resetLearnerCopy } from "../workspace.ts";
import { learnerTarget } from "./check-learner.ts";
import { doneCount, lessonState, suggestedLesson, tierName } from "./course.ts";
import { renderDiff } from "./diff.ts";
import { onExit } from "./exit.ts";
import { progressBar, screenWidth, terminalWidth, wrap } from "./term.ts";
import { Rechecks, readSources, watchForSaves } from "./watch.ts";

/** The named lesson, or without a name the one the learner is on. */
export function lessonFrom(lessons: Lesson[], query: string | undefined): Lesson {
  if (!query) {
    const lesson = suggestedLesson(lessons, loadProgress());
    if (!lesson) throw new UsageError("There are no lessons yet.");
    return lesson;
  }
  const lesson = findLesson(lessons, query);
  if (!lesson) {
    throw new UsageError(`There is no lesson "${query}". Lessons: ${describeLessons(lessons)}.`);
  }
  return lesson;
}

/** Text for a terminal is wrapped to fit it; piped output is left as is. */
function print(text: string): void {
  console.log(process.stdout.isTTY ? wrap(text, screenWidth()).join("\n") : text);
}

/** Opens the Redis target and releases it on every way out, Ctrl+C included. */
export async function withRedis<T>(work: (redis: RedisTarget) => Promise<T>): Promise<T> {
  const redis = await openRedisTarget();
  const forget = onExit(() => redis.release());
  try {
    return await work(redis);
  } finally {
    forget();
    await redis.release();
  }
}

function targetFor(lesson: Lesson, args: ParsedArgs): CheckTarget {
  const { flags, options } = args;
  if (flags.has("--solution")) {
    return { kind: "solution", file: lesson.solution, label: "the solution" };
  }
  if (flags.has("--starter")) {
    return { kind: "starter", file: lesson.starter, label: "the starter" };
  }
  const mistakeName = options.get("--mistake");
  if (mistakeName) {
    const mistake = lesson.mistakes.find((m) => m.name === mistakeName);
    if (!mistake) {
      const names = lesson.mistakes.map((m) => m.name).join(", ");
      throw new UsageError(`Lesson ${lesson.number} has no mistake "${mistakeName}": ${names}.`);
    }
    return { kind: "mistake", file: mistake.file, label: `mistake: ${mistake.name}` };
  }
  const variantName = options.get("--variant");
  if (variantName) {
    const variant = lesson.variants.find((v) => v.name === variantName);
    if (!variant) {
      const names = lesson.variants.map((v) => v.name).join(", ") || "none yet";
      throw new UsageError(`Lesson ${lesson.number} has no variant "${variantName}": ${names}.`);
    }
    return { kind: "variant", file: variant.file, label: `variant: ${variant.name}` };
  }
  const { file, created } = ensureLearnerCopy(lesson);
  setCurrent(lesson.id);
  if (created && !flags.has("--json")) {
    console.log(kleur.dim(`Made your copy of the exercise: ${relative(ROOT, file)}\n`));
  }
  return learnerTarget(file);
}

function recordPass(lesson: Lesson, verdict: Verdict): void {
  if (verdict.status === "passed" && verdict.target === "learner") markPassed(lesson.id);
}

function printVerdict(lesson: Lesson, verdict: Verdict, args: ParsedArgs): void {
  if (args.flags.has("--json")) {
    console.log(JSON.stringify(verdict));
    return;
  }
  print(renderVerdict(verdict, { verbose: args.flags.has("--verbose") }));
  if (verdict.status === "passed" && verdict.target === "learner") {
    print(kleur.green(`\nYou can now: ${lesson.learned}`));
  }
}

export async function check(lessons: Lesson[], args: ParsedArgs): Promise<number> {
  const lesson = lessonFrom(lessons, args.lesson);
  const target = targetFor(lesson, args);
  let kept: string[] = [];
  const verdict = await withRedis(async (redis) => {
    let prefix: string | undefined;
    const keepFailed = (kept: string) => {
      prefix = kept;
    };
    const decided = await runCheck(lesson, target, redis, {
      keepFailed: args.flags.has("--keep") ? keepFailed : undefined,
    });
    // node-redis is loaded only here and in the check's own process: see src/redis/target.ts.
    if (prefix) kept = await (await import("./keep.ts")).keepFailedRun(redis, prefix, lesson);
    return decided;
  });
  recordPass(lesson, verdict);
  printVerdict(lesson, verdict, args);
  if (args.flags.has("--keep") && kept.length === 0) {
    kept = ["", (await import("./keep.ts")).nothingKept(verdict)];
  }
  // After the JSON line, on stderr: stdout stays one verdict a script can parse.
  if (kept.length > 0) (args.flags.has("--json") ? console.error : print)(kept.join("\n"));
  return exitCode(verdict);
}

/**
 * Watch without the guided screen (no terminal, or --json): check now and after every save,
 * printing each verdict, until interrupted.
 */
export async function plainWatch(lessons: Lesson[], args: ParsedArgs): Promise<number> {
  const lesson = lessonFrom(lessons, args.lesson);
  const target = targetFor(lesson, args);
  const redis = await openRedisTarget();
  onExit(() => redis.release());
  const warm = new WarmChecks();
  onExit(() => warm.close());
  const json = args.flags.has("--json");
  const rechecks = new Rechecks(() => readSources(target.file));
  const run = async (): Promise<void> => {
    rechecks.started();
    if (!json) console.log(kleur.dim(`\nChecking ${relative(ROOT, target.file)}…`));
    const verdict = await runCheck(lesson, target, redis, { warm });
    recordPass(lesson, verdict);
    printVerdict(lesson, verdict, args);
    if (!json) console.log(kleur.dim("Watching: save the file to check again (Ctrl+C stops)."));
    if (rechecks.finished()) await run();
  };
  watchForSaves(target.file, () => {
    if (rechecks.requested()) void run();
  });
  await run();
  // Runs until Ctrl+C, which goes through the clean exit.
  return new Promise<number>(() => {});
}

export function list(lessons: Lesson[], args: ParsedArgs): number {
  const progress = loadProgress();
  if (args.flags.has("--json")) {
    const rows = lessons.map((l) => ({
      number: l.number,
      slug: l.slug,
      title: l.title,
      state: lessonState(l, progress),
      done: Boolean(progress.done[l.id]),
      hintsSeen: progress.hints[l.id] ?? 0,
      hasQuiz: Boolean(l.quiz),
    }));
    console.log(JSON.stringify(rows));
    return 0;
  }
  for (const lesson of lessons) {
    const state = lessonState(lesson, progress);
    const mark =
      state === "done" ? kleur.green("✓") : state === "current" ? kleur.cyan("›") : kleur.dim("·");
    print(`${mark} ${lesson.number}  ${lesson.title}`);
  }
  print(
    kleur.dim(`${kleur.green("✓")} done  ${kleur.cyan("›")} in progress, not passed yet  · to do`),
  );
  console.log(`\n${progressBar(doneCount(lessons, progress), lessons.length)}`);
  const next = suggestedLesson(lessons, progress);
  if (next && !progress.done[next.id]) console.log(`Next: npm run check -- ${next.number}`);
  return 0;
}

export function hint(lessons: Lesson[], args: ParsedArgs): number {
  const lesson = lessonFrom(lessons, args.lesson);
  const progress = loadProgress();
  const requested = args.options.get("--level");
  const level = requested
    ? Number(requested)
    : Math.min((progress.hints[lesson.id] ?? 0) + 1, lesson.hints.length);
  const chosen = lesson.hints[level - 1];
  if (!Number.isInteger(level) || !chosen) {
    throw new UsageError(`Lesson ${lesson.number} has hints 1 to ${lesson.hints.length}.`);
  }
  markHintSeen(lesson.id, level);
  if (args.flags.has("--json")) {
    console.log(
      JSON.stringify({
        lesson: lesson.id,
        level,
        of: lesson.hints.length,
        tier: chosen.level,
        text: chosen.text,
      }),
    );
    return 0;
  }
  print(kleur.bold(`Hint ${level} of ${lesson.hints.length} (${tierName(chosen.level)}):`));
  print(chosen.text);
  const next =
    level < lesson.hints.length
      ? `Next: \`npm run hint -- ${lesson.number}\` for hint ${level + 1}, or try the check again.`
      : `Next: \`npm run check -- ${lesson.number}\`.`;
  print(`\n${next}`);
  return 0;
}

export function reset(lessons: Lesson[], args: ParsedArgs): number {
  const lesson = lessonFrom(lessons, args.lesson);
  const { file, backup, older } = resetLearnerCopy(lesson);
  setCurrent(lesson.id);
  if (args.flags.has("--json")) {
    console.log(
      JSON.stringify({
        lesson: lesson.id,
        file,
        backup: backup ?? null,
        olderBackup: older ?? null,
      }),
    );
    return 0;
  }
  print(`Restored the starter: ${relative(ROOT, file)}`);
  if (backup) print(`Your previous code is kept in ${relative(ROOT, backup)}.`);
  if (older) print(`The backup before it is now ${relative(ROOT, older)}.`);
  print(`Next: edit the file, then \`npm run check -- ${lesson.number}\`.`);
  return 0;
}

export function solution(lessons: Lesson[], args: ParsedArgs): number {
  const lesson = lessonFrom(lessons, args.lesson);
  const passed = Boolean(loadProgress().done[lesson.id]);
  if (!passed && !args.flags.has("--force")) {
    const message = `The solution unlocks when your check passes. To see it anyway: \`npm run solution -- ${lesson.number} --force\`.`;
    if (args.flags.has("--json"))
      console.log(JSON.stringify({ lesson: lesson.id, locked: true, message }));
    else print(message);
    return 1;
  }
  if (!passed) markPeeked(lesson.id);
  const code = readFileSync(lesson.solution, "utf8");
  const mine = (() => {
    try {
      return readFileSync(learnerFile(lesson), "utf8");
    } catch {
      return undefined;
    }
  })();
  if (args.flags.has("--json")) {
    const diff =
      mine === undefined
        ? null
        : renderDiff(mine, code, { before: "your code", after: "the solution" }, 10_000).join("\n");
    console.log(JSON.stringify({ lesson: lesson.id, file: lesson.solution, solution: code, diff }));
    return 0;
  }
  if (mine === undefined || args.flags.has("--full")) {
    console.log(kleur.dim(`// ${relative(ROOT, lesson.solution)}`));
    console.log(code);
    return 0;
  }
  const width = process.stdout.isTTY ? terminalWidth() : 10_000;
  const diff = renderDiff(
    mine,
    code,
    { before: `your code (${relative(ROOT, learnerFile(lesson))})`, after: "the solution" },
    width,
  );
  console.log(diff.length > 0 ? diff.join("\n") : "Your code is the same as the solution.");
  print(kleur.dim(`\nThe whole file: \`npm run solution -- ${lesson.number} --full\`.`));
  return 0;
}

export async function doctor(lessons: Lesson[], args: ParsedArgs): Promise<number> {
  const { diagnose, renderFindings } = await import("../doctor.ts");
  const findings = await diagnose(lessons);
  const failed = findings.some((f) => f.status === "fail");
  if (args.flags.has("--json")) console.log(JSON.stringify({ ok: !failed, findings }));
  else console.log(renderFindings(findings, screenWidth()));
  return failed ? 1 : 0;
}

/**
 * Runs lessons/NN-slug/demo.ts: its default export gets a Redis URL and a key prefix, and must
 * finish on its own.
 */
export async function demo(lessons: Lesson[], args: ParsedArgs): Promise<number> {
  const lesson = lessonFrom(lessons, args.lesson);
  const file = lesson.demo;
  if (!file) {
    const withDemo = lessons.filter((l) => l.demo);
    throw new UsageError(
      `Lesson ${lesson.number} has no demo. Demos: ${withDemo.map((l) => l.number).join(", ") || "none yet"}.`,
    );
  }
  const module = (await import(pathToFileURL(file).href)) as {
    default: (redisUrl: string, prefix: string) => Promise<void>;
  };
  await withRedis(async (redis) => {
    const prefix = `wb:demo:${randomBytes(3).toString("hex")}:`;
    try {
      await module.default(redis.url, prefix);
    } finally {
      await deletePrefixedKeys(redis.url, prefix).catch(() => 0);
    }
  });
  return 0;
}
