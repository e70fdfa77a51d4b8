/**
 * `npm run redis-cli -- [args]`: Debian's redis-cli on the workbook's Redis, so the lessons'
 * "Try it yourself" commands reach the same server the checks use. The password never goes on
 * redis-cli's command line (where `ps` shows it) nor into our output: REDISCLI_AUTH carries it.
 */
import { spawn, spawnSync } from "node:child_process";
import kleur from "kleur";
import type { ParsedArgs } from "../args.ts";
import {
  KEEP_SECONDS,
  markKeptUsed,
  readKept,
  recordKeptServer,
  releaseKept,
} from "../redis/kept.ts";
import { startPrivateServer } from "../redis/server.ts";
import { redisUrlFrom } from "../redis/target.ts";
import { tlsSettings } from "../redis/tls.ts";

export function redisCliAdvice(): string {
  return [
    "npm run redis-cli needs Redis's command-line client, redis-cli, and could not find it.",
    "",
    "Install it, then run the same command again:",
    "  Debian/Ubuntu:  sudo apt-get install -y redis-tools",
    "  macOS:          brew install redis",
  ].join("\n");
}

function redisCliInstalled(): boolean {
  const result = spawnSync("redis-cli", ["--version"], { stdio: "ignore" });
  return !result.error && result.status === 0;
}

/** redis-cli's connection options and environment for `url`: the secret only in the environment. */
export function redisCliConnection(url: string): { args: string[]; env: Record<string, string> } {
  const parsed = new URL(url);
  const host = parsed.hostname.replace(/^\[|\]$/g, "");
  const args = ["-h", host, "-p", parsed.port || (parsed.protocol === "rediss:" ? "6380" : "6379")];
  // redis-cli sends no server name unless asked, and a shared TLS endpoint may need it.
  const tls = tlsSettings(url);
  if (tls) args.push("--tls", "--sni", tls.servername ?? host);
  if (tls?.caFile) args.push("--cacert", tls.caFile);
  const user = decodeURIComponent(parsed.username);
  if (user && user !== "default") args.push("--user", user);
  const db = /^\/(\d+)$/.exec(parsed.pathname)?.[1];
  if (db && db !== "0") args.push("-n", db);
  const password = decodeURIComponent(parsed.password);
  return { args, env: password ? { REDISCLI_AUTH: password } : {} };
}

function run(args: string[], env: Record<string, string>): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn("redis-cli", args, {
      stdio: "inherit",
      // An inherited REDISCLI_AUTH would log into the private server with someone else's secret.
      env: { ...process.env, REDISCLI_AUTH: undefined, ...env },
    });
    child.on("error", () => resolve(2));
    child.on("exit", (code, signal) => resolve(code ?? (signal === "SIGINT" ? 130 : 1)));
  });
}

export async function redisCli(args: ParsedArgs): Promise<number> {
  if (args.flags.has("--stop")) {
    console.log((await releaseKept()) ?? "Nothing was kept: there is nothing to stop.");
    return 0;
  }
  if (!redisCliInstalled()) {
    console.error(redisCliAdvice());
    return 2;
  }
  const rest = args.rest ?? [];
  const kept = readKept();
  if (kept?.kind === "private" && kept.port !== undefined) {
    markKeptUsed(kept);
    return run(["-h", "127.0.0.1", "-p", String(kept.port), ...rest], {});
  }
  const raw = process.env.REDIS_URL?.trim();
  if (raw) {
    const connection = redisCliConnection(redisUrlFrom(raw));
    return run([...connection.args, ...rest], connection.env);
  }
  // Kept, not stopped on exit: the lessons' commands run one after another, or in two terminals
  // at once, and must all meet the same server.
  const server = await startPrivateServer();
  recordKeptServer(server.port, server.keep(KEEP_SECONDS));
  console.error(
    kleur.dim(
      `Started a private redis-server on 127.0.0.1:${server.port} for your commands. It stays for the next ones; it stops at your next check, after ${KEEP_SECONDS / 60} minutes unused, or with: npm run redis-cli -- --stop`,
    ),
  );
  return run(["-h", "127.0.0.1", "-p", String(server.port), ...rest], {});
}
