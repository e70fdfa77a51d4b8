/** `npm run lesson -- 08`: a lesson's text in the terminal, paged there, plain when piped. */
import type { ParsedArgs } from "../args.ts";
import type { Lesson } from "../catalog.ts";
import { learnerFile } from "../workspace.ts";
import { lessonFrom } from "./commands.ts";
import { Inbox, readKeys } from "./keys.ts";
import { lessonText } from "./lesson.ts";
import { page } from "./pager.ts";
import type { UiEvent } from "./screen.ts";
import { MAX_WIDTH, screenWidth } from "./term.ts";

export async function readLesson(lessons: Lesson[], args: ParsedArgs): Promise<number> {
  const lesson = lessonFrom(lessons, args.lesson);
  // The pager reads single keys, so it needs a terminal at both ends.
  const paged = Boolean(process.stdin.isTTY && process.stdout.isTTY);
  const closing = `Next: npm run check -- ${lesson.number} checks your exercise; npm run watch -- ${lesson.number} checks it on every save.`;
  const lines = lessonText(lesson, learnerFile(lesson), paged ? screenWidth() : MAX_WIDTH, closing);
  if (!paged) {
    console.log(lines.join("\n"));
    return 0;
  }
  const inbox = new Inbox<UiEvent>();
  const stopKeys = readKeys((key) => inbox.push({ kind: "key", key }));
  const onResize = () => inbox.push({ kind: "resize" });
  process.stdout.on("resize", onResize);
  try {
    await page(`Lesson ${lesson.number}`, lines, inbox);
  } finally {
    stopKeys();
    process.stdout.off("resize", onResize);
  }
  // Like less: the page goes away with the pager.
  process.stdout.write("\x1b[H\x1b[2J");
  return 0;
}
