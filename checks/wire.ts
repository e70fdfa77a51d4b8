/**
 * The fault kit: sees every command this process sends to Redis at the socket, whatever path
 * the learner's code took to send it (typed methods, sendCommand, multi(), duplicate(), a
 * client of their own from createClient(), a connection they named). Checks use it to
 *
 * - find the learner's connections by their local address (`learnerAddrs()`), not by a name
 *   the learner may have changed;
 * - read the order of what the learner sent (`sent()`), with MULTI/EXEC blocks marked, so a
 *   check can prove "hash before publish" or "these went as one transaction";
 * - act at a known step (`before()`): run a competitor or hold the connection before a command
 *   reaches Redis, or crash the worker there;
 * - hold what a connection receives (`holdIncoming()`, `holdReply()`): a reply Redis already
 *   sent waits at the socket while the check acts (publishes, stops a worker), then reaches
 *   node-redis in order; `received()` tells when a message reached the learner's listener.
 *
 * A "crash" destroys every connection of the crashed scope and refuses any new one it tries:
 * from Redis's side that process died between two commands. Sockets are put into scopes with
 * AsyncLocalStorage, so a worker started inside `scope.run()` takes its reconnects and
 * duplicates along. In a child process started by worker-process.ts, WORKBOOK_FAULT names a
 * command to die before, and the process SIGKILLs itself there: no finally block runs.
 *
 * Works at net.Socket, so it needs no knowledge of node-redis beyond its corking of a batch of
 * writes; one write may carry several commands, and is cut at command boundaries. A TLSSocket
 * is a net.Socket writing plaintext through the same method: lesson 14 and
 * test/redis-tls.test.ts run checks over TLS.
 */
import { AsyncLocalStorage, createHook } from "node:async_hooks";
import { EventEmitter } from "node:events";
import net from "node:net";
import { fileURLToPath, pathToFileURL } from "node:url";
import { nameSetBy } from "../src/redis/trace.ts";

export interface SentCommand {
  /** Order of writing across all connections of this process. */
  seq: number;
  at: number;
  /** Which learner connection: 1, 2, 3... in order of opening. */
  conn: number;
  /** The scope the connection was opened in ("" outside any). */
  scope: string;
  /** Command and arguments as sent, e.g. ["XACK", "s", "g", "1-0"]. */
  args: string[];
  /** Upper-cased command name; "CLIENT SETNAME" style for subcommands is left to args. */
  name: string;
  /** When inside MULTI ... EXEC on its connection: the seq of the MULTI. */
  multi?: number;
}

type Owner = "learner" | "check";

/** A chunk on its way out: its commands, and how far it has been judged and written. */
interface Pending {
  chunk: unknown;
  encoding: BufferEncoding | undefined;
  buffer?: Buffer;
  commands?: { args: string[]; end: number }[];
  /** The next command to judge. */
  next: number;
  /** Bytes of `buffer` already written. */
  written: number;
}

interface Tracked {
  conn: number;
  socket: net.Socket;
  owner: Owner | undefined;
  scope: string;
  localAddr?: string;
  parser: RespParser;
  /** Writes waiting while a `before()` action runs: parsed, logged and sent in order after it. */
  queue: Pending[];
  held: boolean;
  openMulti?: number;
  /** Replies this connection still owes, oldest first, with the learner's command they answer. */
  owed: { blocking: boolean; command?: SentCommand }[];
  /** Counts what Redis answered, so a competitor can wait for the replies to earlier commands. */
  replies: ReplyCounter;
  /** Holds waiting for the replies to the commands before theirs (see `earlierAnswered`). */
  waiters: (() => void)[];
  /** How many holds of its incoming data are on (`holdIncoming`, `holdReply`). */
  inHolds: number;
  /** Incoming events kept from node-redis while held, in order of arrival. */
  inbox: { event: string; args: unknown[] }[];
  /** Redis ended the connection (an "end" or "error" arrived), as opposed to this process. */
  endedByPeer: boolean;
  /** Held data goes to node-redis as one read when released (see `deliverTogether()`). */
  asOneRead?: boolean;
  /** The host socket.connect() was asked for (Node's default "localhost" when none was). */
  dialled?: string;
}

export type Action = "crash" | ((command: SentCommand) => void | Promise<void>);

interface Rule {
  match: (command: SentCommand) => boolean;
  action: Action;
  /** Acts on the nth match (1-based), then retires. */
  nth: number;
  seen: number;
  done: boolean;
  fired?: () => void;
}

const scopeStore = new AsyncLocalStorage<string>();
const tracked = new Map<net.Socket, Tracked>();
const log: SentCommand[] = [];
const rules: Rule[] = [];
const crashedScopes = new Set<string>();
/** Every connection this process opened, closed ones too: a server may still hold them. */
const everOpened: Tracked[] = [];
let nextConn = 1;
let seq = 0;
const started = Date.now();
/** Connections named this way are the check's own (see kit.ts): never the learner's. */
let checkNamePrefix = "wb:check:";

/**
 * An incremental parser of what a client writes: RESP arrays of bulk strings. It only needs
 * to know where each command ends; a malformed stream (not ours to judge) stops parsing.
 */
class RespParser {
  private buffer: Buffer = Buffer.alloc(0);
  private broken = false;

