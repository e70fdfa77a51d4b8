import { readFileSync } from "node:fs";
import { relative } from "node:path";
import { pathToFileURL } from "node:url";
import type { Lesson } from "../catalog.ts";
import { ROOT } from "../paths.ts";
import type { RedisTarget } from "../redis/target.ts";
import { versionAtLeast } from "../redis/target.ts";
import type { TracedCommand } from "../redis/trace.ts";
import { type CheckEvent, CLAIMED_ELSEWHERE } from "./events.ts";
import type { RedisState } from "./redis-state.ts";

export type TargetKind = "learner" | "starter" | "solution" | "mistake" | "variant";

export interface CheckTarget {
  kind: TargetKind;
  file: string;
  /** "your code", "the starter", "the solution", "mistake: no-xack" */
  label: string;
}

export interface TestOutcome {
  name: string;
  status: "passed" | "failed" | "skipped";
  /** Learner-facing text: what was expected, what happened, which hint. */
  message?: string;
  /** The hint (1-based) that helps with this failure. */
  hint?: number;
  stack?: string;
  /** Where in the file under test the error came from: shown without --verbose. */
  location?: SourceLocation;
  /** What Redis held for the test's keys after it failed. */
  redis?: RedisState;
  /** How long it took (in `--json`, to find where a slow check spends its time). */
  durationMs?: number;
  /** Which of the check's processes ran it, when several share its tests (src/check/shards.ts). */
  shard?: number;
}

export interface SourceLocation {
  file: string;
  line: number;
  column: number;
  /** That line of the file, as it was when the check ran. */
  source?: string;
}

export type VerdictStatus = "passed" | "failed" | "error" | "skipped";

export interface Verdict {
  lesson: string;
  title: string;
  target: TargetKind;
  file: string;
  status: VerdictStatus;
  /** Why the check failed as a whole, could not run, or was skipped. */
  reason?: string;
  tests: TestOutcome[];
  /** What the learner's code sent to Redis; undefined when it could not be followed. */
  sent?: TracedCommand[];
  /** Why `sent` is not shown at all: the learner's code talked to a server the trace does not follow. */
  untraced?: string;
  /** What the learner's code printed. */
  output: string[];
  /** The check process's own output, for --verbose and for reporting our bugs. */
  diagnostics?: string;
  durationMs: number;
}

/** 0 passed, 1 the learner's code is wrong, 2 the check could not run. */
export function exitCode(verdict: Pick<Verdict, "status">): 0 | 1 | 2 {
  if (verdict.status === "passed") return 0;
  if (verdict.status === "failed") return 1;
  return 2;
}

/** A lesson the current server cannot run, and why; undefined when it can run. */
export function skipReason(lesson: Lesson, redis: Pick<RedisTarget, "kind" | "version">) {
  if (lesson.needsPrivateServer && redis.kind === "external") {
    return `Lesson ${lesson.number} needs the workbook's private server: ${lesson.needsPrivateServer}. Unset REDIS_URL to run it.`;
  }
  if (lesson.minRedis && !versionAtLeast(redis.version, lesson.minRedis)) {
    return `Lesson ${lesson.number} needs Redis ${lesson.minRedis} or newer; this server is ${redis.version}. Upgrade redis-server or point REDIS_URL at a newer server.`;
  }
  return undefined;
}

/** Learner-facing message of an error: our own failures as written, anything else with its type. */
function messageOf(error: { name: string; message: string }): string {
  if (error.name === "CheckFailure") return error.message;
  if (error.name === "AssertionError") return error.message;
  return `${error.name}: ${error.message}`;
}

/** What a test that never finished meant for the tests after it, in one process and in several. */
const AFTER_IT_NOT_RUN = "so the tests after it did not run";
const OTHERS_WENT_ON =
  "so its process ran nothing after it (the tests listed after it ran in the check's other processes; any not listed did not run)";

const NEVER_RETURNS =
  "Something in your code never returns: look for a missing await, a loop without an exit, or a blocking read without a BLOCK timeout.";

const CUT_OFF = "The check did not finish within ";

