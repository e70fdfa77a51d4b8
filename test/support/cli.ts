/** The workbook's commands as a script or CI runs them, from a test. */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { childEnded } from "../../src/child-ended.ts";
import { ROOT } from "../../src/paths.ts";

/**
 * Node's arguments to run a TypeScript file in one process, as npm's scripts do (tsx's own CLI
 * starts a second node and SIGKILLs it when it does not answer a signal within 30 ms).
 */
export const TSX = ["--import", "tsx"] as const;

/**
 * Our environment minus what tells a program it runs under a test (vitest's own variables,
 * NODE_ENV), so the command behaves as it does for a learner; `extra` is added.
 */
export function scrubbedEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!/^VITEST|^TEST$|^NODE_ENV$/.test(name)) env[name] = value;
  }
  return { ...env, ...extra };
}

/** What a command sees: the private Redis (REDIS_URL empty), no colours, `extra` on top. */
export function cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return scrubbedEnv({ REDIS_URL: "", NO_COLOR: "1", ...extra });
}

/** Runs `src/cli.ts args` to the end in cliEnv(env); `env` names the workspace, say. */
export function cli(args: string[], env: Record<string, string> = {}) {
  const result = spawnSync(process.execPath, [...TSX, "src/cli.ts", ...args], {
    cwd: ROOT,
    encoding: "utf8",
    env: cliEnv(env),
    timeout: 120_000,
  });
  return { code: result.status, out: result.stdout, err: result.stderr };
}

/** cli() without blocking: several commands can run at once. */
export async function cliAsync(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [...TSX, "src/cli.ts", ...args], {
    cwd: ROOT,
    env: cliEnv(env),
    stdio: ["ignore", "pipe", "pipe"],
    timeout: 120_000,
  });
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    out += chunk;
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    err += chunk;
  });
  const code = await exitOf(child);
  return { code, out, err };
}

/** The exit code of `child` once its output has been read to the end (see childEnded). */
export async function exitOf(child: ChildProcess, drainMs = 5_000): Promise<number | null> {
  return (await childEnded(child, drainMs)).code;
}

/**
 * A workbook command started the way a learner starts it (`npm run ...` or the CLI under tsx) in
 * a process group of its own, so a test can kill it, or its whole group, like a user would.
 */
export function launch(command: string, args: string[], env: Record<string, string>): ChildProcess {
  return spawn(command, args, { cwd: ROOT, detached: true, stdio: "ignore", env: cliEnv(env) });
}
