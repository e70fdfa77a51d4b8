import type { Lesson } from "../catalog.ts";
import { WarmChecks } from "../check/warm.ts";
import { redact } from "../redis/redact.ts";
import { openRedisTarget, type RedisTarget } from "../redis/target.ts";
import { onExit } from "./exit.ts";
import { Inbox, readKeys } from "./keys.ts";
import type { UiEvent } from "./screen.ts";

/**
 * One guided-runner session: the lessons, the Redis every check runs against (opened once,
 * stopped on every way out), and the inbox the screens read from.
 */
export class Session {
  readonly inbox = new Inbox<UiEvent>();
  /** Keeps the lesson screen's next check ready between saves. */
  readonly warm = new WarmChecks();
  private target: Promise<RedisTarget> | undefined;
  private stopKeys: (() => void) | undefined;
  private readonly onResize = () => this.inbox.push({ kind: "resize" });

  constructor(readonly lessons: Lesson[]) {
    onExit(() => this.close());
  }

  /** The Redis for checks, started on first use; a failure is retried on the next call. */
  redis(): Promise<RedisTarget> {
    this.target ??= openRedisTarget().catch((error: Error) => {
      this.target = undefined;
      throw new Error(redact(error.message));
    });
    return this.target;
  }

  /** Starts reading single keys into the inbox (the lesson screen, the pager). */
  keysOn(): void {
    if (this.stopKeys) return;
    this.stopKeys = readKeys((key) => this.inbox.push({ kind: "key", key }));
    process.stdout.on("resize", this.onResize);
  }

  /** Hands the terminal to a prompt or an editor; keys typed before are forgotten. */
  keysOff(): void {
    this.stopKeys?.();
    this.stopKeys = undefined;
    process.stdout.off("resize", this.onResize);
    this.inbox.drop((event) => event.kind === "key");
  }

  async close(): Promise<void> {
    this.keysOff();
    const target = this.target;
    this.target = undefined;
    const redis = await target?.catch(() => undefined);
    await Promise.all([this.warm.close(), redis?.release()]);
  }
}
