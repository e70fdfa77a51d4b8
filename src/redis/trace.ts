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

/** Follows every command the server receives, with MONITOR (private server only). */
export async function startTrace(port: number, password?: string): Promise<Trace> {
  const conn: RawConnection = await connectRaw("127.0.0.1", port);
  if (password !== undefined) {
    const auth = await conn.command(["AUTH", password]);
    if (auth instanceof Error) {
      conn.close();
      throw auth;
    }
  }
  const commands: TracedCommand[] = [];
  let started = 0;
  conn.onPush((reply) => {
    if (typeof reply !== "string") return;
    const parsed = parseMonitorLine(reply);
    if (!parsed) return;
    started ||= parsed.time;
    commands.push({ at: Math.round(parsed.time - started), addr: parsed.addr, args: parsed.args });
  });
  const ok = await conn.command(["MONITOR"]);
  if (ok instanceof Error) {
    conn.close();
    throw ok;
  }
  return {
    async stop() {
      // MONITOR lines for the last commands may still be in flight.
      await new Promise((resolve) => setTimeout(resolve, 30));
      conn.close();
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