/** Why a run cut off by its limit failed: the tests still running then, one per stuck process. */
function cutOffReason(timedOutAfterMs: number, stuck: string[]): string {
  const quoted = stuck.map((name) => `"${name}"`);
  const what =
    quoted.length === 0
      ? "the check to start"
      : quoted.length === 1
        ? quoted[0]
        : `${quoted.slice(0, -1).join(", ")} and ${quoted.at(-1)} (each in a process of its own)`;
  return `${CUT_OFF}${timedOutAfterMs / 1000}s: it was still waiting on ${what}. ${NEVER_RETURNS}`;
}

/** The test a run cut off by its limit lists as never finished (see decide()). */
const STOPPED_AFTER = "Stopped after the check's ";

/** vitest's own words when a test runs out of time, retold with what the kit's call() waited for. */
function timedOutMessage(message: string, waitingFor: string | undefined): string | undefined {
  const timedOut = /^Test timed out in (\d+)ms/.exec(message);
  if (!timedOut) return undefined;
  const waited = waitingFor ? `: it was still waiting for ${waitingFor} to finish` : "";
  return `This check did not finish within its ${Number(timedOut[1]) / 1000}s${waited}. ${NEVER_RETURNS}`;
}

function looksLikeOurBug(error: { name: string; message: string; stack?: string }): boolean {
  return /WORKBOOK_\w+ is not set|Failed to load url .*kit|Cannot find module .*checks\//.test(
    `${error.message}\n${error.stack ?? ""}`,
  );
}

/**
 * The stack frames worth showing with --verbose: none when the check raised the failure itself
 * (its frames are the kit's, not the learner's), and never the message again.
 */
export function learnerStack(stack: string | undefined): string | undefined {
  const frames = (stack ?? "").split("\n").filter((line) => /^\s+at /.test(line));
  if (frames.length === 0 || /checks[/\\]kit\.ts/.test(frames[0] ?? "")) return undefined;
  return frames.map((line) => line.trim()).join("\n");
}

/**
 * The first stack frame in `file`, the code under test, with its line of source. Read while the
 * run is on: a mistake's file is removed after it. Frames of node-redis or of the check before it
 * are skipped, so a learner's call that made Redis fail is found too.
 */
export function learnerLocation(
  stack: string | undefined,
  file: string | undefined,
): SourceLocation | undefined {
  if (!stack || !file) return undefined;
  const url = pathToFileURL(file).href;
  for (const frame of stack.split("\n")) {
    if (!/^\s*at /.test(frame)) continue;
    const plain = frame.replaceAll(url, file);
    const at = plain.lastIndexOf(`${file}:`);
    const position = at < 0 ? null : /^:(\d+):(\d+)/.exec(plain.slice(at + file.length));
    if (!position) continue;
    const line = Number(position[1]);
    let source: string | undefined;
    try {
      source = readFileSync(file, "utf8").split("\n")[line - 1];
    } catch {
      // Gone or unreadable: the position alone still helps.
    }
    return { file, line, column: Number(position[2]), source };
  }
  return undefined;
}

/**
 * What an error vitest caught outside any test means, for the learner: a rejection nobody
 * handled or an exception nobody caught, where it came from when the stack passes through
 * `file`, the test it broke, and what to do. Undefined for any other error. No test's result
 * holds it, so without this the learner sees a bare "Error: ..." above a list of green ticks.
 */
export function escapedMessage(
  error: { name: string; message: string; stack?: string; type?: string; test?: string },
  file?: string,
): string | undefined {
  const rejection = error.type === "Unhandled Rejection";
  if (!rejection && error.type !== "Uncaught Exception") return undefined;
  const location = learnerLocation(error.stack, file);
  const code = location?.source?.trim();
  const where = location
    ? ` It came from your code at ${relative(ROOT, location.file)}:${location.line}${code ? ` (${code.length > 66 ? `${code.slice(0, 65)}…` : code})` : ""}.`
    : rejection
      ? " Its stack does not pass through your file: it is most likely a node-redis call of yours (a command, subscribe(), connect()) whose promise nobody awaited, which the check refused or whose connection it cut."
      : "";
  const when = error.test
    ? ` It broke "${error.test}": it was raised while the check ran that test (or just after it), where the test itself could not see it.`
    : "";
  const said = messageOf(error);
  const stop = /[.!?]$/.test(said) ? "" : ".";
  const what = rejection
    ? `A promise of your code was rejected and nothing handled it: ${said}${stop}`
    : `An exception of your code was thrown where nothing catches it: ${said}${stop}`;
  const fix = rejection
    ? "Node ends a real process on an unhandled rejection. Await the call (or return its promise to a caller that awaits it), or handle its rejection: try/catch around the await, or .catch() on a promise you mean to leave running."
    : "Node ends a real process on an uncaught exception. Catch it where it is thrown: a callback that runs later (a timer, setImmediate, an event) needs its own try/catch.";
  return `${what}${where}${when} ${fix}`;
}

