/**
 * Names a test whose learner code starves the event loop: a loop that only ever awaits promises
 * that are already settled (a client that is closed rejects every command at once, and a
 * catch-all loop goes straight round again) never lets a timer, a socket or the test itself run
 * again. Nothing on that thread can notice, so a thread of its own watches a heartbeat the test's
 * thread keeps; when the heartbeat has stood still for `afterMs`, for 20 of the watcher's own
 * polls, and the process has used at least 60% of `afterMs` in CPU time meanwhile (a spinning
 * thread uses what it is given; one slow to be scheduled on a loaded machine does not), the
 * watcher writes the test's failure, with the message the test armed it with, and the run's end
 * to the events file (as kit.ts writes "start"): the harness reports it then and stops the
 * process, instead of waiting for the run's time limit and a message that cannot say what went
 * wrong. On a loaded machine that can take longer than `afterMs`, never less.
 */
import { Worker } from "node:worker_threads";

const WATCHER = `
const { workerData, parentPort } = require("node:worker_threads");
const { appendFileSync } = require("node:fs");
const beats = new Int32Array(workerData.shared);
let armed;
let calling;
let last = -1;
let still = 0;
let stillSince = 0;
let cpuSince;
parentPort.on("message", (message) => {
  if (message && "calling" in message) {
    calling = message.calling;
    return;
  }
  armed = message ?? undefined;
  last = -1;
  still = 0;
});
setInterval(() => {
  if (!armed) return;
  const beat = Atomics.load(beats, 0);
  if (beat !== last) {
    last = beat;
    still = 0;
    return;
  }
  if (still++ === 0) {
    stillSince = Date.now();
    cpuSince = process.cpuUsage();
  }
  if (still < 20 || Date.now() - stillSince < armed.afterMs) return;
  // A thread that spins uses the CPU it is given. One that is only slow to be scheduled (a
  // loaded machine stretches any synchronous step), or that waits in a synchronous call, does
  // not: only the first is starving the event loop.
  const { user, system } = process.cpuUsage(cpuSince);
  if ((user + system) / 1000 < armed.afterMs * 0.6) return;
  const { test, hint } = armed;
  const message = armed.message.replace("{calling}", calling ?? "none yet");
  armed = undefined;
  const file = workerData.results;
  if (!file) return;
  const failure = { event: "result", test, state: "failed", errors: [{ name: "CheckFailure", message, hint }] };
  appendFileSync(file, JSON.stringify(failure) + "\\n" + JSON.stringify({ event: "end" }) + "\\n");
}, 50);
`;

let watcher: { worker: Worker; timer: NodeJS.Timeout } | undefined;

function start(): { worker: Worker; timer: NodeJS.Timeout } {
  const shared = new SharedArrayBuffer(4);
  const beats = new Int32Array(shared);
  const worker = new Worker(WATCHER, {
    eval: true,
    workerData: { shared, results: process.env.WORKBOOK_RESULTS },
  });
  worker.unref();
  worker.on("error", () => {});
  const timer = setInterval(() => Atomics.add(beats, 0, 1), 25);
  timer.unref();
  return { worker, timer };
}

interface Armed {
  test: string;
  message: string;
  hint?: number;
  afterMs: number;
}

/** What is armed, innermost last: a test's own message stands in for the kit's while it lasts. */
const stack: Armed[] = [];

function post(): void {
  watcher ??= start();
  watcher.worker.postMessage(stack.at(-1) ?? null);
}

/**
 * Until the function returned is called, fails test `test` with `message` (and `hint`) if this
 * thread's event loop stops turning for `afterMs`. Arm it only around learner code that could
 * spin this way, and say in `message` what the learner's code was doing. `{calling}` in the
 * message becomes the last learner function kit's call() called (see noteCalling()).
 */
export function failIfStarved(
  test: string,
  message: string,
  hint?: number,
  afterMs = 3000,
): () => void {
  const entry: Armed = { test, message, hint, afterMs };
  stack.push(entry);
  post();
  return () => {
    const at = stack.indexOf(entry);
    if (at < 0) return;
    stack.splice(at, 1);
    // Only what is on top is armed: taking off something below it changes nothing there.
    if (at === stack.length) post();
  };
}

/** Tells the watcher which of the learner's functions the check calls now, for `{calling}`. */
export function noteCalling(what: string): void {
  watcher?.worker.postMessage({ calling: what });
}

/** Boots the watcher thread ahead of the first test, off the time a learner waits for. */
export function startWatcher(): void {
  watcher ??= start();
}
