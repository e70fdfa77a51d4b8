import { relative } from "node:path";
import kleur from "kleur";
import { ROOT } from "../paths.ts";
import { redact } from "../redis/redact.ts";
import { formatCommand, traceLines } from "../redis/trace.ts";
import { stateLines } from "./redis-state.ts";
import { reasonBeyondTests, type SourceLocation, type Verdict } from "./verdict.ts";

const MAX_SENT = 25;

function indent(text: string, by: string): string {
  return text
    .split("\n")
    .map((line) => `${by}${line}`)
    .join("\n");
}

/** "at workspace/01-connect/connect.ts:17:28" and that line of code, trimmed to fit. */
function locationLines(location: SourceLocation): string[] {
  const where = `at ${relative(ROOT, location.file)}:${location.line}:${location.column}`;
  const code = location.source?.trim();
  if (!code) return [where];
  const shown = code.length > 66 ? `${code.slice(0, 65)}…` : code;
  return [where, kleur.dim(`  ${location.line} | ${shown}`)];
}

/** A verdict as text for a person, at most 80 columns wide apart from long commands. */
export function renderVerdict(
  verdict: Verdict,
  options: { verbose?: boolean; next?: boolean; hints?: "commands" | "keys" } = {},
): string {
  const lines: string[] = [];
  const number = verdict.lesson.slice(0, 2);
  const heading = `${number} ${verdict.title}`;
  switch (verdict.status) {
    case "passed":
      lines.push(kleur.green().bold(`✓ ${heading}: all ${verdict.tests.length} checks passed`));
      break;
    case "failed":
      lines.push(kleur.red().bold(`✗ ${heading}: not yet`));
      break;
    case "skipped":
      lines.push(kleur.yellow().bold(`- ${heading}: skipped`));
      break;
    case "error":
      lines.push(kleur.yellow().bold(`! ${heading}: the check could not run`));
      break;
  }
  if (verdict.reason && verdict.status !== "failed") lines.push(indent(verdict.reason, "  "));
  const beyond = verdict.status === "failed" ? reasonBeyondTests(verdict) : undefined;
  if (beyond) lines.push(indent(beyond, "  "));
  for (const test of verdict.tests) {
    const mark =
      test.status === "passed"
        ? kleur.green("✓")
        : test.status === "failed"
          ? kleur.red("✗")
          : kleur.yellow("-");
    lines.push(`  ${mark} ${test.name}`);
    if (test.status !== "passed" && test.message) lines.push(indent(test.message, "      "));
    if (test.status === "failed" && test.location) {
      lines.push(indent(locationLines(test.location).join("\n"), "      "));
    }
    if (test.status === "failed" && test.hint !== undefined) {
      const how =
        options.hints === "keys"
          ? `press ${test.hint}`
          : `npm run hint -- ${number} --level ${test.hint}`;
      lines.push(`      Hint ${test.hint}: ${how}`);
    }
    if (test.status === "failed" && test.redis) {
      lines.push(indent(stateLines(test.redis, options.verbose).join("\n"), "      "));
    }
    if (options.verbose && test.status === "failed" && test.stack) {
      lines.push(kleur.dim(indent(test.stack, "      ")));
    }
  }
  if (verdict.status === "failed" && verdict.output.length > 0) {
    lines.push("", kleur.bold("  What your code printed:"));
    for (const line of verdict.output.slice(-15)) lines.push(kleur.dim(indent(line, "    ")));
  }
  if (verdict.status === "failed" && verdict.sent) {
    const sent = verdict.sent;
    lines.push(
      "",
      kleur.bold(
        `  What your code sent to Redis (${sent.length} command${sent.length === 1 ? "" : "s"}):`,
      ),
    );
    if (sent.length === 0) lines.push("    nothing");
    // Whole under --verbose; otherwise enough lines to reach past the setup.
    const shown = traceLines(sent);
    const limit = options.verbose ? shown.length : MAX_SENT;
    const width = Math.max(...shown.slice(0, limit).map((l) => l.connection.length), 0);
    for (const line of shown.slice(0, limit)) {
      const times = line.count > 1 ? kleur.dim(` ×${line.count}`) : "";
      lines.push(
        `    ${kleur.dim(line.connection.padEnd(width))}  ${formatCommand(line.args, 62)}${times}`,
      );
    }
    if (shown.length > limit) {
      lines.push(
        kleur.dim(`    ... and ${shown.length - limit} more lines: --verbose shows them all`),
      );
    }
  }
  if (verdict.status === "failed" && !verdict.sent && verdict.untraced) {
    lines.push(
      "",
      kleur.bold("  What your code sent to Redis: not shown"),
      kleur.dim(indent(verdict.untraced, "    ")),
    );
  }
  if (options.verbose && verdict.diagnostics) {
    lines.push("", kleur.dim(indent(verdict.diagnostics.trim(), "  | ")));
  }
  // The guided runner leaves the next step out: its keys say what comes next.
  if (options.next !== false) lines.push("", nextStep(verdict));
  // Learner output, messages, stacks and commands may all quote the password.
  return redact(lines.join("\n"));
}

export function nextStep(verdict: Verdict): string {
  const number = verdict.lesson.slice(0, 2);
  const file = relative(ROOT, verdict.file);
  switch (verdict.status) {
    case "passed":
      return verdict.target === "learner"
        ? `Next: \`npm start\` for the next lesson, or \`npm run solution -- ${number}\` to compare.`
        : "Next: nothing to do.";
    case "failed":
      return `Next: edit ${file}, then \`npm run check -- ${number}\`. Stuck? \`npm run hint -- ${number}\`.`;
    case "skipped":
      return "Next: move on to the next lesson, or run this one on the private server.";
    case "error":
      return "Next: fix what is named above and run the check again; `npm run doctor` checks your setup.";
  }
}
