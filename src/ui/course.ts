/** Where the learner stands in the course. Pure: lessons and progress in, decisions out. */
import kleur from "kleur";
import type { HintLevel, Lesson } from "../catalog.ts";
import type { Progress } from "../progress.ts";
import { truncate } from "./term.ts";

export type LessonState = "done" | "current" | "todo";

export function lessonState(lesson: Lesson, progress: Progress): LessonState {
  if (progress.done[lesson.id]) return "done";
  return progress.current === lesson.id ? "current" : "todo";
}

/** "✓ 01  Connect safely", with › for the lesson in progress. */
export function lessonLine(lesson: Lesson, progress: Progress, width = 76): string {
  const state = lessonState(lesson, progress);
  const mark =
    state === "done" ? kleur.green("✓") : state === "current" ? kleur.cyan("›") : kleur.dim("·");
  return truncate(`${mark} ${lesson.number}  ${lesson.title}`, width);
}

export function doneCount(lessons: Lesson[], progress: Progress): number {
  return lessons.filter((lesson) => progress.done[lesson.id]).length;
}

export function allDone(lessons: Lesson[], progress: Progress): boolean {
  return lessons.length > 0 && doneCount(lessons, progress) === lessons.length;
}

/**
 * The lesson to offer first: the one in progress if it is not done yet, else the first lesson
 * after it still to do, else the first one to do anywhere, else the last one worked on.
 */
export function suggestedLesson(lessons: Lesson[], progress: Progress): Lesson | undefined {
  const currentIndex = lessons.findIndex((lesson) => lesson.id === progress.current);
  const current = lessons[currentIndex];
  if (current && !progress.done[current.id]) return current;
  const todo = (lesson: Lesson) => !progress.done[lesson.id];
  return lessons.slice(currentIndex + 1).find(todo) ?? lessons.find(todo) ?? current ?? lessons[0];
}

export function nextLesson(lessons: Lesson[], lesson: Lesson): Lesson | undefined {
  return lessons[lessons.findIndex((l) => l.id === lesson.id) + 1];
}

export function previousLesson(lessons: Lesson[], lesson: Lesson): Lesson | undefined {
  const at = lessons.findIndex((l) => l.id === lesson.id);
  return at > 0 ? lessons[at - 1] : undefined;
}

const TIER_NAMES: Record<HintLevel, string> = {
  idea: "the idea",
  api: "the API",
  answer: "nearly the answer",
};

export function tierName(level: HintLevel | string): string {
  return TIER_NAMES[level as HintLevel] ?? level;
}

/**
 * The hint level to show on the next key press: first the highest one seen before (or the
 * first), then one tier further each time, and after the last back to the first.
 */
export function nextHintLevel(seen: number, shownNow: number, count: number): number {
  if (count === 0) return 0;
  if (shownNow === 0) return Math.min(Math.max(seen, 1), count);
  // Like `npm run hint`, h stops at the last hint; a digit key goes back to any of them.
  return Math.min(shownNow + 1, count);
}
