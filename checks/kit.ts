/**
 * What every check file uses: the run's Redis and key prefix, the learner's exercise, clients
 * that clean up after themselves, and failures written for learners.
 *
 * A check never hard-codes key or channel names: it builds them with key(), so that against a
 * shared REDIS_URL server every name carries this run's prefix and only our keys are removed.
 */
import { randomBytes } from "node:crypto";
import { pathToFileURL } from "node:url";
import { isDeepStrictEqual } from "node:util";
import type { RedisClientType } from "redis";
import { afterAll, beforeEach } from "vitest";
import { appendEvent } from "../src/check/events.ts";
import { newClient } from "../src/redis/client.ts";
import { tlsSocketOptions } from "../src/redis/tls.ts";
import { failIfStarved, noteCalling, startWatcher } from "./starvation.ts";
import { allLearnerAddrs, setCheckNamePrefix } from "./wire.ts";

/** What createClient() returns with the default options (RESP3). */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run checks with \`npm run check -- <lesson>\`.`);
  }
  return value;
}

export const ctx = {
  redisUrl: required("WORKBOOK_REDIS_URL"),
  prefix: required("WORKBOOK_PREFIX"),
  runId: required("WORKBOOK_RUN_ID"),
  /** The file under test: the learner's copy, the starter, the solution or a mistake. */
  target: required("WORKBOOK_TARGET"),
  lesson: required("WORKBOOK_LESSON"),
  /** True on the workbook's own server, where global commands (CONFIG SET, ...) are allowed. */
  privateServer: process.env.WORKBOOK_SERVER === "private",
  redisVersion: process.env.WORKBOOK_REDIS_VERSION ?? "0.0.0",
};

/** The name the check gives the learner's connections, so CLIENT LIST can find them. */
export const LEARNER_CLIENT = `wb:learner:${ctx.runId}`;

setCheckNamePrefix(`wb:check:`);

/** Every name key() built, in order: what checks/redis-state.ts shows when a test fails. */
export const namedKeys: string[] = [];

/** A key or channel name inside this run's namespace. */
export function key(name: string): string {
  const built = `${ctx.prefix}${name}`;
  namedKeys.push(built);
  return built;
}

/**
 * A fresh random name for a group, consumer, stream or channel ("ocr-3fa9c1"): a learner who
 * hard-codes the scenario's "ocr" instead of using the name passed in fails.
 */
export function fresh(label: string): string {
  return `${label}-${randomBytes(3).toString("hex")}`;
}

/** A key inside this run's namespace with a fresh random part: key(fresh(label)). */
export function freshKey(label: string): string {
  return key(fresh(label));
}

/**
 * Structural equality of parsed values: {docId, stage} equals {stage, docId}. Compare what the
 * learner's code produced this way, never as JSON strings, whose key order is theirs to choose.
 */
export function sameValue(a: unknown, b: unknown): boolean {
  return isDeepStrictEqual(a, b);
}

