/** argv -> a command. Thin: the commands live in src/ui/ and src/doctor.ts. */
import kleur from "kleur";
import { commandUsage, helpPointer, parseArgs, USAGE, UsageError } from "./args.ts";
import { loadCatalog } from "./catalog.ts";
import { releaseKept } from "./redis/kept.ts";
import { redact } from "./redis/redact.ts";
import { redisUrlFrom } from "./redis/target.ts";
import { guardOutput } from "./stdio.ts";
import {
  check,
  demo,
  doctor,
  hint,
  lessonFrom,
  list,
  plainWatch,
  reset,
  solution,
} from "./ui/commands.ts";
import { exitCleanly, handleSignals } from "./ui/exit.ts";

/**
 * The guided runner's prompts (@inquirer/prompts) are loaded only by the commands that show them:
 * every package loaded through tsx's hooks costs start-up time, and `npm run check` is timed
 * from the learner's Enter to the verdict.
 */
const home = () => import("./ui/home.ts");

/** A prompt needs someone to answer it: both ends must be a terminal. */
const interactive = Boolean(process.stdin.isTTY && process.stdout.isTTY);

/** Commands that run checks: what a failed check kept is over once the next one runs. */
const ENDS_KEPT = new Set(["start", "watch", "check", "demo"]);

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  command = args.command;
  if (args.command === "help") {
    console.log(USAGE);
    return 0;
  }
  if (args.flags.has("--help")) {
    console.log(commandUsage(args.command));
    return 0;
  }
  const lessons = loadCatalog();
  if (ENDS_KEPT.has(args.command)) {
    const ended = await releaseKept();
    if (ended && !args.flags.has("--json")) console.error(kleur.dim(ended));
  }
  switch (args.command) {
    case "start":
      return interactive ? (await home()).guided(lessons) : (await home()).plainStart(lessons);
    case "watch":
      return interactive && !args.flags.has("--json")
        ? (await home()).guided(lessons, lessonFrom(lessons, args.lesson))
        : plainWatch(lessons, args);
    case "list":
      return list(lessons, args);
    case "check":
      return check(lessons, args);
    case "hint":
      return hint(lessons, args);
    case "reset":
      return reset(lessons, args);
    case "solution":
      return solution(lessons, args);
    case "doctor":
      return doctor(lessons, args);
    case "demo":
      return demo(lessons, args);
    case "lesson":
      return (await import("./ui/read-lesson.ts")).readLesson(lessons, args);
    case "redis-cli":
      return (await import("./ui/redis-cli.ts")).redisCli(args);
    default:
      throw new UsageError(`Unknown command "${args.command}".`);
  }
}

/** The command being run, for the help pointer after a usage error. */
let command: string | undefined;

handleSignals();
// A reader that went away (`| head`) has seen all it wanted: end quietly, as a broken pipe (128 + 13).
guardOutput(() => void exitCleanly(141));
try {
  // Known before anything runs, so every output hides the password, whatever prints it.
  if (process.env.REDIS_URL?.trim()) redisUrlFrom(process.env.REDIS_URL);
} catch {
  // Not a usable URL: the command that opens Redis says so.
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: Error) => {
    if (error instanceof UsageError) {
      console.error(`${error.message}\n${helpPointer(error.command ?? command)}`);
    } else {
      console.error(kleur.red(redact(error.message)));
      if (process.argv.includes("--verbose")) console.error(redact(error.stack ?? ""));
    }
    // A script that asked for JSON can parse the failure too; the person reads stderr.
    if (process.argv.includes("--json")) {
      console.log(
        JSON.stringify({ error: redact(error.message), usage: error instanceof UsageError }),
      );
    }
    // Through the clean exit, so a Redis started before the error is stopped too.
    void exitCleanly(2);
  },
);
