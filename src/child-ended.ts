import type { ChildProcess } from "node:child_process";

export interface Ending {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * How `child` ended, once its output has been read to the end. "exit" can come before the last
 * chunk on a pipe is delivered (under load it did), so this waits for "close", which follows the
 * pipes; a process the child started that keeps them open delays it at most `drainMs` past exit.
 */
export function childEnded(child: ChildProcess, drainMs: number): Promise<Ending> {
  return new Promise((resolve) => {
    let drained: NodeJS.Timeout | undefined;
    child.once("exit", (code, signal) => {
      drained = setTimeout(() => resolve({ code, signal }), drainMs);
    });
    child.once("close", (code, signal) => {
      clearTimeout(drained);
      resolve({ code, signal });
    });
  });
}