/**
 * Turns the reporter's event stream into a verdict. Pure, so every way a check run can end
 * (pass, fail, crash, hang, exit) is decided in one place and tested without processes.
 */
export function decide(
  events: CheckEvent[],
  ending: { timedOutAfterMs?: number; exitCode: number | null; signal: string | null },
  /** The file the check ran (a mistake's materialized copy), to locate errors in. */
  file?: string,
): Pick<Verdict, "status" | "reason" | "tests" | "output"> {
  const tests: TestOutcome[] = [];
  const started: string[] = [];
  const output: string[] = [];
  const errors: { name: string; message: string; stack?: string; type?: string; test?: string }[] =
    [];
  const waiting = new Map<string, string>();
  const states = new Map<string, RedisState>();
  let ended = false;
  for (const event of events) {
    if (event.event === "start") started.push(event.test);
    if (event.event === "log") output.push(event.text.replace(/\n$/, ""));
    if (event.event === "error") errors.push(event);
    if (event.event === "end") ended = true;
    if (event.event === "state") states.set(event.test, event.state);
    if (event.event === "result") {
      // The test process writes a result as the test ends and the reporter again later (see
      // checks/test-results.ts): one line per test, what the kit saw kept.
      const earlier = tests.findIndex((t) => t.name === event.test);
      if (event.waitingFor) waiting.set(event.test, event.waitingFor);
      const waitingFor = waiting.get(event.test);
      const first = event.errors[0];
      const outcome: TestOutcome = {
        name: event.test,
        status: event.state,
        message: first
          ? (timedOutMessage(first.message, waitingFor) ?? messageOf(first))
          : event.note,
        hint: first?.hint,
        stack: learnerStack(first?.stack),
        location: learnerLocation(first?.stack, file),
        durationMs: event.durationMs === undefined ? undefined : Math.round(event.durationMs),
        shard: event.shard,
      };
      if (earlier >= 0) tests[earlier] = outcome;
      else tests.push(outcome);
    }
  }
  const order = events.findLast((e) => e.event === "order")?.tests ?? [];
  const rank = (name: string) => (order.includes(name) ? order.indexOf(name) : order.length);
  tests.sort((a, b) => rank(a.name) - rank(b.name));
  for (const test of tests) {
    const state = states.get(test.name);
    if (state && test.status === "failed") test.redis = state;
  }
  // Tests run one after another, so the last one started without a result is the one that was
  // running when the run ended (earlier results may never arrive if the process was stuck).
  const unfinished = started.findLast((name) => !tests.some((t) => t.name === name));
  if (ending.timedOutAfterMs !== undefined) {
    const reason = cutOffReason(ending.timedOutAfterMs, unfinished ? [unfinished] : []);
    // The stuck test is listed, failed, after the ones that finished before it.
    const stuck: TestOutcome[] = unfinished
      ? [
          {
            name: unfinished,
            status: "failed",
            message: `${STOPPED_AFTER}${ending.timedOutAfterMs / 1000}s: this test never finished, ${AFTER_IT_NOT_RUN}. ${NEVER_RETURNS}`,
          },
        ]
      : [];
    return { status: "failed", reason, tests: [...tests, ...stuck], output };
  }
  const bug = errors.find(looksLikeOurBug);
  if (bug) {
    return {
      status: "error",
      reason: `The check itself failed to run: ${bug.message}`,
      tests,
      output,
    };
  }
  const exited = errors.find((e) => /process\.exit/.test(e.message));
  if (exited || (!ended && unfinished)) {
    return {
      status: "failed",
      reason: exited
        ? `Your code called process.exit() ${unfinished ? `during "${unfinished}"` : "while your file was being loaded"}. Library code should return or throw, never end the process.`
        : `The check process ended during "${unfinished}" (exit code ${ending.exitCode ?? ending.signal}). Your code may have called process.exit() or crashed Node.`,
      tests,
      output,
    };
  }
  if (errors.length > 0) {
    const first = errors[0];
    return {
      status: "failed",
      reason: first
        ? (escapedMessage(first, file) ?? messageOf(first))
        : "The check reported an error.",
      tests,
      output,
    };
  }
  if (!ended) {
    return {
      status: "error",
      reason: `The check process ended before reporting (exit code ${ending.exitCode ?? ending.signal}). Run again with --verbose and report this as a workbook bug.`,
      tests,
      output,
    };
  }
  return fromTests(tests, output);
}

