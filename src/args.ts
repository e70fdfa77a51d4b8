/** argv -> a command. Pure: the shell (cli.ts) does all the I/O. */
import { parseArgs as parseNodeArgs } from "node:util";
import { nearest } from "./nearest.ts";

export interface ParsedArgs {
  command: string;
  lesson?: string;
  /** The boolean options given, as "--json". */
  flags: Set<string>;
  /** The options with a value, as "--level" -> "2". */
  options: Map<string, string>;
  /** A pass-through command's arguments after its own options (redis-cli's command). */
  rest?: string[];
}

type OptionType = "boolean" | "string";

interface CommandSpec {
  /** Whether the command takes a lesson. */
  lesson: "none" | "optional" | "required";
  options: Record<string, OptionType>;
  /** The command's lines of the usage. */
  usage: string;
  /** Arguments from the first positional (or after `--`) go to another program as they are. */
  passThrough?: boolean;
}

const TARGET_OPTIONS: Record<string, OptionType> = {
  json: "boolean",
  verbose: "boolean",
  solution: "boolean",
  starter: "boolean",
  mistake: "string",
  variant: "string",
};

/** One table of options per command: anything else is refused before a command runs. */
const COMMANDS: Record<string, CommandSpec> = {
  start: {
    lesson: "none",
    options: {},
    usage: "  npm start                     the guided course (in a terminal)",
  },
  list: {
    lesson: "none",
    options: { json: "boolean" },
    usage: "  npm run list -- [--json]      lessons and your progress",
  },
  check: {
    lesson: "optional",
    options: { ...TARGET_OPTIONS, keep: "boolean" },
    usage: `  npm run check -- [lesson]     check your exercise once; --json, --verbose,
                                --solution, --starter, --mistake <name>,
                                --variant <name>; --keep: after a failure, keep
                                Redis and the check's keys to look at`,
  },
  watch: {
    lesson: "optional",
    options: TARGET_OPTIONS,
    usage: `  npm run watch -- [lesson]     check again on every save; --json: one verdict
                                a line`,
  },
  hint: {
    lesson: "optional",
    options: { json: "boolean", level: "string" },
    usage: "  npm run hint -- [lesson]      the next hint; --level 1|2|3, --json",
  },
  reset: {
    lesson: "optional",
    options: { json: "boolean" },
    usage: `  npm run reset -- [lesson]     restore the starter, keeping your code as .bak
                                (older ones as .bak.1, .bak.2, ...); --json`,
  },
  solution: {
    lesson: "optional",
    options: { json: "boolean", force: "boolean", full: "boolean" },
    usage: `  npm run solution -- [lesson]  the solution as a diff against your code, once
                                your check passes; --force, --full, --json`,
  },
  demo: {
    lesson: "required",
    options: {},
    usage: "  npm run demo -- <lesson>      watch a lesson's idea run",
  },
  lesson: {
    lesson: "optional",
    options: {},
    usage: "  npm run lesson -- [lesson]    read a lesson's text in the terminal",
  },
  "redis-cli": {
    lesson: "none",
    options: { stop: "boolean" },
    passThrough: true,
    usage: `  npm run redis-cli -- [args]   redis-cli on the workbook's Redis (a kept check's,
                                REDIS_URL, or a private one); with args, one
                                command; --stop ends what was kept; redis-cli's
                                own options after a second --`,
  },
  doctor: {
    lesson: "none",
    options: { json: "boolean" },
    usage: "  npm run doctor                check Node, redis-server and REDIS_URL; --json",
  },
};

export class UsageError extends Error {
  override name = "UsageError";
  /** The command whose usage applies, when known. */
  command?: string;
}

function usageError(command: string, message: string): UsageError {
  const error = new UsageError(message);
  error.command = command;
  return error;
}

/** The option named by `arg` ("--level=2" -> "level"), or undefined for a positional. */
function optionName(arg: string): string | undefined {
  const match = /^--?([^=]*)/.exec(arg);
  return match ? match[1] : undefined;
}

/** The first option in argv that `spec` does not know: what util.parseArgs refused. */
function unknownOption(argv: string[], spec: CommandSpec): string | undefined {
  const end = argv.indexOf("--");
  return (end < 0 ? argv : argv.slice(0, end)).find((arg) => {
    const name = optionName(arg);
    return (
      name !== undefined &&
      arg !== "-" &&
      name !== "help" &&
      name !== "h" &&
      !(name in spec.options)
    );
  });
}

