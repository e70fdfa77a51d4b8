/**
 * A watchdog for a process group we start (a check's vitest, its type check): a tiny shell in a
 * process group of its own, holding a pipe from us on its stdin. If we die in any way (SIGKILL
 * of the workbook or of its whole process group included), the pipe closes, `read` returns, and
 * the watchdog kills the group, every process carrying the check's run id in its environment
 * (whatever it did to detach), and removes the given files and directories. The private
 * redis-server has the same kind of guard (src/redis/server.ts).
 */
import { spawn } from "node:child_process";

const SCRIPT = [
  // $1: the process group, $2: the run id (may be empty), then what to remove.
  'IFS= read -r line && [ "$line" = done ] && exit 0',
  'kill -KILL -- "-$1" 2>/dev/null',
  'for _ in 1 2 3 4 5; do [ -n "$2" ] || break',
  '  pids=$(grep -laxzF "WORKBOOK_RUN_ID=$2" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3)',
  '  [ -n "$pids" ] || break',
  // Each one's process group too: a redis-server a check started has overwritten its
  // environment with its title, and is found only through the shell leading its group.
  '  for p in $pids; do g=$(sed "s/.*) //" "/proc/$p/stat" 2>/dev/null | cut -d" " -f3)',
  '    [ -n "$g" ] && [ "$g" != "$$" ] && kill -KILL -- "-$g" 2>/dev/null; done',
  "  kill -KILL $pids 2>/dev/null",
  "done",
  "shift 2",
  'rm -rf "$@"',
].join("\n");

/**
 * Guards group `pid` (and, with a `runId`, every process of that check run); call the returned
 * function once the group ended normally.
 */
export function guardGroup(pid: number, runId: string | undefined, paths: string[]): () => void {
  const env = { ...process.env };
  // The watchdog must not find itself among the run's processes.
  delete env.WORKBOOK_RUN_ID;
  const dog = spawn(
    "sh",
    ["-c", SCRIPT, "workbook-check-watchdog", String(pid), runId ?? "", ...paths],
    {
      detached: true,
      stdio: ["pipe", "ignore", "ignore"],
      env,
    },
  );
  // No sh (not a POSIX system): the exit hook of ./cleanup.ts is all there is.
  dog.on("error", () => {});
  dog.stdin?.on("error", () => {});
  dog.unref();
  return () => {
    dog.stdin?.end("done\n");
  };
}
