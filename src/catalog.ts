import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { CHECKS_DIR, LESSONS_DIR, SOLUTIONS_DIR } from "./paths.ts";

export type HintLevel = "idea" | "api" | "answer";

export interface Hint {
  level: HintLevel;
  text: string;
}

export interface Mistake {
  /** File name without extension, e.g. "subscribes-on-command-connection". */
  name: string;
  file: string;
  /** What the learner got wrong, in one line. */
  description: string;
  /** A piece of the failure message the check must give for this mistake. */
  expect: string;
}

/** What lessons/NN-slug/lesson.json holds: the only place a lesson's metadata is written. */
export interface LessonMeta {
  title: string;
  summary: string;
  objectives: string[];
  /** The exercise's file name, the same in lessons/, solutions/ and the workspace. */
  exercise: string;
  hints: Hint[];
  /** One line shown when the check passes: what the learner can now do. */
  learned: string;
  /** Oldest Redis server the check can run on, e.g. "6.2". */
  minRedis?: string;
  /** Set when the check needs commands a shared server must not receive (CONFIG SET, ...). */
  needsPrivateServer?: string;
  /**
   * Set when the learner's code talks only to servers the check starts itself (TLS, a cluster):
   * the trace follows the private server with MONITOR, so it would show nothing, and is left out.
   */
  serverOfItsOwn?: string;
  /** Upper bound for the whole check run, in milliseconds. */
  timeoutMs?: number;
  /**
   * How many processes share the check's tests (src/check/shards.ts): tests that mostly wait
   * (a held reply, a blocking read timing out) then wait side by side. Only for checks whose
   * tests see nothing of each other: each keeps to its own keys and its own connections.
   */
  shards?: number;
  /** Tests (by name) that change what every connection sees: each runs while no other does. */
  alone?: string[];
}

export interface Lesson extends LessonMeta {
  /** "02" */
  number: string;
  /** "pubsub-broadcast" */
  slug: string;
  /** "02-pubsub-broadcast" */
  id: string;
  readme: string;
  starter: string;
  solution: string;
  check: string;
  mistakes: Mistake[];
  /**
   * Right answers written in other styles than the solution's (sendCommand, other loop shapes,
   * named connections): the check must pass each. checks/NN-slug/variants/, same format as a
   * mistake, with a `variant:` line instead of `mistake:` and no `expect:`.
   */
  variants: Mistake[];
  /** lessons/NN-slug/demo.ts, when the lesson has a demo. */
  demo?: string;
  /** Knowledge-check questions (lessons/NN-slug/quiz.json), when the lesson has them. */
  quiz?: QuizQuestion[];
}

/** One question of a lesson's knowledge check, in quiz.json. */
export interface QuizQuestion {
  question: string;
  choices: string[];
  /** Index into choices. */
  answer: number;
  /** Shown after answering: why the answer is right. */
  why: string;
}

const LESSON_DIR = /^(\d{2})-([a-z0-9]+(?:-[a-z0-9]+)*)$/;

/**
 * Reads the header lines `mistake: ...` and `expect: ...` of a mistake: `//` comments in a .ts
 * variant, `#` lines before the hunks of a .diff against the solution.
 */
export function parseMistakeHeader(source: string): { description?: string; expect?: string } {
  const field = (name: string) =>
    source.match(new RegExp(`^(?://|#)\\s*${name}:\\s*(.+)$`, "m"))?.[1]?.trim();
  return { description: field("mistake") ?? field("variant"), expect: field("expect") };
}

export function parseLessonMeta(json: string, where: string): LessonMeta {
  let data: unknown;
  try {
    data = JSON.parse(json);
  } catch (error) {
    throw new Error(`${where} is not valid JSON (${(error as Error).message}). Fix the file.`);
  }
  const meta = data as LessonMeta;
  for (const field of ["title", "summary", "exercise", "learned"] as const) {
    if (typeof meta[field] !== "string" || meta[field].length === 0) {
      throw new Error(`${where} needs a non-empty "${field}".`);
    }
  }
  if (!Array.isArray(meta.hints) || !Array.isArray(meta.objectives)) {
    throw new Error(`${where} needs "hints" and "objectives" arrays.`);
  }
  return meta;
}

function readMistakes(dir: string): Mistake[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => /\.(ts|diff)$/.test(name))
    .sort()
    .map((name) => {
      const file = join(dir, name);
      const header = parseMistakeHeader(readFileSync(file, "utf8"));
      return {
        name: name.replace(/\.(ts|diff)$/, ""),
        file,
        description: header.description ?? "",
        expect: header.expect ?? "",
      };
    });
}

export function loadLesson(dirName: string): Lesson {
  const match = LESSON_DIR.exec(dirName);
  if (!match) throw new Error(`lessons/${dirName} is not named NN-slug.`);
  const [, number = "", slug = ""] = match;
  const dir = join(LESSONS_DIR, dirName);
  if (!existsSync(join(dir, "lesson.json"))) {
    throw new Error(`lessons/${dirName}/lesson.json is missing: see docs/AUTHORING.md.`);
  }
  const meta = parseLessonMeta(
    readFileSync(join(dir, "lesson.json"), "utf8"),
    `lessons/${dirName}/lesson.json`,
  );
  const checkDir = join(CHECKS_DIR, dirName);
  const checkFile = existsSync(checkDir)
    ? readdirSync(checkDir).find((name) => name.endsWith(".check.ts"))
    : undefined;
  const demo = join(dir, "demo.ts");
  const quiz = join(dir, "quiz.json");
  return {
    ...meta,
    demo: existsSync(demo) ? demo : undefined,
    quiz: existsSync(quiz) ? (JSON.parse(readFileSync(quiz, "utf8")) as QuizQuestion[]) : undefined,
    number,
    slug,
    id: dirName,
    readme: join(dir, "README.md"),
    starter: join(dir, meta.exercise),
    solution: join(SOLUTIONS_DIR, dirName, meta.exercise),
    check: join(checkDir, checkFile ?? "missing.check.ts"),
    mistakes: readMistakes(join(checkDir, "mistakes")),
    variants: readMistakes(join(checkDir, "variants")),
  };
}

/** Every lessons/NN-slug directory, whether or not it is complete yet. */
export function lessonDirs(): string[] {
  return readdirSync(LESSONS_DIR, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && LESSON_DIR.test(entry.name))
    .map((entry) => entry.name)
    .sort();
}

/**
 * Every lesson, in order. The single source of truth for what the course contains. A lesson
 * still being written (no lesson.json yet) is left out rather than breaking every command; the
 * catalog test fails on it.
 */
export function loadCatalog(): Lesson[] {
  return lessonDirs()
    .filter((name) => existsSync(join(LESSONS_DIR, name, "lesson.json")))
    .map((name) => loadLesson(name));
}

/** Finds a lesson by "2", "02", "02-pubsub-broadcast" or "pubsub-broadcast". */
export function findLesson(lessons: Lesson[], query: string): Lesson | undefined {
  const q = query.trim().toLowerCase();
  const asNumber = /^\d+$/.test(q) ? q.padStart(2, "0") : undefined;
  return lessons.find(
    (lesson) => lesson.number === asNumber || lesson.id === q || lesson.slug === q,
  );
}

export function describeLessons(lessons: Lesson[]): string {
  return lessons.map((lesson) => `${lesson.number} ${lesson.slug}`).join(", ");
}