  /** The commands that end in `chunk`, each with the offset in `chunk` just after its end. */
  push(chunk: Buffer): { args: string[]; end: number }[] {
    if (this.broken) return [];
    const carried = this.buffer.length;
    this.buffer = carried === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const commands: { args: string[]; end: number }[] = [];
    let consumed = 0;
    for (;;) {
      const before = this.buffer.length;
      const parsed = this.parseOne();
      if (parsed === undefined) break;
      consumed += before - this.buffer.length;
      commands.push({ args: parsed, end: consumed - carried });
    }
    return commands;
  }

  private parseOne(): string[] | undefined {
    const buf = this.buffer;
    if (buf.length === 0) return undefined;
    if (buf[0] !== 0x2a /* * */) {
      this.broken = true;
      return undefined;
    }
    let at = 0;
    const line = (): number | undefined => {
      const end = buf.indexOf("\r\n", at);
      if (end < 0) return undefined;
      const value = Number(buf.subarray(at + 1, end).toString());
      at = end + 2;
      return value;
    };
    const count = line();
    if (count === undefined) return undefined;
    const args: string[] = [];
    for (let i = 0; i < count; i++) {
      if (at >= buf.length) return undefined;
      if (buf[at] !== 0x24 /* $ */) {
        this.broken = true;
        return undefined;
      }
      const length = line();
      if (length === undefined || at + length + 2 > buf.length) return undefined;
      args.push(buf.subarray(at, at + length).toString());
      at += length + 2;
    }
    this.buffer = buf.subarray(at);
    return args;
  }
}

/**
 * Counts the replies Redis sends on one connection (RESP2 or RESP3), leaving out pushes and
 * attributes: neither answers a command. It only needs to find where each reply ends. When it
 * cannot be sure (a subscriber in RESP2, whose messages look like replies; data it does not
 * understand), it gives up and says so: a hold then starts its action at once, as it always did.
 */
class ReplyCounter {
  private buffer: Buffer = Buffer.alloc(0);
  unsure = false;

  /**
   * The replies that end in `chunk`: where each starts and ends in `chunk` (a start below 0
   * lies in an earlier chunk), and its bytes.
   */
  push(chunk: Buffer): { start: number; end: number; bytes: Buffer }[] {
    if (this.unsure) return [];
    const carried = this.buffer.length;
    this.buffer = carried === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const replies: { start: number; end: number; bytes: Buffer }[] = [];
    let at = 0;
    // Where the reply being read starts: before the attributes that annotate it.
    let start = 0;
    for (;;) {
      const end = this.skip(at);
      if (end === undefined) break;
      if (end < 0) {
        this.unsure = true;
        this.buffer = Buffer.alloc(0);
        return replies;
      }
      const type = this.buffer[at];
      at = end;
      // An attribute comes before the reply it annotates; a push answers no command.
      if (type === 0x7c /* | */) continue;
      if (type !== 0x3e /* > */) {
        const bytes = this.buffer.subarray(start, end);
        replies.push({ start: start - carried, end: end - carried, bytes });
      }
      start = end;
    }
    this.buffer = this.buffer.subarray(start);
    return replies;
  }

  /** The offset just after the value at `at`; undefined when incomplete, -1 when not RESP. */
  private skip(at: number): number | undefined {
    const buf = this.buffer;
    if (at >= buf.length) return undefined;
    const eol = buf.indexOf("\r\n", at);
    if (eol < 0) return undefined;
    const type = String.fromCharCode(buf[at] as number);
    const head = buf.subarray(at + 1, eol).toString();
    const next = eol + 2;
    switch (type) {
      case "+":
      case "-":
      case ":":
      case "_":
      case ",":
      case "#":
      case "(":
        return next;
      case "$":
      case "!":
      case "=": {
        const length = Number(head);
        if (!Number.isInteger(length)) return -1;
        if (length < 0) return next;
        return next + length + 2 <= buf.length ? next + length + 2 : undefined;
      }
      case "*":
      case "~":
      case ">":
      case "%":
      case "|": {
        const n = Number(head);
        if (!Number.isInteger(n)) return -1;
        const items = type === "%" || type === "|" ? n * 2 : Math.max(n, 0);
        let end: number | undefined = next;
        for (let i = 0; i < items; i++) {
          const start: number = end;
          end = this.skip(start);
          if (end === undefined || end < 0) return end;
          // An attribute inside an aggregate annotates the element after it: not an element.
          if (buf[start] === 0x7c) i--;
        }
        return end;
      }
      default:
        return -1;
    }
  }
}

/** Commands that may wait on the server: a competitor must not wait for their replies. */
function mayBlock(args: string[]): boolean {
  const name = (args[0] ?? "").toUpperCase();
  if (/^(BL|BR|BZ)/.test(name) || name === "WAIT" || name === "WAITAOF") return true;
  if (name === "XREAD" || name === "XREADGROUP") {
    return args.some((a) => a.toUpperCase() === "BLOCK");
  }
  return false;
}

/**
 * After these, replies can no longer be matched to commands: a RESP2 subscriber's messages look
 * like replies, MONITOR streams lines, CLIENT REPLY OFF answers nothing. Counting stops there.
 */
function uncountable(args: string[]): boolean {
  const name = (args[0] ?? "").toUpperCase();
  if (/^(P|S)?(UN)?SUBSCRIBE$/.test(name) || name === "MONITOR") return true;
  return name === "CLIENT" && (args[1] ?? "").toUpperCase() === "REPLY";
}

