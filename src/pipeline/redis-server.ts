/**
 * The pipeline's own redis-server. Like src/redis/server.ts (loopback, free port, temporary
 * directory, a watchdog that stops it when we die), plus what the chaos run needs and that one
 * does not offer: append-only persistence and a restart on the SAME port and directory, so that
 * clients reconnect to where they were and find every accepted document again.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectRaw } from "../redis/raw.ts";
import { RedisNotInstalled, redisServerVersion } from "../redis/server.ts";

export interface PipelineRedis {
  url: string;
  port: number;
  /** Stops the server cleanly (SHUTDOWN writes the append-only file) and starts it again. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Runs redis-server in the background and waits for it. If our end of the stdin pipe closes
 * (we exited, even by SIGKILL), `read` returns and the server is stopped. When the server exits
 * by itself (SHUTDOWN), `wait` returns and the shell ends; the reader is killed with the group.
 */
const WATCHDOG = [
  // A background job's stdin is /dev/null, so the reader gets our pipe explicitly on fd 3.
  "exec 3<&0",
  'redis-server "$@" </dev/null & pid=$!',
  'trap "kill $pid 2>/dev/null; exit" TERM INT',
  "(read _ <&3; kill $pid 2>/dev/null) &",
  "wait $pid",
].join("\n");

const groups = new Set<number>();
let hooked = false;

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (groupAlive(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return true;
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

async function ping(port: number): Promise<boolean> {
  try {
    const conn = await connectRaw("127.0.0.1", port);
    try {
      return (await conn.command(["PING"])) === "PONG";
    } finally {
      conn.close();
    }
  } catch {
    return false;
  }
}

function launch(port: number, dir: string, aof: boolean): ChildProcess {
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
    aof ? "yes" : "no",
    "--appendfsync",
    "everysec",
    "--protected-mode",
    "yes",
    "--daemonize",
    "no",
    "--loglevel",
    "warning",
    "--logfile",
    join(dir, "redis.log"),
  ];
  const child = spawn("sh", ["-c", WATCHDOG, "pipeline-redis", ...args], {
    detached: true,
    stdio: ["pipe", "ignore", "ignore"],
  });
  if (child.pid !== undefined) groups.add(child.pid);
  if (!hooked) {
    hooked = true;
    process.on("exit", () => {
      for (const pid of groups) killGroup(pid, "SIGKILL");
    });
  }
  return child;
}

async function waitReady(port: number, child: ChildProcess, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) return false;
    if (await ping(port)) return true;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return false;
}

/** Starts a private server; `aof` turns on append-only persistence (for restarts). */
export async function startPipelineRedis(options: { aof: boolean }): Promise<PipelineRedis> {
  if (!redisServerVersion()) throw new RedisNotInstalled();
  const dir = mkdtempSync(join(tmpdir(), "pipeline-redis-"));
  let port = 0;
  let child: ChildProcess | undefined;
  for (let attempt = 0; attempt < 5 && !child; attempt++) {
    port = await freePort();
    const candidate = launch(port, dir, options.aof);
    if (await waitReady(port, candidate, 5000)) child = candidate;
    else if (candidate.pid !== undefined) killGroup(candidate.pid, "SIGKILL");
  }
  if (!child) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error("redis-server did not start on 127.0.0.1: see `npm run doctor`.");
  }
  let current: ChildProcess = child;

  const end = async (pid: number | undefined) => {
    if (pid === undefined) return;
    killGroup(pid, "SIGTERM");
    if (!(await waitGone(pid, 2000))) killGroup(pid, "SIGKILL");
    await waitGone(pid, 2000);
    groups.delete(pid);
  };

  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    async restart() {
      const old = current;
      try {
        const conn = await connectRaw("127.0.0.1", port);
        // SHUTDOWN never answers: the connection just closes once the server has stopped.
        await Promise.race([
          conn.command(["SHUTDOWN"]).catch(() => undefined),
          new Promise((resolve) => setTimeout(resolve, 5000)),
        ]);
        conn.close();
      } catch {
        // not reachable: treat as already down
      }
      await new Promise<void>((resolve) => {
        if (old.exitCode !== null || old.signalCode !== null) resolve();
        else old.once("exit", () => resolve());
      });
      await end(old.pid);
      current = launch(port, dir, options.aof);
      if (!(await waitReady(port, current, 10_000))) {
        throw new Error(`redis-server did not come back on port ${port}.`);
      }
    },
    async stop() {
      await end(current.pid);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
