import { setTimeout as sleep } from "node:timers/promises";
import { connectRaw, type RawConnection } from "./raw.ts";
import { redact } from "./redact.ts";

export interface TracedCommand {
  /** Milliseconds since the trace started. */
  at: number;
  addr: string;
  /** The connection's name (CLIENT SETNAME / HELLO SETNAME), when it has one. */
  client?: string;
  args: string[];
}

/** Connections whose name starts with this belong to the check, not to the learner. */
export const CHECK_CLIENT_PREFIX = "wb:check";

const ESCAPES: Record<string, string> = { n: "\n", r: "\r", t: "\t", a: "\x07", b: "\b" };

/** Splits MONITOR's quoted, escaped arguments: "SET" "a\"b" "x\ny". */
export function parseQuotedArgs(text: string): string[] {
  const args: string[] = [];
  let i = 0;
  while (i < text.length) {
    if (text[i] !== '"') {
      i++;
      continue;
    }
    let arg = "";
    i++;
    while (i < text.length && text[i] !== '"') {
      if (text[i] === "\\") {
        const next = text[i + 1] ?? "";
        if (next === "x") {
          arg += String.fromCharCode(Number.parseInt(text.slice(i + 2, i + 4), 16));
          i += 4;
          continue;
        }
        arg += ESCAPES[next] ?? next;
        i += 2;
        continue;
      }
      arg += text[i];
      i++;
    }
    args.push(arg);
    i++;
  }
  return args;
}

/** One MONITOR line: `1700000000.123456 [0 127.0.0.1:54321] "PING"`. */
export function parseMonitorLine(
  line: string,
): { time: number; addr: string; args: string[] } | undefined {
  const match = /^(\d+\.\d+) \[\d+ ([^\]]+)\] (.*)$/s.exec(line);
  if (!match) return undefined;
  const [, time = "0", addr = "", rest = ""] = match;
  return { time: Number(time) * 1000, addr, args: parseQuotedArgs(rest) };
}

/** The connection name a command sets (CLIENT SETNAME, or HELLO ... SETNAME), if any. */
export function nameSetBy(args: string[]): string | undefined {
  const upper = args.map((a) => a.toUpperCase());
  if (upper[0] === "CLIENT" && upper[1] === "SETNAME") return args[2];
  if (upper[0] === "HELLO") {
    const at = upper.indexOf("SETNAME");
    if (at > 0) return args[at + 1];
  }
  return undefined;
}

function isHandshakeOf(command: TracedCommand, name: RegExp): boolean {
  const setName = nameSetBy(command.args);
  return /^HELLO$/i.test(command.args[0] ?? "") && setName !== undefined && name.test(setName);
}

/**
 * Names each command's connection, then keeps what the learner's code sent: everything except
 * the check's own connections and the client library's bookkeeping.
 */
export function learnerCommands(all: TracedCommand[]): TracedCommand[] {
  const names = new Map<string, string>();
  for (const command of all) {
    const name = nameSetBy(command.args);
    if (name !== undefined) names.set(command.addr, name);
  }
  return (
    all
      // MONITOR shows commands a Lua script runs as coming from "lua": the learner's script.
      .map((command) => ({
        ...command,
        client: command.addr === "lua" ? "lua script" : names.get(command.addr),
      }))
      .filter((command) => !command.client?.startsWith(CHECK_CLIENT_PREFIX))
      // The handshake of the client a check hands to the learner's code is the check's doing.
      .filter((command) => !isHandshakeOf(command, /^wb:learner:[0-9a-f]+$/))
      .filter(
        (command) =>
          !/^CLIENT$/i.test(command.args[0] ?? "") || !/^SETINFO$/i.test(command.args[1] ?? ""),
      )
  );
}

