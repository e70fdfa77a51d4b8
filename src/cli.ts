import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { relative } from "node:path";
import { pathToFileURL } from "node:url";
import kleur from "kleur";
import { parseArgs, USAGE, UsageError } from "./args.ts";
import { describeLessons, findLesson, type Lesson, loadCatalog } from "./catalog.ts";
import { renderVerdict } from "./check/render.ts";
import { runCheck } from "./check/run.ts";
import { type CheckTarget, exitCode } from "./check/verdict.ts";
import { startMenu } from "./menu.ts";
import { ROOT } from "./paths.ts";
import { loadProgress, updateProgress } from "./progress.ts";
import { redact } from "./redis/redact.ts";
import { deletePrefixedKeys, openRedisTarget, type RedisTarget } from "./redis/target.ts";
import { ensureLearnerCopy, resetLearnerCopy } from "./workspace.ts";

function lessonFrom(lessons: Lesson[], query: string | undefined): Lesson {
  if (!query) throw new UsageError(`Name a lesson: ${describeLessons(lessons)}.`);
  const lesson = findLesson(lessons, query);
  if (!lesson) {
    throw new UsageError(`There is no lesson "${query}". Lessons: ${describeLessons(lessons)}.`);
  }
  return lesson;
}

function targetFor(lesson: Lesson, flags: Set<string>, options: Map<string, string>): CheckTarget {
  if (flags.has("--solution")) {
    return { kind: "solution", file: lesson.solution, label: "the solution" };
  }
  if (flags.has("--starter"))
    return { kind: "starter", file: lesson.starter, label: "the starter" };
  const mistakeName = options.get("--mistake");
  if (mistakeName) {
    const mistake = lesson.mistakes.find((m) => m.name === mistakeName);
    if (!mistake) {
      const names = lesson.mistakes.map((m) => m.name).join(", ");
      throw new UsageError(`Lesson ${lesson.number} has no mistake "${mistakeName}": ${names}.`);
    }
    return { kind: "mistake", file: mistake.file, label: `mistake: ${mistake.name}` };
  }
  const { file, created } = ensureLearnerCopy(lesson);
  if (created && !flags.has("--json")) {
    console.log(kleur.dim(`Made your copy of the exercise: ${relative(ROOT, file)}\n`));
  }
  return { kind: "learner", file, label: "your code" };
}

/** Opens the Redis target and always releases it, whatever `work` does. */
export async function withRedis<T>(work: (redis: RedisTarget) => Promise<T>): Promise<T> {
  const redis = await openRedisTarget();
  try {
    return await work(redis);
  } finally {
    await redis.release();
  }
}

async function check(lessons: Lesson[], args: ReturnType<typeof parseArgs>): Promise<number> {
  const lesson = lessonFrom(lessons, args.lesson);
  const target = targetFor(lesson, args.flags, args.options);
  const verdict = await withRedis((redis) => runCheck(lesson, target, redis));
  if (verdict.status === "passed" && target.kind === "learner") {
    updateProgress((p) => {
      p.done[lesson.id] ??= new Date().toISOString();
      p.current = lesson.id;
    });
  }
  if (args.flags.has("--json")) {
    console.log(JSON.stringify(verdict));
  } else {
    console.log(renderVerdict(verdict, { verbose: args.flags.has("--verbose") }));
    if (verdict.status === "passed" && target.kind === "learner") {
      console.log(kleur.green(`\nYou can now: ${lesson.learned}`));
    }
  }
  return exitCode(verdict);
}

function list(lessons: Lesson[], json: boolean): number {
  const progress = loadProgress();
  if (json) {
    const rows = lessons.map((l) => ({
      number: l.number,
      slug: l.slug,
      title: l.title,
      done: Boolean(progress.done[l.id]),
    }));
    console.log(JSON.stringify(rows));
    return 0;
  }
  for (const lesson of lessons) {
    const done = progress.done[lesson.id];
    const mark = done ? kleur.green("✓") : progress.current === lesson.id ? kleur.cyan("›") : " ";
    console.log(`${mark} ${lesson.number}  ${lesson.title}`);
  }
  const count = lessons.filter((l) => progress.done[l.id]).length;
  console.log(`\n${count} of ${lessons.length} lessons done.`);
  return 0;
}

function hint(lessons: Lesson[], args: ReturnType<typeof parseArgs>): number {
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
  updateProgress((p) => {
    p.hints[lesson.id] = Math.max(p.hints[lesson.id] ?? 0, level);
  });
  console.log(kleur.bold(`Hint ${level} of ${lesson.hints.length} (${chosen.level}):`));
  console.log(chosen.text);
  const next =
    level < lesson.hints.length
      ? `Next: \`npm run hint -- ${lesson.number}\` for hint ${level + 1}, or try the check again.`
      : `Next: \`npm run check -- ${lesson.number}\`.`;
  console.log(`\n${next}`);
  return 0;
}

function reset(lessons: Lesson[], args: ReturnType<typeof parseArgs>): number {
  const lesson = lessonFrom(lessons, args.lesson);
  const { file, backup } = resetLearnerCopy(lesson);
  console.log(`Restored the starter: ${relative(ROOT, file)}`);
  if (backup) console.log(`Your previous code is kept in ${relative(ROOT, backup)}.`);
  console.log(`Next: edit the file, then \`npm run check -- ${lesson.number}\`.`);
  return 0;
}

function solution(lessons: Lesson[], args: ReturnType<typeof parseArgs>): number {
  const lesson = lessonFrom(lessons, args.lesson);
  const passed = Boolean(loadProgress().done[lesson.id]);
  if (!passed && !args.flags.has("--force")) {
    console.log(
      `The solution unlocks when your check passes. To see it anyway: \`npm run solution -- ${lesson.number} --force\`.`,
    );
    return 1;
  }
  console.log(kleur.dim(`// ${relative(ROOT, lesson.solution)}`));
  console.log(readFileSync(lesson.solution, "utf8"));
  return 0;
}

/**
 * Runs lessons/NN-slug/demo.ts: its default export gets a Redis URL and a key prefix, and must
 * finish on its own.
 */
async function demo(lessons: Lesson[], args: ReturnType<typeof parseArgs>): Promise<number> {
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

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  const lessons = loadCatalog();
  switch (args.command) {
    case "start":
      return startMenu(lessons);
    case "list":
      return list(lessons, args.flags.has("--json"));
    case "check":
      return check(lessons, args);
    case "hint":
      return hint(lessons, args);
    case "reset":
      return reset(lessons, args);
    case "solution":
      return solution(lessons, args);
    case "demo":
      return demo(lessons, args);
    case "help":
    case "--help":
      console.log(USAGE);
      return 0;
    default:
      throw new UsageError(`Unknown command "${args.command}".`);
  }
}

process.on("SIGINT", () => {
  // The exit hooks stop the private server and any check still running.
  console.log(kleur.dim("\nStopped. Your work is saved; run the same command to continue."));
  process.exit(130);
});

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: Error) => {
    if (error instanceof UsageError) {
      console.error(`${error.message}\n\n${USAGE}`);
    } else {
      console.error(kleur.red(redact(error.message)));
      if (process.argv.includes("--verbose")) console.error(redact(error.stack ?? ""));
    }
    process.exitCode = 2;
  },
);