function toBuffer(chunk: unknown, encoding?: BufferEncoding): Buffer | undefined {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk);
  if (typeof chunk === "string") return Buffer.from(chunk, encoding ?? "utf8");
  return undefined;
}

const CRASH_MESSAGE = "the worker process died (simulated by the check)";

function isCrashFallout(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const fallout = /^(SocketClosedUnexpectedlyError|ConnectionTimeoutError|ClientClosedError)$/;
  return (
    error.message.includes(CRASH_MESSAGE) ||
    fallout.test(error.name) ||
    fallout.test(error.constructor.name)
  );
}

function crashScope(scope: string): void {
  crashedScopes.add(scope);
  for (const t of tracked.values()) {
    if (t.scope !== scope || t.owner === "check") continue;
    // node-redis corks a batch of writes: what was written before the crash has left the
    // process by now in a real run, so it goes out before the connection dies.
    while (t.socket.writableCorked > 0) t.socket.uncork();
    t.socket.destroy();
  }
}

const originalWrite = net.Socket.prototype.write;
const originalConnect = net.Socket.prototype.connect;

/** Decides what happens to one complete command: log it, then let a rule act before it goes. */
function onCommand(
  t: Tracked,
  args: string[],
): { act?: () => Promise<void>; drop?: boolean; command?: SentCommand } {
  const name = (args[0] ?? "").toUpperCase();
  if (t.owner === undefined) {
    const setName = nameSetBy(args);
    t.owner = setName?.startsWith(checkNamePrefix) ? "check" : "learner";
  }
  if (t.owner === "check") return {};
  const command: SentCommand = {
    seq: ++seq,
    at: Date.now() - started,
    conn: t.conn,
    scope: t.scope,
    args,
    name,
  };
  if (name === "MULTI") t.openMulti = command.seq;
  if (t.openMulti !== undefined) command.multi = t.openMulti;
  if (name === "EXEC" || name === "DISCARD") t.openMulti = undefined;
  log.push(command);

  for (const rule of rules) {
    if (rule.done || !rule.match(command)) continue;
    rule.seen++;
    if (rule.seen < rule.nth) continue;
    rule.done = true;
    // The caller crashes the scope once the commands before this one have left.
    if (rule.action === "crash") {
      rule.fired?.();
      return { drop: true, command };
    }
    // A function fires when it starts, after Redis answered the earlier commands: a check that
    // sees the rule fired may rely on what its function set up at the start.
    const action = rule.action;
    return {
      command,
      act: async () => {
        rule.fired?.();
        await action(command);
      },
    };
  }
  return { command };
}

/**
 * Sends what a connection wrote, in order: each command is logged and matched against the rules
 * before its bytes leave. One write may carry several commands (a pipeline): it is cut at
 * command boundaries, so what came before a crash still reaches Redis and what comes after a
 * hold waits for it. What the learner writes during a hold waits in the queue and goes through
 * the same steps afterwards, so no command escapes the log or a later rule.
 */
function pump(t: Tracked): void {
  const send = (data: unknown, encoding?: BufferEncoding) =>
    originalWrite.call(t.socket, data as string, encoding as BufferEncoding);
  while (!t.held && t.queue.length > 0) {
    const item = t.queue[0] as Pending;
    if (item.commands === undefined) {
      item.buffer = toBuffer(item.chunk, item.encoding);
      item.commands = item.buffer ? t.parser.push(item.buffer) : [];
    }
    const { buffer, commands } = item;
    if (!buffer) {
      t.queue.shift();
      send(item.chunk, item.encoding);
      continue;
    }
    let hold: Promise<void> | undefined;
    while (item.next < commands.length && !hold) {
      const index = item.next++;
      const command = commands[index] as { args: string[]; end: number };
      const decision = onCommand(t, command.args);
      const start = index === 0 ? 0 : (commands[index - 1]?.end ?? 0);
      if (decision.drop) {
        if (start > item.written) send(buffer.subarray(item.written, start));
        t.queue.length = 0;
        if (process.env.WORKBOOK_FAULT_CHILD === "1") process.kill(process.pid, "SIGKILL");
        crashScope(t.scope);
        return;
      }
      t.owed.push({ blocking: mayBlock(command.args), command: decision.command });
      if (uncountable(command.args)) t.replies.unsure = true;
      if (decision.act) {
        if (start > item.written) send(buffer.subarray(item.written, start));
        item.written = Math.max(item.written, start);
        // The commands before this one have left, but Redis may not have run them yet. A
        // competitor on another connection could overtake them, so it waits for their replies.
        hold = earlierAnswered(t)
          .then(decision.act)
          .catch(() => {});
      }
    }
    if (hold) {
      t.held = true;
      void hold.then(() => {
        t.held = false;
        if (crashedScopes.has(t.scope) || t.socket.destroyed) return;
        pump(t);
      });
      return;
    }
    t.queue.shift();
    if (item.written === 0) send(item.chunk, item.encoding);
    else if (item.written < buffer.length) send(buffer.subarray(item.written));
  }
}

/**
 * Whether Redis has answered every command this connection sent before the one it holds (the
 * last owed). A blocking read among them may wait for the very competitor that waits here, so
 * then it does not wait, nor when replies cannot be counted or the connection is gone.
 */
function answered(t: Tracked): boolean {
  if (t.replies.unsure || t.socket.destroyed || t.owed.length <= 1) return true;
  return t.owed.slice(0, -1).some((owed) => owed.blocking);
}

