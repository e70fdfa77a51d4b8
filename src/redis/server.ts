import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { killGroupOnExit } from "../check/cleanup.ts";
import { killGroup, stopGroup } from "../process-group.ts";
import { handOverScratch, makeScratch, sweepOnce } from "../scratch.ts";
import { connectRaw, type Reply } from "./raw.ts";

export interface PrivateServer {
  url: string;
  port: number;
  version: string;
  /**
   * Stops the server cleanly (SHUTDOWN, which writes the append-only file when `aof` is on) and
   * starts it again on the same port and directory: clients reconnect to where they were.
   */
  restart(): Promise<void>;
  /**
   * Makes the server as it was started: lifts a CLIENT PAUSE WRITE, and starts it afresh (empty,
   * same port) when it is gone (SHUTDOWN), does not answer (CLIENT PAUSE ALL, DEBUG SLEEP) or any
   * CONFIG GET value differs from the start (maxmemory, notify-keyspace-events, requirepass...).
   */
  refresh(): Promise<void>;
  stop(): Promise<void>;
  /**
   * Lets the server outlive this process on purpose (`npm run check -- --keep`): it stops itself
   * once unused for `seconds` (whole minutes), and stop() becomes a no-op. Returns what a later
   * command needs to stop it.
   */
  keep(seconds: number): { pid: number; dir: string };
}

