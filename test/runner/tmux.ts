/**
 * A real terminal for end-to-end tests: the runner runs in a tmux pane on a private tmux server
 * (its own socket), the test types keys and reads the screen. tmux is in every Linux package
 * manager; CI installs it with apt-get.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT } from "../../src/paths.ts";
import { scrubbedEnv } from "../support/cli.ts";
import { waitFor } from "../support/wait.ts";

export function hasTmux(): boolean {
  return spawnSync("tmux", ["-V"], { encoding: "utf8" }).status === 0;
}

/** Our environment minus what would change the runner's behaviour (an outer vitest, colours). */
function cleanEnv(): NodeJS.ProcessEnv {
  const env = scrubbedEnv();
  for (const name of Object.keys(env)) {
    if (/^TMUX|^REDIS_URL$|COLOR|^VISUAL$|^EDITOR$/.test(name)) delete env[name];
  }
  return env;
}

const shellQuote = (value: string) => `'${value.replace(/'/g, "'\\''")}'`;

export class Terminal {
  private constructor(
    private readonly socket: string,
    readonly width: number,
  ) {}

  /**
   * Starts `command` (run from the repository root with `env` added) in a fresh tmux server.
   * When it ends, the pane stays (remain-on-exit) so the test can read the screen, and the
   * shell around it writes its exit code to a file: tmux 3.3 does not always reap the pane's
   * process (it stays a zombie, the pane never reads as dead), so its status cannot be trusted.
   */
  static open(
    command: string,
    env: Record<string, string>,
    size = { width: 80, height: 30 },
  ): Terminal {
    const socket = join(tmpdir(), `wb-tmux-${randomBytes(4).toString("hex")}`);
    // The option must hold from the first moment, so it comes from the config file.
    writeFileSync(`${socket}.conf`, "set -g remain-on-exit on\n");
    const assignments = Object.entries(env)
      .map(([name, value]) => `${name}=${shellQuote(value)}`)
      .join(" ");
    const status = `${socket}.status`;
    // The shell outlives Ctrl+C (trapped; its child gets the default) to record the code.
    const script = [
      "trap : INT",
      `cd ${shellQuote(ROOT)} && env ${assignments} ${command}`,
      `echo "$?" > ${shellQuote(`${status}.tmp`)} && mv ${shellQuote(`${status}.tmp`)} ${shellQuote(status)}`,
    ].join("\n");
    const started = spawnSync(
      "tmux",
      [
        "-S",
        socket,
        "-f",
        `${socket}.conf`,
        "new-session",
        "-d",
        "-x",
        String(size.width),
        "-y",
        String(size.height),
        script,
      ],
      { env: cleanEnv(), encoding: "utf8" },
    );
    if (started.status !== 0) throw new Error(`tmux did not start: ${started.stderr}`);
    return new Terminal(socket, size.width);
  }

  private tmux(...args: string[]): string {
    const result = spawnSync("tmux", ["-S", this.socket, ...args], { encoding: "utf8" });
    if (result.status !== 0) throw new Error(`tmux ${args[0]}: ${result.stderr}`);
    return result.stdout;
  }

  /** The visible screen as text; with `escapes`, including colour codes. */
  screen(escapes = false): string {
    return this.tmux("capture-pane", "-p", ...(escapes ? ["-e"] : []));
  }

  /** Presses keys by tmux name: "Enter", "Space", "C-c", "Escape", or single characters. */
  press(...keys: string[]): void {
    for (const key of keys) this.tmux("send-keys", key);
  }

  /** Waits until the screen shows `what`; fails with the screen it last saw. */
  async waitFor(what: string | RegExp, timeoutMs = 90_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let text = "";
    while (Date.now() < deadline) {
      text = this.screen();
      if (typeof what === "string" ? text.includes(what) : what.test(text)) return text;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    throw new Error(`Timed out waiting for ${String(what)}. The screen:\n${text}`);
  }

  /** Waits for the command to end and returns its exit code (128 + n for signal n). */
  async exitCode(timeoutMs = 30_000): Promise<number> {
    const file = `${this.socket}.status`;
    if (await waitFor(() => existsSync(file), timeoutMs)) {
      return Number(readFileSync(file, "utf8").trim());
    }
    throw new Error(`The command did not end. The screen:\n${this.screen()}`);
  }

  close(): void {
    spawnSync("tmux", ["-S", this.socket, "kill-server"]);
    rmSync(this.socket, { force: true });
    for (const suffix of [".conf", ".status", ".status.tmp"]) {
      rmSync(`${this.socket}${suffix}`, { force: true });
    }
  }
}