function earlierAnswered(t: Tracked): Promise<void> {
  if (answered(t)) return Promise.resolve();
  return new Promise((resolve) => t.waiters.push(resolve));
}

function settle(t: Tracked, force = false): void {
  if (t.waiters.length === 0 || !(force || answered(t))) return;
  for (const resolve of t.waiters.splice(0)) resolve();
}

/**
 * Counts a connection's incoming replies as they arrive, so holds know when earlier commands
 * were run (Redis ran them, whether or not node-redis has seen the reply yet). Returns where in
 * `buffer` a reply that a `holdReply()` rule matched starts, if one did: from there on the data
 * is held.
 */
function onData(t: Tracked, buffer: Buffer): number | undefined {
  let holdFrom: number | undefined;
  for (const reply of t.replies.push(buffer)) {
    const command = t.owed.shift()?.command;
    if (command === undefined || holdFrom !== undefined) continue;
    const rule = replyRules.find((r) => !r.done && r.match(command, reply.bytes));
    if (!rule) continue;
    rule.done = true;
    holdFrom = Math.max(0, reply.start);
    const release = holdConnection(t);
    void Promise.resolve()
      .then(() => {
        rule.fired?.();
        return rule.action(command, reply.bytes);
      })
      .catch(() => {})
      .then(release);
  }
  settle(t);
  return holdFrom;
}

/** Starts a hold of `t`'s incoming data; the function returned ends it (once). */
function holdConnection(t: Tracked): () => void {
  t.inHolds++;
  let ended = false;
  return () => {
    if (ended) return;
    ended = true;
    t.inHolds--;
    if (t.inHolds === 0) deliverHeld(t);
  };
}

/**
 * Hands what was held to node-redis, in order of arrival. A socket this process destroyed
 * meanwhile reads nothing more (see `onIncoming`), so the rest of its data is dropped.
 */
function deliverHeld(t: Tracked): void {
  if (t.asOneRead) {
    t.asOneRead = false;
    joinHeldData(t);
  }
  for (const { event, args } of t.inbox.splice(0)) {
    if (t.inHolds > 0) {
      // A hold started while delivering (a reply rule): the rest waits for it, still in order.
      t.inbox.push({ event, args });
      continue;
    }
    if (event !== "close" && t.socket.destroyed && !t.endedByPeer) continue;
    deliver(t, event, args);
  }
}

/** Makes each run of held "data" events one event: what a socket reads when bytes come together. */
function joinHeldData(t: Tracked): void {
  const joined: Tracked["inbox"] = [];
  for (const item of t.inbox) {
    const last = joined.at(-1);
    const buffer = item.event === "data" ? toBuffer(item.args[0]) : undefined;
    const previous = last?.event === "data" ? toBuffer(last.args[0]) : undefined;
    if (last && buffer && previous) last.args = [Buffer.concat([previous, buffer])];
    else joined.push({ event: item.event, args: [...item.args] });
  }
  t.inbox = joined;
}

/** Reply rules: see `holdReply()`. */
interface ReplyRule {
  match: (command: SentCommand, reply: Buffer) => boolean;
  action: (command: SentCommand, reply: Buffer) => void | Promise<void>;
  done: boolean;
  fired?: () => void;
}
const replyRules: ReplyRule[] = [];

/** Waits of `received()`: text expected on a connection, and the tail of what came so far. */
interface Expected {
  text: string;
  conn?: number;
  tails: Map<number, string>;
  resolve: () => void;
}
const expected = new Set<Expected>();

const originalEmit = EventEmitter.prototype.emit;

/**
 * An "error" that a simulated crash caused on an emitter nobody listens to for errors: a dead
 * process hears nothing, so it is dropped instead of thrown.
 */
function unheardCrashError(emitter: EventEmitter, event: string | symbol, args: unknown[]) {
  return (
    event === "error" &&
    crashedScopes.size > 0 &&
    emitter.listenerCount("error") === 0 &&
    isCrashFallout(args[0])
  );
}

/** Emits an event of a tracked socket to its listeners (node-redis), as it would have gone. */
function deliver(t: Tracked, event: string, args: unknown[]): boolean {
  const socket = t.socket as EventEmitter;
  if (unheardCrashError(socket, event, args)) return false;
  const result = originalEmit.call(socket, event, ...args);
  if (event === "data" && expected.size > 0 && t.owner !== "check") {
    const text = toBuffer(args[0])?.toString("latin1") ?? "";
    for (const wait of expected) {
      if (wait.conn !== undefined && wait.conn !== t.conn) continue;
      const seen = (wait.tails.get(t.conn) ?? "") + text;
      if (seen.includes(wait.text)) {
        expected.delete(wait);
        wait.resolve();
      } else wait.tails.set(t.conn, seen.slice(-wait.text.length));
    }
  }
  return result;
}

/**
 * What a tracked socket receives: replies are counted on arrival, then handed to node-redis
 * unless held. While data is held, the end of the connection waits behind it, so node-redis
 * still reads every reply before it learns the connection is gone. A "close" with no "end" or
 * "error" before it means this process destroyed its own socket (node-redis's destroy(), a
 * crash): a real process never reads what was still on its way then, so the held data is
 * dropped.
 */
