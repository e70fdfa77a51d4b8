/**
 * Closing the terminal during `npm start` ends the workbook like Ctrl+C does: no crash, no
 * process and no temporary directory left. tmux gives the runner a real terminal to lose.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, expect, test } from "vitest";
import { ROOT } from "../src/paths.ts";
import { cliEnv } from "./support/cli.ts";
import {
  killMarked,
  marker,
  processesWithEnv,
  scratchDir,
  workbookLeftovers,
} from "./support/sandbox.ts";
import { waitFor } from "./support/wait.ts";

const hasTmux = spawnSync("tmux", ["-V"]).status === 0;
const scratch = scratchDir("hangup");
const { mark, env } = marker();
const socket = `workbook-hangup-${process.pid}`;
const tmux = (...args: string[]) =>
  spawnSync("tmux", ["-L", socket, "-f", "/dev/null", ...args], {
    cwd: ROOT,
    encoding: "utf8",
    env: cliEnv({
      ...env,
      TMPDIR: join(scratch.dir, "tmp"),
      WORKBOOK_WORKSPACE: join(scratch.dir, "workspace"),
      ERR: join(scratch.dir, "stderr"),
      CODE: join(scratch.dir, "code"),
    }),
  });

afterAll(() => {
  tmux("kill-server");
  killMarked(mark);
  scratch.remove();
});

test.skipIf(!hasTmux)(
  "closing the terminal during npm start exits by SIGHUP, cleanly",
  async () => {
    mkdirSync(join(scratch.dir, "tmp"));
    // The shell outlives the hangup only to write down how the workbook ended.
    const script = `trap '' HUP; node --import tsx src/cli.ts start 2>"$ERR"; echo $? >"$CODE"`;
    expect(tmux("new-session", "-d", "-x", "80", "-y", "24", "sh", "-c", script).status).toBe(0);
    // The lesson list is a prompt in raw mode, with the private Redis running.
    const prompting = await waitFor(
      () => (tmux("capture-pane", "-p").stdout ?? "").includes("Choose a lesson"),
      60_000,
    );
    expect(prompting, "the lesson list never showed").toBe(true);

    tmux("kill-server");

    const code = join(scratch.dir, "code");
    expect(await waitFor(() => existsSync(code) && readFileSync(code, "utf8") !== "", 10_000)).toBe(
      true,
    );
    const stderr = readFileSync(join(scratch.dir, "stderr"), "utf8");
    expect(stderr).not.toMatch(/EIO|Assertion|Error|Segmentation/);
    // 129: ended by SIGHUP (128 + 1), after its cleanups.
    expect(readFileSync(code, "utf8").trim()).toBe("129");
    expect(await waitFor(() => processesWithEnv(mark).length === 0, 5_000)).toBe(true);
    expect(workbookLeftovers(join(scratch.dir, "tmp"))).toEqual([]);
  },
);
