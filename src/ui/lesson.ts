/**
 * Inside a lesson: the check runs on every save of the learner's file and the result stays on
 * screen, with single keys for everything else (hints, lesson text, solution, reset, editor,
 * next lesson). Like rustlings' watch mode, with the file's failures explained in place.
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { basename, relative } from "node:path";
import kleur from "kleur";
import type { Lesson } from "../catalog.ts";
import { renderVerdict } from "../check/render.ts";
import type { Verdict } from "../check/verdict.ts";
import { ROOT } from "../paths.ts";
import { loadProgress, markHintSeen, markPassed, markPeeked, setCurrent } from "../progress.ts";
import { ensureLearnerCopy, resetLearnerCopy } from "../workspace.ts";
import { checkLearner } from "./check-learner.ts";
import { allDone, nextHintLevel, nextLesson, previousLesson, tierName } from "./course.ts";
import { renderDiff } from "./diff.ts";
import { onInterrupt } from "./keys.ts";
import { renderMarkdown } from "./markdown.ts";
import { page } from "./pager.ts";
import { runQuiz } from "./quiz.ts";
import { draw, isKey, type UiEvent } from "./screen.ts";
import type { Session } from "./session.ts";
import {
  fileLink,
  flow,
  rule,
  screenRows,
  screenWidth,
  terminalWidth,
  truncate,
  wrap,
} from "./term.ts";
import { Rechecks, readSources, watchForSaves } from "./watch.ts";

/** Where to go after a lesson screen. */
export type LessonExit = { go: "list" } | { go: "lesson"; lesson: Lesson } | { go: "finish" };

let runs = 0;

function readOr(file: string, fallback = ""): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return fallback;
  }
}

/** The report without its "Next: npm run ..." line: on this screen the keys say what is next. */
export function verdictLines(verdict: Verdict, width: number, verbose = false): string[] {
  // On this screen a hint is one key away.
  const text = renderVerdict(verdict, { verbose, next: verdict.status === "error", hints: "keys" });
  return wrap(text, width);
}

/**
 * The lesson text as screen lines: title, summary, objectives, then README.md; `closing` is the
 * last line, what to do next from where the text is shown.
 */
