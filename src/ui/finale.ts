import { existsSync } from "node:fs";
import kleur from "kleur";
import type { Lesson } from "../catalog.ts";
import type { Verdict } from "../check/verdict.ts";
import { updateProgress } from "../progress.ts";
import { learnerFile } from "../workspace.ts";
import { checkLearner, notRun } from "./check-learner.ts";
import { draw, isKey } from "./screen.ts";
import type { Session } from "./session.ts";
import { link, rule, screenRows, screenWidth, wrap, wrapLine } from "./term.ts";

export const FURTHER_READING: { title: string; url: string }[] = [
  { title: "Redis Streams", url: "https://redis.io/docs/latest/develop/data-types/streams/" },
  { title: "Redis pub/sub", url: "https://redis.io/docs/latest/develop/pubsub/" },
  { title: "node-redis", url: "https://github.com/redis/node-redis" },
  { title: "Azure Managed Redis", url: "https://learn.microsoft.com/azure/redis/" },
];

/** What the learner reads when every lesson passed once more. */
export function congratulations(count: number, width: number): string[] {
  return [
    kleur.green().bold("Congratulations: you finished the workbook."),
    "",
    ...wrap(
      `All ${count} lessons pass. You can broadcast with pub/sub, queue work on Streams with consumer groups, recover from crashes, retry and dead-letter, and choose between the two.`,
      width,
    ),
    "",
    kleur.bold("Where to read next:"),
    ...[
      ...FURTHER_READING.map((r) => `  • ${r.title}: ${link(r.url, r.url)}`),
      "  • Designing Data-Intensive Applications (Martin Kleppmann), chapter 11: stream processing",
    ].flatMap((line) => wrapLine(line, width, "    ")),
  ];
}

/** One line per lesson of the final re-check. */
function resultLine(lesson: Lesson, verdict: Verdict | undefined): string {
  const name = `${lesson.number} ${lesson.title}`;
  if (!verdict) return kleur.dim(`… ${name}`);
  switch (verdict.status) {
    case "passed":
      return `${kleur.green("✓")} ${name}`;
    case "skipped":
      return `${kleur.yellow("-")} ${name} ${kleur.dim("(skipped on this server)")}`;
    case "failed":
      return `${kleur.red("✗")} ${name} ${kleur.dim("(not any more)")}`;
    case "error":
      return `${kleur.yellow("!")} ${name} ${kleur.dim("(the check could not run)")}`;
  }
}

/**
 * Every lesson done: check them all once more (code changes after a pass happen), then
 * congratulate, or name the lessons to revisit and mark them to do again.
 */
export async function finale(session: Session): Promise<void> {
  const { lessons, inbox } = session;
  const width = screenWidth();
  const verdicts = new Map<string, Verdict>();
  const show = (extra: string[]) => {
    const results = lessons.map((l) => resultLine(l, verdicts.get(l.id)));
    const passedAll =
      verdicts.size === lessons.length &&
      [...verdicts.values()].every((v) => v.status === "passed" || v.status === "skipped");
    // A long course and the congratulations do not both fit: then one line says it all.
    const compact = passedAll && results.length + extra.length + 2 > screenRows();
    draw([
      kleur.bold("Checking every lesson once more…"),
      rule(width),
      ...(compact ? [`${kleur.green("✓")} All ${lessons.length} lessons pass.`] : results),
      ...extra,
    ]);
  };
  session.keysOn();
  for (const lesson of lessons) {
    show([]);
    const file = learnerFile(lesson);
    const verdict = existsSync(file)
      ? await checkLearner(lesson, file, () => session.redis())
      : notRun(lesson, file, "Your exercise file is missing.");
    verdicts.set(lesson.id, verdict);
  }
  const failing = lessons.filter((l) => verdicts.get(l.id)?.status === "failed");
  const broken = lessons.filter((l) => verdicts.get(l.id)?.status === "error");
  let extra: string[];
  if (failing.length === 0 && broken.length === 0) {
    updateProgress((p) => {
      p.finished ??= new Date().toISOString();
    });
    extra = ["", ...congratulations(lessons.length, width)];
  } else {
    updateProgress((p) => {
      for (const lesson of failing) delete p.done[lesson.id];
    });
    const names = [...failing, ...broken].map((l) => l.number).join(", ");
    extra = [
      "",
      ...wrap(
        `Almost: lesson${failing.length + broken.length > 1 ? "s" : ""} ${names} did not pass this time. Your code may have changed since; open ${failing.length + broken.length > 1 ? "them" : "it"} from the list, fix, and finish again.`,
        width,
      ),
    ];
  }
  show([...extra, "", kleur.dim("Press any key for the lesson list.")]);
  await inbox.take(isKey);
}