export function formatCommand(args: string[], width = 100): string {
  const text = redact(
    args.map((arg) => (/^[\w:.\-*$>#@/]+$/.test(arg) ? arg : JSON.stringify(arg))).join(" "),
  );
  return text.length > width ? `${text.slice(0, width - 1)}…` : text;
}

export interface Trace {
  stop(): Promise<TracedCommand[]>;
}

async function connectAs(port: number, password?: string): Promise<RawConnection> {
  const conn = await connectRaw("127.0.0.1", port);
  if (password !== undefined) {
    const auth = await conn.command(["AUTH", password]);
    if (auth instanceof Error) {
      conn.close();
      throw auth;
    }
  }
  return conn;
}

/** The addresses of the clients CLIENT LIST shows. */
function clientAddrs(list: string): Set<string> {
  return new Set([...list.matchAll(/\baddr=(\S+)/g)].map((m) => m[1] ?? ""));
}

/**
 * Follows every command the server receives, with MONITOR (private server only).
 *
 * `stop()` comes after the check's process was killed, and must not lose its last commands:
 * some may still sit unread in a closed connection's buffer, and their MONITOR lines may still
 * be on their way. So it waits until Redis has let go of every connection the trace saw (it
 * reads a connection to its end before it drops it), then sends a marker of its own and stops
 * at the marker's line, which Redis writes after those of every command it ran before. A few
 * round trips, where a fixed wait would be either too long or sometimes too short.
 */
export async function startTrace(port: number, password?: string): Promise<Trace> {
  const conn = await connectAs(port, password);
  const marker = await connectAs(port, password).catch((error: Error) => {
    conn.close();
    throw error;
  });
  const markerAddr = `127.0.0.1:${marker.socket.localPort}`;
  const token = `wb:trace-end:${process.pid}:${port}`;
  let markerSeen = () => {};
  const commands: TracedCommand[] = [];
  let started = 0;
  conn.onPush((reply) => {
    if (typeof reply !== "string") return;
    const parsed = parseMonitorLine(reply);
    if (!parsed) return;
    if (parsed.addr === markerAddr) {
      if (parsed.args[1] === token) markerSeen();
      return;
    }
    started ||= parsed.time;
    commands.push({ at: Math.round(parsed.time - started), addr: parsed.addr, args: parsed.args });
  });
  const close = () => {
    conn.close();
    marker.close();
  };
  const ok = await conn.command(["MONITOR"]);
  if (ok instanceof Error) {
    close();
    throw ok;
  }
  return {
    async stop() {
      // A server that stopped answering must not hold the verdict: what came is what was sent.
      const deadline = Date.now() + 500;
      const traced = new Set(commands.map((command) => command.addr));
      while (Date.now() < deadline) {
        const list = await marker.command(["CLIENT", "LIST"]);
        // The server went away (a check that restarted it): no more lines will come.
        if (typeof list !== "string" || conn.socket.destroyed) {
          close();
          return commands;
        }
        const open = clientAddrs(list);
        if (![...traced].some((addr) => open.has(addr))) break;
        await sleep(2);
      }
      const seen = new Promise<void>((resolve) => {
        markerSeen = resolve;
      });
      void marker.command(["ECHO", token]);
      // The bound's timer is cancelled once the marker came: a pending one would keep a
      // one-off `npm run check` from exiting for up to half a second.
      const bound = new AbortController();
      await Promise.race([
        seen,
        sleep(Math.max(0, deadline - Date.now()), undefined, { signal: bound.signal }).catch(
          () => {},
        ),
      ]);
      bound.abort();
      close();
      return commands;
    },
  };
}

/** One line of "what your code sent": a command, or a run of the same command collapsed. */
export interface TraceLine {
  /** "your client", the connection's own name, or "connection 2"; "(blocking)" when it blocked. */
  connection: string;
  args: string[];
  /** How many commands of the same name in a row on that connection this line stands for. */
  count: number;
}

const BLOCKING = /^(SUBSCRIBE|PSUBSCRIBE|SSUBSCRIBE|BLPOP|BRPOP|BLMOVE|BZPOPMIN|BZPOPMAX|WAIT)$/i;

function blocks(args: string[]): boolean {
  const name = args[0] ?? "";
  if (BLOCKING.test(name)) return true;
  return /^XREAD(GROUP)?$/i.test(name) && args.some((a) => /^BLOCK$/i.test(a));
}

/**
 * The learner's commands as a reader wants them: each connection labelled (its name, else
 * "connection N" in order of first use, marked when it blocked), and runs of the same command on
 * one connection collapsed into one line ("XADD ×30"), so the commands that matter are not cut
 * off behind setup.
 */
export function traceLines(commands: TracedCommand[]): TraceLine[] {
  const order = new Map<string, number>();
  const blocking = new Set<string>();
  // duplicate() copies the name: connections sharing one are numbered apart.
  const sharing = new Map<string | undefined, string[]>();
  for (const c of commands) {
    if (!order.has(c.addr)) {
      order.set(c.addr, order.size + 1);
      sharing.set(c.client, [...(sharing.get(c.client) ?? []), c.addr]);
    }
    if (blocks(c.args)) blocking.add(c.addr);
  }
  const label = (c: TracedCommand) => {
    const named = c.client?.replace(/^wb:learner:[0-9a-f]+:?/, "");
    const base =
      c.client === undefined
        ? `connection ${order.get(c.addr)}`
        : named === ""
          ? "your client"
          : (named ?? "");
    const same = c.client === undefined ? [] : (sharing.get(c.client) ?? []);
    const numbered = same.length > 1 ? `${base} #${same.indexOf(c.addr) + 1}` : base;
    return blocking.has(c.addr) ? `${numbered} (blocking)` : numbered;
  };
  // Runs of three or more of one command on one connection collapse; two stay readable.
  const runs: TracedCommand[][] = [];
  for (const c of commands) {
    const run = runs.at(-1);
    const first = run?.[0];
    const same =
      first?.addr === c.addr &&
      (first.args[0] ?? "").toUpperCase() === (c.args[0] ?? "").toUpperCase();
    if (run && same) run.push(c);
    else runs.push([c]);
  }
  return runs.flatMap((run) =>
    run.length >= 3
      ? [
          {
            connection: label(run[0] as TracedCommand),
            args: (run[0] as TracedCommand).args,
            count: run.length,
          },
        ]
      : run.map((c) => ({ connection: label(c), args: c.args, count: 1 })),
  );
}
