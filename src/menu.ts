import { readFileSync } from "node:fs";
import { relative } from "node:path";
import { select } from "@inquirer/prompts";
import kleur from "kleur";
import type { Lesson } from "./catalog.ts";
import { renderVerdict } from "./check/render.ts";
import { runCheck } from "./check/run.ts";
import { ROOT } from "./paths.ts";
import { loadProgress, updateProgress } from "./progress.ts";
import { openRedisTarget, type RedisTarget } from "./redis/target.ts";
import { ensureLearnerCopy } from "./workspace.ts";

const PLAIN_COMMANDS = `Commands:
  npm run check -- <lesson>    check your exercise
  npm run hint -- <lesson>     the next hint
  npm run reset -- <lesson>    restore the starter
  npm run list                 lessons and progress`;

function lessonLine(lesson: Lesson, done: boolean): string {
  return `${done ? kleur.green("✓") : " "} ${lesson.number}  ${lesson.title}`;
}

/** Without a terminal there is nobody to answer a prompt: print the state and the commands. */
function printPlain(lessons: Lesson[]): number {
  const progress = loadProgress();
  console.log("Redis messaging for AI pipelines: a TypeScript workbook\n");
  for (const lesson of lessons) console.log(lessonLine(lesson, Boolean(progress.done[lesson.id])));
  const count = lessons.filter((l) => progress.done[l.id]).length;
  console.log(`\n${count} of ${lessons.length} lessons done.\n\n${PLAIN_COMMANDS}`);
  console.log("\nNext: run `npm start` in a terminal for the interactive menu.");
  return 0;
}

/** A plain interactive menu: pick a lesson, then check it, read a hint or see the paths. */
export async function startMenu(lessons: Lesson[]): Promise<number> {
  if (!process.stdin.isTTY || !process.stdout.isTTY) return printPlain(lessons);
  let redis: RedisTarget | undefined;
  try {
    for (;;) {
      const progress = loadProgress();
      const id = await select({
        message: "Choose a lesson",
        choices: [
          ...lessons.map((lesson) => ({
            name: lessonLine(lesson, Boolean(progress.done[lesson.id])),
            value: lesson.id,
          })),
          { name: "  Quit", value: "quit" },
        ],
        default: progress.current,
        pageSize: 16,
      });
      const lesson = lessons.find((l) => l.id === id);
      if (!lesson) return 0;
      updateProgress((p) => {
        p.current = lesson.id;
      });
      const { file } = ensureLearnerCopy(lesson);
      console.log(
        `\n${kleur.bold(lesson.title)}\n${lesson.summary}\nRead: ${relative(ROOT, lesson.readme)}\nEdit: ${relative(ROOT, file)}\n`,
      );
      for (;;) {
        const action = await select({
          message: `Lesson ${lesson.number}`,
          choices: [
            { name: "Check my code", value: "check" },
            { name: "Read the lesson", value: "read" },
            { name: "Show a hint", value: "hint" },
            { name: "Back to the lessons", value: "back" },
          ],
        });
        if (action === "back") break;
        if (action === "read") console.log(`\n${readFileSync(lesson.readme, "utf8")}`);
        if (action === "hint") {
          const level = Math.min((loadProgress().hints[lesson.id] ?? 0) + 1, lesson.hints.length);
          updateProgress((p) => {
            p.hints[lesson.id] = Math.max(p.hints[lesson.id] ?? 0, level);
          });
          console.log(`\nHint ${level}: ${lesson.hints[level - 1]?.text ?? ""}\n`);
        }
        if (action === "check") {
          redis ??= await openRedisTarget();
          const verdict = await runCheck(
            lesson,
            { kind: "learner", file, label: "your code" },
            redis,
          );
          console.log(`\n${renderVerdict(verdict)}\n`);
          if (verdict.status === "passed") {
            updateProgress((p) => {
              p.done[lesson.id] ??= new Date().toISOString();
            });
            console.log(kleur.green(`You can now: ${lesson.learned}\n`));
          }
        }
      }
    }
  } catch (error) {
    // Ctrl+C inside a prompt: leave quietly, the finally block stops Redis.
    if ((error as Error).name === "ExitPromptError") return 130;
    throw error;
  } finally {
    await redis?.release();
  }
}
