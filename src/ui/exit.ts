/**
 * The one way out. Ctrl+C (as a key in raw mode, as SIGINT, or inside a prompt), SIGTERM, SIGHUP
 * and a normal quit all end here: the terminal is restored, the private Redis is stopped, check
 * processes are killed, and the process exits without a stack trace.
 */
import kleur from "kleur";

type Cleanup = () => void | Promise<void>;

const cleanups = new Set<Cleanup>();
let exiting = false;

/** Registers work to do on the way out; returns a function that unregisters it. */
export function onExit(cleanup: Cleanup): () => void {
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}

function restoreTerminal(): void {
  const stdin = process.stdin;
  if (stdin.isTTY && stdin.isRaw) stdin.setRawMode(false);
  // Show the cursor again in case a prompt hid it.
  if (process.stdout.isTTY) process.stdout.write("\x1b[?25h");
}

function within(work: Promise<void> | void, ms: number): Promise<void> {
  return Promise.race([
    Promise.resolve(work).catch(() => {}),
    new Promise<void>((resolve) => setTimeout(resolve, ms).unref()),
  ]);
}

/** Cleans up and exits; `note` is printed last, after the terminal is back to normal. */
export async function exitCleanly(code: number, note?: string): Promise<never> {
  if (!exiting) {
    exiting = true;
    restoreTerminal();
    for (const cleanup of [...cleanups].reverse()) await within(cleanup(), 3000);
    if (note) console.log(note);
    process.exit(code);
  }
  // A second Ctrl+C while cleaning up: the first one is already on its way out.
  return new Promise<never>(() => {});
}

export const STOPPED_NOTE = kleur.dim(
  "\nStopped. Your work is saved; run the same command to continue.",
);

/** Routes the signals a terminal sends to the clean way out. */
export function handleSignals(): void {
  process.on("SIGINT", () => void exitCleanly(130, STOPPED_NOTE));
  process.on("SIGTERM", () => void exitCleanly(143));
  process.on("SIGHUP", () => void exitCleanly(129));
}
