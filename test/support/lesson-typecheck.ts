/**
 * The self-verification's type checking: one compiler run per lesson for its solution, starter,
 * mistakes and variants, instead of one per check run. Every file is checked as runCheck would
 * check it alone (typecheckMany); a mistake or variant stored as a diff is checked as the text
 * the diff makes, which is what runCheck's own copy of it holds.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import type { Lesson } from "../../src/catalog.ts";
import { removeOnExit } from "../../src/check/cleanup.ts";
import { applyPatch } from "../../src/check/patch.ts";
import { type Diagnostic, typecheck, typecheckMany } from "../../src/check/typecheck.ts";
import { ROOT } from "../../src/paths.ts";

interface Batch {
  byPath: Map<string, Diagnostic[]>;
  /** A diff's text as applied, and the errors of that text. */
  byText: Map<string, Diagnostic[]>;
}

async function checkLesson(lesson: Lesson): Promise<Batch | undefined> {
  const dir = join(ROOT, ".tmp", "typecheck", `${lesson.id}-${process.pid}`);
  const forget = removeOnExit(dir);
  try {
    mkdirSync(dir, { recursive: true });
    const solution = readFileSync(lesson.solution, "utf8");
    const files = [lesson.solution, lesson.starter];
    const texts = new Map<string, string>();
    for (const [i, { file }] of [...lesson.mistakes, ...lesson.variants].entries()) {
      if (!file.endsWith(".diff")) {
        files.push(file);
        continue;
      }
      const copy = join(dir, `${i}.ts`);
      const text = applyPatch(solution, readFileSync(file, "utf8"));
      writeFileSync(copy, text);
      texts.set(copy, text);
      files.push(copy);
    }
    const byPath = await typecheckMany(files);
    // An error outside the files asked for blames none of them: each is then checked alone.
    if ((byPath.get("")?.length ?? 0) > 0) return undefined;
    const byText = new Map<string, Diagnostic[]>();
    for (const [copy, text] of texts) byText.set(text, byPath.get(copy) ?? []);
    return { byPath, byText };
  } catch {
    // A diff that no longer applies: runCheck reports it, with its own message.
    return undefined;
  } finally {
    rmSync(dir, { recursive: true, force: true });
    forget();
  }
}

/** For RunOptions.typecheck: the lesson's files are checked together on the first call. */
export function lessonTypecheck(lesson: Lesson): (file: string) => Promise<Diagnostic[]> {
  let batch: Promise<Batch | undefined> | undefined;
  return async (file) => {
    batch ??= checkLesson(lesson);
    const known = await batch;
    const own = known?.byPath.get(resolve(ROOT, file));
    if (own) return own;
    const copied = known?.byText.get(readFileSync(file, "utf8"));
    if (copied) return copied.map((d) => ({ ...d, file: relative(ROOT, file) }));
    return typecheck(file);
  };
}
