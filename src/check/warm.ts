/**
 * What watch mode and the guided runner keep warm between saves: a type checker that stays up
 * (./warm-typecheck.ts) and the next check's processes, booted and waiting (./shards.ts, ./standby.ts). Each
 * run still happens in a process of its own: only the waiting is done ahead of time.
 */
import type { Lesson } from "../catalog.ts";
import type { RedisTarget } from "../redis/target.ts";
import { type CheckProcesses, startCheck } from "./shards.ts";
import { standbyKey } from "./standby.ts";
import type { Diagnostic } from "./typecheck.ts";
import { WarmTypecheck } from "./warm-typecheck.ts";

export class WarmChecks {
  #next: CheckProcesses | undefined;
  readonly #types = new WarmTypecheck();
  #closed = false;
  /** The last run's tidying (its keys, processes and scratch), which the next run waits for. */
  #tidying: Promise<void> = Promise.resolve();

  /** The waiting process for a run with this key, if there is a usable one; others are dropped. */
  take(key: string): CheckProcesses | undefined {
    const next = this.#next;
    this.#next = undefined;
    if (next?.key === key && next.usable()) return next;
    void next?.dispose();
    return undefined;
  }

  /** Boots the process for the next run of the same check, so that it waits for the save. */
  prepare(lesson: Lesson, file: string, redis: RedisTarget): void {
    if (this.#closed) return;
    const next = this.#next;
    if (next?.key === standbyKey(lesson, file, redis) && next.usable()) return;
    void next?.dispose();
    this.#next = startCheck(lesson, file, redis);
    void this.#types.warmUp(file);
  }

  /** Whether the next run's process has booted and waits. */
  waiting(): boolean {
    return this.#next?.waiting() ?? false;
  }

  /** Takes over a finished run's tidying, so that its verdict need not wait for it. */
  tidying(work: Promise<void>): void {
    this.#tidying = Promise.all([this.#tidying, work.catch(() => {})]).then(() => {});
  }

  /** Resolves once every finished run is tidied away. */
  tidied(): Promise<void> {
    return this.#tidying;
  }

  typecheck(file: string): Promise<Diagnostic[]> {
    return this.#types.check(file);
  }

  /** Loads the type checker's project for `file`; false when it cannot (see WarmTypecheck). */
  warmUp(file: string): Promise<boolean> {
    return this.#types.warmUp(file);
  }

  /** Ends the waiting process and the type checker. */
  async close(): Promise<void> {
    this.#closed = true;
    const next = this.#next;
    this.#next = undefined;
    await Promise.all([next?.dispose(), this.#types.close(), this.#tidying]);
  }
}