/** Parses JSON, or returns undefined: for messages the learner's code wrote. */
export function parseJson(text: unknown): unknown {
  if (typeof text !== "string") return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * A failure written for the learner: shown as it is, without a stack trace. `hint` (1-based)
 * names the hint that helps; the harness says how to read it (a command, or a key in the runner).
 */
export class CheckFailure extends Error {
  override name = "CheckFailure";
  constructor(
    message: string,
    readonly hint?: number,
  ) {
    super(message);
  }
}

/** A learner function still throwing the starter's TODO: its tests fail as "not written yet". */
export class NotWrittenYet extends CheckFailure {}

/** Fails the check with a learner-facing message that points at hint `hint` (1-based). */
export function fail(message: string, hint?: number): never {
  throw new CheckFailure(message, hint);
}

export function check(condition: unknown, message: string, hint?: number): asserts condition {
  if (!condition) fail(message, hint);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits for `promise`, or fails naming what was still being waited for. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new CheckFailure(`Still waiting for ${what} after ${ms / 1000}s.`)),
      ms,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * How `promise` settled, as a value to look at: `{ value }` or `{ error }`. For a check that
 * must tell a rejection from any value (an error from Redis is not "no work").
 */
export function settled<T>(promise: Promise<T>): Promise<{ value: T } | { error: unknown }> {
  const outcome = promise.then(
    (value) => ({ value }),
    (error: unknown) => {
      // The starter's TODO throw is no answer: not the rejection a test may be looking for.
      failIfNotWritten(error);
      return { error };
    },
  );
  // Often awaited only later, after other steps: until then its failure is not "unhandled".
  outcome.catch(() => {});
  return outcome;
}

/** Whether `condition` comes true within `ms`; what a false answer means is the caller's to say. */
export function until(condition: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  // No progress to count: the deadline stays where it was set.
  return untilWhileProgressing(condition, () => 0, ms);
}

/**
 * Whether `condition` comes true, given `ms` after each step of `progress` (a count that grows
 * while the learner's code gets on with it): a slow but working catch-up on a loaded machine is
 * not taken for a stuck one, and a stuck one is still given up on `ms` after its last step.
 */
export async function untilWhileProgressing(
  condition: () => boolean | Promise<boolean>,
  progress: () => number,
  ms: number,
): Promise<boolean> {
  let last = progress();
  let deadline = Date.now() + ms;
  while (!(await condition())) {
    const now = progress();
    if (now !== last) {
      last = now;
      deadline = Date.now() + ms;
    }
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

/** Polls until `condition` holds, or fails with `message`. */
export async function eventually(
  condition: () => boolean | Promise<boolean>,
  ms: number,
  message: string,
  hint?: number,
): Promise<void> {
  if (!(await until(condition, ms))) fail(message, hint);
}

/**
 * Fails with "not written yet" when `error` is the starter's "TODO: <function>" throw: a test
 * that expects a rejection, or counts commands up to a crash, must not take the starter's for
 * it. `what` names the call; by default the function the TODO names.
 */
export function failIfNotWritten(error: unknown, what?: string): void {
  // Told already by call(), and caught by a test's own handler on its way up.
  if (error instanceof NotWrittenYet) throw error;
  const todo = todoOf(error);
  if (!todo) return;
  const name = what ?? (todo.name ? `${todo.name}()` : "This part");
  throw new NotWrittenYet(`${name} is not written yet (${todo.message}).`, 1);
}

/** Whether `error` is the starter's TODO throw, or call()'s "not written yet" for one. */
export function isNotWritten(error: unknown): boolean {
  return error instanceof NotWrittenYet || todoOf(error) !== undefined;
}

function todoOf(error: unknown): { message: string; name: string } | undefined {
  const message = error instanceof Error ? error.message : String(error);
  const todo = /^TODO:?\s*(\w*)/.exec(message);
  return todo ? { message, name: todo[1] ?? "" } : undefined;
}

/**
 * Calls into the learner's code. A TODO left in place, an exception or a hang each become a
 * failure that names the function, instead of an error from deep inside the check.
 */
export async function call<T>(what: string, run: () => T | Promise<T>, ms = 10_000): Promise<T> {
  // Read by checks/test-results.ts when a test runs out of time, to name what it waited for.
  const waiting = waitingNow();
  waiting.push(what);
  noteCalling(what);
  try {
    return await within(Promise.resolve().then(run), ms, `${what} to finish`);
  } catch (error) {
    if (error instanceof CheckFailure) throw error;
    failIfNotWritten(error, what);
    const message = error instanceof Error ? error.message : String(error);
    const exit = /process\.exit unexpectedly called with "(.*)"/.exec(message);
    if (exit) {
      fail(
        `${what} called process.exit(${exit[1]}). Library code should return or throw, never end the process.`,
      );
    }
    const failure = new CheckFailure(
      `${what} threw an error: ${message}${clientErrorCause(message)}`,
    );
    if (error instanceof Error) failure.stack = error.stack;
    throw failure;
  } finally {
    waiting.splice(waiting.lastIndexOf(what), 1);
  }
}

const WAITING = Symbol.for("workbook.waitingFor");

/** The learner's functions call() is waiting for now, innermost last. */
function waitingNow(): string[] {
  const shared = globalThis as { [WAITING]?: string[] };
  shared[WAITING] ??= [];
  return shared[WAITING];
}

/** Stops a learner's worker at the end of a test; a failure found earlier matters more. */
export async function stopQuietly(worker: { stop(): Promise<void> } | undefined): Promise<void> {
  await call("worker.stop()", () => worker?.stop(), 5000).catch(() => {});
}

/** Imports the file under test and checks that it exports the functions the lesson asks for. */
export async function loadExercise<T>(...functions: (keyof T & string)[]): Promise<T> {
  let module: Record<string, unknown>;
  try {
    module = await import(pathToFileURL(ctx.target).href);
  } catch (error) {
    const message = (error as Error).message;
    // A client connected at the top of the file, as the node-redis README's first example does:
    // with no URL it tries this machine's port 6379, where the check's server is not.
    const refused = /\bECONNREFUSED\b/.test(message)
      ? " Your file connects to Redis as soon as it is imported, and nothing answers there. The check starts its own Redis and gives your functions the client to use: open connections inside your functions (client.duplicate() where you need one of your own), not at the top of the file."
      : "";
    const failure = new CheckFailure(
      `Your file could not be loaded: ${message.replace(/\.$/, "")}.${refused}`,
    );
    failure.stack = (error as Error).stack;
    throw failure;
  }
  for (const name of functions) {
    if (typeof module[name] !== "function") {
      fail(`Your file must export a function named ${name}. Did you rename or remove it?`);
    }
  }
  return module as T;
}

const opened: Redis[] = [];

async function open(
  name: string,
  login?: { username: string; password: string },
  reconnect = false,
): Promise<Redis> {
  // As createClient() would, without building node-redis's command class again.
  const client = newClient({
    url: ctx.redisUrl,
    name,
    ...login,
    socket: {
      // Off unless asked: a check's connection that drops should fail the test, not retry.
      reconnectStrategy: reconnect ? (retries: number) => Math.min(20 * (retries + 1), 200) : false,
      ...tlsSocketOptions(ctx.redisUrl),
    },
  });
  client.on("error", () => {});
  await client.connect();
  opened.push(client);
  return client;
}

/** A connection of the check's own: excluded from "what your code sent". */
export function checkClient(label = "main"): Promise<Redis> {
  return open(`wb:check:${label}:${ctx.runId}`);
}

/** How the learner's code closed clients the check handed it in the current test, e.g. "close() in stop()". */
const closedByLearner: string[] = [];

/**
 * A connected client to hand to the learner's functions. Duplicates they make of it keep its
 * name, so learnerConnections() finds them too. It remembers whether it was closed while the
 * learner's code ran (the kit's own cleanup closes it with destroy() after the tests), so that
 * "The client is closed" can name the cause. With `reconnect`, it (and every duplicate, which
 * copies its options) reconnects after a drop, as a client with node-redis's defaults does.
 */
export async function learnerClient(
  login?: { username: string; password: string },
  options: { reconnect?: boolean } = {},
): Promise<Redis> {
  const client = await open(LEARNER_CLIENT, login, options.reconnect);
  const methods = client as unknown as Record<string, unknown>;
  for (const name of ["close", "quit", "disconnect", "destroy"]) {
    const original = methods[name];
    if (typeof original !== "function") continue;
    methods[name] = function (this: unknown, ...args: unknown[]) {
      if (client.isOpen && waitingNow().length > 0) {
        closedByLearner.push(`${name}() in ${waitingNow().at(-1)}`);
      }
      return original.apply(this, args);
    };
  }
  return client;
}

/** ACL users restrictedLearnerClient() made, deleted once the tests are over. */
const aclUsers: string[] = [];

/**
 * learnerClient(), logged in as an ACL user of its own that may run every command on every key,
 * with `rules` on top: ["resetchannels"] is an account Redis refuses every channel, as a cloud
 * account kept to its own channels is. For the error paths such an account meets. ACL SETUSER
 * changes the server: private server only.
 */
export async function restrictedLearnerClient(rules: string[]): Promise<Redis> {
  return learnerClient(await aclAccount(rules));
}

/**
 * An ACL user of its own (every command on every key, `rules` on top) and its password,
 * deleted once the tests are over. ACL SETUSER changes the server: private server only.
 */
export async function aclAccount(
  rules: string[] = [],
): Promise<{ username: string; password: string }> {
  const admin = await checkClient("acl");
  const username = `wb-${ctx.runId}-${aclUsers.length + 1}`;
  const password = randomBytes(12).toString("hex");
  const setUser = ["ACL", "SETUSER", username, "on", `>${password}`, "~*", "&*", "+@all"];
  await admin.sendCommand([...setUser, ...rules]);
  aclUsers.push(username);
  return { username, password };
}

afterAll(async () => {
  if (aclUsers.length === 0) return;
  // Its own client: the hook that closes the kit's clients may already have run.
  const admin = await checkClient("acl");
  try {
    await admin.sendCommand(["ACL", "DELUSER", ...aclUsers.splice(0)]);
  } finally {
    admin.destroy();
  }
});

/**
 * What node-redis's terse messages mean in a check: a command found its client closed (and the
 * learner's code closed one the check gave it), or connect() on a connected client.
 */
function clientErrorCause(message: string): string {
  if (/watched keys has been changed/.test(message)) {
    return '. That is node-redis\'s WatchError: EXEC was refused because a key your code WATCHed changed after the WATCH (another worker got there first), and nothing of the transaction ran. It is an answer, not a crash: catch it (error instanceof WatchError, imported from "redis") and do what the lesson says a refused commit means.';
  }
  const noGroup = /^NOGROUP No such key '(.*)' or consumer group '(.*)'/.exec(message);
  if (noGroup) {
    return `. That is Redis's NOGROUP: the stream ${noGroup[1]} has no consumer group called "${noGroup[2]}" (or there is no such stream). Is that the group name your function was given? The check makes fresh names, so a name of your own (the stage's, a constant) finds no group: use the ones passed in. If the group was removed, the error is an answer in itself: let it reach the caller rather than report "no work".`;
  }
  const unencodable =
    /^"arguments\[(\d+)\]" must be of type "string \| Buffer", got (\w+) instead/.exec(message);
  if (unencodable) {
    return `${message.endsWith(".") ? "" : "."} node-redis could not send a command: its argument ${unencodable[1]} is ${unencodable[2] === "object" ? "null (or an object)" : `a ${unencodable[2]}`}, and every argument must be a string (String(n), JSON.stringify(...)). Inside client.multi() this is worse than it looks: node-redis leaves that one command out and still sends EXEC, so the rest of the transaction ran. Convert every value to a string before queuing it.`;
  }
  if (/^Socket already opened/.test(message)) {
    return ". connect() was called on a client that is connected already (the check hands your functions connected clients): connect only the clients your code creates (createClient(), client.duplicate()).";
  }
  if (!/The client is closed/.test(message)) return "";
  const closer = closedByLearner[0];
  return closer
    ? `. The client the check handed your code was closed by your own code (${closer}). A function that is given a client uses it and leaves closing it to whoever opened it; close only the connections your code opened itself.`
    : "";
}

export interface ConnectionInfo {
  id: string;
  /** The connection's address as the server sees it: the client's local address. */
  addr: string;
  name: string;
  /** The last command the connection ran, e.g. "subscribe" or "xreadgroup". */
  cmd: string;
  flags: string;
  sub: number;
  psub: number;
}

export function parseClientList(text: string): ConnectionInfo[] {
  return text
    .split("\n")
    .filter((line) => line.trim().length > 0)
    .map((line) => {
      const fields = new Map(
        line
          .trim()
          .split(" ")
          .map((pair) => {
            const at = pair.indexOf("=");
            return [pair.slice(0, at), pair.slice(at + 1)] as const;
          }),
      );
      return {
        id: fields.get("id") ?? "",
        addr: fields.get("addr") ?? "",
        name: fields.get("name") ?? "",
        cmd: fields.get("cmd") ?? "",
        flags: fields.get("flags") ?? "",
        sub: Number(fields.get("sub") ?? 0),
        psub: Number(fields.get("psub") ?? 0),
      };
    });
}

async function clientList(via: Redis): Promise<ConnectionInfo[]> {
  return parseClientList(String(await via.sendCommand(["CLIENT", "LIST"])));
}

/** Open connections whose name starts with `name`: for checks about the name itself. */
export async function connectionsNamed(via: Redis, name: string): Promise<ConnectionInfo[]> {
  return (await clientList(via)).filter((c) => c.name.startsWith(name));
}

/**
 * The learner's open connections as the server lists them, however the learner's code created
 * or named them: found by the local address of every socket this process opened (see
 * wire.ts), plus `extraAddrs` that a worker child process reported.
 */
export async function learnerConnections(
  via: Redis,
  extraAddrs: Iterable<string> = [],
): Promise<ConnectionInfo[]> {
  const addrs = allLearnerAddrs();
  for (const addr of extraAddrs) addrs.add(addr);
  return (await clientList(via)).filter((c) => addrs.has(c.addr));
}

afterAll(() => {
  for (const client of opened.splice(0)) {
    if (client.isOpen) client.destroy();
  }
});

// Written from inside the test process, synchronously: vitest's own reporting is batched and
// never arrives if the learner's code blocks the event loop, and the harness must still name
// the test that was stuck.
beforeEach((context) => {
  closedByLearner.length = 0;
  appendEvent({ event: "start", test: context.task.name });
  guardAgainstStarvation(context.task.name);
});

/**
 * Learner code that never lets the event loop turn (a loop with nothing awaited that takes
 * time, a catch-all loop round a closed client) stops every timer of the test process too, the
 * test's own time limit among them: without this only the run's limit would end it, after a
 * minute or more, with a message that cannot say why. A watcher thread names it after 3 s
 * (checks/starvation.ts). Armed from the first test to the last, so a loop that spins between
 * two tests is caught too, in the name of the test that started it; a test may arm a message
 * of its own for a while.
 */
let starvationGuard: (() => void) | undefined;
startWatcher();

/** After how long; 0 turns the watcher off (the harness's tests of the run's own limit). */
const STARVED_MS = Number(process.env.WORKBOOK_STARVATION_MS ?? 3000);

function guardAgainstStarvation(test: string): void {
  starvationGuard?.();
  if (STARVED_MS <= 0) return;
  starvationGuard = failIfStarved(
    test,
    `Your code kept the check's process busy for ${STARVED_MS / 1000} s without once letting anything else run (the last of your functions the check called: {calling}): no timer fired, no reply from Redis was read, and the check could not go on, so it stopped here. Look for a loop that never waits for anything that takes time: a loop that checks a flag or a queue with nothing awaited inside, or one that catches an error and goes straight round again (a closed client rejects every command at once). Await the read in every round, and pause before trying again after an error.`,
    undefined,
    STARVED_MS,
  );
}

afterAll(() => {
  starvationGuard?.();
  starvationGuard = undefined;
});

/**
 * Tells the harness about a process group the check started (a learner's worker run as a child
 * process), so it is killed after the run even if the check itself hangs or crashes.
 */
export function trackProcess(pid: number): void {
  appendEvent({ event: "process", pid });
}