function onIncoming(t: Tracked, event: string, args: unknown[]): boolean {
  if (event === "data") {
    const buffer = toBuffer(args[0]);
    if (!buffer) return deliver(t, event, args);
    const holdFrom = onData(t, buffer);
    if (t.inHolds === 0) return deliver(t, event, args);
    // Held, from the matched reply on (what came before it goes through).
    const from = t.inbox.length > 0 ? 0 : (holdFrom ?? 0);
    if (from > 0) deliver(t, event, [buffer.subarray(0, from)]);
    t.inbox.push({ event, args: [from > 0 ? buffer.subarray(from) : args[0]] });
    return true;
  }
  if (event === "end" || event === "error") t.endedByPeer = true;
  if (t.inbox.length === 0) return deliver(t, event, args);
  if (event === "close" && !t.endedByPeer) {
    t.inbox.length = 0;
    return deliver(t, event, args);
  }
  t.inbox.push({ event, args });
  return true;
}

function install(): void {
  const marker = Symbol.for("workbook.wire");
  const proto = net.Socket.prototype as unknown as Record<symbol, boolean>;
  if (proto[marker]) return;
  proto[marker] = true;

  net.Socket.prototype.connect = function (this: net.Socket, ...args: unknown[]) {
    const scope = scopeStore.getStore() ?? "";
    if (!tracked.has(this)) {
      const t: Tracked = {
        conn: 0,
        socket: this,
        owner: undefined,
        scope,
        parser: new RespParser(),
        queue: [],
        held: false,
        owed: [],
        replies: new ReplyCounter(),
        waiters: [],
        inHolds: 0,
        inbox: [],
        endedByPeer: false,
        dialled: dialledHost(args),
      };
      tracked.set(this, t);
      this.once("connect", () => {
        t.localAddr = `${this.localAddress}:${this.localPort}`;
        everOpened.push(t);
      });
      this.once("close", () => {
        if (t.localAddr === undefined) neverConnected.set(scope, failedOf(scope) + 1);
        tracked.delete(this);
        settle(t, true);
      });
      if (crashedScopes.has(scope)) {
        // A crashed process opens nothing more: the server never sees this connection.
        process.nextTick(() => this.destroy(new Error(CRASH_MESSAGE)));
        return this;
      }
    }
    return (originalConnect as (...a: unknown[]) => net.Socket).apply(this, args);
  } as typeof net.Socket.prototype.connect;

  net.Socket.prototype.write = function (this: net.Socket, chunk: unknown, ...rest: unknown[]) {
    const t = tracked.get(this);
    if (!t) return (originalWrite as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
    if (t.conn === 0) t.conn = nextConn++;
    if (crashedScopes.has(t.scope) && t.owner !== "check") return false;
    const encoding = typeof rest[0] === "string" ? (rest[0] as BufferEncoding) : undefined;
    t.queue.push({ chunk, encoding, next: 0, written: 0 });
    if (!t.held) pump(t);
    return true;
  } as typeof net.Socket.prototype.write;

  // A real crash ends the process, so its clients never report their lost connections. Here
  // the process lives on: a learner's duplicate() with no "error" listener would throw its
  // "socket closed" from inside node-redis and take the check down with it. Only the fallout
  // of a simulated crash is silenced, and only where nobody listens.
  EventEmitter.prototype.emit = function (
    this: EventEmitter,
    event: string | symbol,
    ...args: unknown[]
  ) {
    if (event === "data" || event === "end" || event === "error" || event === "close") {
      const t = tracked.get(this as net.Socket);
      if (t) return onIncoming(t, event, args);
    }
    if (unheardCrashError(this, event, args)) return false;
    return originalEmit.call(this, event, ...args);
  };

  // The same for a crashed worker's loop that goes on and rejects ("The client is closed"): a
  // dead process rejects nothing. Answering "handled" keeps it from failing the run. process
  // gets its own wrapper: test runners replace process.emit with one of theirs.
  const processEmit = process.emit;
  process.emit = function (this: NodeJS.Process, event: string | symbol, ...args: unknown[]) {
    if (event === "unhandledRejection" && crashedScopes.size > 0 && isCrashFallout(args[0])) {
      return true;
    }
    return (processEmit as (...a: unknown[]) => boolean).call(this, event, ...args);
  } as typeof process.emit;

  // In a worker child: die before the command WORKBOOK_FAULT names, e.g. {"command":"XACK","nth":2}.
  const fault = process.env.WORKBOOK_FAULT;
  if (fault) {
    const {
      command,
      nth = 1,
      argIncludes,
    } = JSON.parse(fault) as {
      command: string;
      nth?: number;
      argIncludes?: string;
    };
    process.env.WORKBOOK_FAULT_CHILD = "1";
    before(
      (c) => c.name === command.toUpperCase() && (!argIncludes || c.args.includes(argIncludes)),
      "crash",
      { nth },
    );
  }
}

install();

/** Connections whose name starts with `prefix` are the check's own (kit.ts sets this). */
export function setCheckNamePrefix(prefix: string): void {
  checkNamePrefix = prefix;
}

/**
 * Acts before the `nth` command matching `match` leaves for Redis: "crash" kills the scope of
 * the connection it was sent on; a function runs (a competitor, a pause) while that connection
 * holds the command and everything after it, once Redis has answered the commands sent before it
 * there. Returns a promise that resolves when the rule fired (for a function: when it started).
 */
export function before(
  match: (command: SentCommand) => boolean,
  action: Action,
  options: { nth?: number } = {},
): RuleHandle {
  const rule: Rule = { match, action, nth: options.nth ?? 1, seen: 0, done: false };
  const handle = handleOf(rule);
  rules.push(rule);
  return handle;
}

/** What `before()` and `holdReply()` return: when the rule fired, and a way to retire it. */
export interface RuleHandle {
  fired: Promise<void>;
  hasFired(): boolean;
  cancel(): void;
}

function handleOf(rule: { done: boolean; fired?: () => void }): RuleHandle {
  let resolve!: () => void;
  const fired = new Promise<void>((r) => {
    resolve = r;
  });
  let hasFired = false;
  rule.fired = () => {
    hasFired = true;
    resolve();
  };
  return {
    fired,
    // A cancelled rule that never acted has not fired.
    hasFired: () => hasFired,
    cancel: () => {
      rule.done = true;
    },
  };
}

/**
 * Holds what learner connection `conn` (a SentCommand's conn) receives: its replies and pushes
 * reach node-redis only after `release()`, in order and once, as if still on their way from
 * Redis. Redis has run the commands all the same: replies are counted on arrival, so a
 * `before()` competitor does not wait for a held reply. When the connection ends meanwhile, its
 * end waits behind the held data if Redis ended it; if this process destroyed it (destroy(), a
 * crash), the held data is dropped, as a destroyed socket reads nothing more. node-redis's
 * close() waits for the replies it is owed, so it waits for the release.
 */
export function holdIncoming(conn: number): { release(): void } {
  const t = [...tracked.values()].find((t) => t.conn === conn && t.owner !== "check");
  return { release: t ? holdConnection(t) : () => {} };
}

/**
 * Runs `act` (publishing several messages, say) while the learner connections at `addrs` hold
 * what they receive, waits up to `ms` for every one of `texts` to be among it, then hands each
 * connection's held data to node-redis as a single read. Messages that arrive together share a
 * read on a real socket too, and node-redis 6.3 drops the rest of a read when a pub/sub
 * listener throws: this makes that happen on every run, not when the timing allows. Returns the
 * texts that did not arrive within `ms` (delivered anyway, with whatever came).
 */
export async function deliverTogether(
  addrs: string[],
  texts: string[],
  act: () => Promise<unknown>,
  ms = 2000,
): Promise<string[]> {
  const wanted = texts.map((text) => [text, asWire(text)] as const);
  const held = [...tracked.values()].filter(
    (t) => t.owner !== "check" && t.localAddr !== undefined && addrs.includes(t.localAddr),
  );
  const releases = held.map((t) => {
    t.asOneRead = true;
    return holdConnection(t);
  });
  const heldText = (t: Tracked) =>
    t.inbox
      .map((item) =>
        item.event === "data" ? (toBuffer(item.args[0])?.toString("latin1") ?? "") : "",
      )
      .join("");
  const missing = () =>
    wanted
      .filter(([, bytes]) => held.length === 0 || held.some((t) => !heldText(t).includes(bytes)))
      .map(([text]) => text);
  try {
    await act();
    const deadline = Date.now() + ms;
    while (missing().length > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    return missing();
  } finally {
    for (const release of releases) release();
  }
}

/**
 * Holds the first reply matching `match` (the learner's command and the reply's raw RESP
 * bytes) when it arrives, with everything its connection receives after it, until `action`
 * resolves: the learner's code is then waiting for a reply Redis has already sent, e.g. an
 * XREADGROUP that took tasks. Replies before it on the connection go through. Like `before()`,
 * returns when it fired (`action` started); the held data goes as `holdIncoming()` says.
 */
export function holdReply(
  match: (command: SentCommand, reply: Buffer) => boolean,
  action: (command: SentCommand, reply: Buffer) => void | Promise<void>,
): RuleHandle {
  const rule: ReplyRule = { match, action, done: false };
  const handle = handleOf(rule);
  replyRules.push(rule);
  return handle;
}

/**
 * Whether bytes containing `text` (e.g. a published message) reach node-redis within `ms` on
 * learner connection `conn`, or on any learner connection: its listeners have run by then.
 * Data held back counts when it is delivered.
 */
export function received(text: string, options: { conn?: number; ms: number }): Promise<boolean> {
  return new Promise((resolve) => {
    const wait: Expected = {
      text: asWire(text),
      conn: options.conn,
      tails: new Map(),
      resolve: () => {
        clearTimeout(timer);
        resolve(true);
      },
    };
    const timer = setTimeout(() => {
      expected.delete(wait);
      resolve(false);
    }, options.ms);
    expected.add(wait);
  });
}

/**
 * A text as it is found in received bytes read as Latin-1 (one character per byte): its UTF-8
 * bytes. A text outside ASCII would otherwise never match, and a wait for it would time out.
 */
function asWire(text: string): string {
  return Buffer.from(text, "utf8").toString("latin1");
}

/** Matches a command by name (any case) and, optionally, an argument it must carry. */
export function command(name: string, arg?: string): (c: SentCommand) => boolean {
  const upper = name.toUpperCase();
  return (c) => c.name === upper && (arg === undefined || c.args.includes(arg));
}

/** A named group of connections that can crash together: one simulated worker process. */
export interface Scope {
  readonly name: string;
  /** Runs `fn` so that every connection it (or anything it starts) opens is in this scope. */
  run<T>(fn: () => T): T;
  /** Kills the scope now: its connections close, new ones are refused. */
  crash(): void;
  crashed(): boolean;
}

let scopes = 0;
export function scope(label = "worker"): Scope {
  const name = `${label}#${++scopes}`;
  return {
    name,
    run: (fn) => scopeStore.run(name, fn),
    crash: () => crashScope(name),
    crashed: () => crashedScopes.has(name),
  };
}

/** Per scope name, the connections that closed before they ever connected. */
const neverConnected = new Map<string, number>();
const failedOf = (scope: string) => neverConnected.get(scope) ?? 0;

/**
 * How many connections the code run in `s` tried to open and lost before they connected (a
 * refused connection): node-redis opens a new socket for each attempt, so a client retrying to
 * connect counts up, one each time its reconnect strategy is asked.
 */
export function failedConnects(s: Scope): number {
  return failedOf(s.name);
}

/**
 * Counts the timers started inside `s.run()` (or by anything it started) that have neither
 * fired nor been cleared, from now until stop(). A client still retrying to connect keeps one:
 * node-redis waits for its reconnect strategy's delay on a timer of the client's scope.
 * `delays()` lists the delay (ms) of every such timer started since, fired or not, in order.
 * `fire()` makes each live timer that fire() has not fired yet fire now, as if its delay had
 * passed (a setInterval then goes on at its own pace), and resolves once each has run (or was
 * cleared meanwhile) to the delays of those it fired: what the code's own timeout does, whatever
 * its length, without waiting for it.
 */
export function scopeTimers(
  s: Scope,
  options: { repeating?: boolean; referenced?: boolean; createdIn?: string } = {},
): { live(): number; delays(): number[]; fire(): Promise<number[]>; stop(): void } {
  const live = new Map<number, TimerResource>();
  const delays: number[] = [];
  // fire(): the timers it fired, and what to call when one has run or is gone.
  const fired = new Set<number>();
  const ran = new Map<number, () => void>();
  const hook = createHook({
    init(id, type, _trigger, resource) {
      if (type !== "Timeout" || scopeStore.getStore() !== s.name) return;
      // With `repeating`, only setInterval()s: a Timeout whose _repeat is set.
      if (options.repeating && (resource as { _repeat?: unknown })._repeat == null) return;
      // With `createdIn` (a file's path), only the timers that file's code started itself,
      // unref()'d or not: not node-redis's (its connect timeouts, its reconnect delays).
      if (options.createdIn !== undefined && !createdBy(options.createdIn)) return;
      live.set(id, resource as TimerResource);
      delays.push(Number((resource as { _idleTimeout?: unknown })._idleTimeout));
    },
    destroy(id) {
      live.delete(id);
      ran.get(id)?.();
    },
  });
  hook.enable();
  const fire = (id: number, timer: TimerResource) =>
    new Promise<void>((resolve) => {
      fired.add(id);
      const onTimeout = timer._onTimeout;
      const done = () => {
        ran.delete(id);
        timer._onTimeout = onTimeout;
        resolve();
      };
      ran.set(id, done);
      timer._onTimeout = function (this: unknown, ...args: unknown[]) {
        done();
        return onTimeout.apply(this, args);
      };
      // Due in 1 ms from now: the timer runs on the event loop as it would have, in its own
      // async context; a setInterval is put back to its own delay once it has run.
      timer._idleTimeout = 1;
      timer.refresh();
    });
  // With `referenced`, only the timers that keep the process alive when live() is asked: not
  // those unref()'d, as node-redis's AbortSignal.timeout() for a connect is.
  const count = () =>
    options.referenced
      ? [...live.values()].filter((timer) => timer.hasRef?.() !== false).length
      : live.size;
  return {
    live: count,
    delays: () => [...delays],
    fire: async () => {
      // Not one that has run already, whose destroy has not been told yet: refresh() would run
      // it a second time (a loop's next step started twice).
      const due = [...live].filter(([id, timer]) => !fired.has(id) && !timer._destroyed);
      const ms = due.map(([, timer]) => Number(timer._idleTimeout));
      await Promise.all(due.map(([id, timer]) => fire(id, timer)));
      return ms;
    },
    stop: () => hook.disable(),
  };
}

/** The parts of Node's Timeout that scopeTimers() reads and fire() drives. */
interface TimerResource {
  /** Set by Node once a timeout has run (or was cleared). */
  _destroyed?: boolean;
  hasRef?: () => boolean;
  refresh(): void;
  _idleTimeout: number;
  _onTimeout: (...args: unknown[]) => unknown;
}

/**
 * Whether the code running now was called by `file` itself: the first frame of the stack that is
 * neither Node's own nor this file's is in it. Not a frame further down: an awaited call of the
 * learner's into node-redis lists the learner's function too (V8's async stack traces).
 */
function createdBy(file: string): boolean {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 50;
  try {
    const here = fileURLToPath(import.meta.url);
    const caller = (new Error().stack ?? "")
      .split("\n")
      .slice(1)
      .find((line) => !/\(node:|at node:|\(<anonymous>\)/.test(line) && !line.includes(here));
    // An ES module's frames name it by URL (spaces as %20), a CommonJS one by its path.
    return (
      caller !== undefined && (caller.includes(file) || caller.includes(pathToFileURL(file).href))
    );
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/**
 * Drops learner connection `conn` (a SentCommand's conn, or a local address) as a Redis
 * restart or a network failure would. Unlike a crash the process lives on, so what its code does
 * next (reject, log, reconnect) is judged like any other step, and rejections nobody handles
 * are not silenced.
 */
export function dropConnection(conn: number | string): void {
  for (const t of tracked.values()) {
    if (t.owner === "check") continue;
    if (typeof conn === "number" ? t.conn === conn : t.localAddr === conn) t.socket.destroy();
  }
}

/**
 * Marks a connection the check opened with plain `net` (a proxy's leg to Redis) as the check's:
 * what it carries is not logged again as the learner's, nor counted as a learner connection.
 */
export function checkOwnsSocket(socket: net.Socket): void {
  const t = tracked.get(socket);
  if (t) t.owner = "check";
}

/** Everything the learner's connections sent so far, in order of writing. */
export function sent(filter?: (c: SentCommand) => boolean): SentCommand[] {
  return filter ? log.filter(filter) : [...log];
}

/** Forgets the log (between tests). Rules stay until they fire or are cancelled. */
export function clearSent(): void {
  log.length = 0;
}

/**
 * The host a socket.connect() call was asked for, as Node reads its arguments (an options
 * object, the array net.connect() passes, or port and host), "localhost" when none was given;
 * undefined for a Unix socket path.
 */
function dialledHost(args: unknown[]): string | undefined {
  const [first, second] = args;
  const options = Array.isArray(first) ? first[0] : first;
  if (options !== null && typeof options === "object") {
    const { host, path } = options as { host?: unknown; path?: unknown };
    if (path !== undefined && path !== null) return undefined;
    return typeof host === "string" && host !== "" ? host : "localhost";
  }
  if (typeof options === "string" && Number.isNaN(Number(options))) return undefined;
  return typeof second === "string" && second !== "" ? second : "localhost";
}

/**
 * The host each learner connection opened since `before` (an allLearnerAddrs()) was asked to
 * connect to: the name or address its client was given, "localhost" when it was given none.
 */
export function dialledSince(before: Set<string>): { addr: string; host: string | undefined }[] {
  return everOpened
    .filter((t) => t.owner !== "check" && t.localAddr !== undefined && !before.has(t.localAddr))
    .map((t) => ({ addr: t.localAddr as string, host: t.dialled }));
}

/** Local addresses ("127.0.0.1:54321") of the learner's connections that are open now. */
export function learnerAddrs(): Set<string> {
  const addrs = new Set<string>();
  for (const t of tracked.values()) {
    if (t.owner !== "check" && t.localAddr && !t.socket.destroyed) addrs.add(t.localAddr);
  }
  return addrs;
}

/** Local addresses of every learner connection ever opened in this process, closed ones too. */
export function allLearnerAddrs(): Set<string> {
  const addrs = new Set<string>();
  for (const t of everOpened) if (t.owner !== "check" && t.localAddr) addrs.add(t.localAddr);
  return addrs;
}

/**
 * Local addresses of the learner connections opened since `before` (an allLearnerAddrs()) was
 * taken, open or closed.
 */
export function openedSince(before: Set<string>): string[] {
  return [...allLearnerAddrs()].filter((addr) => !before.has(addr));
}

/**
 * Whether nothing of learner connection `conn` (of every learner connection when omitted, but
 * `except`) is on its way: every command it wrote has left (none waits behind a `before()` action) and Redis has
 * answered it, and none is still connecting. A reply held back (`holdIncoming()`, `holdReply()`)
 * counts as answered: Redis ran the command. False while a connection's replies cannot be counted (a RESP2 subscriber).
 * Tells "learner code is waiting on something in its own process" from "waiting on Redis".
 */
export function nothingInFlight(conn?: number, except?: number): boolean {
  for (const t of tracked.values()) {
    if (t.owner === "check" || (conn !== undefined && t.conn !== conn)) continue;
    // A connection the caller holds on purpose (`except`): what waits on it is the question.
    if (except !== undefined && t.conn === except) continue;
    if (t.socket.destroyed) continue;
    // Still connecting: its handshake is on its way.
    if (t.localAddr === undefined) return false;
    if (t.replies.unsure || t.queue.length > 0 || t.owed.length > 0) return false;
  }
  return true;
}

/** Whether learner connection `conn` (a SentCommand's conn) is still open. */
export function connectionOpen(conn: number): boolean {
  for (const t of tracked.values()) {
    if (t.conn === conn && t.owner !== "check" && !t.socket.destroyed) return true;
  }
  return false;
}

/** How many learner connections are open now, however they were created or named. */
export function openLearnerConnections(): number {
  return learnerAddrs().size;
}

/** What node-redis sends by itself when a connection opens: not a step of the learner's code. */
const HANDSHAKE = new Set(["HELLO", "AUTH", "CLIENT", "SELECT"]);

/**
 * The steps of `commands` (what one worker sent, in order) where a crash makes a difference:
 * each command that reaches Redis on its own, with `nth` its position in `commands` for
 * `before(..., "crash", { nth })`. A command queued inside MULTI is left out (a crash there is a
 * crash before its EXEC), and so is the set-up of a new connection.
 */
export function crashPoints(commands: SentCommand[]): { command: SentCommand; nth: number }[] {
  return commands
    .map((command, i) => ({ command, nth: i + 1 }))
    .filter(
      ({ command }) =>
        (command.multi === undefined || command.name === "EXEC") && !HANDSHAKE.has(command.name),
    );
}
