import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectRaw } from "./raw.ts";

export interface PrivateServer {
  url: string;
  port: number;
  version: string;
  stop(): Promise<void>;
}

export class RedisNotInstalled extends Error {
  constructor() {
    super(installAdvice());
    this.name = "RedisNotInstalled";
  }
}

export function installAdvice(): string {
  return [
    "The workbook needs redis-server (version 6.2 or newer) and could not find it.",
    "",
    "Install it, then run the same command again:",
    "  Debian/Ubuntu:  sudo apt-get install -y redis-server",
    "  macOS:          brew install redis",
    "  Docker:         docker run -d --name workbook-redis -p 6379:6379 redis:7",
    "                  then: export REDIS_URL=redis://localhost:6379",
    "",
    "Or point the workbook at a Redis you already have (only keys it creates are touched):",
    "  export REDIS_URL=rediss://:<password>@<name>.redis.cache.windows.net:6380",
  ].join("\n");
}

/** The installed redis-server's version, or undefined when it is not on PATH. */
export function redisServerVersion(): string | undefined {
  const result = spawnSync("redis-server", ["--version"], { encoding: "utf8" });
  if (result.error || result.status !== 0) return undefined;
  return /v=(\d+\.\d+\.\d+)/.exec(result.stdout)?.[1];
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() =>
        typeof address === "object" && address
          ? resolve(address.port)
          : reject(new Error("no port")),
      );
    });
  });
}

// Every private server this process started, so the exit handler can stop them synchronously.
const running = new Set<ChildProcess>();
let exitHookInstalled = false;

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const child of running) killGroup(child, "SIGKILL");
  });
}

/**
 * The shell around redis-server watches our stdin pipe: if this process dies without cleaning
 * up (even SIGKILL), the pipe closes, `read` returns and the server is stopped. Nothing outlives
 * the workbook.
 */
const WATCHDOG =
  'redis-server "$@" & pid=$!; trap "kill $pid; exit" TERM INT; read _; kill $pid; wait $pid';

async function startOnce(port: number, dir: string, extraArgs: string[]): Promise<ChildProcess> {
  const args = [
    "--bind",
    "127.0.0.1",
    "--port",
    String(port),
    "--dir",
    dir,
    "--save",
    "",
    "--appendonly",
    "no",
    "--protected-mode",
    "yes",
    "--daemonize",
    "no",
    "--loglevel",
    "warning",
    "--logfile",
    join(dir, "redis.log"),
    ...extraArgs,
  ];
  const child = spawn("sh", ["-c", WATCHDOG, "redis-watchdog", ...args], {
    detached: true,
    stdio: ["pipe", "ignore", "ignore"],
  });
  running.add(child);
  child.once("exit", () => running.delete(child));
  return child;
}

async function waitForPing(port: number, child: ChildProcess, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) return false;
    try {
      const conn = await connectRaw("127.0.0.1", port);
      try {
        const reply = await conn.command(["PING"]);
        // A server started with --requirepass answers NOAUTH: it is up all the same.
        if (reply === "PONG" || (reply instanceof Error && /^NOAUTH/.test(reply.message))) {
          return true;
        }
      } finally {
        conn.close();
      }
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return false;
}

/**
 * Starts a throwaway redis-server: loopback only, a free port, a temporary directory, no
 * persistence. The caller must call stop(); an exit hook and a stdin watchdog back that up.
 */
export async function startPrivateServer(extraArgs: string[] = []): Promise<PrivateServer> {
  const version = redisServerVersion();
  if (!version) throw new RedisNotInstalled();
  installExitHook();
  const dir = mkdtempSync(join(tmpdir(), "workbook-redis-"));
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const child = await startOnce(port, dir, extraArgs);
    if (await waitForPing(port, child, 5000)) {
      let stopped: Promise<void> | undefined;
      const stop = () => {
        stopped ??= new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(force);
            rmSync(dir, { recursive: true, force: true });
            resolve();
          };
          if (child.exitCode !== null || child.signalCode !== null) return done();
          child.once("exit", done);
          const force = setTimeout(() => killGroup(child, "SIGKILL"), 2000);
          killGroup(child, "SIGTERM");
        });
        return stopped;
      };
      return { url: `redis://127.0.0.1:${port}`, port, version, stop };
    }
    // Port taken between probing and binding, or a slow start: try another port.
    killGroup(child, "SIGKILL");
  }
  rmSync(dir, { recursive: true, force: true });
  throw new Error(
    "redis-server is installed but did not start on 127.0.0.1. Run `npm run doctor` to see why.",
  );
}
