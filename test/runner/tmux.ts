/**
 * A real terminal for end-to-end tests: the runner runs in a tmux pane on a private tmux server
 * (its own socket), the test types keys and reads the screen. tmux is in every Linux package
 * manager; CI installs it with apt-get.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT } from "../../src/paths.ts";

export function hasTmux(): boolean {
  return spawnSync("tmux", ["-V"], { encoding: "utf8" }).status === 0;
}

/** Our environment minus what would change the runner's behaviour (an outer vitest, colours). */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (/^VITEST|^TEST$|^NODE_ENV$|^TMUX|^REDIS_URL$|COLOR|^VISUAL$|^EDITOR$/.test(name)) continue;
    env[name] = value;
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
   * When it ends, the pane stays (remain-on-exit) so the test can read the screen and the code.
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
    const script = `cd ${shellQuote(ROOT)} && exec env ${assignments} ${command}`;
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

  /** Waits for the command to end and returns its exit code. */
  async exitCode(timeoutMs = 30_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const [dead, status = "", signal = ""] = this.tmux(
        "display-message",
        "-p",
        "#{pane_dead} #{pane_dead_status} #{pane_dead_signal}",
      )
        .trim()
        .split(" ");
      // tmux may mark the pane dead a moment before it records the status.
      if (dead === "1" && /^\d+$/.test(status)) return Number(status);
      if (dead === "1" && /^\d+$/.test(signal)) return 128 + Number(signal);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    throw new Error(`The command did not end. The screen:\n${this.screen()}`);
  }

  close(): void {
    spawnSync("tmux", ["-S", this.socket, "kill-server"]);
    rmSync(this.socket, { force: true });
    rmSync(`${this.socket}.conf`, { force: true });
  }
}