export function parseArgs(argv: string[]): ParsedArgs {
  const [command = "start", ...rest] = argv;
  if (command === "help" || command === "--help" || command === "-h") {
    return { command: "help", flags: new Set(), options: new Map() };
  }
  const spec = COMMANDS[command];
  if (!spec) {
    const guess = nearest(command, Object.keys(COMMANDS));
    throw new UsageError(`Unknown command "${command}"${guess ? `: did you mean ${guess}?` : "."}`);
  }
  let own = rest;
  let passed: string[] | undefined;
  if (spec.passThrough) {
    const split = rest.findIndex((arg) => arg === "--" || !arg.startsWith("-"));
    if (split >= 0) {
      own = rest.slice(0, split);
      passed = rest.slice(rest[split] === "--" ? split + 1 : split);
    }
  }
  let parsed: ReturnType<typeof parseNodeArgs>;
  try {
    parsed = parseNodeArgs({
      args: own,
      strict: true,
      allowPositionals: true,
      options: {
        help: { type: "boolean", short: "h" },
        ...Object.fromEntries(Object.entries(spec.options).map(([name, type]) => [name, { type }])),
      },
    });
  } catch (error) {
    throw usageError(
      command,
      describeParseError(error as NodeJS.ErrnoException, own, command, spec),
    );
  }
  const flags = new Set<string>();
  const options = new Map<string, string>();
  for (const [name, value] of Object.entries(parsed.values)) {
    if (value === true) flags.add(`--${name}`);
    else if (typeof value === "string") options.set(`--${name}`, value);
  }
  if (flags.has("--help")) return { command, flags, options };
  if (spec.passThrough) return { command, flags, options, rest: passed ?? [] };
  const [lesson, extra] = parsed.positionals;
  if (extra !== undefined) throw usageError(command, `Unexpected argument "${extra}".`);
  if (lesson !== undefined && spec.lesson === "none") {
    throw usageError(command, `npm run ${command} takes no lesson (got "${lesson}").`);
  }
  if (lesson !== undefined && lesson.trim() === "") {
    throw usageError(command, "The lesson is empty: give a number (2 or 02) or a name.");
  }
  if (lesson === undefined && spec.lesson === "required") {
    throw usageError(command, `npm run ${command} needs a lesson, like: npm run ${command} -- 02`);
  }
  return { command, lesson, flags, options };
}

function describeParseError(
  error: NodeJS.ErrnoException,
  argv: string[],
  command: string,
  spec: CommandSpec,
): string {
  const known = [...Object.keys(spec.options), "help"].map((name) => `--${name}`);
  if (error.code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
    const given = (unknownOption(argv, spec) ?? "").split("=")[0] ?? "";
    const guess = nearest(`--${optionName(given) ?? ""}`, known);
    if (guess) return `Unknown option ${given}: did you mean ${guess}?`;
    return `Unknown option ${given}: ${command} knows ${known.join(", ")}.`;
  }
  const name = /'(--?[\w-]+)/.exec(error.message)?.[1] ?? "";
  if (error.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE" && name) {
    return spec.options[name.replace(/^-+/, "")] === "string"
      ? `${name} needs a value, like ${name} <value> or ${name}=<value>.`
      : `${name} takes no value.`;
  }
  return error.message;
}

/** The usage of one command, for `npm run <command> -- --help`. */
export function commandUsage(command: string): string {
  const spec = COMMANDS[command];
  // The front door's help is the whole usage: every command is one step from there.
  if (!spec || command === "start") return USAGE;
  const how = `npm run ${command} --`;
  const lesson = { none: "", optional: " [lesson]", required: " <lesson>" }[spec.lesson];
  return `Usage: ${how}${lesson}${Object.keys(spec.options).length > 0 ? " [options]" : ""}\n\n${spec.usage}${lesson ? `\n\n${LESSON_NOTE}` : ""}`;
}

/** The line after a usage error: where the whole usage of that command is. */
export function helpPointer(command: string | undefined): string {
  if (command === "start") return "Run `npm start -- --help` for its usage.";
  return command && COMMANDS[command]
    ? `Run \`npm run ${command} -- --help\` for its usage.`
    : `Commands: ${Object.keys(COMMANDS).join(", ")}.`;
}

const LESSON_NOTE = `[lesson] is a number (2 or 02) or a name (pubsub-broadcast); without it, the
lesson you are on.`;

/** Every action as a plain command, for scripts, CI, and runs without a terminal. */
export const PLAIN_COMMANDS = Object.entries(COMMANDS)
  .filter(([name]) => name !== "start")
  .map(([, spec]) => spec.usage)
  .join("\n");

export const USAGE = `Usage: npm run <command> -- [lesson] [options]

${COMMANDS.start?.usage}
${PLAIN_COMMANDS}

${LESSON_NOTE} Exit codes: 0 passed or done, 1 not passed (doctor: a problem
found), 2 could not run.`;
