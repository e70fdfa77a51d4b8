/**
 * The one way out. Ctrl+C (as a key in raw mode, as SIGINT, or inside a prompt), SIGTERM, SIGHUP,
 * the death of whatever started us (npm killed) and a normal quit all end here: the terminal is
 * restored, the private Redis is stopped, check processes are killed, and the process exits
 * without a stack trace.
 */
import kleur from "kleur";
import { cleanUpNow } from "../check/cleanup.ts";
import { watchLaunchers } from "../launchers.ts";
import { redact } from "../redis/redact.ts";

type Cleanup = () => void | Promise<void>;

const cleanups = new Set<Cleanup>();
let exiting = false;
/** Set once a read or write on the terminal failed because it was closed. */
let terminalGone = false;
/** Set by SIGHUP: the process ends by that signal, as a hung-up program is expected to. */
let hungUp = false;

/** Registers work to do on the way out; returns a function that unregisters it. */
export function onExit(cleanup: Cleanup): () => void {
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}

/** What a closed terminal (EIO) or a reader that went away (EPIPE) answers every read and write. */
function isHangup(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === "EIO" || code === "EPIPE";
}

function restoreTerminal(): void {
  if (terminalGone) return;
  try {
    const stdin = process.stdin;
    if (stdin.isTTY && stdin.isRaw) stdin.setRawMode(false);
    // Show the cursor again in case a prompt hid it.
    if (process.stdout.isTTY) process.stdout.write("\x1b[?25h");
  } catch (error) {
    if (!isHangup(error)) throw error;
    terminalGone = true;
    hungUp = true;
  }
}

function within(work: Promise<void> | void, ms: number): Promise<void> {
  return Promise.race([
    Promise.resolve(work).catch(() => {}),
    new Promise<void>((resolve) => setTimeout(resolve, ms).unref()),
  ]);
}

/**
 * Ends the process after the cleanups. After a hangup, by SIGHUP rather than exit(): Node's
 * exit restores the terminal's settings and aborts with an assertion when the terminal is gone.
 */
function end(code: number): never {
  if (!hungUp) process.exit(code);
  cleanUpNow();
  process.removeAllListeners("SIGHUP");
  process.kill(process.pid, "SIGHUP");
  // The signal is delivered before kill() returns; this is only for the type checker.
  process.exit(code);
}

/** Cleans up and exits; `note` is printed last, after the terminal is back to normal. */
export async function exitCleanly(code: number, note?: string): Promise<never> {
  if (!exiting) {
    exiting = true;
    restoreTerminal();
    for (const cleanup of [...cleanups].reverse()) await within(cleanup(), 3000);
    if (note && !hungUp && !terminalGone) console.log(note);
    end(code);
  }
  // A second Ctrl+C while cleaning up: the first one is already on its way out.
  return new Promise<never>(() => {});
}

export const STOPPED_NOTE = kleur.dim(
  "\nStopped. Your work is saved; run the same command to continue.",
);

/** The terminal was closed (or SIGHUP said so): nobody is left to read a note. */
function hangUp(): void {
  hungUp = true;
  void exitCleanly(129);
}

/**
 * A read or write failed because the terminal is gone (EIO: the same as a hangup) or the pipe
 * we print to has no reader any more (EPIPE: exit as a broken pipe does, 128 + 13).
 */
function closed(error: unknown): void {
  terminalGone = true;
  if ((error as NodeJS.ErrnoException).code === "EPIPE") void exitCleanly(141);
  else hangUp();
}

/**
 * Routes the signals a terminal sends to the clean way out, and the ways a closed terminal
 * shows up (EIO/EPIPE on a read or write, also inside a prompt) to the same way as SIGHUP.
 */
export function handleSignals(): void {
  process.on("SIGINT", () => void exitCleanly(130, STOPPED_NOTE));
  process.on("SIGTERM", () => void exitCleanly(143));
  process.on("SIGHUP", hangUp);
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (error) => {
      if (!isHangup(error)) throw error;
      closed(error);
    });
  }
  process.on("uncaughtException", (error) => {
    if (isHangup(error)) return closed(error);
    // A bug: say what it was, as Node would, but still stop what we started.
    if (!terminalGone && !exiting)
      process.stderr.write(`${redact(error.stack ?? String(error))}\n`);
    void exitCleanly(1);
  });
  // `npm run check` killed alone leaves us running with nobody to report to. The shell has taken
  // the terminal back: changing its mode now, from the background, would stop us (SIGTTOU).
  watchLaunchers(() => {
    terminalGone = true;
    void exitCleanly(129);
  });
}