export interface ServerOptions {
  /** Append-only persistence, so that a restart() keeps every write. */
  aof?: boolean;
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

/** The installed redis-server's version, or undefined when it is not on PATH. Asked once. */
let installedVersion: { version: string | undefined } | undefined;
export function redisServerVersion(): string | undefined {
  installedVersion ??= (() => {
    const result = spawnSync("redis-server", ["--version"], { encoding: "utf8" });
    if (result.error || result.status !== 0) return { version: undefined };
    return { version: /v=(\d+\.\d+\.\d+)/.exec(result.stdout)?.[1] };
  })();
  return installedVersion.version;
}

export function freePort(): Promise<number> {
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

/**
 * Runs redis-server in the background and waits for it. If our end of the stdin pipe closes
 * (we exited, even by SIGKILL), `read` returns, the server is stopped and its directory ($1)
 * removed: nothing outlives the workbook. When the server exits by itself (SHUTDOWN), `wait`
 * returns and the shell ends; Node then closes the pipe too, and the reader leaves the
 * directory alone because the server was already gone. A "keep <minutes>" line instead of EOF
 * lets the server outlive us until $dir/used has not been touched for that long (each use of the
 * kept server touches it), then the same stop and removal happen.
 */
const WATCHDOG = [
  "dir=$1; shift",
  // A background job's stdin is /dev/null, so the reader gets our pipe explicitly on fd 3.
  "exec 3<&0",
  'redis-server "$@" </dev/null & pid=$!',
  'trap "kill $pid 2>/dev/null; exit" TERM INT',
  // Only if it was still running: after a SHUTDOWN we may start it again in the same directory.
  '(read -r what mins <&3; if [ "$what" = keep ]; then touch "$dir/used"',
  '  while [ -e "$dir/used" ] && [ -z "$(find "$dir/used" -mmin +"$mins")" ]; do sleep 15; done',
  'fi; kill $pid 2>/dev/null || exit; while kill -0 $pid 2>/dev/null; do sleep 0.05; done; rm -rf "$dir") &',
  "wait $pid",
].join("\n");

/** A redis-server behind its watchdog, in a process group of its own. */
export interface Launched {
  child: ChildProcess;
  /** Stops the group (TERM, then KILL) and forgets it for the exit hook. */
  end(): Promise<void>;
  /** SIGKILLs the group and forgets it for the exit hook. */
  kill(): Promise<void>;
  /** Tells the watchdog to let the server run until unused for `seconds`, and forgets the group. */
  keep(seconds: number): void;
}

export function launch(
  port: number,
  dir: string,
  extraArgs: string[],
  options: ServerOptions,
): Launched {
  const args = [
    "--bind",
    "127.0.0.1",
    "--port",
    String(port),
    "--dir",
    dir,
    "--save",
    "",
    ...(options.aof
      ? ["--appendonly", "yes", "--appendfsync", "everysec"]
      : ["--appendonly", "no"]),
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
  const child = spawn("sh", ["-c", WATCHDOG, "redis-watchdog", dir, ...args], {
    detached: true,
    stdio: ["pipe", "ignore", "ignore"],
  });
  const pid = child.pid;
  const forget = pid === undefined ? () => false : killGroupOnExit(pid);
  return {
    child,
    async end() {
      if (pid !== undefined) await stopGroup(pid, 2000);
      forget();
    },
    async kill() {
      if (pid !== undefined) await killGroup(pid);
      forget();
    },
    keep(seconds) {
      child.stdin?.end(`keep ${Math.max(1, Math.ceil(seconds / 60))}\n`);
      child.unref();
      forget();
    },
  };
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

export async function waitForPing(
  port: number,
  child: ChildProcess,
  timeoutMs: number,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited(child)) return false;
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
    await sleep(25);
  }
  return false;
}

/**
 * The server's whole configuration as one comparable text, after lifting a CLIENT PAUSE WRITE;
 * undefined when it does not answer within `ms` (gone, paused for all commands, busy).
 */
async function configuration(port: number, ms: number): Promise<string | undefined> {
  const conn = await connectRaw("127.0.0.1", port).catch(() => undefined);
  if (!conn) return undefined;
  const ask = async () => {
    const unpaused = await conn.command(["CLIENT", "UNPAUSE"]);
    const all: Reply =
      unpaused instanceof Error ? unpaused : await conn.command(["CONFIG", "GET", "*"]);
    if (!Array.isArray(all)) return undefined;
    const pairs: string[] = [];
    for (let i = 0; i + 1 < all.length; i += 2) pairs.push(`${all[i]}=${all[i + 1]}`);
    return pairs.sort().join("\n");
  };
  try {
    return await Promise.race([ask(), sleep(ms, undefined, { ref: false })]);
  } finally {
    conn.close();
  }
}

/** Asks the server to SHUTDOWN and waits (a while) until it has exited by itself. */
async function shutdown(port: number, child: ChildProcess): Promise<void> {
  try {
    const conn = await connectRaw("127.0.0.1", port);
    // SHUTDOWN never answers: the connection just closes once the server has stopped.
    await Promise.race([
      conn.command(["SHUTDOWN"]).catch(() => undefined),
      sleep(5000, undefined, { ref: false }),
    ]);
    conn.close();
  } catch {
    // not reachable: treat as already down
  }
  // If it refused (a --requirepass server answers NOAUTH), the caller's SIGTERM stops it instead.
  await Promise.race([
    new Promise<void>((resolve) => {
      if (exited(child)) resolve();
      else child.once("exit", () => resolve());
    }),
    sleep(10_000, undefined, { ref: false }),
  ]);
}

/**
 * Starts a throwaway redis-server: loopback only, a free port, a temporary directory, no
 * persistence unless `options.aof`. The caller must call stop(); the exit hook of
 * src/check/cleanup.ts and the stdin watchdog back that up.
 */
export async function startPrivateServer(
  extraArgs: string[] = [],
  options: ServerOptions = {},
): Promise<PrivateServer> {
  const version = redisServerVersion();
  if (!version) throw new RedisNotInstalled();
  sweepOnce();
  const dir = makeScratch("redis");
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const first = launch(port, dir, extraArgs, options);
    if (await waitForPing(port, first.child, 5000)) {
      // What refresh() compares with; unknown on a server that wants a password (tests start one).
      const known = await configuration(port, 5000);
      let current = first;
      let stopped: Promise<void> | undefined;
      const relaunch = async (ms: number) => {
        current = launch(port, dir, extraArgs, options);
        if (!(await waitForPing(port, current.child, ms))) {
          throw new Error(`redis-server did not come back on port ${port}.`);
        }
      };
      return {
        url: `redis://127.0.0.1:${port}`,
        port,
        version,
        async restart() {
          await shutdown(port, current.child);
          await current.end();
          await relaunch(10_000);
        },
        async refresh() {
          if (stopped) return;
          const same = known === undefined || (await configuration(port, 1000)) === known;
          if (!exited(current.child) && same) return;
          // Nothing in it is worth keeping, and a paused server would not answer SHUTDOWN.
          await current.kill();
          // A SHUTDOWN SAVE or a BGSAVE would otherwise load the last run's keys.
          rmSync(join(dir, "dump.rdb"), { force: true });
          await relaunch(10_000);
        },
        stop() {
          stopped ??= current.end().then(() => rmSync(dir, { recursive: true, force: true }));
          return stopped;
        },
        keep(seconds) {
          const pid = current.child.pid;
          if (stopped || pid === undefined) throw new Error("This redis-server is stopped.");
          current.keep(seconds);
          // The directory now belongs to the watchdog, so a later sweep leaves it while it runs.
          handOverScratch(dir, pid);
          stopped = Promise.resolve();
          return { pid, dir };
        },
      };
    }
    // Port taken between probing and binding, or a slow start: try another port.
    await first.kill();
  }
  rmSync(dir, { recursive: true, force: true });
  throw new Error(
    "redis-server is installed but did not start on 127.0.0.1. Run `npm run doctor` to see why.",
  );
}
