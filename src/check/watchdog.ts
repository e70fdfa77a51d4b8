/**
 * A watchdog for a process group we start (a check's vitest, its type check): a tiny shell in a
 * process group of its own, holding a pipe from us on its stdin. If we die in any way (SIGKILL
 * of the workbook or of its whole process group included), the pipe closes, `read` returns, and
 * the watchdog kills the group, every process carrying the run id in its environment
 * (whatever it did to detach), and removes the given files and directories. The private
 * redis-server has the same kind of guard (src/redis/server.ts).
 */
import { spawn } from "node:child_process";

const SCRIPT = [
  // $1: the run id, then what to remove. Lines on stdin: "group <pid>" once the group exists,
  // "done" when it ended normally.
  'group=""',
  "while read -r word arg; do",
  '  case "$word" in done) exit 0 ;; group) group="$arg" ;; esac',
  "done",
  '[ -n "$group" ] && kill -KILL -- "-$group" 2>/dev/null',
  "for _ in 1 2 3 4 5; do",
  '  pids=$(grep -laxzF "WORKBOOK_RUN_ID=$1" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3)',
  '  [ -n "$pids" ] || break',
  // Each one's process group too: a redis-server a check started has overwritten its
  // environment with its title, and is found only through the shell leading its group.
  '  for p in $pids; do g=$(sed "s/.*) //" "/proc/$p/stat" 2>/dev/null | cut -d" " -f3)',
  '    [ -n "$g" ] && [ "$g" != "$$" ] && kill -KILL -- "-$g" 2>/dev/null; done',
  "  kill -KILL $pids 2>/dev/null",
  "done",
  "shift",
  'rm -rf "$@"',
].join("\n");

export interface Guard {
  /** The group to kill as well, once it has been spawned. */
  group(pid: number): void;
  /** The group ended normally: nothing to kill or remove. */
  release(): void;
}

/**
 * Guards check run `runId` and the files in `paths`. Armed before anything is spawned: a
 * process spawned first could outlive a SIGKILL that lands before its guard exists, and leave
 * its files behind. So whatever the guarded code spawns carries `WORKBOOK_RUN_ID=<runId>` in its
 * environment, which finds it even before `group()` names its process group.
 */
export function guardRun(runId: string, paths: string[]): Guard {
  const env = { ...process.env };
  // The watchdog must not find itself among the run's processes.
  delete env.WORKBOOK_RUN_ID;
  const dog = spawn("sh", ["-c", SCRIPT, "workbook-check-watchdog", runId, ...paths], {
    detached: true,
    stdio: ["pipe", "ignore", "ignore"],
    env,
  });
  // No sh (not a POSIX system): the exit hook of ./cleanup.ts is all there is.
  dog.on("error", () => {});
  dog.stdin?.on("error", () => {});
  dog.unref();
  return {
    group(pid) {
      dog.stdin?.write(`group ${pid}\n`);
    },
    release() {
      dog.stdin?.end("done\n");
    },
  };
}