type Decided = ReturnType<typeof decide>;

/** A run that ended as it should: its tests decide. */
function fromTests(tests: TestOutcome[], output: string[]): Decided {
  if (tests.length === 0) {
    return { status: "error", reason: "The check ran no tests: a workbook bug.", tests, output };
  }
  const failed = tests.filter((t) => t.status === "failed");
  if (failed.length > 0) {
    return {
      status: "failed",
      reason: `${failed.length} of ${tests.length} checks failed.`,
      tests,
      output,
    };
  }
  return { status: "passed", tests, output };
}

const GENERIC_FAILURE = /^\d+ of \d+ checks failed\.$/;

function onlyCountsFailures(reason: string | undefined): boolean {
  return GENERIC_FAILURE.test(reason ?? "");
}

/**
 * A failed run's reason, unless its failed tests already say it: the count of failures, or a
 * hang told by the stuck test. An escaped rejection or a process.exit() is told even when a test
 * failed too, as that test's message may be only a consequence of it.
 */
export function reasonBeyondTests(verdict: Pick<Verdict, "reason" | "tests">): string | undefined {
  const { reason, tests } = verdict;
  const failed = tests.filter((t) => t.status === "failed");
  if (failed.length === 0) return reason;
  if (onlyCountsFailures(reason)) return undefined;
  if (reason?.includes(NEVER_RETURNS) && failed.some((t) => t.message?.includes(NEVER_RETURNS))) {
    return undefined;
  }
  return reason;
}

/**
 * What several processes sharing a check's tests reported (src/check/shards.ts), as one run
 * would have: each test's result from the process that ran it, in the check's order, and the
 * run's status from all of them. A process that failed as a whole (it timed out, its process
 * ended, the learner's code threw outside a test) gives the run its reason; when several were
 * cut off by the run's limit (`timedOutAfterMs`), the reason names each one's stuck test.
 */
export function mergeShards(parts: Decided[], timedOutAfterMs?: number): Decided {
  const [first] = parts;
  if (parts.length === 1 && first) return first;
  const ran = (t: TestOutcome) => !(t.status === "skipped" && t.message === CLAIMED_ELSEWHERE);
  // Every process lists every test it reached; the one that reached most gives the order.
  const order = [...parts].sort((a, b) => b.tests.length - a.tests.length);
  const names = [...new Set(order.flatMap((p) => p.tests.map((t) => t.name)))];
  const tests = names.flatMap((name) => {
    const outcome = parts.flatMap((p) => p.tests).find((t) => t.name === name && ran(t));
    return outcome ? [outcome] : [];
  });
  // A test that never finished held up only its own process: the others went on past it.
  for (const [i, test] of tests.entries()) {
    if (i < tests.length - 1 && test.message?.includes(AFTER_IT_NOT_RUN)) {
      tests[i] = { ...test, message: test.message.replace(AFTER_IT_NOT_RUN, OTHERS_WENT_ON) };
    }
  }
  const output = parts.flatMap((p) => p.output);
  const whole = parts.find(
    (p) => p.status !== "passed" && !(p.status === "failed" && onlyCountsFailures(p.reason)),
  );
  if (!whole) return fromTests(tests, output);
  // Several processes cut off by the limit each had a test that never finished: name them all,
  // not only the first process's (the learner's loop may be in any of them).
  const cutOff = parts.filter((p) => p.reason?.startsWith(CUT_OFF)).length;
  const stuck = tests.filter((t) => t.message?.startsWith(STOPPED_AFTER)).map((t) => t.name);
  if (timedOutAfterMs !== undefined && cutOff > 1 && stuck.length > 1) {
    return { ...whole, reason: cutOffReason(timedOutAfterMs, stuck), tests, output };
  }
  return { ...whole, tests, output };
}
