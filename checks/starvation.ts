/**
 * Names a test whose learner code starves the event loop: a loop that only ever awaits promises
 * that are already settled (a client that is closed rejects every command at once, and a
 * catch-all loop goes straight round again) never lets a timer, a socket or the test itself run
 * again. Nothing on that thread can notice, so a thread of its own watches a heartbeat the test's
 * thread keeps; when the heartbeat has stood still for `afterMs` (and for 20 of the watcher's own
 * polls, so a machine too busy to run either thread is not taken for it), the watcher writes the
 * test's failure, with the message the test armed it with, and the run's end to the events file
 * (as kit.ts writes "start"): the harness reports it then and stops the process, instead of
 * waiting for the run's time limit and a message that cannot say what went wrong.
 */
import { Worker } from "node:worker_threads";

const WATCHER = `
const { workerData, parentPort } = require("node:worker_threads");
const { appendFileSync } = require("node:fs");
const beats = new Int32Array(workerData.shared);
let armed;
let last = -1;
let still = 0;
let stillSince = 0;
parentPort.on("message", (message) => {
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
  if (still++ === 0) stillSince = Date.now();
  if (still < 20 || Date.now() - stillSince < armed.afterMs) return;
  const { test, message, hint } = armed;
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

/**
 * Until the function returned is called, fails test `test` with `message` (and `hint`) if this
 * thread's event loop stops turning for `afterMs`. Arm it only around learner code that could
 * spin this way, and say in `message` what the learner's code was doing.
 */
export function failIfStarved(
  test: string,
  message: string,
  hint?: number,
  afterMs = 3000,
): () => void {
  watcher ??= start();
  const { worker } = watcher;
  worker.postMessage({ test, message, hint, afterMs });
  return () => worker.postMessage(null);
}