export function lessonText(
  lesson: Lesson,
  file: string,
  width: number,
  closing = "Close this (q) to start: the check runs each time you save the file.",
): string[] {
  const objectives = lesson.objectives.map((o) => `- ${o}`).join("\n");
  const intro = `# ${lesson.number} · ${lesson.title}\n\n${lesson.summary}\n\n**You will:**\n\n${objectives}\n`;
  const readme = existsSync(lesson.readme)
    ? readOr(lesson.readme).replace(/^# .*\n/, "")
    : "_The text of this lesson is not written yet: the exercise file explains what to do._";
  return [
    ...renderMarkdown(`${intro}\n${readme}`, width),
    "",
    rule(width),
    ...wrap(`Your exercise: ${fileLink(relative(ROOT, file), file)}`, width),
    ...wrap(kleur.dim(closing), width),
  ];
}

interface State {
  run: number;
  rechecks: Rechecks;
  verdict?: Verdict;
  panel: string[];
  confirm?: "reset" | "solution";
  hintShown: number;
  /** Cancels the running check (Ctrl+C); undefined when none runs or it was cancelled. */
  cancel?: AbortController;
}

const CANCELLED = "Check cancelled: r runs it again; Ctrl+C again quits.";

/** `alone`: opened by `npm run watch -- NN`, where leaving the lesson ends the runner. */
export async function lessonScreen(
  session: Session,
  lesson: Lesson,
  options: { alone?: boolean } = {},
): Promise<LessonExit> {
  const { lessons, inbox } = session;
  const { file, created } = ensureLearnerCopy(lesson);
  setCurrent(lesson.id);
  const name = basename(file);
  const state: State = {
    run: 0,
    rechecks: new Rechecks(() => readSources(file)),
    panel: [],
    hintShown: 0,
  };
  session.keysOn();
  if (created)
    await page(`Lesson ${lesson.number}`, lessonText(lesson, file, screenWidth()), inbox);

  const startCheck = () => {
    const run = ++runs;
    Object.assign(state, { run, verdict: undefined });
    state.rechecks.started();
    const cancel = new AbortController();
    state.cancel = cancel;
    void checkLearner(lesson, file, () => session.redis(), cancel.signal, session.warm).then(
      (verdict) => inbox.push({ kind: "checked", run, verdict }),
    );
  };

  // The first Ctrl+C during a check stops just the check; the next one quits.
  const cancelCheck = (): boolean => {
    const cancel = state.cancel;
    if (!cancel || !state.rechecks.running) return false;
    state.cancel = undefined;
    cancel.abort();
    // Redraws now: the cancelled verdict can take a moment (a type check still finishing).
    inbox.push({ kind: "resize" });
    return true;
  };

  const passed = () => state.verdict?.status === "passed";

  const keyBar = (width: number): string[] => {
    if (state.confirm) return [kleur.bold("y yes · any other key: no")];
    const keys = ["r run again", "h hint", "l lesson text", "e edit", "s solution", "x reset"];
    const more = [
      "n next lesson",
      "p previous",
      options.alone ? "q quit" : "q lesson list",
      ...(lesson.quiz ? ["k knowledge check"] : []),
      ...(state.verdict ? ["v full report"] : []),
    ];
    // Two groups (working on the code, moving on), each on its own lines.
    return [...flow(keys, width), ...flow(more, width)].map((line) => kleur.dim(line));
  };

  const render = () => {
    const width = screenWidth();
    const rows = screenRows();
    const total = lessons.length;
    const position = lessons.findIndex((l) => l.id === lesson.id) + 1;
    const header = [
      kleur.bold(truncate(`Lesson ${lesson.number} · ${lesson.title}`, width - 10)) +
        kleur.dim(` (${position}/${total})`),
      truncate(`Your file: ${fileLink(relative(ROOT, file), file)}`, width),
      rule(width),
    ];
    const status = kleur.dim(
      truncate(`Watching ${name}: each save runs the check (r runs it now).`, width),
    );
    const footer = [rule(width), status, ...keyBar(width)];
    const panel = state.panel.flatMap((line) => wrap(line, width));
    let body: string[];
    if (state.rechecks.running && !state.cancel) body = [kleur.yellow("Cancelling the check…")];
    else if (state.rechecks.running) body = [kleur.yellow("Checking your code…")];
    else if (state.verdict) body = verdictLines(state.verdict, width);
    else body = [];
    if (state.verdict?.status === "failed" && !state.rechecks.running) {
      body.push("", kleur.dim("Fix it and save: the check runs again. Stuck? Press h for a hint."));
    }
    const room = rows - header.length - footer.length - (panel.length > 0 ? panel.length + 1 : 0);
    if (body.length > room) {
      const hidden = body.length - (room - 1);
      body = [
        ...body.slice(0, Math.max(room - 1, 0)),
        kleur.dim(`… ${hidden} more lines: press v for the whole report.`),
      ];
    }
    const lines = [...header, ...body, ...(panel.length > 0 ? ["", ...panel] : [])];
    draw(lines.slice(0, Math.max(rows - footer.length, 1)), footer);
  };

  /** The course is complete but not yet finished with the final re-check of every lesson. */
  const readyToFinish = () => {
    const progress = loadProgress();
    return allDone(lessons, progress) && !progress.finished;
  };

  const onPass = () => {
    const firstPass = !loadProgress().done[lesson.id];
    const progress = markPassed(lesson.id);
    const next = nextLesson(lessons, lesson);
    const quizTaken = Boolean(progress.quiz?.[lesson.id]);
    const steps = readyToFinish()
      ? "That was the last lesson to do: press n to check every lesson once more and finish."
      : next
        ? `Next: n for lesson ${next.number} (${next.title}), s to compare with the solution.`
        : "Next: q for the lesson list, s to compare with the solution.";
    state.panel = [
      ...(firstPass ? [kleur.green("✓ Lesson done: your progress is saved.")] : []),
      kleur.green().bold(`You can now: ${lesson.learned}`),
      ...(lesson.quiz && !quizTaken
        ? [kleur.cyan("This lesson has a knowledge check: press k.")]
        : []),
      steps,
    ];
  };

  /** Shows hint `wanted` (a digit key), or the next tier (h); records the highest seen. */
  const showHint = (wanted?: number) => {
    if (lesson.hints.length === 0) {
      state.panel = ["This lesson has no hints."];
      return;
    }
    const seen = loadProgress().hints[lesson.id] ?? 0;
    const level = wanted ?? nextHintLevel(seen, state.hintShown, lesson.hints.length);
    const hint = lesson.hints[level - 1];
    if (!hint) return;
    state.hintShown = level;
    markHintSeen(lesson.id, level);
    const more =
      level < lesson.hints.length
        ? ` · h for hint ${level + 1}`
        : ` · the last hint (keys 1-${lesson.hints.length} show any of them again)`;
    state.panel = [
      kleur.cyan().bold(`Hint ${level} of ${lesson.hints.length}: ${tierName(hint.level)}`) +
        kleur.dim(more),
      hint.text,
    ];
  };

  const showSolution = async () => {
    const mine = readOr(file);
    const solution = readOr(lesson.solution);
    const diff = renderDiff(
      mine,
      solution,
      { before: `your code (${relative(ROOT, file)})`, after: "the solution" },
      terminalWidth(),
    );
    const lines =
      diff.length > 0
        ? diff
        : [kleur.green("Your code is the same as the solution, line for line.")];
    await page(`${lesson.number}: your code → solution`, lines, inbox);
  };

  const openEditor = async () => {
    const editor = process.env.VISUAL || process.env.EDITOR;
    if (!editor) {
      state.panel = [
        `Open ${fileLink(relative(ROOT, file), file)} in your editor (the path above is a link in most terminals).`,
        kleur.dim("Set $EDITOR (export EDITOR=nano, or code) and e opens it from here."),
      ];
      return;
    }
    session.keysOff();
    process.stdout.write("\x1b[H\x1b[2J");
    // Like git: $EDITOR may carry arguments ("code --wait"), so a shell reads it.
    await new Promise<void>((resolve) => {
      const child = spawn("sh", ["-c", `${editor} "$1"`, "editor", file], { stdio: "inherit" });
      child.on("error", () => resolve());
      child.on("exit", () => resolve());
    });
    session.keysOn();
    state.panel = [];
  };

  const onKey = async (char: string, keyName: string): Promise<LessonExit | undefined> => {
    if (state.confirm) {
      const what = state.confirm;
      state.confirm = undefined;
      state.panel = [];
      if (char.toLowerCase() !== "y") return undefined;
      if (what === "reset") {
        const { backup } = resetLearnerCopy(lesson);
        state.panel = [
          `Restored the starter.${backup ? ` Your previous code is in ${relative(ROOT, backup)}.` : ""}`,
        ];
        startCheck();
      } else {
        markPeeked(lesson.id);
        await showSolution();
      }
      return undefined;
    }
    switch (keyName === "escape" ? "q" : char.toLowerCase()) {
      case "r":
        if (state.rechecks.requested(true)) startCheck();
        state.panel = [];
        return undefined;
      case "h":
        showHint();
        return undefined;
      case "1":
      case "2":
      case "3":
      case "4":
      case "5":
        if (Number(char) <= lesson.hints.length) showHint(Number(char));
        return undefined;
      case "l":
        await page(`Lesson ${lesson.number}`, lessonText(lesson, file, screenWidth()), inbox);
        return undefined;
      case "e":
        await openEditor();
        return undefined;
      case "s":
        if (passed() || loadProgress().done[lesson.id]) await showSolution();
        else {
          state.confirm = "solution";
          state.panel = [
            kleur.yellow(
              "The solution unlocks when your check passes. Seeing it now takes the puzzle away: show it anyway? (y/N)",
            ),
          ];
        }
        return undefined;
      case "x":
        state.confirm = "reset";
        state.panel = [
          kleur.yellow(
            `Reset ${name} to the starter? Your current code is kept as ${name}.bak. (y/N)`,
          ),
        ];
        return undefined;
      case "v":
        if (state.verdict) {
          await page(
            `${lesson.number}: the whole report`,
            verdictLines(state.verdict, screenWidth(), true),
            inbox,
          );
        }
        return undefined;
      case "k":
        if (lesson.quiz) {
          session.keysOff();
          await runQuiz(lesson, lesson.quiz);
          session.keysOn();
          await inbox.take(isKey);
          state.panel = [];
        }
        return undefined;
      case "n": {
        if (readyToFinish()) return { go: "finish" };
        const next = nextLesson(lessons, lesson);
        if (next) return { go: "lesson", lesson: next };
        const left = lessons.filter((l) => !loadProgress().done[l.id]).length;
        state.panel = [
          left === 0
            ? "This is the last lesson, and every lesson is done: the course is complete."
            : `This is the last lesson. ${left} lesson${left === 1 ? " is" : "s are"} still to pass: q for the lesson list.`,
        ];
        return undefined;
      }
      case "p": {
        const previous = previousLesson(lessons, lesson);
        if (previous) return { go: "lesson", lesson: previous };
        state.panel = ["This is the first lesson."];
        return undefined;
      }
      case "q":
        return { go: "list" };
      default:
        return undefined;
    }
  };

  const stopWatching = watchForSaves(file, () => inbox.push({ kind: "saved" }));
  onInterrupt(cancelCheck);
  try {
    startCheck();
    for (;;) {
      render();
      const event: UiEvent = await inbox.take();
      if (event.kind === "saved") {
        // Reset writes the file and starts its check itself; the save event that follows must
        // not wipe the "Restored the starter" message before anyone could read it.
        if (state.rechecks.unchanged()) continue;
        if (state.rechecks.requested()) startCheck();
        state.panel = state.confirm ? state.panel : [];
      } else if (event.kind === "checked") {
        // A result from a run this screen has since replaced (or another lesson's) is stale.
        if (event.run !== state.run) continue;
        if (event.verdict.reason === "cancelled") {
          // A save during the cancelled check waits for r: the learner asked for quiet.
          state.rechecks.finished();
          state.verdict = undefined;
          state.panel = [kleur.yellow(CANCELLED)];
          continue;
        }
        state.verdict = event.verdict;
        if (state.rechecks.finished()) startCheck();
        else if (event.verdict.status === "passed") onPass();
      } else if (event.kind === "key") {
        const exit = await onKey(event.key.char, event.key.name);
        if (exit) return exit;
      }
    }
  } finally {
    onInterrupt(undefined);
    stopWatching();
  }
}
