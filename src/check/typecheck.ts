import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { resolve as absolute, dirname, join, relative } from "node:path";
import { ROOT } from "../paths.ts";
import { killGroupOnExit } from "./cleanup.ts";
import { guardRun } from "./watchdog.ts";

export interface Diagnostic {
  file: string;
  line: number;
  column: number;
  message: string;
}

/** `file(3,7): error TS2322: Type 'string' is not assignable ...` */
export function parseTscOutput(output: string): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  for (const line of output.split("\n")) {
    const match = /^(.+?)\((\d+),(\d+)\): error (TS\d+: .*)$/.exec(line.trim());
    if (match) {
      const [, file = "", row = "0", column = "0", message = ""] = match;
      diagnostics.push({ file, line: Number(row), column: Number(column), message });
    } else if (diagnostics.length > 0 && /^\s+\S/.test(line)) {
      const last = diagnostics[diagnostics.length - 1];
      if (last) last.message += `\n${line.trimEnd()}`;
    }
  }
  return diagnostics;
}

/**
 * A project config for one exercise file with the course's own compiler settings. It lives
 * under node_modules so that `redis` and @types/node resolve exactly as they do for the course.
 */
export function configFor(...files: string[]): string {
  const config = configPath();
  writeConfig(config, files);
  return config;
}

function configPath(): string {
  const dir = join(ROOT, "node_modules", ".cache", "workbook");
  mkdirSync(dir, { recursive: true });
  return join(dir, `tsconfig.${randomBytes(4).toString("hex")}.json`);
}

function writeConfig(config: string, files: string[]): void {
  writeFileSync(
    config,
    JSON.stringify({ extends: join(ROOT, "tsconfig.json"), files, include: [] }),
  );
}

/**
 * TypeScript 7's compiler is a native program; its `tsc` script is a node process that only
 * starts it. Starting the program directly saves a node start, on the path of every check.
 */
function compiler(): { command: string; args: string[] } {
  const script = join(ROOT, "node_modules", "typescript", "bin", "tsc");
  try {
    const platform = `@typescript/typescript-${process.platform}-${process.arch}`;
    const require = createRequire(join(ROOT, "node_modules", "typescript", "package.json"));
    const exe = join(dirname(require.resolve(`${platform}/package.json`)), "lib", "tsc");
    if (process.platform !== "win32" && existsSync(exe)) return { command: exe, args: [] };
  } catch {
    // Not laid out as expected: the script finds it.
  }
  return { command: process.execPath, args: [script] };
}

/** Type-checks one exercise file with the project's own compiler settings, in a new compiler. */
export async function typecheck(file: string): Promise<Diagnostic[]> {
  const byFile = await typecheckMany([file]);
  return [...(byFile.get(absolute(ROOT, file)) ?? []), ...(byFile.get("") ?? [])];
}

/**
 * Type-checks several exercise files in one compiler run, each file's errors under its absolute
 * path. Exercise files are modules that import only packages, so one program with all of them
 * reports for each what a program of its own would: the self-verification checks a lesson's
 * solution, starter, mistakes and variants this way, loading node-redis's types once. Errors
 * in a file that was not asked for are listed under "": no one of the files can be blamed.
 */
export async function typecheckMany(files: string[]): Promise<Map<string, Diagnostic[]>> {
  // Killed mid-check, we leave neither a compiler running nor its config file: the guard is
  // armed before either exists, and finds the compiler by this id in its environment.
  const runId = `tsc-${randomBytes(4).toString("hex")}`;
  const config = configPath();
  const guard = guardRun(runId, [config]);
  writeConfig(config, files);
  const { command, args } = compiler();
  try {
    const output = await new Promise<string>((resolve, reject) => {
      // Its own process group, so an exit mid-check can take it down with killGroupOnExit.
      // One checker for a batch: TypeScript 7's several checkers each redo the work the files
      // share (node-redis's types), 3.9 s of CPU for lesson 14's 23 files against 1.5 s.
      const checkers = files.length > 1 ? ["--checkers", "1"] : [];
      const child = spawn(command, [...args, "-p", config, "--pretty", "false", ...checkers], {
        cwd: ROOT,
        stdio: ["ignore", "pipe", "pipe"],
        detached: true,
        env: { ...process.env, WORKBOOK_RUN_ID: runId },
      });
      const forget = child.pid === undefined ? () => false : killGroupOnExit(child.pid);
      if (child.pid !== undefined) guard.group(child.pid);
      let text = "";
      child.stdout.on("data", (chunk) => {
        text += chunk;
      });
      child.stderr.on("data", (chunk) => {
        text += chunk;
      });
      child.on("error", reject);
      child.on("close", () => {
        forget();
        resolve(text);
      });
    });
    const byFile = new Map<string, Diagnostic[]>(files.map((file) => [absolute(ROOT, file), []]));
    byFile.set("", []);
    for (const d of parseTscOutput(output)) {
      const mine = byFile.get(absolute(ROOT, d.file)) ?? byFile.get("");
      mine?.push({ ...d, file: relative(ROOT, join(ROOT, d.file)) });
    }
    return byFile;
  } finally {
    rmSync(config, { force: true });
    guard.release();
  }
}
