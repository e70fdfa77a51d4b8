/** argv -> a command. Pure: the shell (cli.ts) does all the I/O. */
export interface ParsedArgs {
  command: string;
  lesson?: string;
  flags: Set<string>;
  options: Map<string, string>;
}

const VALUE_OPTIONS = new Set(["--level", "--mistake", "--variant"]);

export function parseArgs(argv: string[]): ParsedArgs {
  const [command = "start", ...rest] = argv;
  const flags = new Set<string>();
  const options = new Map<string, string>();
  let lesson: string | undefined;
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i] ?? "";
    if (arg.startsWith("--")) {
      const [name = "", inline] = arg.split("=", 2);
      if (VALUE_OPTIONS.has(name)) {
        const value = inline ?? rest[++i];
        if (value === undefined) throw new UsageError(`${name} needs a value.`);
        options.set(name, value);
      } else {
        flags.add(name);
      }
    } else if (lesson === undefined) {
      lesson = arg;
    } else {
      throw new UsageError(`Unexpected argument "${arg}".`);
    }
  }
  return { command, lesson, flags, options };
}

export class UsageError extends Error {
  override name = "UsageError";
}

/** Every action as a plain command, for scripts, CI, and runs without a terminal. */
export const PLAIN_COMMANDS = `  npm run list -- [--json]      lessons and your progress
  npm run check -- [lesson]     check your exercise once; --json, --verbose,
                                --solution, --starter, --mistake <name>,
                                --variant <name>
  npm run watch -- [lesson]     check again on every save; --json: one verdict
                                a line
  npm run hint -- [lesson]      the next hint; --level 1|2|3, --json
  npm run reset -- [lesson]     restore the starter, keeping your code as .bak
  npm run solution -- [lesson]  the solution as a diff against your code, once
                                your check passes; --force, --full, --json
  npm run demo -- <lesson>      watch a lesson's idea run
  npm run doctor                check Node, redis-server and REDIS_URL; --json`;

export const USAGE = `Usage: npm run <command> -- [lesson] [options]

  npm start                     the guided course (in a terminal)
${PLAIN_COMMANDS}

[lesson] is a number (2 or 02) or a name (pubsub-broadcast); without it, the
lesson you are on. Exit codes: 0 passed or done, 1 not passed (doctor: a problem
found), 2 could not run.`;
