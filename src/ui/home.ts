/**
 * `npm start`: the welcome, a Redis preflight line, the lesson list with progress, and from
 * there the lessons. Without a terminal it prints the same state and the plain commands.
 */
import { Separator, select } from "@inquirer/prompts";
import kleur from "kleur";
import { PLAIN_COMMANDS } from "../args.ts";
import type { Lesson } from "../catalog.ts";
import { hasProgress, loadProgress, type Progress } from "../progress.ts";
import type { RedisTarget } from "../redis/target.ts";
import { allDone, doneCount, lessonLine, suggestedLesson } from "./course.ts";
import { exitCleanly, STOPPED_NOTE } from "./exit.ts";
import { finale } from "./finale.ts";
import { type LessonExit, lessonScreen } from "./lesson.ts";
import { Session } from "./session.ts";
import { progressBar, screenRows, screenWidth, wrap } from "./term.ts";
import { promptTheme } from "./theme.ts";

const TITLE = "Redis messaging for AI pipelines";
const SUBTITLE = "A TypeScript workbook: reliable AI pipelines on Redis pub/sub and Streams.";

const WELCOME =
  "Each lesson has a short text, an exercise file that is yours to edit, and a check that runs every time you save it. Hints, the solution and a fresh start are one key away. Your progress is saved as you go.";

/** "Redis 7.0.15 · redis://127.0.0.1:40123 (private, started by the workbook)" */
export function preflightLine(redis: RedisTarget | Error): string {
  if (redis instanceof Error) {
    const first = redis.message.split("\n")[0] ?? redis.message;
    return `${kleur.yellow("Redis: not available.")} ${first} ${kleur.dim("`npm run doctor` shows the fix.")}`;
  }
  return `${kleur.green("Redis")} ${redis.version} · ${redis.display}`;
}

function header(lessons: Lesson[], progress: Progress, redisLine: string, first: boolean) {
  const width = screenWidth();
  return [
    kleur.bold().cyan(TITLE),
    ...wrap(kleur.dim(SUBTITLE), width),
    ...(first ? ["", ...wrap(WELCOME, width)] : []),
    "",
    ...wrap(redisLine, width),
    progressBar(doneCount(lessons, progress), lessons.length),
    ...(progress.finished && allDone(lessons, progress)
      ? [kleur.green(`✓ You finished the workbook on ${progress.finished.slice(0, 10)}.`)]
      : []),
    "",
  ];
}

/** The state of the course and the commands to use, for a run without a terminal. */
export function plainStart(lessons: Lesson[]): number {
  const progress = loadProgress();
  console.log(`${TITLE}\n${SUBTITLE}\n`);
  for (const lesson of lessons) console.log(lessonLine(lesson, progress));
  console.log(`\n${progressBar(doneCount(lessons, progress), lessons.length)}\n`);
  console.log("No terminal here, so no menu. Every action is also a plain command:");
  console.log(PLAIN_COMMANDS);
  const next = suggestedLesson(lessons, progress);
  if (next) console.log(`\nNext: npm run check -- ${next.number}   (${next.title})`);
  console.log("Run `npm start` in a terminal for the guided course.");
  return 0;
}

type Choice = { lesson: Lesson } | { finish: true } | { quit: true };

async function chooseLesson(lessons: Lesson[], redisLine: string, first: boolean): Promise<Choice> {
  const progress = loadProgress();
  const top = header(lessons, progress, redisLine, first);
  process.stdout.write("\x1b[H\x1b[2J");
  console.log(top.join("\n"));
  const suggested = suggestedLesson(lessons, progress);
  const choices = [
    ...lessons.map((lesson) => ({
      name: lessonLine(lesson, progress),
      value: lesson.id,
      description: wrap(lesson.summary, screenWidth()).join("\n"),
    })),
    new Separator(" "),
    ...(allDone(lessons, progress)
      ? [{ name: "★ Check every lesson once more and finish", value: "finish" }]
      : []),
    { name: "Quit", value: "quit" },
  ];
  const answer = await select({
    message: "Choose a lesson",
    choices,
    default: suggested?.id,
    pageSize: Math.max(Math.min(screenRows() - top.length - 6, choices.length), 4),
    loop: false,
    theme: promptTheme,
  });
  if (answer === "quit") return { quit: true };
  if (answer === "finish") return { finish: true };
  const lesson = lessons.find((l) => l.id === answer);
  return lesson ? { lesson } : { quit: true };
}

async function loop(session: Session, only?: Lesson): Promise<void> {
  const first = !hasProgress();
  let redisLine = "";
  if (!only) {
    console.log(kleur.dim("Starting Redis for the checks…"));
    redisLine = preflightLine(await session.redis().catch((error: Error) => error));
  }
  let exit: LessonExit | undefined = only ? { go: "lesson", lesson: only } : undefined;
  for (;;) {
    if (!exit || exit.go === "list") {
      if (only) return;
      session.keysOff();
      const choice = await chooseLesson(session.lessons, redisLine, first);
      if ("quit" in choice) return;
      exit = "finish" in choice ? { go: "finish" } : { go: "lesson", lesson: choice.lesson };
    }
    if (exit.go === "finish") {
      await finale(session);
      exit = { go: "list" };
      if (only) return;
      continue;
    }
    if (exit.go === "lesson")
      exit = await lessonScreen(session, exit.lesson, { alone: Boolean(only) });
  }
}

/**
 * The guided course. `only` opens one lesson and ends when the learner leaves it
 * (`npm run watch -- NN` in a terminal). Always ends the process through exitCleanly.
 */
export async function guided(lessons: Lesson[], only?: Lesson): Promise<never> {
  const session = new Session(lessons);
  try {
    await loop(session, only);
  } catch (error) {
    // Ctrl+C inside a prompt.
    if ((error as Error).name === "ExitPromptError") return exitCleanly(130, STOPPED_NOTE);
    throw error;
  }
  // The lesson screen leaves the cursor at the end of its key bar: start on a line of our own.
  return exitCleanly(0, kleur.dim("\nSee you next time: `npm start` picks up where you left off."));
}
